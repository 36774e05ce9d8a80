#!/bin/sh
# Do `cargo bench` (criterion, benches/benches/gemm.rs) and `dsv3 bench --op gemm` agree on one shape?
# Both time our f32 GEMM (A f32 [M,K] · B f32 [N,K]ᵀ → C f32) on the CPU; this prints each one's time and
# the ratio. Criterion's figure is its point estimate of the mean over its samples (the middle of
# `time: [lo est hi]`, with its interval); dsv3's is the mean over `--seconds` of calls after a warm-up.
# Decode shapes (M ≤ 8) are left out: criterion rotates their weights through 1 GiB of copies, dsv3 does not.
# dsv3 runs with DSV3_CPU_PIN=0: criterion calls the kernel on rayon's global pool, whose threads are not
# pinned, and on a busy machine pinned workers wait for their CPU (see the harness-agreement results doc).
# What remains different is the launch: dsv3 bench goes through the backend (argument binding, the
# finite-input scan of A), criterion calls the GEMM function.
#
#   benches/agree.sh [MxNxK] [rounds]        (default 512x2048x7168, 3 rounds, alternating the two)
set -eu
shape=${1:-512x2048x7168}
rounds=${2:-3}
cd "$(dirname "$0")/.."
cargo build --release -q -p dsv3
cargo bench -q -p dsv3-benches --bench gemm --no-run
dsv3=${CARGO_TARGET_DIR:-target}/release/dsv3
for round in $(seq "$rounds"); do
    crit=$(DSV3_BENCH_GEMM_SHAPES=$shape cargo bench -q -p dsv3-benches --bench gemm -- \
        "gemm/$shape/ours_f32\$" 2>&1 |
        grep -A2 "gemm/$shape/ours_f32" | grep -o 'time: *\[[^]]*\]')
    # `time:   [lo unit est unit hi unit]`: the estimate in ms.
    crit_ms=$(echo "$crit" | awk '{gsub(/[][]/, ""); v=$4; u=$5;
        if (u == "s") v *= 1000; else if (u == "µs" || u == "us") v /= 1000; print v}')
    ours=$(DSV3_CPU_PIN=0 "$dsv3" bench --op gemm --dtype f32 --shape "$shape" --seconds 5 --json | tail -1)
    ours_ms=$(echo "$ours" | sed 's/.*"ms":\([0-9.e+-]*\).*/\1/')
    echo "round $round: criterion $crit -> ${crit_ms} ms; dsv3 bench ${ours_ms} ms;" \
        "dsv3 / criterion $(awk -v a="$ours_ms" -v b="$crit_ms" 'BEGIN {printf "%.3f", a / b}')"
done
