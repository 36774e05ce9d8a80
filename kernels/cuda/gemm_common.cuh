// What gemm.cu, gemm_mma.cu and gemm_decode.cu share (placed before each of them): the parameter block, the
// scale of a K block for either operand, grouped GEMM's expert offsets — read clamped to 0 .. rows, and
// checked against the contract (0 first, non-decreasing, `rows` last) by whichever block is asked to — and
// the tiled kernels' (gemm.cu, gemm_mma.cu) placement of a block's row tile among the experts.
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

// Grouped GEMM's row tiles (GROUPED = 1; tiled kernels). The grid's x index g counts the `bm`-row tiles of
// experts 0, 1, ... in order (the grid has ceil(rows / bm) + E of them, enough for any split); a tile never
// straddles two experts. Each block finds its expert with a block-wide prefix sum of the experts' tile
// counts, and blocks past the last tile (and so every expert without rows) do no work. Block (0, 0) checks
// the offsets against the contract; every block clamps what it reads to 0 .. rows, so bad offsets cannot
// make a kernel touch memory outside its arguments. Without GROUPED the tile is rows bm·g .. of expert 0.

#define NO_TILE 0xffffffffu

DSV3_DEV u32 tiles_of(const Params& p, u64 x, u32 bm) {
    u64 lo = offset_at(p, x), hi = offset_at(p, x + 1);
    return hi > lo ? (u32)((hi - lo + bm - 1) / bm) : 0u;
}

// Exclusive prefix sum of `v` over the block's threads in thread order: a butterfly scan within each
// warp, then the warps' totals through shared memory. Synchronises the block.
DSV3_DEV u32 block_exclusive_sum(u32 v) {
    DSV3_SHARED u32 warp_totals[1024 / DSV3_WARP];
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

// A block's rows m0 .. m1 (exclusive) of expert e's weights; `active` is the same for the whole block, so
// every thread reaches the kernel's barriers or none does.
struct RowTile {
    u64 e, m0, m1;
    bool active;
};

DSV3_DEV RowTile row_tile(const Params& p, u32 bm) {
#if GROUPED
    DSV3_SHARED u32 tile[3];  // expert, first row, end row
    if (blockIdx.x == 0 && blockIdx.y == 0) check_offsets(p);
    // Each thread counts the tiles of a run of consecutive experts; the prefix sum places the runs.
    const u32 t = threadIdx.x;
    const u64 per = (p.experts + blockDim.x - 1) / blockDim.x;
    const u64 x0 = t * per, x1 = x0 + per < p.experts ? x0 + per : p.experts;
    u32 mine = 0;
    for (u64 x = x0; x < x1; x++) mine += tiles_of(p, x, bm);
    if (t == 0) tile[0] = NO_TILE;
    u32 start = block_exclusive_sum(mine);
    const u32 g = blockIdx.x;
    if (g >= start && g < start + mine) {
        for (u64 x = x0; x < x1; x++) {
            u32 n_tiles = tiles_of(p, x, bm);
            if (g < start + n_tiles) {
                tile[0] = (u32)x;
                tile[1] = (u32)(offset_at(p, x) + (u64)(g - start) * bm);
                tile[2] = (u32)offset_at(p, x + 1);
                break;
            }
            start += n_tiles;
        }
    }
    dsv3_sync();
    RowTile r = {tile[0], tile[1], tile[2], tile[0] != NO_TILE};
    return r;
#else
    RowTile r = {0, (u64)blockIdx.x * bm, p.rows, true};
    return r;
#endif
}
