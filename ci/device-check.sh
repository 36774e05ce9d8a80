#!/usr/bin/env bash
# One call on a machine with a GPU (made for one NVIDIA H200, or an AMD MI300X through device-check-hip.sh;
# no internet and no Rust toolchain needed): runs a dsv3 binary built elsewhere through everything that needs
# the GPU and writes a dated report.
#
#   ci/device-check.sh [--backend cuda|hip] [--step S | --steps S,S...] [--force] [BINARY]
#       --backend  cuda (default) or hip
#       --step(s)  run only these steps, by number or name (list below); default: every step
#       --force    run a step again even when its part of today's report is there
#       BINARY     the dsv3 binary: $DSV3_BIN, else dist/dsv3, else target/release/dsv3
#
# Steps, each with a time limit well under 10 minutes, so that one call of a device runner (10 minutes at
# most) can always finish at least one step:
#   1 probe        `dsv3 probe`: the tensor-core tile layer's layouts (mma.sync, ldmatrix, cp.async; on
#                  AMD MFMA) bit for bit against the PTX ISA's / AMD's tables, which the emulator is held
#                  to as well, so the first GPU lent confirms them before any timing (an AMD GPU without
#                  MFMA, RDNA, fails it with "no tile layer")                                       60 s
#   2 gpu          the GPU as the vendor's tool sees it (nvidia-smi; amd-smi / rocm-smi)        30 s
#   3 devices      `dsv3 devices` opens the backend's device                                     60 s
#   4 conformance  the full conformance suite on the backend (DeepSeek-V3 shapes included), with
#                  its support matrix                                                     270 s (hip 330 s)
#   5 golden       both golden fixtures                                                         120 s
#   6 gemm         `dsv3 bench` rows for the GEMMs (bf16 and W8A8)                              150 s
#   7 mla          `dsv3 bench` rows for MLA decode                                              90 s
#   8 peer         cuBLAS / hipBLASLt through PyTorch (benches/peer/torch_gemm.py; on ROCm builds
#                  torch.cuda is HIP, and FP8 is given in the format the GPU computes in: e4m3fnuz on
#                  MI300), the same GEMM shapes                                                  90 s
#   9 goals        the step-execution goals: W8A8 decode GEMMs (1x7168x7168, 8x24576x1536), vocabulary
#                  sample / softmax, cuBLASLt against dsv3's kernels at M = 4096 (CUDA), and a decode
#                  step of the V2-Lite shape (2 layers) replayed as a graph against eager         240 s
# Resumable: each step writes its own part, <date>-<backend>-device-check.parts/<N>-<name>.md, and the report
# <date>-<backend>-device-check.md is rebuilt from the parts present after every call (with the support
# matrix <date>-SUPPORT-<backend>.md next to it). A step whose part is there is skipped unless --force, so a
# run cut short goes on where it stopped when called again: `ci/device-check.sh --steps 4,5` then
# `--steps 6,7,8`. Everything goes to $OUT when set (the device runner fetches that folder), else
# benches/results/. Every selected step runs even when one fails; the exit status is non-zero when any step
# of today's report failed.
set -uo pipefail
cd "$(dirname "$0")/.."

backend=cuda
selected=""
force=0
bin=""
usage() {
    echo "usage: ci/device-check.sh [--backend cuda|hip] [--step S | --steps S,S...] [--force] [BINARY]" >&2
    exit 2
}
while [ $# -gt 0 ]; do
    case "$1" in
    --backend) [ $# -ge 2 ] || usage; backend=$2; shift 2 ;;
    --step | --steps) [ $# -ge 2 ] || usage; selected="$selected,$2"; shift 2 ;;
    --force) force=1; shift ;;
    -*) usage ;;
    *) bin=$1; shift ;;
    esac
done
case "$backend" in cuda | hip) ;; *) echo "device-check: --backend cuda or hip" >&2; exit 2 ;; esac

# Step numbers and names, in the order they run.
STEPS=(probe gpu devices conformance golden gemm mla peer goals)
want=()
for s in ${selected//,/ }; do
    found=""
    for i in "${!STEPS[@]}"; do
        if [ "$s" = "$((i + 1))" ] || [ "$s" = "${STEPS[$i]}" ]; then found=$((i + 1)); fi
    done
    [ -n "$found" ] || { echo "device-check: no step '$s' (steps: 1-${#STEPS[@]} or ${STEPS[*]})" >&2; exit 2; }
    want+=("$found")
done
[ -n "$selected" ] || mapfile -t want < <(seq 1 ${#STEPS[@]})

bin=${bin:-${DSV3_BIN:-}}
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
parts="$out/$day-$backend-device-check.parts"
matrix="$out/$day-SUPPORT-$backend.md"
mkdir -p "$parts"

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

# step N NAME TIMEOUT_S COMMAND...: runs, times and records step N into its part, unless it is not selected or
# its part is there already (without --force). The part's first line holds the exit status for the summary.
step() {
    local number=$1 name=$2 limit=$3
    shift 3
    local part
    part="$parts/$number-${STEPS[$((number - 1))]}.md"
    [[ " ${want[*]} " == *" $number "* ]] || return 0
    if [ -f "$part" ] && [ $force = 0 ]; then
        echo "== $number $name: done earlier today ($part; --force runs it again)" >&2
        return 0
    fi
    echo "== $number $name: $*" >&2
    local start=$SECONDS status log
    log=$(mktemp)
    timeout "$limit" "$@" >"$log" 2>&1
    status=$?
    local took=$((SECONDS - start))
    [ $status -eq 124 ] && echo "(stopped after ${limit} s)" >>"$log"
    {
        echo "<!-- status $status -->"
        echo
        echo "## $number. $name"
        echo
        echo "\`$*\` — exit $status, ${took} s, $(date -u +%H:%M) UTC"
        echo
        echo '```'
        # Long outputs keep their head and tail.
        if [ "$(wc -l <"$log")" -gt 400 ]; then head -n 150 "$log"; echo "[...]"; tail -n 250 "$log"; else cat "$log"; fi
        echo '```'
    } >"$part.tmp"
    # A step stopped midway (the runner's own limit) leaves no part, so the next call runs it again.
    mv "$part.tmp" "$part"
    tail -n 5 "$log" >&2
    rm -f "$log"
}

if [ "$backend" = cuda ]; then
    step 1 "Tile-layer layout probe" 60 "$bin" probe --backend cuda
    step 2 "GPU (nvidia-smi)" 30 nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
else
    step 1 "Tile-layer layout probe" 60 "$bin" probe --backend hip
    # shellcheck disable=SC2016
    step 2 "GPU (amd-smi / rocm-smi)" 30 bash -c 'if command -v amd-smi >/dev/null; then amd-smi static --asic --vram
        elif command -v rocm-smi >/dev/null; then rocm-smi --showproductname --showmeminfo vram
        else echo "neither amd-smi nor rocm-smi found"; exit 1; fi'
fi
# The step fails unless the backend opened a device (an unavailable backend is a normal outcome for
# `dsv3 devices`, not for this check).
# shellcheck disable=SC2016
step 3 "dsv3 devices" 60 bash -c 'out=$("$1" devices 2>&1); echo "$out"; grep -q "^$2:0 " <<<"$out"' _ "$bin" "$backend"
# Every case must pass: an unsupported, unavailable or failing row fails the step. The first run compiles every
# kernel variant (cold cache); hiprtc is slower than NVRTC, hence the longer limit on AMD.
limit=270
[ "$backend" = hip ] && limit=330
# shellcheck disable=SC2016
step 4 "Full conformance suite on $backend" "$limit" bash -c 'set -o pipefail; rows=$(mktemp)
    "$1" conformance --backend "$3" --markdown "$2" | tee "$rows" || exit 1
    ! grep -Ew "fail|unsupported|unavailable|error" "$rows" >/dev/null' _ "$bin" "$matrix" "$backend"
step 5 "Golden fixtures on $backend" 120 "$bin" golden --backend "$backend"

# DeepSeek-V3 GEMMs, C[M,N] = A[M,K]·B[N,K]ᵀ: decode (M = 1) and prefill (M = 4096) of the MoE expert
# projections (gate/up 2048x7168, down 7168x2048), q_b (24576x1536), o_proj (7168x16384), and the lm_head.
shapes=(1x2048x7168 1x7168x2048 1x24576x1536 1x7168x16384 1x129280x7168 4096x2048x7168 4096x7168x2048 4096x24576x1536)
# A bench row that did not run (the backend unavailable, the op unsupported) fails the step.
# shellcheck disable=SC2016
step 6 "dsv3 bench: GEMMs on $backend" 150 bash -c 'bin=$1; backend=$2; shift 2
    for d in bf16 w8a8; do for s in "$@"; do
        row=$("$bin" bench --op gemm --backend "$backend" --shape "$s" --dtype "$d" --seconds 0.25 2>&1) || exit 1
        echo "$row"
        ! grep -Eqw "unavailable|unsupported|fail" <<<"$row" || exit 1
    done; done' _ "$bin" "$backend" "${shapes[@]}"
# shellcheck disable=SC2016
step 7 "dsv3 bench: MLA decode on $backend" 90 bash -c 'rows=$("$1" bench --op mla_attention --backend "$2" \
    --seconds 0.25 2>&1) || exit 1; echo "$rows"; ! grep -Eqw "unavailable|unsupported|fail" <<<"$rows"' \
    _ "$bin" "$backend"

# PyTorch's FP8 GEMM in the format this GPU's matrix cores take (what `dsv3 devices` lists under fp8).
fp8=e4m3fn
if grep -Eq "^ +fp8 +e4m3fnuz" <<<"$("$bin" devices 2>/dev/null)"; then fp8=e4m3fnuz; fi
peer="cuBLAS"
[ "$backend" = hip ] && peer="hipBLASLt"
torch_args=()
for s in "${shapes[@]}"; do torch_args+=(--shape "$s"); done
step 8 "$peer via PyTorch, same shapes (fp8 as $fp8)" 90 python3 benches/peer/torch_gemm.py "${torch_args[@]}" \
    --dtype bf16 --dtype fp8 --fp8-dtype "$fp8" --seconds 0.25

# Issue 15's goals, each row beside what it is judged against: the decode GEMMs against the copy bandwidth
# `dsv3 devices` measures; cuBLASLt (`--impl cublaslt`) against dsv3's kernels (`--impl ours`) and PyTorch
# (step 7) at M = 4096; sample and softmax at 4 x 129280 (among their conformance cases); and the V2-Lite
# shape cut to 2 layers (random weights), decode with graph replay against DSV3_GRAPH=0.
# shellcheck disable=SC2016
step 9 "Step-execution goals on $backend" 240 bash -c 'bin=$1; backend=$2; set -o pipefail
    run() { echo "\$ $*"; "$@" 2>&1 || exit 1; }
    for s in 1x7168x7168 8x24576x1536; do run "$bin" bench --op gemm --backend "$backend" --shape "$s" --dtype w8a8 --seconds 0.25; done
    if [ "$backend" = cuda ]; then for d in bf16 w8a8; do for i in ours cublaslt; do
        run "$bin" bench --op gemm --backend cuda --impl "$i" --shape 4096x7168x7168 --dtype "$d" --seconds 0.25
    done; done; fi
    run "$bin" bench --op sample --backend "$backend" --seconds 0.1
    run "$bin" bench --op softmax --backend "$backend" --seconds 0.1
    cfg=$(mktemp --suffix .json)
    python3 -c "import json,sys; c=json.load(open(sys.argv[1])); c[\"num_hidden_layers\"]=2; json.dump(c,open(sys.argv[2],\"w\"))" \
        model/tests/fixtures/configs/deepseek-v2-lite.json "$cfg" || exit 1
    for graph in 1 0; do echo "DSV3_GRAPH=$graph"
        DSV3_GRAPH=$graph run "$bin" bench model --config "$cfg" --backend "$backend" -p 16 -n 64 -b 1,8 --repetitions 3 --markdown
    done' _ "$bin" "$backend"

# The report: the header, every part present in step order, and a summary over them.
failed=()
missing=()
{
    echo "# $backend device check, $day"
    echo
    echo "Binary: \`$bin\` ($(stat -c %s "$bin") bytes); host: $(hostname); NVRTC directory: \`${DSV3_CUDA_LIB_DIR:-(default search)}\`; ROCM_PATH: \`${ROCM_PATH:-(unset)}\`."
    echo "Written by \`ci/device-check.sh --backend $backend\` in steps (parts under \`$(basename "$parts")/\`); each step shows its command, exit status, wall time and output."
    for i in "${!STEPS[@]}"; do
        part="$parts/$((i + 1))-${STEPS[$i]}.md"
        if [ ! -f "$part" ]; then missing+=("$((i + 1)) ${STEPS[$i]}"); continue; fi
        status=$(sed -n '1s/^<!-- status \([0-9]*\) -->$/\1/p' "$part")
        [ "$status" = 0 ] || failed+=("$((i + 1)) ${STEPS[$i]} (exit ${status:-unknown})")
        tail -n +2 "$part"
    done
    echo
    echo "## Summary"
    echo
    if [ ${#failed[@]} -eq 0 ]; then echo "Every step run passed."; else printf -- '- FAILED: %s\n' "${failed[@]}"; fi
    [ ${#missing[@]} -eq 0 ] || (IFS=,; echo "- not run yet: ${missing[*]}")
} >"$report"
echo "device-check: report at $report" >&2
[ ${#missing[@]} -eq 0 ] || (IFS=,; echo "device-check: steps not run yet: ${missing[*]}" >&2)
[ ${#failed[@]} -eq 0 ]
