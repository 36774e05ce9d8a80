// Row reductions over [R, N] row views (rows may be strided, elements within a row adjacent), one block
// per row; blockDim.x is a multiple of DSV3_WARP, at most 1024.
// OPK 0, rms_norm: out = w ⊙ (x · 1/√(mean(x²) + eps)).
// OPK 1, softmax: out = e^(x − max) / Σ e^(x − max).
// Numerics: inputs are decoded exactly to f32. Each thread accumulates its elements (c ≡ threadIdx.x mod
// blockDim.x, in increasing c) in f32; the block then combines them in a fixed order (a butterfly within
// each warp, then the warps' partials in warp order), so a row gives the same bits on every run. rms_norm:
// mean = Σx² / N, inv_rms = 1 / sqrtf(mean + eps) (both correctly rounded), then w · (x · inv_rms) in f32.
// softmax: max first, then Σ expf(x − max), then expf(x − max) / Σ (a correctly rounded division).
// One rounding, at `out`.

struct Params {
    u64 n;
    const x_t* x;
    u64 x_stride;
    const void* w;  // rms_norm's weight, w_t[n] (softmax: unused)
    out_t* out;
    u64 out_stride;
    double eps;  // rms_norm's eps (an f32 value)
};

DSV3_KERNEL void rows(const Params p) {
    const x_t* x = p.x + (u64)blockIdx.x * p.x_stride;
    out_t* out = p.out + (u64)blockIdx.x * p.out_stride;
#if OPK == 0
    const w_t* w = (const w_t*)p.w;
    float ss = 0.0f;
    for (u64 c = threadIdx.x; c < p.n; c += blockDim.x) {
        float v = to_f32(x[c]);
        ss += v * v;
    }
    float mean_square = block_sum(ss) / (float)p.n;
    float inv_rms = 1.0f / sqrtf(mean_square + (float)p.eps);
    for (u64 c = threadIdx.x; c < p.n; c += blockDim.x) {
        out[c] = from_f32<out_t>(to_f32(w[c]) * (to_f32(x[c]) * inv_rms));
    }
#else
    float m = -f32_inf();
    for (u64 c = threadIdx.x; c < p.n; c += blockDim.x) m = fmaxf(m, to_f32(x[c]));
    m = block_max(m);
    float s = 0.0f;
    for (u64 c = threadIdx.x; c < p.n; c += blockDim.x) s += expf(to_f32(x[c]) - m);
    s = block_sum(s);
    for (u64 c = threadIdx.x; c < p.n; c += blockDim.x) {
        out[c] = from_f32<out_t>(expf(to_f32(x[c]) - m) / s);
    }
#endif
}
