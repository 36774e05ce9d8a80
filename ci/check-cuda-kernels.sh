#!/usr/bin/env bash
# Compiles every CUDA kernel variant of the catalog with NVRTC for sm_80, sm_89 and sm_90a into CUBINs, prints
# registers / spills / shared memory per kernel, and disassembles each CUBIN with nvdisasm. Needs no GPU and
# no CUDA toolkit: NVRTC, the CUDA headers and nvdisasm come from NVIDIA's PyPI wheels (about 60 MB, cached).
# NVRTC is pinned to CUDA 13.0, the version of the H200 machine the device checks run on, so a kernel that
# only a newer NVRTC accepts fails here first. Fails on any compile or disassembly error.
#
#   ci/check-cuda-kernels.sh            fetch (once) and check
#   ci/check-cuda-kernels.sh --lib-dir  fetch (once) and print the directory holding libnvrtc, for tests
set -euo pipefail
cd "$(dirname "$0")/.."

CUDA_WHEELS="nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-runtime==13.0.88 nvidia-cuda-nvdisasm==13.2.86"
ARCHS=(sm_80 sm_89 sm_90a)
cache=${DSV3_CUDA_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dsv3/cuda-wheels-13.0.88}

if [ ! -f "$cache/complete" ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
            apt-get update -qq >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-pip >&2
        else
            echo "check-cuda-kernels: python3 -m pip is needed to fetch NVRTC's wheels" >&2
            exit 1
        fi
    fi
    rm -rf "$cache"
    mkdir -p "$cache/wheels" "$cache/root"
    # shellcheck disable=SC2086
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$cache/wheels" $CUDA_WHEELS
    for w in "$cache"/wheels/*.whl; do
        python3 -m zipfile -e "$w" "$cache/root" >&2
    done
    chmod +x "$cache"/root/nvidia/cu13/bin/*
    touch "$cache/complete"
fi
cuda="$cache/root/nvidia/cu13"
if [ "${1:-}" = "--lib-dir" ]; then
    echo "$cuda/lib"
    exit 0
fi
export DSV3_CUDA_LIB_DIR="$cuda/lib" DSV3_CUDA_INCLUDE="$cuda/include"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
arch_args=()
for a in "${ARCHS[@]}"; do arch_args+=(--arch "$a"); done
# A fresh kernel cache: every variant is really compiled here, none comes from an earlier run.
DSV3_KERNEL_CACHE="$out/cache" cargo run --quiet -p dsv3-backend-cuda --bin dsv3-check-kernels -- "${arch_args[@]}" --out "$out/cubin"

n=0
for c in "$out"/cubin/*.cubin; do
    if ! "$cuda/bin/nvdisasm" "$c" >"$out/sass.txt" 2>"$out/err.txt"; then
        echo "check-cuda-kernels: nvdisasm failed on $(basename "$c"): $(cat "$out/err.txt")" >&2
        exit 1
    fi
    # Every CUBIN holds its kernel's machine code for the architecture it was compiled for.
    arch=$(basename "$c" | cut -d- -f1)
    grep -q "\.target[[:space:]]*$arch" "$out/sass.txt" || { echo "check-cuda-kernels: $(basename "$c") is not $arch code" >&2; exit 1; }
    n=$((n + 1))
done
echo "check-cuda-kernels: $n CUBINs compiled and disassembled (${ARCHS[*]})"
