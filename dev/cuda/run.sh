#!/usr/bin/env bash
# dev/cuda/run.sh [NAME...] — builds and runs the kernel checks of dev/cuda/ on a GPU machine: each
# check_NAME.cu is one standalone program that fills random inputs, runs one kernel of src/cuda against a naive
# CPU reference (exits non-zero on a mismatch) and then times it with CUDA events (median of many runs).
# Without arguments every check_*.cu runs. Build only (no GPU): DEV_BUILD_ONLY=1.
set -uo pipefail
cd "$(dirname "$0")/../.."
ARCH=${ARCH:-sm_90a} # sm_90a: the wgmma paths (sm_90 builds the mma.sync ones)
mkdir -p build-dev
rc=0
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for f in dev/cuda/check_*.cu; do n=${f##*/check_}; names+=("${n%.cu}"); done
fi
for n in "${names[@]}"; do
    src=dev/cuda/check_$n.cu
    # the kernel file the check exercises is named on the check's first line: // kernel: src/cuda/X.cu
    kern=$(head -1 "$src" | sed -n 's#^// kernel: ##p')
    [ "$kern" = none ] && kern="" # a check of the GPU itself (check_rates.cu)
    echo "=== $n ($src + $kern)"
    # NVCC_FLAGS: extra flags, e.g. -DATTN_MIN_CTAS=3 to try a variant of a tuning constant
    if ! nvcc -O3 -std=c++17 -arch="$ARCH" -lineinfo -Isrc -Iinclude -Isrc/cuda -Xcompiler=-Wall,-Wextra ${NVCC_FLAGS:-} \
        "$src" $kern -o "build-dev/check_$n"; then
        echo "FAIL $n: build"; rc=1; continue
    fi
    [ -n "${DEV_BUILD_ONLY:-}" ] && continue
    if ! "./build-dev/check_$n"; then echo "FAIL $n"; rc=1; fi
done
exit $rc
