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
#   deploy/local-federation.sh --postgres      # each agency: two replicas on a PostgreSQL database
#
# The first run creates, in DIR: one node folder per agency (`tg node init`), a governance key
# and the signed manifest (`tg key generate`, `tg manifest create`), a caseworker and a DPO at
# every agency (`tg staff add`), and synthetic records for PEOPLE people (`tg records generate`,
# `tg records import`; DIR/people.csv lists each person's identifiers at every agency). Every
# node listens on 127.0.0.1 only. Logs: DIR/<agency>.log; process ids: DIR/<agency>.pid.
#
# With --postgres (remembered in DIR, so later runs, --status and --stop need not repeat it) the
# script also runs a PostgreSQL cluster in DIR/pg from the system's server binaries (initdb,
# pg_ctl; as the `postgres` user when started as root), listening only on a Unix socket in
# DIR/pg, with one database per agency. Every agency then runs as two node replicas sharing its
# database and its key, both listed in the manifest: replica 1 on the agency's port, replica 2
# on that port + 6, each with its own config (DIR/<agency>/node.toml, node-2.toml). Logs:
# DIR/<agency>.<replica>.log; process ids: DIR/<agency>.<replica>.pid; the database's log:
# DIR/pg/server.log. Caseworker and DPO profiles name replica 1 and list replica 2 in
# replica_addresses (either answers); the operator's profile asks replica 1 only, and
# op-1.replica-2.profile.toml in each staff folder asks replica 2 only.
set -euo pipefail

ALL_AGENCIES=(hmp-leeds probation-yorks nhs-wy leeds-college leeds-cc dwp)

usage() {
    cat <<'USAGE'
Usage: local-federation.sh [--dir DIR] [--agencies N] [--base-port PORT] [--people N]
                           [--seed N] [--tg PATH] [--postgres] [--stop | --status]

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
  --postgres        keep each agency's state in a PostgreSQL database of a local cluster in
                    DIR/pg and run it as two node replicas (first run only; remembered). Needs
                    the distribution's postgresql package (initdb and pg_ctl on PATH, in
                    /usr/lib/postgresql/*/bin, or in $TG_PG_BIN)
  --stop            stop every node of DIR (SIGTERM; data is kept), and its database
  --status          say whether each node of DIR is running and answering, and its database
USAGE
}

DIR=./throughgate-local
COUNT=3
BASE_PORT=4701
PEOPLE=50
SEED=2026
TG_BIN=${TG:-}
ACTION=start
POSTGRES=0

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
        --postgres) POSTGRES=1; shift ;;
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

# The storage backend is chosen by the first run and remembered in DIR/backend.
if [ -f "$DIR/backend" ]; then
    [ "$(cat "$DIR/backend")" = postgres ] \
        || die "$DIR/backend names an unknown backend; it should hold \"postgres\""
    POSTGRES=1
elif [ "$POSTGRES" = 1 ] && { [ -f "$DIR/governance/manifest.tgm" ] || [ -f "$DIR/${AGENCIES[0]}/node.toml" ]; }; then
    die "$DIR holds a federation made without --postgres (its nodes keep their state in sled); choose another --dir for one on PostgreSQL"
fi
# Replica numbers: none without --postgres (one node per agency, DIR/<agency>.pid); 1 and 2 with.
if [ "$POSTGRES" = 1 ]; then REPLICAS=(1 2); else REPLICAS=(""); fi

profile() { echo "$DIR/$1/staff/$2.profile.toml"; }
operator() { profile "$1" op-1; }
short() {
    case "$1" in
        hmp-leeds) echo leeds ;; probation-yorks) echo yorks ;; nhs-wy) echo nhs ;;
        leeds-college) echo college ;; leeds-cc) echo council ;; dwp) echo dwp ;;
    esac
}
# The files of replica $2 of agency $1 ($2 empty: the agency's only node, without --postgres).
pidfile() { if [ -n "$2" ]; then echo "$DIR/$1.$2.pid"; else echo "$DIR/$1.pid"; fi; }
logfile() { if [ -n "$2" ]; then echo "$DIR/$1.$2.log"; else echo "$DIR/$1.log"; fi; }
config() { if [ "${2:-1}" = 1 ]; then echo "$DIR/$1/node.toml"; else echo "$DIR/$1/node-$2.toml"; fi; }
label() { if [ -n "$2" ]; then echo "$1 replica $2"; else echo "$1"; fi; }
# The operator's profile that asks replica $2 (replica 1: the ordinary one).
status_profile() {
    if [ "${2:-1}" = 1 ]; then operator "$1"; else profile "$1" "op-1.replica-$2"; fi
}
# Replica 2 of the agency at index i listens 6 ports above replica 1 (BASE_PORT + 6 + i).
REPLICA_OFFSET=6

# ---- the PostgreSQL cluster (--postgres) ---------------------------------------------------
PG=$DIR/pg
PG_BIN=
PG_USER=
PG_SUPERUSER=throughgate

# The folder of the server binaries: $TG_PG_BIN; for an existing cluster, its own version's;
# else initdb and pg_ctl on PATH; else the newest /usr/lib/postgresql/*/bin.
find_pg_bin() {
    local d v found
    has_both() { [ -x "$1/initdb" ] && [ -x "$1/pg_ctl" ]; }
    if [ -n "${TG_PG_BIN:-}" ]; then
        has_both "$TG_PG_BIN" && { echo "$TG_PG_BIN"; return 0; }
        return 1
    fi
    v=$(cat "$PG/data/PG_VERSION" 2>/dev/null || true)
    if [ -n "$v" ] && has_both "/usr/lib/postgresql/$v/bin"; then
        echo "/usr/lib/postgresql/$v/bin"
        return 0
    fi
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        d=$(dirname "$(readlink -f "$(command -v pg_ctl)")")
        has_both "$d" && { echo "$d"; return 0; }
    fi
    found=
    for d in /usr/lib/postgresql/*/bin; do
        has_both "$d" && found=$d
    done
    [ -n "$found" ] && { echo "$found"; return 0; }
    return 1
}

# Sets PG_BIN and PG_USER, or explains what is missing.
pg_prepare() {
    local where="on PATH or in /usr/lib/postgresql/*/bin"
    [ -z "${TG_PG_BIN:-}" ] || where="in TG_PG_BIN=$TG_PG_BIN"
    PG_BIN=$(find_pg_bin) || die "--postgres needs the PostgreSQL server binaries (initdb, pg_ctl), and there are none $where: install the distribution's postgresql package (Debian, Ubuntu: apt-get install postgresql; Fedora: dnf install postgresql-server), or set TG_PG_BIN to the folder holding them"
    if [ "$(id -u)" = 0 ]; then
        # PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
        id -u postgres >/dev/null 2>&1 \
            || die "running as root and there is no \`postgres\` user to run PostgreSQL as (it refuses root): install the distribution's postgresql package, which creates it, or run this script as an ordinary user"
        command -v runuser >/dev/null 2>&1 || die "running as root needs runuser (util-linux) to start PostgreSQL as the postgres user"
        PG_USER=postgres
        runuser -u postgres -- test -x "$DIR" \
            || die "the postgres user (PostgreSQL runs as it, since it refuses root) cannot reach $DIR: let it through every folder above (chmod o+x), or choose a --dir it can reach"
    fi
}

# Runs a PostgreSQL binary as the cluster's owner, in the cluster's folder.
pg_run() {
    local prog=$PG_BIN/$1
    shift
    if [ -n "$PG_USER" ]; then
        (cd "$PG" && runuser -u "$PG_USER" -- "$prog" "$@")
    else
        (cd "$PG" && "$prog" "$@")
    fi
}

pg_running() { [ -f "$PG/data/PG_VERSION" ] && pg_run pg_ctl -D "$PG/data" status >/dev/null 2>&1; }
pg_pid() { head -n 1 "$PG/data/postmaster.pid" 2>/dev/null || true; }
db_name() { echo "tg_${1//-/_}"; }
url_file() { echo "$DIR/db/$1.url"; }

# A new cluster in DIR/pg: Unix socket in DIR/pg only, clients authenticated by `trust` (only
# processes that can enter the 0700 folder reach the socket).
pg_init() {
    [ -f "$PG/data/PG_VERSION" ] && return 0
    # A Unix socket's path is limited to 107 bytes.
    [ $((${#PG} + 14)) -le 107 ] \
        || die "$PG is too long a path for PostgreSQL's Unix socket (at most 93 characters): choose a shorter --dir"
    case "$PG" in *"'"*|*"\\"*) die "--dir must not contain ' or \\ (it is written into postgresql.conf)" ;; esac
    rm -rf "$PG"
    mkdir -p "$PG"
    chmod 0700 "$PG"
    [ -z "$PG_USER" ] || chown "$PG_USER:" "$PG"
    local out
    out=$(pg_run initdb -D "$PG/data" -U "$PG_SUPERUSER" --auth=trust --encoding=UTF8 \
        --locale=C 2>&1) || { echo "$out" >&2; die "initdb failed (output above)"; }
    printf "\n# Set by local-federation.sh: no TCP at all; the socket in the cluster's folder.\nlisten_addresses = ''\nunix_socket_directories = '%s'\n" \
        "$PG" >> "$PG/data/postgresql.conf"
    echo "  database: PostgreSQL $(cat "$PG/data/PG_VERSION") cluster in $PG (Unix socket only)"
}

pg_start() {
    if pg_running; then
        echo "  database: already running (pid $(pg_pid))"
        return 0
    fi
    if ! pg_run pg_ctl -D "$PG/data" -l "$PG/server.log" -w -t 60 start >/dev/null 2>&1; then
        tail -n 20 "$PG/server.log" >&2 || true
        die "PostgreSQL did not start; its log is above ($PG/server.log)"
    fi
    echo "  database: running (pid $(pg_pid)), socket in $PG, log $PG/server.log"
}

pg_stop() {
    if ! pg_running; then
        echo "database: not running"
        return 0
    fi
    if pg_run pg_ctl -D "$PG/data" -w -t 60 -m fast stop >/dev/null 2>&1; then
        echo "database: stopped"
    else
        echo "database: still running 60 s after pg_ctl stop (pid $(pg_pid)); see $PG/server.log" >&2
    fi
}

# One database per agency, and its URL in a 0600 file in a 0700 folder.
pg_databases() {
    local a db out
    mkdir -p "$DIR/db"
    chmod 0700 "$DIR/db"
    for a in "${AGENCIES[@]}"; do
        [ -f "$(url_file "$a")" ] && continue
        db=$(db_name "$a")
        if ! out=$(pg_run createdb -h "$PG" -U "$PG_SUPERUSER" "$db" 2>&1) \
            && ! echo "$out" | grep -q "already exists"; then
            echo "$out" >&2
            die "createdb $db failed (output above)"
        fi
        (umask 077 && printf 'host=%s user=%s dbname=%s\n' "$PG" "$PG_SUPERUSER" "$db" \
            > "$(url_file "$a").tmp")
        mv "$(url_file "$a").tmp" "$(url_file "$a")"
        echo "  $a: database $db (URL in $(url_file "$a"))"
    done
}

# ---- nodes ---------------------------------------------------------------------------------

# The pid of replica $2 of agency $1 if it is running (and is really our tg node), else nothing.
running_pid() {
    local pidfile pid
    pidfile=$(pidfile "$1" "$2")
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/cmdline" ] \
        && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "node run --config $(config "$1" "$2") "; then
        echo "$pid"
    fi
}

stop_all() {
    local a r pid name
    for a in "${AGENCIES[@]}"; do
        for r in "${REPLICAS[@]}"; do
            name=$(label "$a" "$r")
            pid=$(running_pid "$a" "$r")
            if [ -z "$pid" ]; then
                echo "$name: not running"
                rm -f "$(pidfile "$a" "$r")"
                continue
            fi
            kill -TERM "$pid"
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            if kill -0 "$pid" 2>/dev/null; then
                echo "$name: still running 10 s after SIGTERM (pid $pid); see $(logfile "$a" "$r")" >&2
            else
                echo "$name: stopped"
                rm -f "$(pidfile "$a" "$r")"
            fi
        done
    done
    if [ "$POSTGRES" = 1 ] && [ -f "$PG/data/PG_VERSION" ]; then
        pg_prepare
        pg_stop
    fi
}

status_all() {
    local a r pid name bad=0
    if [ "$POSTGRES" = 1 ]; then
        if [ ! -f "$PG/data/PG_VERSION" ]; then
            echo "database: not created"
            bad=1
        elif ! PG_BIN=$(find_pg_bin); then
            echo "database: cannot tell: no PostgreSQL binaries (install the distribution's postgresql package)"
            bad=1
        else
            [ "$(id -u)" != 0 ] || PG_USER=postgres
            if pg_running; then
                echo "database: running (PostgreSQL $(cat "$PG/data/PG_VERSION"), pid $(pg_pid)), socket in $PG"
            else
                echo "database: not running"
                bad=1
            fi
        fi
    fi
    for a in "${AGENCIES[@]}"; do
        for r in "${REPLICAS[@]}"; do
            name=$(label "$a" "$r")
            pid=$(running_pid "$a" "$r")
            if [ -z "$pid" ]; then
                echo "$name: not running"
                bad=1
            elif tg --profile "$(status_profile "$a" "$r")" node status >/dev/null 2>&1; then
                echo "$name: running (pid $pid) and answering"
            else
                echo "$name: running (pid $pid) but not answering; see $(logfile "$a" "$r")"
                bad=1
            fi
        done
    done
    return $bad
}

# Replica 2 of agency $1 (replica 1 at 127.0.0.1:$2): its address in the agency's member entry
# after replica 1's, its own config (its own listen and metrics ports; the same key, policy,
# manifest and database), and an operator profile that asks it.
add_replica_2() {
    local a=$1 p1=$2 p2=$(($2 + REPLICA_OFFSET))
    local member="$DIR/$a/member.toml" cfg
    cfg=$(config "$a" 2)
    if ! grep -qF "\"127.0.0.1:$p2\"" "$member"; then
        grep -qF "addresses = [\"127.0.0.1:$p1\"]" "$member" \
            || die "$member does not list replica 1's address as \`addresses = [\"127.0.0.1:$p1\"]\`"
        sed -i "s#^addresses = \[\"127.0.0.1:$p1\"\]#addresses = [\"127.0.0.1:$p1\", \"127.0.0.1:$p2\"]#" "$member"
    fi
    if [ ! -f "$cfg" ]; then
        (umask 077 && sed -e "s#^listen = \"127.0.0.1:$p1\"#listen = \"127.0.0.1:$p2\"#" \
            -e "s#^metrics_listen = \"127.0.0.1:$((p1 + 1000))\"#metrics_listen = \"127.0.0.1:$((p2 + 1000))\"#" \
            "$DIR/$a/node.toml" > "$cfg.tmp")
        grep -q "^listen = \"127.0.0.1:$p2\"" "$cfg.tmp" \
            || die "$DIR/$a/node.toml has no \`listen = \"127.0.0.1:$p1\"\` line to move"
        mv "$cfg.tmp" "$cfg"
    fi
    (umask 077 && sed "s#\"127.0.0.1:$p1\"#\"127.0.0.1:$p2\"#" "$(operator "$a")" \
        > "$(status_profile "$a" 2)")
    echo "  $a replica 2: config $cfg, UDP 127.0.0.1:$p2"
}

setup() {
    echo "Setting up ${#AGENCIES[@]} agencies in $DIR"
    local i=0 a members=() pg_args=()
    for a in "${AGENCIES[@]}"; do
        if [ "$POSTGRES" = 1 ]; then pg_args=(--postgres-url-file "$(url_file "$a")"); fi
        if [ ! -f "$DIR/$a/node.toml" ]; then
            tg node init --demo-agency --agency "$a" --dir "$DIR/$a" --listen "127.0.0.1:$((BASE_PORT + i))" \
                "${pg_args[@]}" >/dev/null
            echo "  $a: node folder $DIR/$a, UDP 127.0.0.1:$((BASE_PORT + i))"
        fi
        if [ "$POSTGRES" = 1 ]; then add_replica_2 "$a" "$((BASE_PORT + i))"; fi
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
    local a r pid log
    for a in "${AGENCIES[@]}"; do
        for r in "${REPLICAS[@]}"; do
            pid=$(running_pid "$a" "$r")
            if [ -n "$pid" ]; then
                echo "  $(label "$a" "$r"): already running (pid $pid)"
                continue
            fi
            log=$(logfile "$a" "$r")
            echo "---- $(date -u +%FT%TZ) start ----" >> "$log"
            nohup "$TG_BIN" --log info node run --config "$(config "$a" "$r")" \
                >> "$log" 2>&1 < /dev/null &
            echo $! > "$(pidfile "$a" "$r")"
        done
    done
    for a in "${AGENCIES[@]}"; do
        for r in "${REPLICAS[@]}"; do
            local ok=0 name
            name=$(label "$a" "$r")
            log=$(logfile "$a" "$r")
            for _ in $(seq 1 40); do
                if [ -z "$(running_pid "$a" "$r")" ]; then
                    tail -n 20 "$log" >&2
                    die "$name exited during start-up; its log is above ($log)"
                fi
                if tg --profile "$(status_profile "$a" "$r")" node status >/dev/null 2>&1; then
                    ok=1
                    break
                fi
                sleep 0.25
            done
            [ "$ok" = 1 ] || die "$name did not answer \`tg node status\` in time; see $log"
            echo "  $name: running (pid $(running_pid "$a" "$r")), log $log"
        done
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
        if [ "$POSTGRES" = 1 ]; then
            # Caseworkers and DPOs reach the agency through either replica.
            local second p
            second=$(sed -n 's/^node_address = //p' "$(status_profile "$a" 2)")
            [ -n "$second" ] || die "no node_address in $(status_profile "$a" 2)"
            for p in "$(profile "$a" "cw-$s")" "$(profile "$a" "dpo-$s")"; do
                grep -q '^replica_addresses' "$p" || echo "replica_addresses = [$second]" >> "$p"
            done
        fi
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

if [ "$POSTGRES" = 1 ]; then
    pg_prepare
    echo postgres > "$DIR/backend"
    echo "Starting the database"
    pg_init
    pg_start
    pg_databases
fi
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
if [ "$POSTGRES" = 1 ]; then
    echo "Caseworkers and DPOs reach either replica; the operator's profile asks replica 1 and"
    echo "each staff folder's op-1.replica-2.profile.toml asks replica 2."
    echo "Every agency's two replicas share its database in the PostgreSQL cluster in $PG."
fi
echo
echo "Manifest: $DIR/governance/manifest.tgm"
[ -f "$DIR/people.csv" ] && echo "Synthetic people and their identifiers at each agency: $DIR/people.csv"
echo "Try:  $TG_BIN --profile $(operator "${AGENCIES[0]}") node status"
echo "Stop: $0 --dir $DIR --stop"
