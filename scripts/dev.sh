#!/usr/bin/env bash
# Start a one-node development agent: an in-memory server with HTTP on 127.0.0.1:8500 and DNS on
# 127.0.0.1:8600. Prepares the environment first (scripts/bootstrap.sh). Extra arguments go to
# `cairn agent`, e.g. ./scripts/dev.sh -config-dir=./cairn.d
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/bootstrap.sh
exec uv run --frozen cairn agent -dev "$@"
