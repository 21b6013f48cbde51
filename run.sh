#!/usr/bin/env bash
# Quick start: make .venv if needed, install, run the default benchmark, print the
# table, write results/*.json. Extra arguments go to `microgpt-bench run`.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
bootstrap charts
exec .venv/bin/microgpt-bench run "$@"
