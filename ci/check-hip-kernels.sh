#!/usr/bin/env bash
# Compiles every kernel variant of the catalog for AMD GPUs, without one, with the tile layer's (MFMA:
# gemm_mma, attention_mma and the layout probe, which both architectures have; the same sources for both,
# mma.cuh choosing gfx94x's FP8 MFMA for the e4m3fnuz GEMMs and the probe by the architecture's macro, so
# gfx940's builds of those run v_mfma_f32_16x16x32_fp8_fp8 and gfx90a's decode the codes to bf16 MFMA):
#   1. hipcc (offline, with hip_runtime.h) for gfx90a (MI200) and gfx940 (the MI300 family's ISA), printing
#      each kernel's registers, spills, LDS and occupancy (clang's kernel-resource-usage remarks);
#   2. hiprtc in-process for gfx90a, the compiler and header environment the HIP backend uses at run time.
# Uses Debian's ROCm 5.2 (`hipcc libamdhip64-dev`, installed here with apt when missing and running as root;
# about 70 MB). Debian bookworm's clang is LLVM 15: gfx942 (MI300X) needs LLVM >= 17 and gfx950 (MI350)
# LLVM >= 20, so neither can be compiled here — gfx940 is the nearest ISA LLVM 15 knows; and hiprtc 5.2 aborts
# the process for gfx940 (the backend refuses it: too old), so hiprtc is checked for gfx90a only.
# Fails on any compile error, on a kernel file the catalog does not cover, on a kernel whose static LDS (the
# remarks' BytesLDS) and dynamic LDS (what each launch gives: index.tsv's third column) exceed a CDNA
# workgroup's 64 KiB (the occupancy column is the compiler's, from the static LDS alone), on a kernel that
# spills VGPRs or SGPRs (the remarks' VGPRSpill / SGPRSpill), and when gfx940's e4m3fnuz W8A8 GEMMs or probe
# lack the FP8 MFMA instruction (or gfx90a's have it). The spill check is also the register gate: without
# launch bounds clang compiles every kernel for workgroups of up to 1024 threads
# (amdgpu-flat-work-group-size's default), so it keeps registers within what such a block may use and
# spills what does not fit; no spill, so every block size our launches use (at most 1024) runs. A kernel
# with __launch_bounds__(n) (attention_mma: 256, its
# kernels.rs block, which launches may not exceed) is compiled for blocks of up to n instead.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCHS=(gfx90a gfx940)

if ! command -v hipcc >/dev/null 2>&1 || [ ! -f /usr/include/hip/hip_runtime.h ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends hipcc libamdhip64-dev >&2
    else
        echo "check-hip-kernels: hipcc and libamdhip64-dev are needed (apt-get install hipcc libamdhip64-dev)" >&2
        exit 1
    fi
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# hipcc leaves an empty directory per compiled file in TMPDIR (/tmp/NNN-kernel-XXXXXX): keep them in $out.
mkdir -p "$out/tmp"
export TMPDIR="$out/tmp"
start=$SECONDS

# Sources for every variant (the same text for both wave64 architectures), and hiprtc's in-process check
# with a fresh kernel cache, so that every variant is really compiled.
arch_args=()
for a in "${ARCHS[@]}"; do arch_args+=(--arch "$a"); done
DSV3_KERNEL_CACHE="$out/cache" cargo run --quiet -p dsv3-backend-hip --bin dsv3-emit-kernels -- \
    "${arch_args[@]}" --warp 64 --out "$out/src" --hiprtc

# hipcc: one invocation per variant for both architectures (the header is the larger part of the cost), two
# at a time. The resource remarks go to one YAML file per architecture (stderr does not say which is which).
offload=()
for a in "${ARCHS[@]}"; do offload+=("--offload-arch=$a"); done
src="$out/src/${ARCHS[0]}"
export HIPCC_OFFLOAD="${offload[*]}"
# shellcheck disable=SC2016
if ! ls "$src"/*.hip | xargs -P2 -I{} bash -c '
    f=$1; cd "$(dirname "$f")"
    # shellcheck disable=SC2086
    if ! hipcc --genco $HIPCC_OFFLOAD -O3 -std=c++17 -Rpass-analysis=kernel-resource-usage \
        -fsave-optimization-record -foptimization-record-passes=kernel-resource-usage \
        -x hip "$f" -o "${f%.hip}.hsaco" >"${f%.hip}.log" 2>&1; then
        echo "check-hip-kernels: hipcc failed on $(basename "$f"):" >&2
        grep -v "remark:\|note: could not determine" "${f%.hip}.log" | head -n 60 >&2
        exit 255
    fi' _ {}; then
    exit 1
fi

# One line per architecture and variant from the remarks.
printf '%-7s %-80s %5s %5s %5s %11s %7s %7s %4s\n' arch variant vgpr agpr sgpr "spill v/s" lds dyn occ
n=0
failures=()
for a in "${ARCHS[@]}"; do
    while IFS=$'\t' read -r i key dyn; do
        yaml=$(ls "$src/$i"-*-hip-amdgcn-amd-amdhsa-"$a".opt.yaml)
        field() { sed -n "s/^  - $1: *'\\{0,1\\}\\([0-9]*\\)'\\{0,1\\}$/\\1/p" "$yaml" | head -n 1; }
        vspill=$(field VGPRSpill) sspill=$(field SGPRSpill) lds=$(field BytesLDS)
        printf '%-7s %-80s %5s %5s %5s %11s %7s %7s %4s\n' "$a" "${key:0:80}" "$(field NumVGPR)" "$(field NumAGPR)" \
            "$(field NumSGPR)" "$vspill/$sspill" "$lds" "$dyn" "$(field Occupancy)"
        # A missing remark is a failure too: nothing would have been checked.
        if [ -z "$vspill" ] || [ -z "$sspill" ] || [ -z "$lds" ]; then
            failures+=("$a $key: no resource-usage remark")
        elif [ "$vspill" != 0 ] || [ "$sspill" != 0 ]; then
            failures+=("$a $key: spills $vspill VGPRs, $sspill SGPRs")
        elif [ $((lds + dyn)) -gt 65536 ]; then
            failures+=("$a $key: $lds bytes of static and $dyn of dynamic LDS, over a workgroup's 65536")
        fi
        n=$((n + 1))
    done <"$src/index.tsv"
done
# The MI300 path: gfx940's builds of the e4m3fnuz W8A8 GEMMs and of the layout probe must run gfx94x's FP8
# MFMA (mma.cuh selects it by the architecture's macro: a wrong macro would fall back to decoding silently),
# gfx90a's must not (it has no such instruction). The code objects are unbundled from hipcc's output and
# disassembled (clang-offload-bundler and llvm-objdump come with hipcc's LLVM).
llvm=/usr/lib/llvm-15/bin
fp8_checked=0
while IFS=$'\t' read -r i key _; do
    case "$key" in "gemm_mma|a:f8e4m3fnuz|"* | mma_probe) ;; *) continue ;; esac
    for a in "${ARCHS[@]}"; do
        co="$out/$i-$a.co"
        "$llvm/clang-offload-bundler" --unbundle --type=o --input="$(ls "$src/$i"-*.hsaco)" \
            --targets="hipv4-amdgcn-amd-amdhsa--$a" --output="$co"
        count=$("$llvm/llvm-objdump" -d "$co" | grep -c "v_mfma_f32_16x16x32_fp8_fp8" || true)
        case "$a:$count" in
            gfx940:0) failures+=("$a $key: no v_mfma_f32_16x16x32_fp8_fp8 (the FP8 MFMA path is not compiled in)") ;;
            gfx940:*) ;;
            *:0) ;;
            *) failures+=("$a $key: $count v_mfma_f32_16x16x32_fp8_fp8 on a chip without FP8 MFMA") ;;
        esac
        [ "$a" = gfx940 ] && echo "gfx940 $key: $count v_mfma_f32_16x16x32_fp8_fp8"
        fp8_checked=$((fp8_checked + 1))
    done
done <"$src/index.tsv"
if [ "$fp8_checked" = 0 ]; then
    failures+=("no e4m3fnuz W8A8 GEMM or probe variant in the catalog: the FP8 MFMA check ran on nothing")
fi
if [ ${#failures[@]} -gt 0 ]; then
    printf 'check-hip-kernels: FAILED: %s\n' "${failures[@]}" >&2
    exit 1
fi
echo "check-hip-kernels: $n hipcc compilations (${ARCHS[*]}) and hiprtc for gfx90a passed in $((SECONDS - start)) s;" \
    "gfx942 / gfx950 not compiled (LLVM 15 here; they need >= 17 / >= 20)"
