// What gemm.cu and gemm_decode.cu share (placed before each of them): the parameter block, the scale of a
// K block for either operand, and grouped GEMM's expert offsets — read clamped to 0 .. rows, and checked
// against the contract (0 first, non-decreasing, `rows` last) by whichever block is asked to.
// Switches: A_FP8 (A is FP8 codes with a_scales [M, ceil(K/128)]), B_FP8 (B is FP8 codes with b_scales
// [E, ceil(N/128), ceil(K/128)]).

#define QB 128

struct Params {
    u64 rows, n, k;
    const a_t* a;
    u64 lda;
    const as_t* a_scales;
    const b_t* b;
    const bs_t* b_scales;
    c_t* c;
    u64 ldc;
    const i32* offsets;
    u64 experts;
    u32* err;
    u64 site;
    // batched_gemm: elements between consecutive batches of A, B and C; the batch is the grid's z
    // (0 everywhere for gemm and grouped_gemm, whose grid has one z).
    u64 batch_a, batch_b, batch_c;
    // gemm_decode only (gemm.cu ignores them): K per split and the f32 partials [splits, rows, N] when the
    // grid's y splits K (0 / null otherwise), and whether B's rows may be read in aligned 16-byte runs.
    u64 k_split;
    float* partial;
    u64 vec;
};

// The scales of K block kb: A's for row m, B's for expert e and column n (1 for a dense operand).
DSV3_DEV float a_scale(const Params& p, u64 m, u64 kb) {
#if A_FP8
    return to_f32(p.a_scales[m * ((p.k + QB - 1) / QB) + kb]);
#else
    return 1.0f;
#endif
}
DSV3_DEV float b_scale(const Params& p, u64 e, u64 n, u64 kb) {
#if B_FP8
    const u64 kb_n = (p.k + QB - 1) / QB, nb_n = (p.n + QB - 1) / QB;
    return to_f32(p.b_scales[(e * nb_n + n / QB) * kb_n + kb]);
#else
    return 1.0f;
#endif
}

// offsets[x] clamped to 0 .. rows.
DSV3_DEV u64 offset_at(const Params& p, u64 x) {
    i64 v = p.offsets[x];
    if (v < 0) return 0;
    return (u64)v > p.rows ? p.rows : (u64)v;
}

DSV3_DEV void check_offsets(const Params& p) {
    for (u64 x = threadIdx.x; x < p.experts; x += blockDim.x) {
        i32 lo = p.offsets[x], hi = p.offsets[x + 1];
        if (x == 0 && lo != 0) report(p.err, (u32)p.site, 0u, (u32)lo);
        if (hi < lo) report(p.err, (u32)p.site, (u32)(x + 1), (u32)hi);
        if (x + 1 == p.experts && (i64)hi != (i64)p.rows) report(p.err, (u32)p.site, (u32)(x + 1), (u32)hi);
    }
}
