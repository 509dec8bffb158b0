#!/usr/bin/env bash
# Prints the path of a Python 3.13 (the Lambda runtime's) for the Makefile; messages go to stderr.
# PATH first, then pyenv, then uv's managed Pythons; where none is found it installs one with
# `uv python install 3.13` (uv from PATH, the project's venv, or a small bootstrap venv) and says
# so. Prints nothing and exits 1 when that fails too.
set -u
works() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null; }
for p in $(command -v python3.13) $(ls -d "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.13*/bin/python3.13 2>/dev/null | sort -rV); do
    works "$p" && { echo "$p"; exit 0; }
done
uv=$(command -v uv || true)
[ -z "$uv" ] && [ -x .venv/bin/uv ] && uv=.venv/bin/uv
if [ -z "$uv" ]; then
    echo "No Python 3.13 on PATH or in pyenv: getting uv (PyPI) into .venv-uv to install one..." >&2
    { [ -x .venv-uv/bin/uv ] || { python3 -m venv .venv-uv && .venv-uv/bin/python -m pip install -q uv; }; } >&2 \
        && uv=.venv-uv/bin/uv
fi
[ -n "$uv" ] || exit 1
found=$("$uv" python find 3.13 2>/dev/null) && works "$found" && { echo "$found"; exit 0; }
echo "No Python 3.13 on PATH or in pyenv: installing one with 'uv python install 3.13'..." >&2
"$uv" python install 3.13 >&2 || exit 1
found=$("$uv" python find 3.13) && works "$found" && { echo "Using $found" >&2; echo "$found"; exit 0; }
exit 1
