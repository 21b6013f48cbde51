#!/usr/bin/env bash
# The whole test suite: make .venv if needed, install the package with its test
# dependencies and the frameworks the tests cover (numba, MLX CPU, PyTorch CPU,
# JAX; scripts/bootstrap.sh), then run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
bootstrap test
install_frameworks
# headless Chromium for the report page test (skipped where absent); a no-op once installed
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
        || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
exec .venv/bin/python -m pytest -q "$@"
