#!/usr/bin/env bash
# Peak resident memory of a node while it imports one records file (docs/performance.md,
# "Import memory").
#
#   deploy/import-rss.sh TG PEOPLE FORMAT WORKDIR BASE_PORT
#   deploy/import-rss.sh target/release/tg 20000 csv /tmp/import-rss 6811    # ~10^5 rows
#
# Brings up two demo agencies with deploy/local-federation.sh (no records), writes the records
# of PEOPLE synthetic people for hmp-leeds (about 5 rows each; FORMAT csv or jsonl) with
# `tg records generate`, imports them into the running hmp-leeds node with `tg records import`,
# and prints the node process's VmHWM (peak resident set, /proc/PID/status) before and after,
# its VmRSS after, and the import's wall time. WORKDIR is deleted and recreated; the nodes are
# stopped at the end.
set -euo pipefail
[ $# -eq 5 ] || { sed -n '2,13p' "$0"; exit 2; }
TG=$(realpath "$1"); PEOPLE=$2; FMT=$3; DIR=$4; PORT=$5
HERE=$(cd "$(dirname "$0")" && pwd)
rm -rf "$DIR"; mkdir -p "$DIR"
"$HERE/local-federation.sh" --dir "$DIR/fed" --agencies 2 --people 0 --base-port "$PORT" --tg "$TG" >/dev/null
PID=$(cat "$DIR/fed/hmp-leeds.pid")
OP="$DIR/fed/hmp-leeds/staff/op-1.profile.toml"
FILE="$DIR/records.$FMT"
"$TG" records generate --agency hmp-leeds --people "$PEOPLE" --seed 7 --format "$FMT" --out "$FILE" >/dev/null
ROWS=$(grep -c . "$FILE"); [ "$FMT" = csv ] && ROWS=$((ROWS - 1))
hwm() { awk '/VmHWM/{print $2}' "/proc/$PID/status"; }
rss() { awk '/VmRSS/{print $2}' "/proc/$PID/status"; }
BEFORE=$(hwm)
START=$(date +%s%N)
"$TG" --profile "$OP" records import --json "$FILE" > "$DIR/report.json"
END=$(date +%s%N)
STORED=$(grep -o '"stored": *[0-9]*' "$DIR/report.json" | grep -o '[0-9]*$')
echo "rows=$ROWS bytes=$(stat -c %s "$FILE") format=$FMT stored=$STORED" \
    "hwm_before_kib=$BEFORE hwm_after_kib=$(hwm) rss_after_kib=$(rss)" \
    "seconds=$(( (END - START) / 1000000 ))e-3"
"$HERE/local-federation.sh" --dir "$DIR/fed" --stop --tg "$TG" >/dev/null
