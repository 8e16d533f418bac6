#!/usr/bin/env bash
# setup.sh — installs what building and testing elansr needs on a fresh Debian/Ubuntu machine:
# a C compiler, CMake, libpng, libjpeg-turbo, zlib, OpenMP (with GCC) and Python 3 (for the test scripts).
# The CUDA toolkit is optional: when nvcc is on the PATH (or in /usr/local/cuda/bin) the GPU backend is built.
# Pass --python to also install the Python packages of tools/reference.py (numpy, Pillow, torch).
set -euo pipefail
need=()
command -v cmake >/dev/null || need+=(cmake)
command -v cc >/dev/null || need+=(build-essential)
command -v python3 >/dev/null || need+=(python3)
for pkg in libpng-dev libjpeg-dev zlib1g-dev; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
    SUDO=; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    echo "setup: installing ${need[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ "${1:-}" = "--python" ]; then
    python3 -c 'import numpy, PIL' 2>/dev/null || python3 -m pip install -q numpy pillow
    # torch is only needed by tools/reference.py and test_golden (which skips, saying so, without it)
    python3 -c 'import torch' 2>/dev/null || python3 -m pip install -q torch ||
        echo 'setup: could not install torch; test_golden will be skipped'
fi
echo "setup: ok"
