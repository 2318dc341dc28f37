#!/usr/bin/env bash
# Infrastructure checks that need no Azure account: Dockerfile lint, Bicep syntax, app <-> infra
# variable names, the parameters file as azd resolves it, the alert rules, azure.yaml paths. Run
# from the repository root with the tools of tests/infra/requirements.txt on PATH, e.g.
#   python3 -m venv .venv-infra && . .venv-infra/bin/activate
#   pip install -r tests/infra/requirements.txt && bash tests/infra/check.sh
# Runs every check, prints one OK line per passing check, exits 1 if any failed.
set -euo pipefail

cd "$(dirname "$0")/../.."
export PYTHONDONTWRITEBYTECODE=1
failed=0

run() {
    local label=$1
    shift
    if ! "$@"; then
        echo "FAIL $label" >&2
        failed=1
    fi
}

hadolint_dockerfile() {
    # --failure-threshold style: any finding (error, warning, info, style) fails.
    hadolint --failure-threshold style Dockerfile
    echo "OK hadolint: Dockerfile has no findings"
}

run hadolint hadolint_dockerfile
run "bicep syntax" python tests/infra/bicep_syntax.py infra
run "azd outputs" python tests/infra/azd_outputs.py
run "azd parameters" python tests/infra/azd_parameters.py
run "alert rules" python tests/infra/alert_rules.py
run "azure.yaml" python tests/infra/azure_yaml.py

exit "$failed"
