#!/usr/bin/env bash
# gpu_run.sh [STAGES] — everything the GPU machine does in one call: build (sm_90a only, to save time), the full
# CTest suite with the gpu label, Set5 eval on GPU and CPU, the accuracy report against PyTorch, and the speed
# report beside the PyTorch peers. STAGES is a comma list of: env,build,dev,test,eval,accuracy,bench,peers
# (dev: the kernel checks of dev/cuda/, each against a CPU reference, with their timings)
# (default: all but peers; `all` adds peers, whose torch.compile max-autotune takes 15-20 minutes for the four
# shapes). Results go to $OUT (or ./out) and docs/.
#   bash bench/gpu_run.sh all                  # everything in docs/ACCURACY.md and docs/PERFORMANCE.md
#   bash bench/gpu_run.sh                      # build, test, eval, accuracy, elansr bench
#   bash bench/gpu_run.sh build,peers          # PyTorch peers (eager fp32/fp16, torch.compile) + elansr, one run
# Needs ../shared beside the repo (or .shared/ inside it, or ELANSR_SHARED).
set -uo pipefail
cd "$(dirname "$0")/.."
STAGES=${1:-env,build,test,eval,accuracy,bench}
[ "$STAGES" = all ] && STAGES=env,build,test,eval,accuracy,bench,peers
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
# On the lent GPU machine ../shared does not travel: a git-ignored copy in .shared/ is carried instead.
if [ -z "${ELANSR_SHARED:-}" ]; then
    if [ -d ../shared ]; then ELANSR_SHARED=$(cd ../shared && pwd); else ELANSR_SHARED=$PWD/.shared; fi
fi
export ELANSR_SHARED
SHARED=$ELANSR_SHARED
MODEL=$SHARED/models/elan-light-x4.pth
PRECS=${PRECS:-fp32,tf32,fp16,bf16}
has() { [[ ",$STAGES," == *",$1,"* ]]; }
log() { echo "=== $* ($(date +%T))"; }

if has env; then
    log env
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nvcc --version | tail -1
    python3 -c 'import torch, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())'
    python3 -c 'import PIL, matplotlib; print("pillow", PIL.__version__, "matplotlib", matplotlib.__version__)' || true
    nproc
fi
if has build; then
    log build
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90a-real -DELANSR_SHARED_DIR="$SHARED" >"$OUT/cmake.log" 2>&1 &&
        cmake --build build -j 16 >>"$OUT/cmake.log" 2>&1 || { tail -40 "$OUT/cmake.log"; exit 1; }
    grep -E "warning" "$OUT/cmake.log" | head -5
fi
if has dev; then
    log dev
    bash dev/cuda/run.sh 2>&1 | tee "$OUT/dev.log"
fi
if has test; then
    log test
    (cd build && ctest --output-on-failure -j 4 2>&1) | tee "$OUT/ctest.log" | grep -vE "^\s*$" | tail -40
    (cd build && ./gpu_backend 2>&1 | tail -30)
fi
if has eval; then
    log eval
    ./build/elansr eval --hr "$SHARED/data/Set5/HR" --lr "$SHARED/data/Set5/LR_x4" -m "$MODEL" -g 0 -v 2>&1 | tee "$OUT/eval_gpu.txt"
    for p in ${PRECS//,/ }; do
        ./build/elansr eval --hr "$SHARED/data/Set5/HR" --lr "$SHARED/data/Set5/LR_x4" -m "$MODEL" -g 0 -p "$p" 2>&1 | grep -E "mean|elansr:"
    done
fi
if has accuracy; then
    log accuracy
    python3 tools/reference.py accuracy --devices=-1,0 --precisions "$PRECS" --json "$OUT/accuracy.json" --out docs/ACCURACY.md 2>&1 | tail -20
    cp docs/ACCURACY.md "$OUT/" 2>/dev/null
fi
if has bench; then
    log bench
    for p in ${PRECS//,/ }; do
        ./build/elansr bench -m "$MODEL" -g 0 --precision "$p" --iters 50 -o "$OUT/bench_$p.json" 2>&1
    done
fi
if has peers; then
    log peers
    python3 tools/reference.py bench --precisions "$PRECS" --json "$OUT/peers.json" --out docs/perf_gpu_table.md \
        --plot docs/perf_gpu.png 2>&1 | tee "$OUT/peers.log"
    cp docs/perf_gpu_table.md docs/perf_gpu.png "$OUT/" 2>/dev/null
fi
log done
