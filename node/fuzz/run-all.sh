#!/usr/bin/env bash
# Runs every cargo-fuzz target of this crate for SECONDS each (default 60), JOBS at a time
# (default 1), growing corpus/<target>/ from seeds/<target>/ and regressions/<target>/.
# Needs cargo-fuzz (`cargo install cargo-fuzz`); on a stable toolchain RUSTC_BOOTSTRAP=1 lets
# it use the nightly-only sanitizer flags. Crashes land in artifacts/<target>/; a summary line
# per target (executions, corpus size, crashes) is written to logs/summary.txt.
#
#   node/fuzz/run-all.sh 3600 2        # an hour per target, two at a time
#   TARGETS="frame envelope" node/fuzz/run-all.sh 600
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET="${1:-60}"
JOBS="${2:-1}"
export RUSTC_BOOTSTRAP=1
TARGETS="${TARGETS:-$(cargo fuzz list)}"
cargo fuzz build -O
mkdir -p logs
run_one() {
    t="$1"
    mkdir -p "corpus/$t" "seeds/$t" "regressions/$t"
    set +e
    cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" "regressions/$t" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"logs/$t.log" 2>&1
    rc=$?
    set -e
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
    echo "$t execs=$execs corpus=$(ls "corpus/$t" | wc -l) exit=$rc crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)"
}
export -f run_one
export SECONDS_PER_TARGET
printf '%s\n' $TARGETS | xargs -P "$JOBS" -I{} bash -c 'run_one {}' | tee logs/summary.txt
