#!/usr/bin/env bash
# The whole test suite: make .venv if needed, install the package with its test
# dependencies and the frameworks the tests cover (numba, MLX CPU, PyTorch CPU,
# JAX, wasmtime, Playwright; scripts/bootstrap.sh), then run pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
source scripts/bootstrap.sh
bootstrap test
install_frameworks
# headless Chromium (the report page test, the browser rows), clang + lld (the wasm kernel)
# and an aarch64 cross compiler with qemu (the NEON path, bit for bit); skipped with their
# reason where absent; a no-op once installed
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v clang >/dev/null 2>&1 || missing="$missing clang"
command -v wasm-ld >/dev/null 2>&1 || missing="$missing lld"
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing="$missing gcc-aarch64-linux-gnu"
command -v qemu-aarch64 >/dev/null 2>&1 || missing="$missing qemu-user"
if [ -n "$missing" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing; } >/dev/null 2>&1 \
        || echo "warning: could not install$missing; the browser, wasm and NEON tests will be skipped" >&2
fi
exec .venv/bin/python -m pytest -q "$@"
