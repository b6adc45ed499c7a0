#!/usr/bin/env bash
# Prepare the environment (scripts/bootstrap.sh), then run the test suite and exit with pytest's
# exit code. With no arguments it runs the whole tests/ tree quietly; arguments go to pytest as
# they are, e.g. ./scripts/test.sh tests/unit -k layout
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/bootstrap.sh
if (($#)); then
    exec uv run --frozen pytest "$@"
else
    exec uv run --frozen pytest -q tests
fi
