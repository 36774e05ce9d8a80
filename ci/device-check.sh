#!/usr/bin/env bash
# One call on a machine with a GPU (made for one NVIDIA H200, or an AMD MI300X through device-check-hip.sh;
# no internet and no Rust toolchain needed): runs a dsv3 binary built elsewhere through everything that needs
# the GPU and writes a dated report.
#
#   ci/device-check.sh [--backend cuda|hip] [BINARY]   (default cuda; binary: $DSV3_BIN, else dist/dsv3,
#                                                        else target/release/dsv3)
#
# Steps: the GPU as the vendor's tool (nvidia-smi; amd-smi / rocm-smi) and `dsv3 devices` see it; the full
# conformance suite on the backend (DeepSeek-V3 shapes included) with its support matrix; both golden fixtures;
# `dsv3 bench` rows for the GEMMs (bf16 and W8A8) and MLA decode, next to cuBLAS / hipBLASLt through PyTorch
# (benches/peer/torch_gemm.py; on ROCm builds torch.cuda is HIP, and FP8 is given in the format the GPU
# computes in: e4m3fnuz on MI300) in the same run. The report goes to $OUT when set (the device runner fetches
# that folder), else benches/results/, as <date>-<backend>-device-check.md with the support matrix next to
# it. Every step runs even when one fails; the exit status is non-zero when any failed. Each step has a time
# limit so the whole stays under ~10 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."

backend=cuda
if [ "${1:-}" = "--backend" ]; then
    backend=${2:-}
    shift 2
fi
case "$backend" in cuda | hip) ;; *) echo "device-check: --backend cuda or hip" >&2; exit 2 ;; esac

bin=${1:-${DSV3_BIN:-}}
if [ -z "$bin" ]; then
    for b in dist/dsv3 target/release/dsv3; do [ -x "$b" ] && { bin=$b; break; }; done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "device-check: no dsv3 binary (pass one, set DSV3_BIN, or put it at dist/dsv3)" >&2
    exit 2
fi

out=${OUT:-benches/results}
mkdir -p "$out"
day=$(date -u +%Y-%m-%d)
report="$out/$day-$backend-device-check.md"
matrix="$out/$day-SUPPORT-$backend.md"

# NVRTC: the machine's own (it matches its driver). dsv3 looks in the CUDA and pip locations itself; also ask
# Python where PyTorch's NVIDIA wheels are, for installs in virtual environments. (libamdhip64 and hiprtc are
# found on the loader path, $ROCM_PATH/lib and /opt/rocm/lib; DSV3_HIP_LIB / DSV3_HIPRTC_LIB name them.)
if [ "$backend" = cuda ] && [ -z "${DSV3_CUDA_LIB_DIR:-}" ] && command -v python3 >/dev/null 2>&1; then
    for d in $(python3 - 2>/dev/null <<'PY'
import os
try:
    import nvidia
    for p in nvidia.__path__:
        for sub in ("cu13/lib", "cuda_nvrtc/lib", "cu12/lib"):
            print(os.path.join(p, sub))
except Exception:
    pass
PY
    ); do
        if compgen -G "$d/libnvrtc.so*" >/dev/null; then export DSV3_CUDA_LIB_DIR=$d; break; fi
    done
fi
# A fresh kernel cache, so the run shows (and pays) every kernel compilation.
DSV3_KERNEL_CACHE=$(mktemp -d)
export DSV3_KERNEL_CACHE

failed=()
{
    echo "# $backend device check, $day"
    echo
    echo "Binary: \`$bin\` ($(stat -c %s "$bin") bytes); host: $(hostname); NVRTC directory: \`${DSV3_CUDA_LIB_DIR:-(default search)}\`; ROCM_PATH: \`${ROCM_PATH:-(unset)}\`."
    echo "Written by \`ci/device-check.sh --backend $backend\`; each step shows its command, exit status, wall time and output."
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

if [ "$backend" = cuda ]; then
    step "GPU (nvidia-smi)" 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
else
    # shellcheck disable=SC2016
    step "GPU (amd-smi / rocm-smi)" 30 bash -c 'if command -v amd-smi >/dev/null; then amd-smi static --asic --vram
        elif command -v rocm-smi >/dev/null; then rocm-smi --showproductname --showmeminfo vram
        else echo "neither amd-smi nor rocm-smi found"; exit 1; fi'
fi
# The step fails unless the backend opened a device (an unavailable backend is a normal outcome for
# `dsv3 devices`, not for this check).
# shellcheck disable=SC2016
step "dsv3 devices" 60 bash -c 'out=$("$1" devices 2>&1); echo "$out"; grep -q "^$2:0 " <<<"$out"' _ "$bin" "$backend"
# Every case must pass: an unsupported, unavailable or failing row fails the step. The first run compiles every
# kernel variant (cold cache); hiprtc is slower than NVRTC, hence the longer limit on AMD.
limit=270
[ "$backend" = hip ] && limit=330
# shellcheck disable=SC2016
step "Full conformance suite on $backend" "$limit" bash -c 'set -o pipefail; rows=$(mktemp)
    "$1" conformance --backend "$3" --markdown "$2" | tee "$rows" || exit 1
    ! grep -Ew "fail|unsupported|unavailable|error" "$rows" >/dev/null' _ "$bin" "$matrix" "$backend"
step "Golden fixtures on $backend" 120 "$bin" golden --backend "$backend"

# DeepSeek-V3 GEMMs, C[M,N] = A[M,K]·B[N,K]ᵀ: decode (M = 1) and prefill (M = 4096) of the MoE expert
# projections (gate/up 2048x7168, down 7168x2048), q_b (24576x1536), o_proj (7168x16384), and the lm_head.
shapes=(1x2048x7168 1x7168x2048 1x24576x1536 1x7168x16384 1x129280x7168 4096x2048x7168 4096x7168x2048 4096x24576x1536)
# A bench row that did not run (the backend unavailable, the op unsupported) fails the step.
# shellcheck disable=SC2016
step "dsv3 bench: GEMMs on $backend" 150 bash -c 'bin=$1; backend=$2; shift 2
    for d in bf16 w8a8; do for s in "$@"; do
        row=$("$bin" bench --op gemm --backend "$backend" --shape "$s" --dtype "$d" --seconds 0.25 2>&1) || exit 1
        echo "$row"
        ! grep -Eqw "unavailable|unsupported|fail" <<<"$row" || exit 1
    done; done' _ "$bin" "$backend" "${shapes[@]}"
# shellcheck disable=SC2016
step "dsv3 bench: MLA decode on $backend" 90 bash -c 'rows=$("$1" bench --op mla_attention --backend "$2" \
    --seconds 0.25 2>&1) || exit 1; echo "$rows"; ! grep -Eqw "unavailable|unsupported|fail" <<<"$rows"' \
    _ "$bin" "$backend"

# PyTorch's FP8 GEMM in the format this GPU's matrix cores take (what `dsv3 devices` lists under fp8).
fp8=e4m3fn
if grep -Eq "^ +fp8 +e4m3fnuz" <<<"$("$bin" devices 2>/dev/null)"; then fp8=e4m3fnuz; fi
peer="cuBLAS"
[ "$backend" = hip ] && peer="hipBLASLt"
torch_args=()
for s in "${shapes[@]}"; do torch_args+=(--shape "$s"); done
step "$peer via PyTorch, same shapes (fp8 as $fp8)" 90 python3 benches/peer/torch_gemm.py "${torch_args[@]}" \
    --dtype bf16 --dtype fp8 --fp8-dtype "$fp8" --seconds 0.25

{
    echo
    echo "## Summary"
    echo
    if [ ${#failed[@]} -eq 0 ]; then echo "Every step passed."; else printf -- '- FAILED: %s\n' "${failed[@]}"; fi
} >>"$report"
echo "device-check: report at $report" >&2
[ ${#failed[@]} -eq 0 ]
