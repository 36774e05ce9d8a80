// C = the sum of gemm_decode's split-K partials: c[m, n] = Σ_s partial[s, m, n], added in split order
// 0, 1, ... in f32 and rounded once, so the result is the same whatever order the splits ran in.
// One thread per element of C.

struct Params {
    u64 rows, n, splits;
    const float* partial;
    c_t* c;
    u64 ldc;
};

DSV3_KERNEL void gemm_split_sum(const Params p) {
    const u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= p.rows * p.n) return;
    const u64 m = i / p.n, n = i % p.n;
    float sum = 0.0f;
    for (u64 s = 0; s < p.splits; s++) sum += p.partial[(s * p.rows + m) * p.n + n];
    p.c[m * p.ldc + n] = from_f32<c_t>(sum);
}
