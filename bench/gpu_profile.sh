#!/usr/bin/env bash
# gpu_profile.sh [SIZE...] — where the time of one whole forward goes, kernel by kernel, on a GPU machine:
# Nsight Compute times every kernel of `elansr bench` (graph nodes one by one, real clocks, no cache flush, so
# each kernel finds the L2 as the forward leaves it; kernels run serialised, so launch gaps are not counted)
# and the times are reduced to a table of (kernel, launches per forward, time per forward) for each size.
# Expects build/elansr (bench/gpu_run.sh build). SIZE is WxH or WxHxN (batch); default the four bench shapes.
# PREC (default fp16) picks the precision. Output: $OUT/profile_<size>_<prec>.txt and stdout.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/ncu_env.sh
ITERS=${ITERS:-2}
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(64x64x16 320x180 480x270 960x540)
for sz in "${sizes[@]}"; do
    IFS=x read -r w h n <<<"$sz"
    n=${n:-1}
    tag=${w}x${h}x${n}_$PREC
    "$NCU" --clock-control none --cache-control none --metrics gpu__time_duration.sum --print-units base --csv \
        ./build/elansr bench -m "$MODEL" -g 0 --size "${w}x${h}" --batch "$n" --precision "$PREC" \
        --iters "$ITERS" --warmup 1 >"$OUT/prof_$tag.csv" 2>"$OUT/prof_$tag.err" || { tail -5 "$OUT/prof_$tag.err"; continue; }
    python3 tools/profile_table.py "$OUT/prof_$tag.csv" "$tag" | tee "$OUT/profile_$tag.txt"
done
