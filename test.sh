#!/usr/bin/env bash
# The whole test suite: make .venv if needed, install the package with its test
# dependencies and the frameworks the tests cover (numba, MLX CPU, PyTorch CPU,
# JAX), then run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
bootstrap test
# torch 2.13.0 is the CPU wheel this machine holds locally; other versions pull GBs of CUDA.
frameworks="torch==2.13.0 numba mlx[cpu] jax jaxlib"
stamp=".venv/.frameworks-$(echo "$frameworks" | cksum | cut -d' ' -f1)"
if [ ! -f "$stamp" ]; then
    echo "installing test frameworks: $frameworks" >&2
    if .venv/bin/python -m pip install -q --disable-pip-version-check $frameworks; then
        touch "$stamp"
    else
        echo "warning: some frameworks did not install; their tests will be skipped" >&2
    fi
fi
# headless Chromium for the report page test (skipped where absent); a no-op once installed
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
        || echo "warning: could not install chromium; the browser test will be skipped" >&2
fi
exec .venv/bin/python -m pytest -q "$@"
