#!/usr/bin/env bash
# Runs every chaos-lab test, installing what the tests need first (CI calls exactly this).
#
#   bash tests/run.sh            # format check, clippy, unit + integration tests
#   CARGO_JOBS=4 bash tests/run.sh
#
# The integration tests start their own redis-server processes on free loopback ports, so the
# only system package needed is redis-server (Debian), installed here when it is missing.
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
command -v openssl >/dev/null 2>&1 || apt_install openssl   # certificates for the Redis TLS test
command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev

jobs="${CARGO_JOBS:-2}"
cargo fmt --check
cargo clippy --locked --jobs "$jobs" --all-targets -- -D warnings
cargo test --locked --jobs "$jobs"
