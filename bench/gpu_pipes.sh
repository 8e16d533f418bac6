#!/usr/bin/env bash
# gpu_pipes.sh — per kernel of one whole forward (`elansr bench`, fp16 by default, 960x540): how busy each
# execution pipe was (tensor HMMA, MUFU/XU, FMA, ALU, LSU, shared-memory wavefronts), instruction counts,
# issue rate, occupancy and DRAM throughput, from a short list of Nsight Compute metrics (no replay of the full
# section set). With dev/cuda/check_rates.cu's rates these give each kernel's pipe floor: the time its busiest
# pipe needs at full rate. Output: $OUT/pipes_<size>_<prec>.csv (raw) and a table on stdout
# (tools/pipes_table.py). SIZE, PREC, SKIP (matching launches skipped first: 0) as in gpu_ncu_source.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
source bench/ncu_env.sh
SIZE=${SIZE:-960x540}
SKIP=${SKIP:-0}
COUNT=${COUNT:-80}
want=$(python3 tools/pipes_table.py --metrics) # the columns of its table
# keep the metrics this ncu knows (an unknown name would stop the whole run)
"$NCU" --query-metrics --chip gh100 >"$OUT/ncu_metrics_gh100.txt" 2>&1
metrics=""
for m in $want; do
    base=${m%%.*}
    if grep -q "^$base " "$OUT/ncu_metrics_gh100.txt"; then metrics="$metrics,$m"; else echo "gpu_pipes: no metric $base"; fi
done
metrics=${metrics#,}
rm -f "$OUT/ncu_metrics_gh100.txt"
csv=$OUT/pipes_${SIZE}_$PREC.csv
"$NCU" --metrics "$metrics" -k "regex:attn3|lfe_fused|pw_kernel|tail|head" --launch-skip "$SKIP" --launch-count "$COUNT" --csv \
    ./build/elansr bench -m "$MODEL" -g 0 --size "$SIZE" --precision "$PREC" --iters 1 --warmup 1 >"$csv.raw" 2>&1
grep -E '^"' "$csv.raw" >"$csv" || { tail -20 "$csv.raw"; exit 1; }
rm -f "$csv.raw"
python3 tools/pipes_table.py "$csv"
