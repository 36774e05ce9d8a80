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
// `offsets` (i32 [E + 1]) is read on the device. The grid's x index g counts the 64-row tiles of experts
// 0, 1, ... in order (the grid has ceil(rows/64) + E of them, enough for any split); each block finds its
// expert with a block-wide prefix sum of the experts' tile counts, and blocks past the last tile (and so
// every expert without rows) do no work. Block (0, 0) checks the offsets against the contract (0 first,
// non-decreasing, `rows` last); every block clamps what it reads to 0 .. rows, so bad offsets cannot make a
// kernel touch memory outside its arguments.
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
#define NO_TILE 0xffffffffu

DSV3_DEV u32 tiles_of(const Params& p, u64 x) {
    u64 lo = offset_at(p, x), hi = offset_at(p, x + 1);
    return hi > lo ? (u32)((hi - lo + BM - 1) / BM) : 0u;
}

// Exclusive prefix sum of `v` over the block's threads in thread order: a butterfly scan within each
// warp, then the warps' totals through shared memory. Synchronises the block.
DSV3_DEV u32 block_exclusive_sum(u32 v, u32* warp_totals) {
    u32 lane = dsv3_lane(), warp = threadIdx.x / DSV3_WARP;
    u32 inclusive = v, group = v;
    for (u32 m = 1; m < DSV3_WARP; m *= 2) {
        u32 other = dsv3_shfl_xor(group, (int)m);
        if (lane & m) inclusive += other;
        group += other;
    }
    if (lane == 0) warp_totals[warp] = group;
    dsv3_sync();
    u32 before = 0;
    for (u32 w = 0; w < warp; w++) before += warp_totals[w];
    return before + inclusive - v;
}

DSV3_KERNEL void gemm(const Params p) {
    DSV3_SHARED float As[BK][BM + 1];
    DSV3_SHARED float Bs[BK][BN + 1];
    const u32 t = threadIdx.x, tx = t % TX, ty = t / TX;
    const u64 n_total = p.n, k_total = p.k;
    const u64 n0 = (u64)blockIdx.y * BN;
    u64 e = 0, m0 = (u64)blockIdx.x * BM, m1 = p.rows;
#if GROUPED
    DSV3_SHARED u32 tile[3];  // expert, first row, end row
    DSV3_SHARED u32 warp_totals[NT / DSV3_WARP];
    if (blockIdx.x == 0 && blockIdx.y == 0) check_offsets(p);
    // Each thread counts the tiles of a run of consecutive experts; the prefix sum places the runs.
    const u64 per = (p.experts + NT - 1) / NT;
    const u64 x0 = t * per, x1 = x0 + per < p.experts ? x0 + per : p.experts;
    u32 mine = 0;
    for (u64 x = x0; x < x1; x++) mine += tiles_of(p, x);
    if (t == 0) tile[0] = NO_TILE;
    u32 start = block_exclusive_sum(mine, warp_totals);
    const u32 g = blockIdx.x;
    if (g >= start && g < start + mine) {
        for (u64 x = x0; x < x1; x++) {
            u32 n_tiles = tiles_of(p, x);
            if (g < start + n_tiles) {
                tile[0] = (u32)x;
                tile[1] = (u32)(offset_at(p, x) + (u64)(g - start) * BM);
                tile[2] = (u32)offset_at(p, x + 1);
                break;
            }
            start += n_tiles;
        }
    }
    dsv3_sync();
    e = tile[0];
    m0 = tile[1];
    m1 = tile[2];
    const bool active = tile[0] != NO_TILE;
#else
    const bool active = true;
#endif
    // `active` is the same for the whole block, so every thread reaches the barriers below or none does.
    if (active) {
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
