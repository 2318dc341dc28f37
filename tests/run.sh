#!/usr/bin/env bash
# Runs every chaos-lab test, installing what the tests need first (CI calls exactly this).
#
#   bash tests/run.sh            # format check, clippy, unit + integration tests
#   CARGO_JOBS=4 bash tests/run.sh
#
# The integration tests start their own redis-server processes on free loopback ports; the Locust
# test and the infra checks need Python tools, installed into the venv target/py from
# loadtests/locust/requirements.txt and tests/infra/requirements.txt; the store tests start Azurite
# (npm `azurite`), installed into target/node. System packages that are missing (redis-server,
# openssl, curl, python3-venv, npm, chromium) are installed with apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "tests/run.sh: installing $* (apt-get)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v redis-server >/dev/null 2>&1 || apt_install redis-server
command -v openssl >/dev/null 2>&1 || apt_install openssl   # Redis TLS test certificates; Azurite SAS signatures
command -v curl >/dev/null 2>&1 || apt_install curl         # tests/first_run.rs runs the README's curl lines
command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
command -v chromium >/dev/null 2>&1 || apt_install chromium   # the report test renders in headless chromium (tests/common/browser.rs)

# Azurite, the Azure Storage emulator: tests/common/azurite.rs starts target/node's azurite-blob.
command -v npm >/dev/null 2>&1 || apt_install nodejs npm
if [ ! -x target/node/node_modules/.bin/azurite-blob ]; then
  echo "tests/run.sh: installing Azurite (npm) into target/node"
  npm install --prefix target/node --no-audit --no-fund --loglevel=error azurite@3 >/dev/null
fi

# Python tools in a venv under target/: Locust (tests/locust.rs runs it), schemathesis
# (tests/openapi.rs runs it) and the infra checks.
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
py=target/py
if [ ! -x "$py/bin/pip" ]; then
  rm -rf "$py"
  python3 -m venv "$py" 2>/dev/null || { apt_install python3-venv; rm -rf "$py"; python3 -m venv "$py"; }
fi
"$py/bin/pip" install --quiet --disable-pip-version-check \
  -r loadtests/locust/requirements.txt -r tests/infra/requirements.txt -r tests/requirements.txt
PATH="$PWD/$py/bin:$PATH" bash tests/infra/check.sh   # Dockerfile lint, Bicep syntax, azd outputs

jobs="${CARGO_JOBS:-2}"
# --workspace/--all: the test harness tests/common is a crate of the workspace.
cargo fmt --all --check
cargo clippy --locked --workspace --jobs "$jobs" --all-targets -- -D warnings
cargo test --locked --workspace --jobs "$jobs"
