#!/usr/bin/env bash
# Renders the three printable HTML outputs in a real headless browser (Debian's chromium) and
# checks what it loaded and what it prints:
#
#   * the passport, from `tg passport export BUNDLE --manifest M --html` on the bundle that
#     `tg demo --out DIR` saves
#   * the data-protection officer's federated subject-access report (`report.html`, which
#     `tg demo --out DIR` writes with the same code as `tg audit report --format html`)
#   * the person's version of it (`report-person.html`, as `tg audit report --for-person
#     --format html` writes it)
#
# For each: a PNG screenshot at A4 width that must be a real, non-blank image, a PDF print on A4
# whose page count is checked (the passport fits in two or three pages), and the DOM after
# loading (--dump-dom), which must hold the expected items. Each printed passport page must
# carry the person's name, date of birth, passport id, "assembled" and its page number
# (pdftotext, from poppler-utils, when installed). The person's version must show no raw code
# (snake_case), hex id or system id anywhere in its text.
#
# A first page of each, small, is kept as a reference image in docs/ (docs/img/*.png); to
# refresh them after changing the pages: UPDATE_DOCS=1 deploy/check-html.sh
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
cp "$OUT/demo/report-person.html" "$OUT/report-person.html"
if ! command -v pdfinfo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "installing poppler-utils (pdfinfo, pdftotext, pdftoppm) with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends poppler-utils \
        >/dev/null 2>&1 || true
fi

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

# The number of pages of a PDF: pdfinfo when installed, else the PDF's page objects.
pages() {
    if command -v pdfinfo >/dev/null 2>&1; then
        pdfinfo "$1" 2>/dev/null | awk '/^Pages:/ {print $2}'
    else
        python3 -c 'import re,sys; print(len(re.findall(rb"/Type\s*/Page[^s]", open(sys.argv[1],"rb").read())))' "$1"
    fi
}

# check_pages NAME MIN MAX: the print has MIN to MAX A4 pages, each the A4 size.
check_pages() {
    local name=$1 min=$2 max=$3 pdf="$OUT/$1.pdf" n
    n=$(pages "$pdf")
    if [ -n "$n" ] && [ "$n" -ge "$min" ] && [ "$n" -le "$max" ]; then
        pass "$name: prints on $n A4 pages (expected $min to $max)"
    else
        fail "$name: prints on ${n:-?} pages, expected $min to $max"
    fi
    if command -v pdfinfo >/dev/null 2>&1; then
        if pdfinfo "$pdf" | grep -q "Page size:.*(A4)"; then
            pass "$name: the print is A4"
        else
            fail "$name: the print is not A4: $(pdfinfo "$pdf" | grep 'Page size')"
        fi
    fi
}

# check_running NAME NEEDLE...: every printed page carries each needle and "Page N of M".
check_running() {
    local name=$1 pdf="$OUT/$1.pdf" n i text bad=()
    shift
    if ! command -v pdftotext >/dev/null 2>&1; then
        echo "SKIP: $name: per-page header check (pdftotext from poppler-utils is not installed)"
        return
    fi
    n=$(pages "$pdf")
    for ((i = 1; i <= n; i++)); do
        text=$(pdftotext -f "$i" -l "$i" -layout "$pdf" - 2>/dev/null)
        local needle
        for needle in "$@" "Page $i of $n"; do
            grep -qF -- "$needle" <<<"$text" || bad+=("page $i lacks '$needle'")
        done
    done
    if [ ${#bad[@]} -eq 0 ]; then
        pass "$name: each of its $n printed pages carries $* and its page number"
    else
        fail "$name: ${bad[*]}"
    fi
}

# check_plain NAME: the visible text of the loaded page shows no snake_case code, no run of
# eight or more hex digits and no system id (pp-, cn-, q-, cw-).
check_plain() {
    local name=$1 found
    found=$(python3 - "$OUT/$name.dom.html" <<'PY'
import html, re, sys
page = open(sys.argv[1], encoding="utf-8").read()
page = re.sub(r"(?s)<(style|script|title)[^>]*>.*?</\1>", " ", page)
text = html.unescape(re.sub(r"<[^>]+>", " ", page))
bad = set(re.findall(r"\b[a-z0-9]+_[a-z0-9_]+\b", text))
bad |= set(re.findall(r"\b[0-9a-fA-F]{8,}\b", text))
bad |= set(re.findall(r"\b(?:pp|cn|q|cw|dpo)-[0-9a-z-]+", text))
print(" ".join(sorted(bad)))
PY
)
    if [ -z "$found" ]; then
        pass "$name: no raw code, hex id or system id in the text the person reads"
    else
        fail "$name: the person's version shows codes or ids: $found"
    fi
}

check_page() { # check_page NAME FILE NEEDLE...
    local name=$1 file=$2
    shift 2
    local url="file://$file" png="$OUT/$name.png" pdf="$OUT/$name.pdf" dom="$OUT/$name.dom.html"
    # A4 at 96 dpi: 794 x 1123 CSS pixels.
    chrome --window-size=794,1123 --screenshot="$png" "$url" > "$OUT/$name.chrome.log" 2>&1
    local size
    size=$(stat -c %s "$png" 2>/dev/null || echo 0)
    if [ "$size" -gt 20000 ] && info=$(png_ok "$png" 2>&1); then
        pass "$name: screenshot $png ($info)"
    else
        fail "$name: screenshot missing, small or blank ($size bytes): ${info:-} $(tail -n 5 "$OUT/$name.chrome.log")"
    fi
    chrome --no-pdf-header-footer --print-to-pdf="$pdf" "$url" >> "$OUT/$name.chrome.log" 2>&1
    if [ "$(head -c 5 "$pdf" 2>/dev/null)" = "%PDF-" ] && [ "$(stat -c %s "$pdf")" -gt 10000 ]; then
        pass "$name: printed to PDF ($pdf, $(stat -c %s "$pdf") bytes, $(pages "$pdf") A4 pages)"
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
    "<h2>Summary</h2>" "<h2>Agencies asked</h2>" "<h3>Finance and ID</h3>" "<h3>Health</h3>" \
    "<h3>Accommodation</h3>" "<h3>Supervision</h3>" \
    "<h2>Withheld by policy (names only)</h2>" "<h2>Refusals</h2>" \
    "signature verified" "HMP Leeds" "NHS West Yorkshire" "Release address" \
    "${AGENCIES[@]/#/data-agency=\"}"
check_pages passport 2 3
PERSON=$(python3 - "$OUT/passport.dom.html" <<'PY'
import html, re, sys
m = re.search(r'<div class="running"><strong>(.*?)</strong>, born (.*?) (?:\u00b7|&middot;)', open(sys.argv[1], encoding="utf-8").read())
print(html.unescape(m.group(1)) + "\t" + html.unescape(m.group(2)) if m else "")
PY
)
NAME=${PERSON%%$'\t'*}
BORN=${PERSON#*$'\t'}
if [ -n "$NAME" ]; then
    check_running passport "$NAME" "born $BORN" "$PASSPORT" "assembled"
else
    fail "passport: the running header names nobody"
fi
check_page report "$OUT/report.html" \
    "<h1 id=\"title\">Subject access report</h1>" "$PASSPORT" \
    "id=\"verification\" class=\"banner ok\"" \
    "<h2>Sources</h2>" "<h2>Who saw what, when and why</h2>" "DISCLOSED" \
    "verified (signed checkpoint of size" \
    "${AGENCIES[@]}"
check_pages report 1 8
check_running report "$PASSPORT"
check_page report-person "$OUT/report-person.html" \
    "Your information: who asked for it, who shared it, and why" "id=\"reference\"" \
    "<h2>Who answered</h2>" "<h2>What you agreed to</h2>" \
    "<h2>Who asked and what was shared</h2>" "<h2>What was refused and why</h2>" \
    "you agreed that HMP Leeds" "HMP Leeds" "NHS West Yorkshire" "Department for Work and Pensions"
check_pages report-person 1 3
check_plain report-person
check_running report-person "Your information" "reference"

# An incomplete passport (one agency stopped): the browser shows the incomplete banner, naming
# the agency, above and outside the "Verified" box.
if "$TG" demo --people 40 --unreachable nhs-wy --out "$OUT/partial" > "$OUT/incomplete.log" 2>&1; then
    chrome --dump-dom "file://$OUT/partial/passport.html" > "$OUT/incomplete.dom.html" 2>/dev/null
    if python3 - "$OUT/incomplete.dom.html" <<'PY'
import sys
page = open(sys.argv[1], encoding="utf-8").read()
banner, verified = page.find('id="incomplete"'), page.find('id="verification"')
box = page[verified:page.find("</p>", verified)]
assert 0 <= banner < verified, "no incomplete banner above the Verified box"
assert "NHS West Yorkshire (nhs-wy)" in page[banner:verified], "the banner does not name nhs-wy"
assert "nhs-wy" not in box and "ncomplete" not in box, "the Verified box talks about it"
PY
    then
        pass "incomplete passport: the banner names nhs-wy, above and outside the Verified box"
    else
        fail "incomplete passport: banner missing, misplaced or silent about nhs-wy"
    fi
else
    fail "tg demo --unreachable nhs-wy did not run: $(tail -n 5 "$OUT/incomplete.log")"
fi

# Reference images for the guides: the first printed page of each, small.
if [ "${UPDATE_DOCS:-}" = 1 ]; then
    if command -v pdftoppm >/dev/null 2>&1; then
        mkdir -p docs/img
        for name in passport report report-person; do
            pdftoppm -f 1 -l 1 -r 75 -png -singlefile "$OUT/$name.pdf" "docs/img/$name"
        done
        pass "reference images refreshed in docs/img/"
    else
        fail "UPDATE_DOCS=1 needs pdftoppm (apt-get install poppler-utils)"
    fi
fi
for name in passport report report-person; do
    if [ -s "docs/img/$name.png" ] && png_ok "docs/img/$name.png" >/dev/null 2>&1; then
        pass "docs/img/$name.png: the reference image is a real PNG"
    else
        fail "docs/img/$name.png is missing or not a real PNG (UPDATE_DOCS=1 $0 makes it)"
    fi
done

echo
echo "deploy/check-html.sh summary: passed $PASSED, failed $FAILED (pages, PNGs and PDFs in $OUT)"
[ "$FAILED" -eq 0 ]
