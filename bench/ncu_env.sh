# ncu_env.sh — sourced by the Nsight Compute scripts of bench/ (gpu_profile.sh, gpu_ncu_source.sh), from the
# repository root: OUT (created), MODEL (from ELANSR_SHARED, .shared/ or ../shared), PREC (default fp16) and NCU
# (the ncu binary; the script stops when there is none).
OUT=${OUT:-$PWD/out}
mkdir -p "$OUT"
SHARED=${ELANSR_SHARED:-$PWD/.shared}
[ -d "$SHARED" ] || SHARED=$(cd ../shared 2>/dev/null && pwd)
MODEL=$SHARED/models/elan-light-x4.pth
PREC=${PREC:-fp16}
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -n "$NCU" ] || { echo "$(basename "$0"): ncu not found"; exit 1; }
