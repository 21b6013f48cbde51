#!/usr/bin/env bash
# The whole test suite: make .venv if needed, install the package with its test
# dependencies, run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
bootstrap test
exec .venv/bin/python -m pytest -q "$@"
