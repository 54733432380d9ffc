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
if need rustup; then
    rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi

echo "== fmt"; cargo fmt --all --check
echo "== clippy"; cargo clippy --workspace --all-targets --locked -- -D warnings
# --all-targets runs each criterion bench once, as a smoke test; doc tests need their own run.
echo "== tests"; cargo test --workspace --all-targets --locked
echo "== doc tests"; cargo test --workspace --doc --locked
