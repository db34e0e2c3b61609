#!/usr/bin/env bash
# Shrinks $TG_FUZZ_CORPUS/<target>/ (default corpus/<target>/ next to this script) to the
# inputs that add coverage beyond seeds/<target>/, for every target or the TARGETS given, with
# libFuzzer's -set_cover_merge=1 (a greedy set cover, seeds first). Run it after long fuzzing
# runs, before keeping or sharing the corpus: the replay tests run every file of a local corpus.
# Inputs worth keeping forever go to regressions/ instead.
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
CORPUS="${TG_FUZZ_CORPUS:-$(pwd)/corpus}"
for t in $TARGETS; do
    [ -d "$CORPUS/$t" ] || continue
    before=$(find "$CORPUS/$t" -type f | wc -l)
    work=$(mktemp -d)
    mkdir -p "$work/new"
    # Seeds first, so only inputs that add coverage beyond them are kept.
    cp "seeds/$t/"* "$work/new/" 2>/dev/null || true
    ls "$work/new" >"$work/seed-names"
    "$BIN_DIR/$t" -set_cover_merge=1 -timeout=10 -rss_limit_mb=2048 "$work/new" "$CORPUS/$t" \
        >"$work/log" 2>&1 || { cat "$work/log"; exit 1; }
    while read -r s; do rm -f "$work/new/$s"; done <"$work/seed-names"
    rm -rf "$CORPUS/$t"
    mkdir -p "$CORPUS/$t"
    cp "$work/new/"* "$CORPUS/$t/" 2>/dev/null || true
    rm -rf "$work"
    echo "$t: $before -> $(find "$CORPUS/$t" -type f | wc -l) files"
done
