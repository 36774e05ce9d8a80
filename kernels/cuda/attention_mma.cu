// MLA (absorbed, over the latent cache) on the tile layer (mma.cuh: 16 × 16 warp tiles, mma.sync on NVIDIA,
// MFMA on AMD CDNA), in FlashMLA's shape: a block takes HM = 32 heads of one query token of one sequence as
// the M dimension of both products, so each cache row of its split is read once into shared memory for all
// of them (V3's 128 heads: four blocks per token, which share the rows through L2), and walks the split's
// keys BN = 16 at a time through a two-stage ring (NVIDIA: cp.async, the copy of tile i + 1 runs while tile
// i is used; AMD: stage16 copies through registers, finished before tile i is used):
//   (1) scores S = Q·Kᵀ (32 × 16, K = 576): warp w takes m-tile w % 2 and part w / 2 of the 36 k-steps
//       (NVIDIA, 8 warps of 32: four parts of 9; AMD, 4 wavefronts of 64: two parts of 18), its Q tiles
//       held in registers for the whole split; the parts' sums meet in shared memory;
//   (2) online softmax, 8 threads per head, 2 keys each;
//   (3) O += P·V (32 × 512, K = 16): V is the first 512 columns of the same shared rows, K-major
//       (tile_load_b_trans: ldmatrix .trans on NVIDIA, 2-byte reads down a column on AMD); warp w owns
//       output columns COLS·w .. COLS·w + COLS − 1 of both m-tiles (COLS: 64 on NVIDIA, 128 on AMD).
// Grid, splits and partial results are attention.cu's (the same Params, filled by ops/attention.rs): x =
// (sequence, token, head group), y = key splits; one split writes out = O / l, several write (m, l, O) per
// head to `part` for attention_combine.cu. Decode is T = 1; prefill (T > 1, causal or not) runs the same
// way, one token per block.
//
// Only V3's head dims (D1 = 512, D2 = 64), bf16 queries and cache, rows and bases 16-byte aligned, targets
// with the tile layer (ops/attention.rs `mma_fits`); everything else runs on attention.cu. Static shared
// memory: two stages of 16 rows of 1168 bytes (the queries pass through them first, 37 376 bytes), the
// partial scores (PARTS · 2 KiB: 8 KiB on NVIDIA, 4 KiB on AMD), the bf16 weights (1536 bytes) and the
// per-head state: about 47.4 KiB of NVIDIA's 48 KiB static limit, 43.4 KiB of gfx90a's 64 KiB LDS (one block
// per CU: 4 wavefronts, one per SIMD). Registers per lane, the same on both: the Q tiles (36 words) and
// the output tiles (2 · COLS / 16 · TILE_SLOTS = 64 f32).
//
// Numerics (conformance rule "attention_tensor_core"): inputs are bf16, exact in the products.
//   score(u) = scale · (((s_0 + s_1) + …) + s_{PARTS−1}) in f32, s_q the f32 tile sum over part q's
//     KSTEPS / PARTS k-steps in ascending order (within a step the tensor core's order, the emulator's
//     ascending k);
//   per tile (keys past the split's end score −inf): M' = max(M, the tile's max), α = expf(M − M'),
//     p(u) = bf16(expf(score(u) − M')) rounded to nearest even — the one rounding attention.cu does not
//     have (relative error ≤ 2^-8): the tile products take bf16 operands —, l ← l·α + Σ p(u) over the
//     rounded weights (so the output is a mean with weights summing to one; each thread adds its 2 keys,
//     then a butterfly over the 8 threads of a head), O ← O·α + P·V (f32 tile products over the tile's
//     keys as above); M starts at −inf, so the first tile's α is 0;
//   one split: out = O / l, rounded once to out_t.
// Keys past a query's visible length are never read: in a tile cut short, the rows past its keys are set
// to zeros, since their weights are 0 but 0 · NaN is NaN and the stage held other data before (the heads'
// queries, for the first tile: a non-finite query would spread to every head). Device-side checks as
// attention.cu (key_range).

#define THREADS 256
#define WARPS (THREADS / DSV3_WARP)
#define HM 32
#define BN 16
#define D1 512
#define D2 64
#define QD (D1 + D2)
// 16-wide k-steps of the scores; the partial sums they are split into (one per warp of an m-tile: 4 on
// NVIDIA, 2 on AMD) and the k-steps of each.
#define KSTEPS (QD / 16)
#define PARTS (WARPS / 2)
#define PSTEPS (KSTEPS / PARTS)
// 16-byte pieces of a cache (or query) row.
#define PIECES (2 * QD / 16)
// Bytes between rows in shared memory: a row plus 16, so the 8 rows an ldmatrix reads fall in distinct
// banks (1168 = 73 · 16).
#define PITCH (2 * QD + 16)
// bf16 weights between rows of P: 48 bytes, conflict-free for ldmatrix too.
#define PP (BN + 8)
// Output columns per warp.
#define COLS (D1 / WARPS)

#if THREADS / 16 != BN || KSTEPS % PARTS != 0 || COLS % 16 != 0 || HM > 2 * BN || HM != 32
#error "attention_mma: the tile constants do not fit together"
#endif

struct alignas(16) Tiles {
    u8 rows[2 * BN * PITCH];  // two stages of BN cache rows; first the HM query rows
};
struct alignas(16) Weights {
    u16 p[HM * PP];  // bf16 bits of P, row = head
};

DSV3_DEV void zero16(u8* dst) {
    for (u32 w = 0; w < 4; w++) reinterpret_cast<u32*>(dst)[w] = 0;
}

// Keys c0 .. c0 + count of sequence b into the stage at `st`: 16 threads per row (one cache_row lookup
// each), pieces tid % 16 + 16·j; rows from count on are zeros.
DSV3_DEV void load_keys(u8* st, const Params& p, u64 b, u64 c0, u64 count) {
    const u32 x = threadIdx.x / 16;
    u8* dst = st + x * PITCH;
    const k_t* src = x < count ? p.k + cache_row(p, b, c0 + x) * QD : nullptr;
    for (u32 j = threadIdx.x % 16; j < PIECES; j += 16) {
        if (src) {
            mma::stage16(dst + 16 * j, src + 8 * j);
        } else {
            zero16(dst + 16 * j);
        }
    }
}

// Bounded to its block (kernels.rs declares THREADS as its largest, and launches refuse more): hipcc
// otherwise compiles for blocks of 1024 (four wavefronts per SIMD, 128 VGPRs each), where the Q and O tiles
// (100 words a lane) spill; at 256 a wavefront may use 512 and loses no occupancy, since the LDS already
// holds one block per CU. (NVRTC: 161 to 163 registers on sm_80 / 89 / 90a, no spill.)
DSV3_KERNEL void __launch_bounds__(THREADS) attention_mma(const Params p) {
    DSV3_SHARED Tiles tiles;
    DSV3_SHARED float sp[PARTS][HM][BN];  // the partial scores
    DSV3_SHARED Weights ps;
    DSV3_SHARED float alpha_s[HM];
    DSV3_SHARED float m_s[HM];
    DSV3_SHARED float l_s[HM];
    DSV3_SHARED u32 bad_page;

    const u32 tid = threadIdx.x, warp = tid / DSV3_WARP;
    const u64 grp = blockIdx.x % p.groups;
    const u64 t = (blockIdx.x / p.groups) % p.t_n;
    const u64 b = blockIdx.x / (p.groups * p.t_n);
    const u64 s = blockIdx.y;
    const u64 h0 = grp * HM;
    const u32 g_n = (u32)min_u64(HM, p.h_n - h0);
    const float scale = (float)p.scale;
    // This warp's m-tile and part of the scores.
    const u32 mt = warp % 2, part = warp / 2;

    u64 u_begin, u_end;
    key_range(p, b, t, s, grp == 0 && t == 0, THREADS, bad_page, u_begin, u_end);
    const u64 tiles_n = (u_end - u_begin + BN - 1) / BN;  // key_range keeps u_end ≥ u_begin

    // Queries of heads h0 .. h0 + HM (rows from g_n on zeros) through the stages, into A fragments.
    const u64 q_row = (b * p.t_n + t) * p.h_n + h0;
    mma::TileA qa[PSTEPS];
    if (tiles_n > 0) {  // the same for the whole block
        for (u32 i = tid; i < HM * PIECES; i += THREADS) {
            const u32 g = i / PIECES, j = i % PIECES;
            u8* dst = tiles.rows + g * PITCH + 16 * j;
            if (g < g_n) {
                const u64 r = q_row + g;
                mma::stage16(dst, 8 * j < D1 ? (const void*)(p.q + r * D1 + 8 * j)
                                             : (const void*)(p.qr + r * D2 + (8 * j - D1)));
            } else {
                zero16(dst);
            }
        }
        mma::stage_commit();
        mma::stage_wait<0>();
        dsv3_sync();
        DSV3_UNROLL
        for (u32 ks = 0; ks < PSTEPS; ks++) {
            qa[ks] = mma::tile_load_a(tiles.rows + 16 * mt * PITCH + 32 * (PSTEPS * part + ks), PITCH);
        }
        // Every warp has its fragments before the first tile overwrites the rows.
        dsv3_sync();
        load_keys(tiles.rows, p, b, u_begin, min_u64(BN, u_end - u_begin));
    }
    mma::stage_commit();

    // Running max and sum of head tid / 8 (the same in its 8 threads), and this warp's output columns.
    float m_run = -f32_inf(), l_run = 0.0f;
    mma::TileC o[2][COLS / 16];
    DSV3_UNROLL
    for (u32 i = 0; i < 2; i++) {
        DSV3_UNROLL
        for (u32 j = 0; j < COLS / 16; j++) o[i][j] = mma::tile_zero();
    }

    for (u64 i = 0; i < tiles_n; i++) {
        // Tile i has landed (every thread's pieces, after the barrier), and every warp is done with tile
        // i − 1, whose stage the copy of tile i + 1 refills.
        mma::stage_wait<0>();
        dsv3_sync();
        const u64 c0 = u_begin + i * BN;
        if (i + 1 < tiles_n) load_keys(tiles.rows + ((i + 1) % 2) * BN * PITCH, p, b, c0 + BN, min_u64(BN, u_end - c0 - BN));
        mma::stage_commit();
        const u8* st = tiles.rows + (i % 2) * BN * PITCH;

        // (1) This warp's part of the scores of its m-tile: the 16 keys are the Bᵀ rows.
        mma::TileC sacc = mma::tile_zero();
        DSV3_UNROLL
        for (u32 ks = 0; ks < PSTEPS; ks++) {
            mma::tile_mma_bf16(sacc, qa[ks], mma::tile_load_b(st + 32 * (PSTEPS * part + ks), PITCH));
        }
        DSV3_UNROLL
        for (u32 slot = 0; slot < mma::TILE_SLOTS; slot++) {
            sp[part][16 * mt + mma::tile_row(slot)][mma::tile_col(slot)] = sacc.v[slot];
        }
        dsv3_sync();

        // (2) Online softmax: thread tid takes keys x, x + 1 of head r.
        {
            const u32 r = tid / 8, x = 2 * (tid % 8);
            float sc[2], mx = -f32_inf();
            for (u32 e = 0; e < 2; e++) {
                float dot = sp[0][r][x + e];
                for (u32 q = 1; q < PARTS; q++) dot += sp[q][r][x + e];
                sc[e] = c0 + x + e < u_end ? scale * dot : -f32_inf();
                mx = fmaxf(mx, sc[e]);
            }
            for (int m = 1; m < 8; m *= 2) mx = fmaxf(mx, dsv3_shfl_xor(mx, m));
            const float m_new = fmaxf(m_run, mx);
            const float alpha = expf(m_run - m_new);
            float sum = 0.0f;
            for (u32 e = 0; e < 2; e++) {
                const dsv3::bf16 w = from_f32<dsv3::bf16>(expf(sc[e] - m_new));
                ps.p[r * PP + x + e] = w.bits;
                sum += to_f32(w);
            }
            for (int m = 1; m < 8; m *= 2) sum += dsv3_shfl_xor(sum, m);
            l_run = l_run * alpha + sum;
            m_run = m_new;
            if (tid % 8 == 0) alpha_s[r] = alpha;
        }
        dsv3_sync();

        // (3) O ← O·α + P·V: P's A tiles are heads 16·m .. + 15 of the weights, V's B tiles keys × 16 of
        // this warp's columns, K-major in the stage (tile_load_b_trans).
        mma::TileA pa[2];
        DSV3_UNROLL
        for (u32 m = 0; m < 2; m++) {
            DSV3_UNROLL
            for (u32 j = 0; j < COLS / 16; j++) {
                DSV3_UNROLL
                for (u32 slot = 0; slot < mma::TILE_SLOTS; slot++) {
                    o[m][j].v[slot] *= alpha_s[16 * m + mma::tile_row(slot)];
                }
            }
            pa[m] = mma::tile_load_a(reinterpret_cast<const u8*>(&ps.p[16 * m * PP]), 2 * PP);
        }
        DSV3_UNROLL
        for (u32 j = 0; j < COLS / 16; j++) {
            const mma::TileB v = mma::tile_load_b_trans(st + 2 * (COLS * warp + 16 * j), PITCH);
            DSV3_UNROLL
            for (u32 m = 0; m < 2; m++) mma::tile_mma_bf16(o[m][j], pa[m], v);
        }
    }
    // Only empty groups can be pending here; waiting for them keeps the count honest.
    mma::stage_wait<0>();

    if (tid % 8 == 0) {
        m_s[tid / 8] = m_run;
        l_s[tid / 8] = l_run;
    }
    dsv3_sync();
    DSV3_UNROLL
    for (u32 m = 0; m < 2; m++) {
        DSV3_UNROLL
        for (u32 j = 0; j < COLS / 16; j++) {
            DSV3_UNROLL
            for (u32 slot = 0; slot < mma::TILE_SLOTS; slot++) {
                const u32 h = 16 * m + mma::tile_row(slot), d = COLS * warp + 16 * j + mma::tile_col(slot);
                if (h < g_n) {
                    const u64 r = q_row + h;
                    if (p.splits == 1) {
                        p.out[r * D1 + d] = from_f32<out_t>(o[m][j].v[slot] / l_s[h]);
                    } else if (u_begin < u_end) {
                        p.part[(r * p.splits + s) * (D1 + 2) + 2 + d] = o[m][j].v[slot];
                    }
                }
            }
        }
    }
    // (A split with no keys leaves only m = −inf, l = 0.)
    if (p.splits > 1 && tid < g_n) {
        float* pr = p.part + ((q_row + tid) * p.splits + s) * (D1 + 2);
        pr[0] = m_s[tid];
        pr[1] = l_s[tid];
    }
}
