#!/usr/bin/env bash
# gpu_ncu_source.sh [KERNEL_REGEX...] — Nsight Compute's full section set on one launch of each named kernel
# inside a whole forward (`elansr bench`, fp16 by default, 960x540), with the per-SASS-instruction source page
# (executed instructions and warp-stall samples by reason) exported as CSV: which instructions a kernel waits
# on, and why. tools/ncu_stalls.py reduces the CSV to a ranked list.
# Expects build/elansr built with -lineinfo (bench/gpu_run.sh build does). Output in $OUT:
# ncu_<name>.txt (details page), src_<name>.csv.gz (source page, SASS).
# SIZE (960x540), PREC (fp16), SKIP (launches of the kernel skipped first: 4), COUNT (1) pick the launch.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/ncu_env.sh
SIZE=${SIZE:-960x540}
SKIP=${SKIP:-4}
COUNT=${COUNT:-1}
kernels=("$@")
[ ${#kernels[@]} -eq 0 ] && kernels=(lfe_fused_kernel attn3_kernel)
for k in "${kernels[@]}"; do
    name=${k//[^A-Za-z0-9_]/_}
    rep=/tmp/ncu_$name
    rm -f "$rep.ncu-rep"
    "$NCU" --set full --import-source yes -k "regex:$k" --launch-skip "$SKIP" --launch-count "$COUNT" -o "$rep" \
        ./build/elansr bench -m "$MODEL" -g 0 --size "$SIZE" --precision "$PREC" --iters 1 --warmup 1 \
        >"$OUT/ncu_$name.log" 2>&1 || { tail -5 "$OUT/ncu_$name.log"; continue; }
    "$NCU" --import "$rep.ncu-rep" --page details >"$OUT/ncu_$name.txt" 2>&1
    "$NCU" --import "$rep.ncu-rep" --page source --csv --print-source sass 2>"$OUT/src_$name.err" | gzip >"$OUT/src_$name.csv.gz"
    [ -s "$OUT/src_$name.err" ] && head -5 "$OUT/src_$name.err"
    python3 tools/ncu_stalls.py "$OUT/src_$name.csv.gz" 12 2>&1 | head -40
    rm -f "$OUT/ncu_$name.log" "$OUT/src_$name.err"
done
