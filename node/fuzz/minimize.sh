#!/usr/bin/env bash
# Shrinks corpus/<target>/ to the inputs that add coverage beyond seeds/<target>/, for every
# target or the TARGETS given, with libFuzzer's -set_cover_merge=1 (a greedy set cover, seeds
# first). Run it after long fuzzing runs, before keeping the corpus: the replay tests in CI run
# every file in it.
#
#   protocol/fuzz/minimize.sh
#   TARGETS="import_csv" node/fuzz/minimize.sh
set -euo pipefail
cd "$(dirname "$0")"
export RUSTC_BOOTSTRAP=1
TARGETS="${TARGETS:-$(cargo fuzz list)}"
cargo fuzz build -O
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$(pwd)/target/$TRIPLE/release"
for t in $TARGETS; do
    [ -d "corpus/$t" ] || continue
    before=$(find "corpus/$t" -type f | wc -l)
    work=$(mktemp -d)
    mkdir -p "$work/new"
    # Seeds first, so only inputs that add coverage beyond them are kept.
    cp "seeds/$t/"* "$work/new/" 2>/dev/null || true
    ls "$work/new" >"$work/seed-names"
    "$BIN_DIR/$t" -set_cover_merge=1 -timeout=10 -rss_limit_mb=2048 "$work/new" "corpus/$t" \
        >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
    while read -r s; do rm -f "$work/new/$s"; done <"$work/seed-names"
    rm -rf "corpus/$t"
    mkdir -p "corpus/$t"
    cp "$work/new/"* "corpus/$t/" 2>/dev/null || true
    rm -rf "$work"
    echo "$t: $before -> $(find "corpus/$t" -type f | wc -l) files"
done
