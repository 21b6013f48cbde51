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
