#!/usr/bin/env bash
# Runs every cargo-fuzz target of this fuzz crate for SECONDS each (default 60), JOBS at a time
# (default 1), growing $TG_FUZZ_CORPUS/<target>/ (default corpus/<target>/ next to this script;
# corpora are not kept in git) from seeds/<target>/ and regressions/<target>/.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 (set
# here) lets it use the nightly-only sanitizer flags. The targets are built once, then the
# fuzzer binaries are run directly, so edits to the sources during a long run do not trigger
# rebuilds. Crashes land in artifacts/<target>/; each target's log is logs/<target>.log and a
# summary line per target (executions, corpus size, crashes) goes to logs/summary.txt.
#
#   protocol/fuzz/run-all.sh 3600 2        # an hour per target, two at a time
#   TARGETS="frame envelope" protocol/fuzz/run-all.sh 600
#   node/fuzz/run-all.sh 600               # the node crate's targets (same script)
#   TG_FUZZ_CORPUS=~/fuzz-corpora protocol/fuzz/run-all.sh 3600   # corpora kept elsewhere
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-60}"
JOBS="${2:-1}"
export RUSTC_BOOTSTRAP=1
TARGETS="${TARGETS:-$(cargo fuzz list)}"
cargo fuzz build -O
TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
BIN_DIR="$(pwd)/target/$TRIPLE/release"
CORPUS="${TG_FUZZ_CORPUS:-$(pwd)/corpus}"
mkdir -p logs
run_one() {
    t="$1"
    mkdir -p "$CORPUS/$t" "seeds/$t" "regressions/$t" "artifacts/$t"
    set +e
    "$BIN_DIR/$t" -artifact_prefix="artifacts/$t/" \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "$CORPUS/$t" "seeds/$t" "regressions/$t" >"logs/$t.log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
    echo "$t execs=$execs per_sec=$rate corpus=$(find "$CORPUS/$t" -type f | wc -l) exit=$rc crashes=$(find "artifacts/$t" -type f | wc -l)"
}
export -f run_one
export SECONDS_PER_TARGET BIN_DIR CORPUS
printf '%s\n' $TARGETS | xargs -P "$JOBS" -I{} bash -c 'run_one {}' | tee logs/summary.txt
