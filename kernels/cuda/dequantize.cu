// dequantize: block-FP8 weights [.., N, K] to f32 or bf16, out = decode(q) · scale of its 128 × 128 block.
//
// Numerics: the code is decoded exactly, multiplied by its block's scale in f32 (one correctly rounded
// product), and that f32 is rounded once more for a bf16 output, as the contract (and DeepSeek's
// weight_dequant) says.
//
// One thread per element of the contiguous [rows = E · N, K] view: consecutive threads read consecutive
// codes and write consecutive outputs.

#define QB 128

struct Params {
    u64 count, n, k;
    const codes_t* codes;
    const scales_t* scales;
    out_t* out;
};

DSV3_KERNEL void dequantize(const Params p) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.count) return;
    const u64 row = i / p.k, col = i % p.k;
    const u64 e = row / p.n, r = row % p.n;
    const u64 kb_n = (p.k + QB - 1) / QB, nb_n = (p.n + QB - 1) / QB;
    const float s = to_f32(p.scales[(e * nb_n + r / QB) * kb_n + col / QB]);
    p.out[i] = from_f32<out_t>(to_f32(p.codes[i]) * s);
}
