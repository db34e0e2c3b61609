#!/usr/bin/env bash
# Brings up N demo agencies as persistent local nodes, without containers: what `tg demo` does,
# but the nodes keep running in the background and keep their data in a folder, so you can try
# a real setup with the ordinary commands (`tg consent grant`, `tg passport assemble`, ...).
#
#   deploy/local-federation.sh                 # 3 agencies in ./throughgate-local
#   deploy/local-federation.sh --agencies 6 --dir /tmp/fed
#   deploy/local-federation.sh --status        # is each node up?
#   deploy/local-federation.sh --stop          # SIGTERM each node (data kept)
#   deploy/local-federation.sh                 # again: starts the same nodes, same data
#
# The first run creates, in DIR: one node folder per agency (`tg node init`), a governance key
# and the signed manifest (`tg key generate`, `tg manifest create`), a caseworker and a DPO at
# every agency (`tg staff add`), and synthetic records for PEOPLE people (`tg records generate`,
# `tg records import`; DIR/people.csv lists each person's identifiers at every agency). Every
# node listens on 127.0.0.1 only. Logs: DIR/<agency>.log; process ids: DIR/<agency>.pid.
set -euo pipefail

ALL_AGENCIES=(hmp-leeds probation-yorks nhs-wy leeds-college leeds-cc dwp)

usage() {
    cat <<'USAGE'
Usage: local-federation.sh [--dir DIR] [--agencies N] [--base-port PORT] [--people N]
                           [--seed N] [--tg PATH] [--stop | --status]

  --dir DIR         where the federation lives (default: ./throughgate-local)
  --agencies N      how many demo agencies, 2 to 6, in the order hmp-leeds, probation-yorks,
                    nhs-wy, leeds-college, leeds-cc, dwp (default: 3; first run only)
  --base-port PORT  UDP port of the first node; the others follow (default: 4701; first run
                    only). Each node's /metrics, /healthz and /readyz are on 127.0.0.1 at its
                    port + 1000.
  --people N        synthetic people whose records are imported (default: 50; 0: none)
  --seed N          seed of the synthetic data (default: 2026)
  --tg PATH         the tg binary (default: $TG, then tg on PATH, then target/release/tg or
                    target/debug/tg of this repository)
  --stop            stop every node of DIR (SIGTERM; data is kept)
  --status          say whether each node of DIR is running and answering
USAGE
}

DIR=./throughgate-local
COUNT=3
BASE_PORT=4701
PEOPLE=50
SEED=2026
TG_BIN=${TG:-}
ACTION=start

while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR=${2:?--dir needs a folder}; shift 2 ;;
        --agencies) COUNT=${2:?--agencies needs a number}; shift 2 ;;
        --base-port) BASE_PORT=${2:?--base-port needs a port}; shift 2 ;;
        --people) PEOPLE=${2:?--people needs a number}; shift 2 ;;
        --seed) SEED=${2:?--seed needs a number}; shift 2 ;;
        --tg) TG_BIN=${2:?--tg needs a path}; shift 2 ;;
        --stop) ACTION=stop; shift ;;
        --status) ACTION=status; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

die() {
    echo "error: $*" >&2
    exit 1
}

case "$COUNT" in
    2|3|4|5|6) ;;
    *) die "--agencies must be 2 to 6 (the demo agencies); got $COUNT" ;;
esac
if ! [[ "$BASE_PORT" =~ ^[0-9]+$ ]] || [ "$BASE_PORT" -lt 1024 ] || [ "$BASE_PORT" -gt 64000 ]; then
    die "--base-port must be a number from 1024 to 64000; got $BASE_PORT"
fi
[[ "$PEOPLE" =~ ^[0-9]+$ ]] || die "--people must be a number; got $PEOPLE"

if [ -z "$TG_BIN" ]; then
    if command -v tg >/dev/null 2>&1; then
        TG_BIN=$(command -v tg)
    else
        repo=$(cd "$(dirname "$0")/.." && pwd)
        # The newer of the release and debug builds.
        for candidate in "$repo/target/release/tg" "$repo/target/debug/tg"; do
            if [ -x "$candidate" ] && { [ -z "$TG_BIN" ] || [ "$candidate" -nt "$TG_BIN" ]; }; then
                TG_BIN=$candidate
            fi
        done
    fi
fi
if [ -z "$TG_BIN" ] || [ ! -x "$TG_BIN" ]; then
    die "no tg binary found: build it with \`cargo build --release --bin tg\`, or pass --tg PATH"
fi

export NO_COLOR=1
tg() { "$TG_BIN" "$@"; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

# The agencies of an existing federation are the node folders in it; otherwise the first N.
agencies() {
    local found=()
    for a in "${ALL_AGENCIES[@]}"; do
        [ -f "$DIR/$a/node.toml" ] && found+=("$a")
    done
    if [ ${#found[@]} -gt 0 ]; then
        printf '%s\n' "${found[@]}"
    else
        printf '%s\n' "${ALL_AGENCIES[@]:0:$COUNT}"
    fi
}
mapfile -t AGENCIES < <(agencies)

profile() { echo "$DIR/$1/staff/$2.profile.toml"; }
operator() { profile "$1" op-1; }
short() {
    case "$1" in
        hmp-leeds) echo leeds ;; probation-yorks) echo yorks ;; nhs-wy) echo nhs ;;
        leeds-college) echo college ;; leeds-cc) echo council ;; dwp) echo dwp ;;
    esac
}

# The pid of agency $1's node if it is running (and is really our tg node), else nothing.
running_pid() {
    local pidfile="$DIR/$1.pid" pid
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] \
        && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "node run --config $DIR/$1/node.toml"; then
        echo "$pid"
    fi
}

stop_all() {
    local a pid
    for a in "${AGENCIES[@]}"; do
        pid=$(running_pid "$a")
        if [ -z "$pid" ]; then
            echo "$a: not running"
            rm -f "$DIR/$a.pid"
            continue
        fi
        kill -TERM "$pid"
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            echo "$a: still running 10 s after SIGTERM (pid $pid); see $DIR/$a.log" >&2
        else
            echo "$a: stopped"
            rm -f "$DIR/$a.pid"
        fi
    done
}

status_all() {
    local a pid bad=0
    for a in "${AGENCIES[@]}"; do
        pid=$(running_pid "$a")
        if [ -z "$pid" ]; then
            echo "$a: not running"
            bad=1
        elif tg --profile "$(operator "$a")" node status >/dev/null 2>&1; then
            echo "$a: running (pid $pid) and answering"
        else
            echo "$a: running (pid $pid) but not answering; see $DIR/$a.log"
            bad=1
        fi
    done
    return $bad
}

setup() {
    echo "Setting up ${#AGENCIES[@]} agencies in $DIR"
    local i=0 a members=()
    for a in "${AGENCIES[@]}"; do
        if [ ! -f "$DIR/$a/node.toml" ]; then
            tg node init --demo-agency --agency "$a" --dir "$DIR/$a" --listen "127.0.0.1:$((BASE_PORT + i))" >/dev/null
            echo "  $a: node folder $DIR/$a, UDP 127.0.0.1:$((BASE_PORT + i))"
        fi
        members+=(--member "$DIR/$a/member.toml")
        i=$((i + 1))
    done
    mkdir -p "$DIR/governance"
    chmod 0700 "$DIR/governance"
    [ -f "$DIR/governance/governance.key" ] || tg key generate --out "$DIR/governance/governance.key" >/dev/null
    rm -f "$DIR/governance/manifest.tgm.tmp"
    tg manifest create "${members[@]}" --governance-key "$DIR/governance/governance.key" \
        --out "$DIR/governance/manifest.tgm.tmp" >/dev/null
    mv "$DIR/governance/manifest.tgm.tmp" "$DIR/governance/manifest.tgm"
    for a in "${AGENCIES[@]}"; do
        cp "$DIR/governance/manifest.tgm" "$DIR/$a/manifest.tgm"
    done
    echo "  manifest: $DIR/governance/manifest.tgm (governance key $DIR/governance/governance.key)"
}

start_all() {
    local a pid
    for a in "${AGENCIES[@]}"; do
        pid=$(running_pid "$a")
        if [ -n "$pid" ]; then
            echo "  $a: already running (pid $pid)"
            continue
        fi
        echo "---- $(date -u +%FT%TZ) start ----" >> "$DIR/$a.log"
        nohup "$TG_BIN" --log info node run --config "$DIR/$a/node.toml" \
            >> "$DIR/$a.log" 2>&1 < /dev/null &
        echo $! > "$DIR/$a.pid"
    done
    for a in "${AGENCIES[@]}"; do
        local ok=0
        for _ in $(seq 1 40); do
            if [ -z "$(running_pid "$a")" ]; then
                tail -n 20 "$DIR/$a.log" >&2
                die "$a exited during start-up; its log is above ($DIR/$a.log)"
            fi
            if tg --profile "$(operator "$a")" node status >/dev/null 2>&1; then
                ok=1
                break
            fi
            sleep 0.25
        done
        [ "$ok" = 1 ] || die "$a did not answer \`tg node status\` in time; see $DIR/$a.log"
        echo "  $a: running (pid $(running_pid "$a")), log $DIR/$a.log"
    done
}

# Staff and records, each step once (a re-run after a failure picks up where it stopped).
staff_and_records() {
    local a s
    for a in "${AGENCIES[@]}"; do
        s=$(short "$a")
        [ -f "$(profile "$a" "cw-$s")" ] \
            || tg --profile "$(operator "$a")" staff add --id "cw-$s" --name "Caseworker at $a" \
                --role caseworker --out-dir "$DIR/$a/staff" >/dev/null
        [ -f "$(profile "$a" "dpo-$s")" ] \
            || tg --profile "$(operator "$a")" staff add --id "dpo-$s" --name "DPO at $a" \
                --role dpo --out-dir "$DIR/$a/staff" >/dev/null
        if [ "$PEOPLE" -gt 0 ] && [ ! -f "$DIR/$a/.records-imported" ]; then
            rm -f "$DIR/records-$a.csv"
            tg records generate --agency "$a" --people "$PEOPLE" --seed "$SEED" \
                --out "$DIR/records-$a.csv" --people-out "$DIR/people.csv" >/dev/null
            tg --profile "$(operator "$a")" records import "$DIR/records-$a.csv" | sed "s/^/  $a: /"
            touch "$DIR/$a/.records-imported"
        fi
    done
}

case "$ACTION" in
    stop) stop_all; exit 0 ;;
    status) status_all; exit $? ;;
esac

[ -f "$DIR/governance/manifest.tgm" ] || setup
echo "Starting nodes"
start_all
staff_and_records

echo
echo "Profiles (pass with --profile FILE, or export TG_PROFILE=FILE):"
printf '  %-16s %-10s %s\n' agency role profile
for a in "${AGENCIES[@]}"; do
    s=$(short "$a")
    printf '  %-16s %-10s %s\n' "$a" operator "$(operator "$a")"
    printf '  %-16s %-10s %s\n' "$a" caseworker "$(profile "$a" "cw-$s")"
    printf '  %-16s %-10s %s\n' "$a" dpo "$(profile "$a" "dpo-$s")"
done
echo
echo "Manifest: $DIR/governance/manifest.tgm"
[ -f "$DIR/people.csv" ] && echo "Synthetic people and their identifiers at each agency: $DIR/people.csv"
echo "Try:  $TG_BIN --profile $(operator "${AGENCIES[0]}") node status"
echo "Stop: $0 --dir $DIR --stop"
