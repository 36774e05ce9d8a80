// C[M, N] = A[M, K] · B[N, K]ᵀ (gemm), or per expert (grouped_gemm), tiled through shared memory.
//
// A block of 256 threads computes a 64 × 64 tile of C, each thread a 4 × 4 register tile (rows ty + 16·i,
// columns tx + 16·j). K is walked in 32-wide steps: the block decodes a 64 × 32 slice of A and of B to f32
// into shared memory (stored k-major, so the compute loop reads rows / columns without bank conflicts),
// then every thread does its 4 × 4 × 32 products.
//
// Numerics. Operands are decoded exactly to f32 (FP8 codes without their scales; bf16 / f32 as they are).
// Products are accumulated in f32 over each 128-wide K block (the last may be partial) into a block partial;
// at the end of the block the partial is multiplied by that block's scale, a_scale[m, kb] · b_scale[n/128,
// kb] (one f32 product; a dense operand contributes 1), and added into the running f32 sum — DeepGEMM's
// order, with the scales outside the inner accumulation. A 64-column tile lies inside one 128-row block of
// B's scale grid, so a thread needs one B scale and one A scale per row for each K block. C is rounded once,
// from the f32 sum, when stored. (FMA contraction may fuse a product with its addition: products of
// bf16 / FP8 values are exact in f32, so it changes nothing there.)
//
// GROUPED = 1 (grouped_gemm): rows are grouped by expert (rows offsets[e] .. offsets[e+1] use b[e]);
// `offsets` (i32 [E + 1]) is read on the device, and each block finds its 64-row tile of one expert with
// gemm_common.cuh's row_tile.
//
// batched_gemm: the grid's z is the batch; A, B and C start batch_a / batch_b / batch_c elements further
// per batch (dense operands only).
//
// Switches: A_FP8 (A is FP8 codes with a_scales [M, ceil(K/128)]), B_FP8 (B is FP8 codes with b_scales
// [E, ceil(N/128), ceil(K/128)]), GROUPED.

#define BM 64
#define BN 64
#define BK 32
#define TM 4
#define TN 4
#define TX (BN / TN)
#define TY (BM / TM)
#define NT (TX * TY)

DSV3_KERNEL void gemm(const Params p) {
    DSV3_SHARED float As[BK][BM + 1];
    DSV3_SHARED float Bs[BK][BN + 1];
    const u32 t = threadIdx.x, tx = t % TX, ty = t / TX;
    const u64 n_total = p.n, k_total = p.k;
    const u64 n0 = (u64)blockIdx.y * BN;
    const RowTile tile = row_tile(p, BM);
    const u64 e = tile.e, m0 = tile.m0, m1 = tile.m1;
    if (tile.active) {
        const u64 z = blockIdx.z;
        const a_t* a = p.a + z * p.batch_a;
        const b_t* b = p.b + z * p.batch_b + e * n_total * k_total;
        c_t* c = p.c + z * p.batch_c;
        float acc[TM][TN], part[TM][TN];
        for (u32 i = 0; i < TM; i++) {
            for (u32 j = 0; j < TN; j++) {
                acc[i][j] = 0.0f;
                part[i][j] = 0.0f;
            }
        }
        for (u64 k0 = 0; k0 < k_total; k0 += BK) {
            for (u32 i = t; i < BM * BK; i += NT) {
                u32 r = i / BK, c = i % BK;
                u64 m = m0 + r, k = k0 + c;
                As[c][r] = m < m1 && k < k_total ? to_f32(a[m * p.lda + k]) : 0.0f;
            }
            for (u32 i = t; i < BN * BK; i += NT) {
                u32 r = i / BK, c = i % BK;
                u64 n = n0 + r, k = k0 + c;
                Bs[c][r] = n < n_total && k < k_total ? to_f32(b[n * k_total + k]) : 0.0f;
            }
            dsv3_sync();
            for (u32 c = 0; c < BK; c++) {
                float av[TM], bv[TN];
                for (u32 i = 0; i < TM; i++) av[i] = As[c][ty + i * TY];
                for (u32 j = 0; j < TN; j++) bv[j] = Bs[c][tx + j * TX];
                for (u32 i = 0; i < TM; i++) {
                    for (u32 j = 0; j < TN; j++) part[i][j] += av[i] * bv[j];
                }
            }
            dsv3_sync();
            // The end of a 128-wide K block (or of K): scale the block's partial into the sum.
            if ((k0 + BK) % QB == 0 || k0 + BK >= k_total) {
                const u64 kb = k0 / QB;
                const float sb = b_scale(p, e, n0, kb);
                for (u32 i = 0; i < TM; i++) {
                    const u64 m = m0 + ty + i * TY;
                    const float s = m < m1 ? a_scale(p, m, kb) * sb : 0.0f;
                    for (u32 j = 0; j < TN; j++) {
                        acc[i][j] += part[i][j] * s;
                        part[i][j] = 0.0f;
                    }
                }
            }
        }
        for (u32 i = 0; i < TM; i++) {
            const u64 m = m0 + ty + i * TY;
            for (u32 j = 0; j < TN; j++) {
                const u64 n = n0 + tx + j * TX;
                if (m < m1 && n < n_total) c[m * p.ldc + n] = from_f32<c_t>(acc[i][j]);
            }
        }
    }
}
