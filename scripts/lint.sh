#!/usr/bin/env bash
# The lint and type gates: ruff's lint rules over the repository and mypy over the shipped packages
# (non-strict for the whole tree, strict for the sans-IO cores and server RPC; the configuration is
# in pyproject.toml). Runs every gate and exits non-zero if any failed.
#   ./scripts/lint.sh            all gates
#   ./scripts/lint.sh ruff|mypy  one of them
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/bootstrap.sh
which=${1:-all}
status=0
if [[ $which == all || $which == ruff ]]; then
    echo "== ruff check"
    uv run --frozen ruff check . || status=1
fi
if [[ $which == all || $which == mypy ]]; then
    echo "== mypy"
    uv run --frozen mypy || status=1
fi
exit $status
