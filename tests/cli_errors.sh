#!/usr/bin/env bash
# cli_errors.sh BIN SHARED TMP — the CLI on bad inputs: each must print exactly one line on stderr that names
# the offending file, exit non-zero, and leave no output (nor temporary) file behind. Then one good run of
# each mode (file, folder, JPEG output) checks sizes.
set -u
BIN=$1 SHARED=$2 T=$3
MODEL=$SHARED/models/elan-light-x4.pth
LR=$SHARED/data/Set5/LR_x4
rm -rf "$T" && mkdir -p "$T/out" "$T/in"
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }

# expect_error NAME NEEDLE ARGS... : run, expect non-zero exit, one stderr line containing NEEDLE, no outputs.
expect_error() {
    local name=$1 needle=$2; shift 2
    "$BIN" "$@" >"$T/stdout" 2>"$T/stderr"
    local rc=$? lines
    lines=$(wc -l <"$T/stderr")
    if [ $rc -eq 0 ]; then fail "$name: exit 0"; fi
    if [ $rc -ge 128 ]; then fail "$name: crashed (exit $rc)"; fi
    if [ "$lines" -ne 1 ]; then fail "$name: $lines stderr lines:"; cat "$T/stderr" >&2; fi
    if ! grep -qF -- "$needle" "$T/stderr"; then fail "$name: stderr does not mention '$needle':"; cat "$T/stderr" >&2; fi
    if [ -n "$(ls -A "$T/out")" ]; then fail "$name: left files in out/: $(ls -A "$T/out")"; rm -rf "$T/out"/* "$T/out"/.[!.]*; fi
    echo "ok: $name: $(cat "$T/stderr")"
}

# --- inputs ---
printf '' >"$T/in/empty.png"
echo "hello, not an image" >"$T/in/text.png"
head -c 300 "$LR/baby.png" >"$T/in/trunc.png"
python3 - "$T/in" "$LR/baby.png" <<'PY'
import struct, sys, zlib, os
d = sys.argv[1]
def chunk(t, b): return struct.pack('>I', len(b)) + t + b + struct.pack('>I', zlib.crc32(t + b) & 0xffffffff)
ihdr = struct.pack('>IIBBBBB', 100000, 100000, 8, 2, 0, 0, 0)
open(os.path.join(d, 'huge.png'), 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) +
    chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b''))
# a tiny valid JPEG is hard to make without a library: truncate the baseline below via the CLI's own output
import random
random.seed(1)
open(os.path.join(d, 'random.pth'), 'wb').write(bytes(random.getrandbits(8) for _ in range(4096)))
import zipfile, pickle
with zipfile.ZipFile(os.path.join(d, 'wrong.pth'), 'w', zipfile.ZIP_STORED) as z:
    z.writestr('archive/data.pkl', pickle.dumps({'params': {'not_elan': 1}}, protocol=2))
    z.writestr('archive/version', '3\n')
m = open(sys.argv[2], 'rb').read()
PY
head -c 100000 "$MODEL" >"$T/in/trunc.pth"

expect_error "missing input" "nope.png" -i "$T/in/nope.png" -o "$T/out/x.png" -m "$MODEL" -g -1
expect_error "empty input" "empty.png" -i "$T/in/empty.png" -o "$T/out/x.png" -m "$MODEL" -g -1
expect_error "text input" "text.png" -i "$T/in/text.png" -o "$T/out/x.png" -m "$MODEL" -g -1
expect_error "truncated png" "trunc.png" -i "$T/in/trunc.png" -o "$T/out/x.png" -m "$MODEL" -g -1
expect_error "huge png header" "huge.png" -i "$T/in/huge.png" -o "$T/out/x.png" -m "$MODEL" -g -1
expect_error "missing model" "nomodel.pth" -i "$LR/bird.png" -o "$T/out/x.png" -m "$T/in/nomodel.pth" -g -1
expect_error "truncated model" "trunc.pth" -i "$LR/bird.png" -o "$T/out/x.png" -m "$T/in/trunc.pth" -g -1
expect_error "random model" "random.pth" -i "$LR/bird.png" -o "$T/out/x.png" -m "$T/in/random.pth" -g -1
expect_error "wrong checkpoint" "wrong.pth" -i "$LR/bird.png" -o "$T/out/x.png" -m "$T/in/wrong.pth" -g -1
expect_error "empty model" "empty.png" -i "$LR/bird.png" -o "$T/out/x.png" -m "$T/in/empty.png" -g -1
expect_error "scale mismatch" "-s 2" -i "$LR/bird.png" -o "$T/out/x.png" -m "$MODEL" -s 2 -g -1
expect_error "bad extension" "x.webp" -i "$LR/bird.png" -o "$T/out/x.webp" -m "$MODEL" -g -1
expect_error "bad format" "webp" -i "$LR/bird.png" -o "$T/out/x.png" -f webp -m "$MODEL" -g -1
expect_error "unknown option" "--frobnicate" --frobnicate 3 -i "$LR/bird.png" -o "$T/out/x.png"
expect_error "output folder missing" "nodir/x.png" -i "$LR/bird.png" -o "$T/out/nodir/x.png" -m "$MODEL" -g -1
expect_error "no -o" "-o" -i "$LR/bird.png" -m "$MODEL"
expect_error "eval missing lr" "nolr" eval --hr "$SHARED/data/Set5/HR" --lr "$T/nolr" -m "$MODEL" -g -1

# A truncated JPEG: make a real one with the CLI, then cut it.
small=$T/in/small.png
python3 - "$small" <<'PY'
import struct, sys, zlib, random
random.seed(2)
w, h = 13, 9
raw = b''.join(b'\0' + bytes(random.getrandbits(8) for _ in range(w * 3)) for _ in range(h))
def chunk(t, b): return struct.pack('>I', len(b)) + t + b + struct.pack('>I', zlib.crc32(t + b) & 0xffffffff)
open(sys.argv[1], 'wb').write(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 2, 0, 0, 0)) +
    chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
PY
"$BIN" -i "$small" -o "$T/in/small.jpg" -m "$MODEL" -g -1 || fail "good run small.png -> jpg"
head -c 400 "$T/in/small.jpg" >"$T/in/trunc.jpg"
expect_error "truncated jpeg" "trunc.jpg" -i "$T/in/trunc.jpg" -o "$T/out/x.png" -m "$MODEL" -g -1

# --- good runs ---
png_size() { python3 -c "import struct,sys; d=open(sys.argv[1],'rb').read(24); print(*struct.unpack('>II', d[16:24]))" "$1"; }
"$BIN" -i "$small" -o "$T/out/small.png" -m "$MODEL" -g -1 || fail "good run small.png"
[ "$(png_size "$T/out/small.png")" = "52 36" ] || fail "small.png output size $(png_size "$T/out/small.png")"
mkdir -p "$T/folder_in" && cp "$small" "$T/folder_in/a.png" && cp "$T/in/small.jpg" "$T/folder_in/b.jpg"
"$BIN" -i "$T/folder_in" -o "$T/folder_out" -f png -m "$MODEL" -g -1 || fail "folder mode"
[ -f "$T/folder_out/a.png" ] && [ -f "$T/folder_out/b.png" ] || fail "folder mode outputs: $(ls "$T/folder_out")"
rm -rf "$T/out"/*
"$BIN" --version | grep -q elansr || fail "--version"
"$BIN" --help | grep -q -- "-i PATH" || fail "--help"

if [ $fails -ne 0 ]; then echo "cli_errors: $fails failure(s)" >&2; exit 1; fi
echo "cli_errors: ok"
