// C[M, N] = A[M, K] · B[N, K]ᵀ on tensor cores / matrix cores through mma.cuh's warp tile (NVIDIA: mma.sync,
// ldmatrix, cp.async; AMD CDNA: MFMA, per-lane LDS reads, copies through registers), for gemm,
// batched_gemm and grouped_gemm with more than 16 rows, in three forms:
//   * bf16 A and B (A_FP8 = B_FP8 = 0): tile_mma_bf16 (mma.sync m16n8k16; MFMA 16x16x16 bf16);
//   * W8A8 block FP8 (A_FP8 = B_FP8 = 1, one format in both: e4m3fn, or on AMD e4m3fnuz): tile_mma_fp8 with
//     the format's tag (mma.sync m16n8k32 e4m3; on AMD gfx94x's FP8 MFMA for e4m3fnuz, MI300's format, and
//     two bf16 MFMA on decoded codes otherwise), with the scales of gemm.cu's contract applied per 128-wide
//     K block outside the MMA (below);
//   * bf16 A × block-FP8 weights (A_FP8 = 0, B_FP8 = 1): B's codes staged as they are and decoded exactly
//     to bf16 fragments (mma.cuh's tile_load_b_fp8_as_bf16), tile_mma_bf16, B's scales as for W8A8.
// gemm.cu is the fallback where the device has no tile layer or the operands do not meet this kernel's
// conditions (ops/gemm.rs `mma_fits`: K · element size, A's row pitch and the batch strides multiples of 16
// bytes, A's and B's bases 16-byte aligned, so that every 16-byte piece of a row is an aligned copy).
//
// A block of 4 warps (128 threads; 256 on AMD's wave64) computes a BM × 64 tile of C. BM, the variant's row
// tile (ops/gemm.rs mma_row_tile), is 128 (large prefills with bf16 activations: each warp a 64 × 32
// half-column, 4 × 2 warp tiles, so each B fragment serves four A fragments), 64 (each warp a 32 × 32 quarter, 2 × 2 warp tiles of
// 16 × 16) or 16, one MMA M (decode batches of grouped_gemm, a few rows per expert: the four warps side by
// side along N, each one 16 × 16 warp tile), so that an expert with a handful of rows does not run 64 rows
// of MMAs; either way a block streams its expert's 64 weight rows once per row tile. K is walked in slices
// of 64 bytes of A (32 bf16 or 64 FP8 elements; B's rows hold the same elements: 32 bytes for FP8 weights
// under bf16 A) through a shared-memory ring of STAGES slices (the variant's: 3, or 4 at BM = 128): while
// the warps multiply slice kt, the copies of the next STAGES − 1 slices are in flight on NVIDIA (cp.async
// groups, one per slice); on AMD the copies finish as they are issued, so the ring only spares a barrier.
// The ring is dynamic shared memory, its bytes computed with the variant (ops/gemm.rs mma_ring_bytes):
// 19 KB at BM = 16, 30 KB at 64, 52 to 60 KB at 128 — above NVIDIA's 48 KiB, for which the launch path
// opts the function in; within a CDNA workgroup's 64 KiB of LDS. Each thread copies 16-byte pieces of one row; pieces past M (the expert's last
// row), N or K are zeros stored directly. Rows in shared memory are a slice plus 16 bytes apart, so the 8
// rows one ldmatrix (or the 2-byte loads of FP8 B fragments) reads fall in distinct banks. bf16 and W8A8
// are the same in bytes (mma.cuh: a warp tile reads 16 × 32 bytes of A and of Bᵀ whatever the element), so
// only the multiply differs.
//
// Numerics. bf16: products are exact in f32; each output is accumulated in f32 over the whole of K in
// ascending 16-wide steps (the order within a step is the tensor core's; the emulator adds in ascending k,
// see mma.cuh) and rounded once to c_t when stored — gemm.cu's per-block form with scales of 1. FP8
// weights (W8A8, or under bf16 A, whose scale is 1): each 128-wide K block (2 or 4 slices; the last may be
// partial) is accumulated into a fresh f32 fragment `part`, then promoted per accumulator slot at its
// (row, column) — mma.cuh's tile_row / tile_col — acc += part · (a_scale[row, kb] · b_scale[n / 128, kb]),
// exactly gemm.cu's order. A 64-column tile lies inside one 128-row block of B's scale grid, so the block
// needs one B scale per K block. The promotion every 128 is what bounds the FP8 tensor cores'
// reduced-precision accumulation on Hopper (DeepSeek-V3 report §3.3.2) to 128 products; the same holds for
// gfx94x's FP8 MFMA on e4m3fnuz, whose internal precision AMD does not document (the emulator adds its 32
// exact products in ascending k in f32, as for every MMA).
//
// GROUPED = 1 (grouped_gemm, contiguous layout): rows offsets[e] .. offsets[e+1] use b[e], the offsets read
// on the device; each block's BM-row tile lies inside one expert (gemm_common.cuh's row_tile): with BM = 16
// an expert with r rows takes ceil(r / 16) row tiles, and its weight tile is read once per row tile.
// batched_gemm: the grid's z is the batch; A, B and C start batch_a / batch_b / batch_c elements further
// per batch (dense operands only).

#if A_FP8 && !B_FP8
#error "gemm_mma: FP8 activations need FP8 weights (ops/gemm.rs mma_fits)"
#endif
// bf16 A × FP8 B: B's fragments are decoded from its codes instead of loaded by ldmatrix.
#define DECODE_B (B_FP8 && !A_FP8)

// BM comes from the variant. Warp tiles per warp along M (TI) and N (TJ), warps side by side along N.
#if BM == 128
#define TI 4
#define TJ 2
#define WARPS_N 2
#elif BM == 64
#define TI 2
#define TJ 2
#define WARPS_N 2
#elif BM == 16
#define TI 1
#define TJ 1
#define WARPS_N 4
#else
#error "gemm_mma: BM must be 128, 64 or 16 (ops/gemm.rs mma_row_tile)"
#endif
#if !defined(STAGES) || STAGES < 2
#error "gemm_mma: STAGES (the ring's slices, at least 2) comes from the variant (ops/gemm.rs mma_ring)"
#endif
#define BN 64
#define SLICE 64                     // bytes of A's rows per stage
#define KS (SLICE / sizeof(a_t))     // elements of K per stage
#define SLICE_B (KS * sizeof(b_t))   // bytes of B's rows per stage
#define PITCH_A (SLICE + 16)         // bytes between rows of a shared tile: a slice plus 16 of padding
#define PITCH_B (SLICE_B + 16)
#define THREADS (4 * DSV3_WARP)

struct alignas(16) Stage {
    u8 a[BM * PITCH_A];
    u8 b[BN * PITCH_B];
};
// The ring: the launch's dynamic shared memory, STAGES · (BM · PITCH_A + BN · PITCH_B) bytes.
typedef Stage Ring[STAGES];

// Slice `kt` of A's rows m0 .. m0 + BM (rows from m1 on are zeros) and B's rows n0 .. n0 + BN into `s`:
// BM · SLICE / 16 + BN · SLICE_B / 16 pieces of 16 bytes, taken by the block's threads in turn.
DSV3_DEV void load_slice(Stage* s, const Params& p, const a_t* a, const b_t* b, u64 m0, u64 m1, u64 n0, u64 kt) {
    const u64 k0 = kt * KS;
    const u32 a_pieces = BM * (SLICE / 16);
    for (u32 piece = threadIdx.x; piece < a_pieces + BN * (SLICE_B / 16); piece += THREADS) {
        const bool is_a = piece < a_pieces;
        const u32 per_row = (is_a ? SLICE : SLICE_B) / 16;
        const u32 q = is_a ? piece : piece - a_pieces;
        const u32 row = q / per_row, byte = 16 * (q % per_row);
        const u64 r = (is_a ? m0 : n0) + row, k = k0 + byte / (is_a ? sizeof(a_t) : sizeof(b_t));
        u8* dst = is_a ? s->a + row * PITCH_A + byte : s->b + row * PITCH_B + byte;
        if (r < (is_a ? m1 : p.n) && k < p.k) {
            mma::stage16(dst, is_a ? (const void*)(a + r * p.lda + k) : (const void*)(b + r * p.k + k));
        } else {
            for (u32 w = 0; w < 4; w++) reinterpret_cast<u32*>(dst)[w] = 0;
        }
    }
}

DSV3_KERNEL void gemm_mma(const Params p) {
    DSV3_DYNAMIC_SHARED(Ring, ring);
    const RowTile tile = row_tile(p, BM);
    if (!tile.active) return;  // the same for the whole block: no barrier below is left half-reached
    const u32 warp = threadIdx.x / DSV3_WARP;
    const u64 m0 = tile.m0, m1 = tile.m1, n0 = (u64)blockIdx.y * BN, z = blockIdx.z;
    const a_t* a = p.a + z * p.batch_a;
    const b_t* b = p.b + z * p.batch_b + tile.e * p.n * p.k;
    c_t* c = p.c + z * p.batch_c;
    // This warp's part of the tile: TI × TJ warp tiles from row wm, column wn.
    const u32 wm = 16 * TI * (warp / WARPS_N), wn = 16 * TJ * (warp % WARPS_N);

    // Every loop over the fragments is unrolled, so that they stay in registers (indexed by constants only).
    mma::TileC acc[TI][TJ];
#if B_FP8
    mma::TileC part[TI][TJ];  // the current 128-wide K block's sums
#endif
    DSV3_UNROLL
    for (u32 i = 0; i < TI; i++) {
        DSV3_UNROLL
        for (u32 j = 0; j < TJ; j++) {
            DSV3_UNROLL
            for (u32 slot = 0; slot < mma::TILE_SLOTS; slot++) {
                acc[i][j].v[slot] = 0.0f;
#if B_FP8
                part[i][j].v[slot] = 0.0f;
#endif
            }
        }
    }

    const u64 slices = (p.k + KS - 1) / KS;
    // Prologue: the first STAGES − 1 slices in flight, one group each (empty groups keep the count uniform).
    for (u64 kt = 0; kt < STAGES - 1; kt++) {
        if (kt < slices) load_slice(&ring[kt], p, a, b, m0, m1, n0, kt);
        mma::stage_commit();
    }
    for (u64 kt = 0; kt < slices; kt++) {
        // Slice kt's group is done once at most STAGES − 2 newer ones are pending; the barrier makes every
        // thread's pieces visible and ends every warp's reads of the stage refilled next.
        mma::stage_wait<STAGES - 2>();
        dsv3_sync();
        const u64 next = kt + STAGES - 1;
        if (next < slices) load_slice(&ring[next % STAGES], p, a, b, m0, m1, n0, next);
        mma::stage_commit();

        const Stage& s = ring[kt % STAGES];
        DSV3_UNROLL
        for (u32 kk = 0; kk < SLICE; kk += 32) {
            // 16-row tiles of A and Bᵀ: 32 bytes of A's rows from kk on (16 bf16 or 32 FP8 codes of K) and the
            // same K of Bᵀ's rows, kk bytes in, or kk / 2 (16 bytes) for FP8 weights under bf16 A.
            mma::TileA fa[TI];
            mma::TileB fb[TJ];
            DSV3_UNROLL
            for (u32 i = 0; i < TI; i++) fa[i] = mma::tile_load_a(&s.a[(wm + 16 * i) * PITCH_A + kk], PITCH_A);
            DSV3_UNROLL
            for (u32 j = 0; j < TJ; j++) {
#if DECODE_B
                fb[j] = mma::tile_load_b_fp8_as_bf16(&s.b[(wn + 16 * j) * PITCH_B + kk / 2], PITCH_B, b_t{});
#else
                fb[j] = mma::tile_load_b(&s.b[(wn + 16 * j) * PITCH_B + kk], PITCH_B);
#endif
            }
            DSV3_UNROLL
            for (u32 i = 0; i < TI; i++) {
                DSV3_UNROLL
                for (u32 j = 0; j < TJ; j++) {
#if A_FP8
                    mma::tile_mma_fp8(part[i][j], fa[i], fb[j], a_t{});
#elif B_FP8
                    mma::tile_mma_bf16(part[i][j], fa[i], fb[j]);
#else
                    mma::tile_mma_bf16(acc[i][j], fa[i], fb[j]);
#endif
                }
            }
        }
#if B_FP8
        // The end of a 128-wide K block (or of K): promote the block's sums with its scales.
        const u64 k_end = (kt + 1) * KS;
        if (k_end % QB == 0 || k_end >= p.k) {
            const u64 kb = kt * KS / QB;
            const float sb = b_scale(p, tile.e, n0, kb);
            DSV3_UNROLL
            for (u32 i = 0; i < TI; i++) {
                // A slot's row is the same in both column tiles (on NVIDIA, slots of one row repeat it).
                float s_row[mma::TILE_SLOTS];
                DSV3_UNROLL
                for (u32 slot = 0; slot < mma::TILE_SLOTS; slot++) {
                    const u64 m = m0 + wm + 16 * i + mma::tile_row(slot);
                    s_row[slot] = m < m1 ? a_scale(p, m, kb) * sb : 0.0f;
                }
                DSV3_UNROLL
                for (u32 j = 0; j < TJ; j++) {
                    DSV3_UNROLL
                    for (u32 slot = 0; slot < mma::TILE_SLOTS; slot++) {
                        acc[i][j].v[slot] += part[i][j].v[slot] * s_row[slot];
                        part[i][j].v[slot] = 0.0f;
                    }
                }
            }
        }
#endif
    }
    // Only empty groups can be pending here; waiting for them keeps the count honest.
    mma::stage_wait<0>();

    DSV3_UNROLL
    for (u32 i = 0; i < TI; i++) {
        DSV3_UNROLL
        for (u32 j = 0; j < TJ; j++) {
            DSV3_UNROLL
            for (u32 slot = 0; slot < mma::TILE_SLOTS; slot++) {
                const u64 m = m0 + wm + 16 * i + mma::tile_row(slot);
                const u64 n = n0 + wn + 16 * j + mma::tile_col(slot);
                if (m < m1 && n < p.n) c[m * p.ldc + n] = from_f32<c_t>(acc[i][j].v[slot]);
            }
        }
    }
}
