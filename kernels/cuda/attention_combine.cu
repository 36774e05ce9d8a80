// Merges the per-split partial results of attention.cu for one query row (sequence, token, head) per
// block, threads over the output dimensions. Split s left (m_s, l_s, acc_s[DV]): its running max, its
// sum of expf(score − m_s) and its unnormalised weighted sum of values. A split with no keys (past the
// sequence's length, or past the query's position) left only m_s = −inf and l_s = 0, and is skipped: its
// acc_s was never written.
//
// Numerics, in f32: M = max_s m_s; w_s = expf(m_s − M);
//   out[d] = (Σ_s w_s · acc_s[d]) / (Σ_s w_s · l_s), both sums over the non-empty splits in ascending s,
//   rounded once to out_t.

struct Params {
    const float* part;  // [rows, splits, DV + 2]
    out_t* out;         // [rows, DV]
    u64 splits, dv;
};

DSV3_KERNEL void attention_combine(const Params p) {
    const u64 r = blockIdx.x;
    const u64 width = p.dv + 2;
    const float* pr = p.part + r * p.splits * width;
    float mx = -f32_inf();
    for (u64 s = 0; s < p.splits; s++) mx = fmaxf(mx, pr[s * width]);
    for (u64 d = threadIdx.x; d < p.dv; d += blockDim.x) {
        float num = 0.0f, den = 0.0f;
        for (u64 s = 0; s < p.splits; s++) {
            if (pr[s * width] == -f32_inf()) continue;
            const float w = expf(pr[s * width] - mx);
            den += w * pr[s * width + 1];
            num += w * pr[s * width + 2 + d];
        }
        p.out[r * p.dv + d] = from_f32<out_t>(num / den);
    }
}
