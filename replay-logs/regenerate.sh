#!/usr/bin/env bash
# Rebuilds every golden journal from its commands.txt: only after a deliberate change of the
# journal, snapshot or state-hash format (which also bumps that format's version).
# Usage: bash replay-logs/regenerate.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cccx=$PWD/target/release/cccx
for dir in replay-logs/*/; do
    name=$(basename "$dir")
    work=$(mktemp -d)
    flow=$work/flow.csv
    journal=$work/journal
    state=""
    while read -r line; do
        [ -z "$line" ] && continue
        args=${line//\$FLOW/$flow}
        args=${args//\$JOURNAL/$journal}
        args=${args//\$HERE/$PWD/${dir%/}}
        # shellcheck disable=SC2086
        out=$("$cccx" $args)
        state=$(printf '%s\n' "$out" | grep -E '^(state|last seq=)' || true)
    done < "$dir/commands.txt"
    rm -rf "$dir/journal"
    cp -r "$journal" "$dir/journal"
    printf '%s\n' "$state" > "$dir/expected.txt"
    rm -rf "$work"
    echo "$name: $(head -1 "$dir/expected.txt")"
done
