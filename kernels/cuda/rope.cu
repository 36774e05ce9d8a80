// Rotary embedding on interleaved pairs of x [T, H, D] (inner stride 1, token and head strides free), one
// thread per (token, head, pair i):
//   out[2i] = x[2i]·cos φ − x[2i+1]·sin φ,   out[2i+1] = x[2i]·sin φ + x[2i+1]·cos φ,
//   φ = f32(f32(position) · f'_i).
// Numerics: f'_i is RopeParams::inv_freqs, computed on the host and passed in the parameter block (f32
// values held exactly in doubles); the angle is that one f32 product, as the contract fixes it. sinf and
// cosf are the full-range f32 functions (angles reach 163840 rad; no fast-math variants), the rotation is
// f32 (a compiler may fuse a multiply and the add into an FMA: one rounding fewer). One rounding, at `out`.

struct Params {
    u64 tokens, heads, pairs;
    const x_t* x;
    u64 x_token_stride, x_head_stride;
    const i32* positions;
    out_t* out;
    u64 out_token_stride, out_head_stride;
    double freq[MAX_PAIRS];  // f'_i for i < pairs; the rest unused
};

DSV3_KERNEL void rope(const Params p) {
    u64 e = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= p.tokens * p.heads * p.pairs) return;
    u64 i = e % p.pairs;
    u64 h = (e / p.pairs) % p.heads;
    u64 t = e / (p.pairs * p.heads);
    float angle = (float)p.positions[t] * (float)p.freq[i];
    float sin_a = sinf(angle), cos_a = cosf(angle);
    const x_t* x = p.x + t * p.x_token_stride + h * p.x_head_stride + 2 * i;
    float x0 = to_f32(x[0]), x1 = to_f32(x[1]);
    out_t* out = p.out + t * p.out_token_stride + h * p.out_head_stride + 2 * i;
    out[0] = from_f32<out_t>(x0 * cos_a - x1 * sin_a);
    out[1] = from_f32<out_t>(x0 * sin_a + x1 * cos_a);
}
