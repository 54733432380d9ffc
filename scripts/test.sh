#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what the tests need, lints, tests.
# CI (.ci/run) calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

need() { command -v "$1" >/dev/null 2>&1; }
if ! need python3; then
    # The generator conformance test runs the reference genflow.py.
    apt-get update -qq && apt-get install -y -qq python3
fi
if ! need cmake; then
    # The quickfix crate builds the QuickFIX C++ sources with cmake.
    apt-get update -qq && apt-get install -y -qq cmake
fi
# The FIX interoperability tests drive the server with an independent client: the PyPI quickfix
# package (QuickFIX C++ with Python bindings) in a virtual environment. It compiles from source
# for about 6 minutes the first time; pip caches the wheel, so later runs take seconds.
if [ -z "${CCCX_FIX_PYTHON:-}" ] && [ -z "${CCCX_SKIP_FIX_INTEROP:-}" ]; then
    venv=target/fix-venv
    if ! "$venv/bin/python" -c "import quickfix" >/dev/null 2>&1; then
        include=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
        if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" >/dev/null 2>&1 \
            || [ ! -f "$include/Python.h" ]; then
            apt-get update -qq && apt-get install -y -qq python3-venv python3-dev g++
        fi
        rm -rf "$venv"
        python3 -m venv "$venv"
        echo "== installing the FIX test client (PyPI quickfix 1.16.0)"
        "$venv/bin/pip" install -q quickfix==1.16.0
    fi
    export CCCX_FIX_PYTHON="$PWD/$venv/bin/python"
fi
if need rustup; then
    rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi

echo "== fmt"; cargo fmt --all --check
echo "== clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
# --all-targets runs each criterion bench once, as a smoke test; doc tests need their own run.
echo "== tests"; cargo test --workspace --all-targets --locked
echo "== doc tests"; cargo test --workspace --doc --locked
