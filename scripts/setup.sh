#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment and links it as ./.venv.
# The venv is large (torch), so it lives outside the clone, keyed by a hash of pyproject.toml and uv.lock:
# a fresh clone with unchanged dependencies reuses it in seconds. With uv, the exact versions of uv.lock are
# installed; without it, pip resolves pyproject.toml's ranges.
set -euo pipefail
cd "$(dirname "$0")/.."
key=$(cat pyproject.toml uv.lock | sha256sum | cut -c1-16)
root=${FAILSCOPE_VENV_ROOT:-$HOME/.cache/failscope}
venv="$root/venv-$key"
if [ ! -f "$venv/.complete" ]; then
    echo "setup: building $venv (first run downloads torch and robosuite; a few minutes)" >&2
    python3 -m pip install -q --disable-pip-version-check uv >/dev/null 2>&1 || true
    rm -rf "$venv"
    mkdir -p "$root"
    if command -v uv >/dev/null 2>&1; then
        uv venv -q --python "$(command -v python3.11 || command -v python3)" "$venv"
        # --compile-bytecode: with PYTHONDONTWRITEBYTECODE set (as on these machines) nothing would ever cache the
        # .pyc files, and every process (each search worker, each test subprocess) would compile torch anew.
        locked="$venv/requirements.lock.txt"
        uv export -q --frozen --no-hashes --extra test --extra robomimic --extra ray --no-emit-project -o "$locked"
        UV_SYSTEM_CERTS=1 uv pip install -q --compile-bytecode --python "$venv/bin/python" -r "$locked" \
            -e ".[test,robomimic,ray]"
    else
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q -e ".[test,robomimic,ray]"
    fi
    touch "$venv/.complete"
else
    # Editable install points at this clone, not the one that built the venv.
    if command -v uv >/dev/null 2>&1; then
        uv pip install -q --python "$venv/bin/python" --no-deps -e . >/dev/null
    else
        "$venv/bin/pip" install -q --no-deps -e . >/dev/null
    fi
fi
ln -sfn "$venv" .venv
echo "setup: ready, use .venv/bin/python" >&2
