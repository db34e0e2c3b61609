#!/bin/sh
# The one-off init job of deploy/compose.yaml: creates each agency's node folder in its volume,
# a governance key, and the signed manifest listing all of them, then hands the folders to the
# node's unprivileged user. It does nothing if the federation is already set up, so
# `docker compose up` can run it every time.
#
# Environment (the defaults are what compose.yaml mounts):
#   TG_AGENCIES   agencies to set up           (the six demo agencies)
#   TG_FED_ROOT   parent of the node folders   (/fed: one volume per agency at /fed/<agency>)
#   TG_GOV_DIR    governance folder            (/governance)
#   TG_PORT       UDP port every node uses     (4701; each container has its own address)
#   TG_CHOWN      owner for the node folders   (10001:10001, the image's user; empty: skip)
#   TG            the tg binary                (tg)
set -eu

TG_AGENCIES=${TG_AGENCIES:-"hmp-leeds probation-yorks nhs-wy leeds-college leeds-cc dwp"}
TG_FED_ROOT=${TG_FED_ROOT:-/fed}
TG_GOV_DIR=${TG_GOV_DIR:-/governance}
TG_PORT=${TG_PORT:-4701}
TG_CHOWN=${TG_CHOWN-10001:10001}
TG=${TG:-tg}

manifest="$TG_GOV_DIR/manifest.tgm"
if [ -f "$manifest" ]; then
    echo "federation already initialised ($manifest exists); nothing to do"
    exit 0
fi

members=""
for agency in $TG_AGENCIES; do
    dir="$TG_FED_ROOT/$agency"
    if [ ! -f "$dir/node.toml" ]; then
        # Peers reach each node by its compose service name, which is its agency id.
        "$TG" node init --demo-agency --agency "$agency" --dir "$dir" \
            --listen "0.0.0.0:$TG_PORT" --advertise "$agency:$TG_PORT"
    fi
    members="$members --member $dir/member.toml"
done

mkdir -p "$TG_GOV_DIR"
chmod 0700 "$TG_GOV_DIR"
if [ ! -f "$TG_GOV_DIR/governance.key" ]; then
    "$TG" key generate --out "$TG_GOV_DIR/governance.key"
fi
# Written to a temporary name first, so a failed run leaves no manifest behind and is re-run.
rm -f "$manifest.tmp"
# shellcheck disable=SC2086 # $members is a list of arguments
"$TG" manifest create $members --governance-key "$TG_GOV_DIR/governance.key" \
    --out "$manifest.tmp"
for agency in $TG_AGENCIES; do
    cp "$manifest.tmp" "$TG_FED_ROOT/$agency/manifest.tgm"
    if [ -n "$TG_CHOWN" ]; then
        chown -R "$TG_CHOWN" "$TG_FED_ROOT/$agency"
    fi
done
mv "$manifest.tmp" "$manifest"
echo "federation initialised: $(echo "$TG_AGENCIES" | wc -w) agencies; manifest $manifest"
echo "each operator's profile is in its volume at staff/op-1.profile.toml"
