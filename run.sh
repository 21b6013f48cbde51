#!/usr/bin/env bash
# Quick start: make .venv if needed, install the tool and the optional frameworks that have
# wheels for this platform, run the default benchmark, print the table, write the results
# JSON and the report under results/. `./run.sh --core` skips the framework installs.
# Other arguments go to `microgpt-bench run` (see `microgpt-bench run --help`).
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
core=0
args=()
for arg in "$@"; do
    if [ "$arg" = "--core" ]; then core=1; else args+=("$arg"); fi
done
bootstrap charts
[ "$core" = 1 ] || install_frameworks
exec .venv/bin/microgpt-bench run ${args[@]+"${args[@]}"}
