// moe_combine: out[t, c] = Σ_j weights[t, j] · expert_out[slot_rows[t·k + j], c]. Each term's inputs are
// decoded exactly to f32 and accumulated in f32 in j order from 0 (NVRTC / hipcc may fuse each multiply-add
// into one FMA: one rounding fewer than the host), then rounded once to out_t.
// Grid: x = token, y = chunks of blockDim.x columns, one thread per column (consecutive threads read
// consecutive columns of each expert row). A slot row outside 0..T·k is reported (once per token, by the
// thread of column 0) and its term skipped.

struct Params {
    const eo_t* eo;  // [T·k, N]
    u64 eo_stride;
    const i32* slot_rows;  // [T·k]
    const float* weights;  // [T, k]
    out_t* out;            // [T, N]
    u64 out_stride;
    u64 k, n, rows;  // rows = T·k
    u32* err;
    u64 site;
};

DSV3_KERNEL void moe_combine(const Params p) {
    const u64 t = blockIdx.x;
    const u64 c = (u64)blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= p.n) return;
    float acc = 0.0f;
    for (u64 j = 0; j < p.k; j++) {
        const u64 slot = t * p.k + j;
        const i32 r = p.slot_rows[slot];
        if (r < 0 || (u64)r >= p.rows) {
            if (c == 0) report(p.err, (u32)p.site, (u32)slot, (u32)r);
            continue;
        }
        acc += p.weights[slot] * to_f32(p.eo[(u64)r * p.eo_stride + c]);
    }
    p.out[t * p.out_stride + c] = from_f32<out_t>(acc);
}
