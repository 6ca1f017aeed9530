#!/usr/bin/env bash
# The Python package's checks (issue 21): a venv with maturin, numpy, pandas, pytest and the
# notebook tools (created once, reused while python/requirements-ci.txt is unchanged), the
# extension built into it (`maturin develop`, a debug build: python/ is a workspace member, so
# it reuses what `cargo test --workspace` compiled; format and clippy are the root's), then
# pytest over python/tests, which also executes examples/tutorial.ipynb.
# Needs only python3 (with venv) and cargo. FEDRECON_VENV overrides the venv's folder.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${FEDRECON_VENV:-target/python-venv}
req=python/requirements-ci.txt
stamp="$venv/.requirements"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$stamp"; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -r "$req"
    cp "$req" "$stamp"
fi

start=$(date +%s)
(cd python && VIRTUAL_ENV="$PWD/../$venv" PATH="$PWD/../$venv/bin:$PATH" \
    maturin develop --locked --quiet)
echo "python extension built in $(( $(date +%s) - start )) s"

"$venv/bin/python" -m pytest -p no:cacheprovider python/tests "$@"
