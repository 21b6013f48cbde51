# Sourced by run.sh and test.sh: make .venv if missing and install the package
# into it. Installs are skipped when nothing they depend on has changed, so a
# second run starts at once. Usage: bootstrap EXTRAS [MORE PIP ARGS...]
bootstrap() {
    local extras="$1"; shift
    local py="${PYTHON:-python3}"
    if ! command -v "$py" >/dev/null 2>&1; then
        echo "error: $py not found; install Python 3.10 or newer" >&2; return 1
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv with $("$py" --version 2>&1)" >&2
        "$py" -m venv .venv
    fi
    local key
    key=$(cat pyproject.toml scripts/bootstrap.sh "$@" 2>/dev/null | cksum | cut -d' ' -f1)
    local stamp=".venv/.installed-${extras//[^a-z,]/}-$key"
    if [ ! -f "$stamp" ]; then
        echo "installing microgpt-bench[$extras] into .venv ..." >&2
        .venv/bin/python -m pip install -q --disable-pip-version-check -e ".[$extras]"
        touch "$stamp"
    fi
}

# The optional frameworks with rows of their own (numba, MLX's CPU build, PyTorch, JAX): each is
# installed where the platform has a wheel for it; one that fails is a warning (its rows then
# say why they cannot run), never a failure. torch 2.13.0 is the CPU wheel this machine kind
# holds locally; other versions pull gigabytes of CUDA.
install_frameworks() {
    # wasmtime and playwright: the browser rows (Playwright drives the system Chromium and
    # must never download browsers of its own)
    local frameworks="torch==2.13.0 numba mlx[cpu] jax jaxlib wasmtime playwright"
    export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
    local stamp=".venv/.frameworks-$(echo "$frameworks" | cksum | cut -d' ' -f1)"
    [ -f "$stamp" ] && return 0
    echo "installing the optional frameworks: $frameworks (./run.sh --core skips them)" >&2
    local failed=""
    if ! .venv/bin/python -m pip install -q --disable-pip-version-check $frameworks 2>/dev/null; then
        for pkg in $frameworks; do   # one at a time, so one without a wheel here stops no other
            .venv/bin/python -m pip install -q --disable-pip-version-check "$pkg" 2>/dev/null || failed="$failed $pkg"
        done
    fi
    if [ -n "$failed" ]; then
        echo "warning: not installed:$failed; their rows will say so" >&2
    else
        touch "$stamp"
    fi
}
