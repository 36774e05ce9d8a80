#!/usr/bin/env bash
# One call on a machine with an AMD GPU (made for one MI300X with ROCm installed, no internet and no Rust
# toolchain): runs a dsv3 binary built elsewhere through everything that needs the GPU and writes a dated
# report. The counterpart of ci/device-check.sh (NVIDIA). Never run on AMD hardware by its authors yet.
#
#   ci/device-check-hip.sh [BINARY]    (default: $DSV3_BIN, else dist/dsv3, else target/release/dsv3)
#
# Steps: the GPU as amd-smi / rocm-smi and `dsv3 devices` see it; the full conformance suite on `hip`
# (DeepSeek-V3 shapes included) with its support matrix; both golden fixtures on `hip`; `dsv3 bench` rows for
# the GEMMs (bf16 and W8A8) and MLA decode, next to hipBLASLt through PyTorch (benches/peer/torch_gemm.py; on
# ROCm builds torch.cuda is HIP) in the same run, with the FP8 format the GPU computes in (e4m3fnuz on MI300,
# e4m3fn on MI350). The report goes to $OUT when set, else benches/results/, as
# <date>-hip-device-check.md with the support matrix next to it. Every step runs even when one fails; the exit
# status is non-zero when any failed. Each step has a time limit so the whole stays under ~10 minutes.
#
# dsv3 finds libamdhip64 and hiprtc on the loader path and in $ROCM_PATH/lib and /opt/rocm/lib; DSV3_HIP_LIB
# and DSV3_HIPRTC_LIB name them explicitly.
set -uo pipefail
cd "$(dirname "$0")/.."

bin=${1:-${DSV3_BIN:-}}
if [ -z "$bin" ]; then
    for b in dist/dsv3 target/release/dsv3; do [ -x "$b" ] && { bin=$b; break; }; done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "device-check-hip: no dsv3 binary (pass one, set DSV3_BIN, or put it at dist/dsv3)" >&2
    exit 2
fi

out=${OUT:-benches/results}
mkdir -p "$out"
day=$(date -u +%Y-%m-%d)
report="$out/$day-hip-device-check.md"
matrix="$out/$day-SUPPORT-hip.md"

# A fresh kernel cache, so the run shows (and pays) every hiprtc compilation.
DSV3_KERNEL_CACHE=$(mktemp -d)
export DSV3_KERNEL_CACHE

failed=()
{
    echo "# HIP device check, $day"
    echo
    echo "Binary: \`$bin\` ($(stat -c %s "$bin") bytes); host: $(hostname); ROCM_PATH: \`${ROCM_PATH:-(unset)}\`."
    echo "Written by \`ci/device-check-hip.sh\`; each step shows its command, exit status, wall time and output."
} >"$report"

# step NAME TIMEOUT_S COMMAND...: runs, times and records one step.
step() {
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*" >&2
    local start=$SECONDS status
    local log
    log=$(mktemp)
    timeout "$limit" "$@" >"$log" 2>&1
    status=$?
    local took=$((SECONDS - start))
    [ $status -eq 0 ] || failed+=("$name (exit $status)")
    [ $status -eq 124 ] && echo "(stopped after ${limit} s)" >>"$log"
    {
        echo
        echo "## $name"
        echo
        echo "\`$*\` — exit $status, ${took} s"
        echo
        echo '```'
        # Long outputs keep their head and tail.
        if [ "$(wc -l <"$log")" -gt 400 ]; then head -n 150 "$log"; echo "[...]"; tail -n 250 "$log"; else cat "$log"; fi
        echo '```'
    } >>"$report"
    tail -n 5 "$log" >&2
    rm -f "$log"
}

# shellcheck disable=SC2016
step "GPU (amd-smi / rocm-smi)" 30 bash -c 'if command -v amd-smi >/dev/null; then amd-smi static --asic --vram
    elif command -v rocm-smi >/dev/null; then rocm-smi --showproductname --showmeminfo vram
    else echo "neither amd-smi nor rocm-smi found"; exit 1; fi'
# The step fails unless the HIP backend opened a device (an unavailable backend is a normal outcome for
# `dsv3 devices`, not for this check).
# shellcheck disable=SC2016
step "dsv3 devices" 60 bash -c 'out=$("$1" devices 2>&1); echo "$out"; grep -q "^hip:0 " <<<"$out"' _ "$bin"
# Every case must pass: an unsupported, unavailable or failing row fails the step. The first run compiles every
# kernel variant with hiprtc (cold cache), hence the longer limit than on NVIDIA.
# shellcheck disable=SC2016
step "Full conformance suite on hip" 330 bash -c 'set -o pipefail; rows=$(mktemp)
    "$1" conformance --backend hip --markdown "$2" | tee "$rows" || exit 1
    ! grep -Ew "fail|unsupported|unavailable|error" "$rows" >/dev/null' _ "$bin" "$matrix"
step "Golden fixtures on hip" 120 "$bin" golden --backend hip

# DeepSeek-V3 GEMMs, C[M,N] = A[M,K]·B[N,K]ᵀ: decode (M = 1) and prefill (M = 4096) of the MoE expert
# projections (gate/up 2048x7168, down 7168x2048), q_b (24576x1536), o_proj (7168x16384), and the lm_head.
shapes=(1x2048x7168 1x7168x2048 1x24576x1536 1x7168x16384 1x129280x7168 4096x2048x7168 4096x7168x2048 4096x24576x1536)
# shellcheck disable=SC2016
step "dsv3 bench: GEMMs on hip" 150 bash -c 'bin=$1; shift
    for d in bf16 w8a8; do for s in "$@"; do
        "$bin" bench --op gemm --backend hip --shape "$s" --dtype "$d" --seconds 0.25 || exit 1
    done; done' _ "$bin" "${shapes[@]}"
step "dsv3 bench: MLA decode on hip" 90 "$bin" bench --op mla_attention --backend hip --seconds 0.25

# PyTorch's FP8 GEMM in the format this GPU's matrix cores take (what `dsv3 devices` lists under fp8).
fp8=e4m3fn
if grep -Eq "^ +fp8 +e4m3fnuz" <<<"$("$bin" devices 2>/dev/null)"; then fp8=e4m3fnuz; fi
torch_args=()
for s in "${shapes[@]}"; do torch_args+=(--shape "$s"); done
step "hipBLASLt via PyTorch, same shapes ($fp8)" 90 python3 benches/peer/torch_gemm.py "${torch_args[@]}" \
    --dtype bf16 --dtype fp8 --fp8-dtype "$fp8" --seconds 0.25

{
    echo
    echo "## Summary"
    echo
    if [ ${#failed[@]} -eq 0 ]; then echo "Every step passed."; else printf -- '- FAILED: %s\n' "${failed[@]}"; fi
} >>"$report"
echo "device-check-hip: report at $report" >&2
[ ${#failed[@]} -eq 0 ]
