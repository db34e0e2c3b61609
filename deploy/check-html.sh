#!/usr/bin/env bash
# Renders the two printable HTML outputs in a real headless browser (Debian's chromium) and
# checks what it loaded:
#
#   * the passport, from `tg passport export BUNDLE --manifest M --html` on the bundle that
#     `tg demo --out DIR` saves
#   * the data-protection officer's federated subject-access report (`report.html`, which
#     `tg demo --out DIR` writes with the same code as `tg audit report --format html`)
#
# For each: a PNG screenshot that must be a real, non-blank image of some size, a PDF print
# that must be a PDF, and the DOM after loading (--dump-dom), which must hold the passport id,
# every agency id and the expected section headings.
#
# If chromium is missing and cannot be installed (apt-get as root), this prints a SKIP line and
# exits 0: `cargo test` never needs a browser. Output files stay in target/html-check/.
#
#   deploy/check-html.sh            (after `cargo build --bin tg`; TG=PATH for another binary)
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
export NO_COLOR=1

PASSED=0
FAILED=0
pass() { echo "PASS: $*"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $*"; FAILED=$((FAILED + 1)); }

TG=${TG:-}
if [ -z "$TG" ]; then
    if [ ! -x target/debug/tg ]; then
        echo "building tg (cargo build --bin tg)"
        cargo build -q --bin tg || { echo "FAIL: cargo build --bin tg"; exit 1; }
    fi
    TG=$ROOT/target/debug/tg
fi

CHROMIUM=${CHROMIUM:-}
if [ -z "$CHROMIUM" ]; then
    CHROMIUM=$(command -v chromium || command -v chromium-browser || true)
fi
if [ -z "$CHROMIUM" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "installing Debian's chromium (apt-get)"
        apt-get update -qq >/dev/null 2>&1
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            chromium fonts-dejavu-core >/dev/null 2>&1 || true
        CHROMIUM=$(command -v chromium || true)
    fi
fi
if [ -z "$CHROMIUM" ]; then
    echo "SKIP: HTML rendering check: chromium is not installed and could not be installed (apt-get install chromium, as root)"
    exit 0
fi
echo "using $("$CHROMIUM" --version 2>/dev/null | head -n 1)"

OUT=$ROOT/target/html-check
rm -rf "$OUT"
mkdir -p "$OUT"
PROFILES=$(mktemp -d)
trap 'rm -rf "$PROFILES"' EXIT

# ---- the pages ------------------------------------------------------------------------------
if ! "$TG" demo --people 80 --out "$OUT/demo" > "$OUT/demo.log" 2>&1; then
    cat "$OUT/demo.log"
    echo "FAIL: tg demo --out did not run"
    exit 1
fi
PASSPORT=$("$TG" --json passport verify "$OUT/demo/passport.tgp" --manifest "$OUT/demo/manifest.tgm" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["passport_id"])')
if [ -z "$PASSPORT" ]; then
    echo "FAIL: could not read the passport id from the demo's bundle"
    exit 1
fi
if "$TG" passport export "$OUT/demo/passport.tgp" --manifest "$OUT/demo/manifest.tgm" --html \
    --out "$OUT/passport.html" > "$OUT/export.log" 2>&1; then
    pass "tg passport export --html wrote $OUT/passport.html"
else
    fail "tg passport export --html: $(cat "$OUT/export.log")"
fi
cp "$OUT/demo/report.html" "$OUT/report.html"

# ---- the browser ----------------------------------------------------------------------------
chrome() { # chrome ARGS... : headless chromium with a fresh profile, bounded in time
    local profile
    profile=$(mktemp -d "$PROFILES/p.XXXXXX")
    timeout 90 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --hide-scrollbars --user-data-dir="$profile" "$@"
}

# A PNG that decodes, is at least 600x400 and is not one flat colour.
png_ok() {
    python3 - "$1" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, width, height = 8, b"", 0, 0
while pos < len(data):
    (n,) = struct.unpack(">I", data[pos:pos + 4])
    kind = data[pos + 4:pos + 8]
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        width, height = struct.unpack(">II", body[:8])
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw = zlib.decompress(idat)
assert width >= 600 and height >= 400, f"only {width}x{height}"
distinct = len(set(raw[::7]))
assert distinct > 16, f"looks blank ({distinct} distinct byte values)"
print(f"{width}x{height}, {len(data)} bytes, {distinct} distinct sampled values")
PY
}

check_page() { # check_page NAME FILE NEEDLE...
    local name=$1 file=$2
    shift 2
    local url="file://$file" png="$OUT/$name.png" pdf="$OUT/$name.pdf" dom="$OUT/$name.dom.html"
    chrome --window-size=1280,1800 --screenshot="$png" "$url" > "$OUT/$name.chrome.log" 2>&1
    local size
    size=$(stat -c %s "$png" 2>/dev/null || echo 0)
    if [ "$size" -gt 20000 ] && info=$(png_ok "$png" 2>&1); then
        pass "$name: screenshot $png ($info)"
    else
        fail "$name: screenshot missing, small or blank ($size bytes): ${info:-} $(tail -n 5 "$OUT/$name.chrome.log")"
    fi
    chrome --no-pdf-header-footer --print-to-pdf="$pdf" "$url" >> "$OUT/$name.chrome.log" 2>&1
    if [ "$(head -c 5 "$pdf" 2>/dev/null)" = "%PDF-" ] && [ "$(stat -c %s "$pdf")" -gt 10000 ]; then
        pass "$name: printed to PDF ($pdf, $(stat -c %s "$pdf") bytes)"
    else
        fail "$name: print to PDF failed: $(tail -n 5 "$OUT/$name.chrome.log")"
    fi
    chrome --dump-dom "$url" > "$dom" 2>> "$OUT/$name.chrome.log"
    local missing=() needle
    for needle in "$@"; do
        grep -qF -- "$needle" "$dom" || missing+=("$needle")
    done
    if [ ! -s "$dom" ]; then
        fail "$name: the browser returned no DOM"
    elif [ ${#missing[@]} -eq 0 ]; then
        pass "$name: the loaded DOM holds all $# expected items (passport id, agencies, sections)"
    else
        fail "$name: the loaded DOM lacks: ${missing[*]}"
    fi
}

AGENCIES=(hmp-leeds probation-yorks nhs-wy leeds-college leeds-cc dwp)
check_page passport "$OUT/passport.html" \
    "<h1 id=\"title\">Resettlement passport</h1>" "$PASSPORT" \
    "id=\"verification\" class=\"banner ok\"" \
    "<h2>Agencies asked</h2>" "<h2>Finance and ID</h2>" "<h2>Health</h2>" \
    "<h2>Accommodation</h2>" "<h2>Supervision</h2>" \
    "<h2>Withheld by policy (names only)</h2>" "<h2>Refusals</h2>" \
    "signature verified" "HMP Leeds" "NHS West Yorkshire" \
    "${AGENCIES[@]/#/data-agency=\"}"
check_page report "$OUT/report.html" \
    "<h1 id=\"title\">Subject access report</h1>" "$PASSPORT" \
    "id=\"verification\" class=\"banner ok\"" \
    "<h2>Sources</h2>" "<h2>Who saw what, when and why</h2>" "DISCLOSED" \
    "verified (signed checkpoint of size" \
    "${AGENCIES[@]}"

echo
echo "deploy/check-html.sh summary: passed $PASSED, failed $FAILED (pages, PNGs and PDFs in $OUT)"
[ "$FAILED" -eq 0 ]
