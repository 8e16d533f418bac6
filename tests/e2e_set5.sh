#!/usr/bin/env bash
# e2e_set5.sh BIN SHARED [GPU] — `elansr eval` on Set5 x4 must give the reference figures of ELAN.md:
# PSNR 32.4374 (within 0.0005) and SSIM 0.8979 (within 0.0001).
set -u
BIN=$1 SHARED=$2 GPU=${3:--1}
out=$("$BIN" eval --hr "$SHARED/data/Set5/HR" --lr "$SHARED/data/Set5/LR_x4" -m "$SHARED/models/elan-light-x4.pth" -g "$GPU") || {
    echo "e2e_set5: elansr eval failed" >&2; exit 1; }
echo "$out"
echo "$out" | awk '/^mean/ {
    dp = $2 - 32.4374; ds = $3 - 0.8979; if (dp < 0) dp = -dp; if (ds < 0) ds = -ds;
    if (dp <= 0.0005 && ds <= 0.0001) { print "e2e_set5: ok"; ok = 1 } else print "e2e_set5: PSNR/SSIM off the reference 32.4374/0.8979" }
    END { exit ok ? 0 : 1 }'
