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
want="gpu__time_duration.sum sm__cycles_elapsed.avg.per_second sm__cycles_active.avg
smsp__inst_executed.sum sm__inst_executed.avg.per_cycle_active
sm__inst_executed_pipe_tensor_op_hmma.sum sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active
sm__inst_executed_pipe_xu.sum sm__inst_executed_pipe_xu.avg.pct_of_peak_sustained_active
sm__inst_executed_pipe_fma.avg.pct_of_peak_sustained_active sm__inst_executed_pipe_alu.avg.pct_of_peak_sustained_active
sm__inst_executed_pipe_lsu.avg.pct_of_peak_sustained_active sm__inst_executed_pipe_uniform.avg.pct_of_peak_sustained_active
l1tex__data_pipe_lsu_wavefronts_mem_shared.avg.pct_of_peak_sustained_elapsed l1tex__data_pipe_lsu_wavefronts_mem_shared.sum
sm__warps_active.avg.pct_of_peak_sustained_active smsp__warps_eligible.avg.per_cycle_active
dram__throughput.avg.pct_of_peak_sustained_elapsed dram__bytes_read.sum dram__bytes_write.sum
lts__t_sectors.sum"
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
