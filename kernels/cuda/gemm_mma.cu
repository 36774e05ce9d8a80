// C[M, N] = A[M, K] · B[N, K]ᵀ for bf16 A and B on tensor cores (mma.cuh: mma.sync m16n8k16, ldmatrix,
// cp.async), for gemm and batched_gemm with more than 16 rows; gemm.cu is the fallback where the device has
// no mma.sync or the operands do not meet this kernel's conditions (ops/gemm.rs: K a multiple of 8, A's
// and B's bases, A's row pitch and the batch strides multiples of 16 bytes, so that every 16-byte piece of a
// row is an aligned cp.async).
//
// A block of 4 warps computes a 64 × 64 tile of C, each warp a 32 × 32 quarter (2 × 4 mma tiles of
// 16 × 8). K is walked in 32-wide slices through a 3-stage shared-memory ring: while the warps multiply
// slice kt, the copies of slices kt + 1 and kt + 2 are in flight (cp.async groups, one per slice). Each
// thread copies 16-byte pieces (8 elements of one row); pieces past M, N or K are zeros stored directly. Rows
// in shared memory are 40 elements (80 bytes) apart, so the 8 rows one ldmatrix reads fall in distinct banks.
//
// Numerics: bf16 products are exact in f32; each output is accumulated in f32 over the whole of K in
// ascending 16-wide steps (the order within a step is the tensor core's; the emulator adds in ascending k,
// see mma.cuh) and rounded once to c_t when stored. Dense operands only: the scales of gemm.cu's contract
// are 1, so its per-128-block partials are the same sum.

#define BM 64
#define BN 64
#define BK 32
#define STAGES 3
#define PITCH 40  // elements between rows of a shared tile: BK plus 16 bytes of padding
#define THREADS 128

struct alignas(16) Stage {
    dsv3::bf16 a[BM * PITCH];
    dsv3::bf16 b[BN * PITCH];
};

// Slice `kt` of A's rows m0 .. m0 + BM and B's rows n0 .. n0 + BN into `s`: BM·BK/8 + BN·BK/8 pieces of 16
// bytes, taken by the block's threads in turn.
DSV3_DEV void load_slice(Stage* s, const Params& p, const dsv3::bf16* a, const dsv3::bf16* b, u64 m0, u64 n0,
                         u64 kt) {
    const u64 k0 = kt * BK;
    for (u32 piece = threadIdx.x; piece < (BM + BN) * (BK / 8); piece += THREADS) {
        const bool is_a = piece < BM * (BK / 8);
        const u32 q = is_a ? piece : piece - BM * (BK / 8);
        const u32 row = q / (BK / 8), col = 8 * (q % (BK / 8));
        const u64 r = (is_a ? m0 : n0) + row, k = k0 + col;
        dsv3::bf16* dst = (is_a ? s->a : s->b) + row * PITCH + col;
        if (r < (is_a ? p.rows : p.n) && k < p.k) {
            mma::cp_async16(dst, is_a ? a + r * p.lda + k : b + r * p.k + k);
        } else {
            for (u32 i = 0; i < 8; i++) dst[i].bits = 0;
        }
    }
}

DSV3_KERNEL void gemm_mma(const Params p) {
    DSV3_SHARED Stage ring[STAGES];
    const u32 lane = dsv3_lane(), warp = threadIdx.x / 32;
    const u64 m0 = (u64)blockIdx.x * BM, n0 = (u64)blockIdx.y * BN, z = blockIdx.z;
    const dsv3::bf16* a = p.a + z * p.batch_a;
    const dsv3::bf16* b = p.b + z * p.batch_b;
    c_t* c = p.c + z * p.batch_c;
    // This warp's quarter of the tile.
    const u32 wm = 32 * (warp / 2), wn = 32 * (warp % 2);

    // Every loop over acc is unrolled, so that it stays in registers (indexed by constants only).
    mma::FragC acc[2][4];
    DSV3_UNROLL
    for (u32 i = 0; i < 2; i++) {
        DSV3_UNROLL
        for (u32 j = 0; j < 4; j++) acc[i][j] = mma::zero_c();
    }

    const u64 slices = (p.k + BK - 1) / BK;
    // Prologue: the first STAGES − 1 slices in flight, one group each (empty groups keep the count uniform).
    for (u64 kt = 0; kt < STAGES - 1; kt++) {
        if (kt < slices) load_slice(&ring[kt], p, a, b, m0, n0, kt);
        mma::cp_async_commit();
    }
    for (u64 kt = 0; kt < slices; kt++) {
        // Slice kt's group is done once at most STAGES − 2 newer ones are pending; the barrier makes every
        // thread's pieces visible and ends every warp's reads of the stage refilled next.
        mma::cp_async_wait<STAGES - 2>();
        dsv3_sync();
        const u64 next = kt + STAGES - 1;
        if (next < slices) load_slice(&ring[next % STAGES], p, a, b, m0, n0, next);
        mma::cp_async_commit();

        const Stage& s = ring[kt % STAGES];
        DSV3_UNROLL
        for (u32 kk = 0; kk < BK; kk += 16) {
            // A: one x4 per 16-row tile (lane l: row l % 16, elements 8·(l / 16)); B: one x4 per pair of
            // 8-column tiles (lane l: row (l % 8) + 8·(l / 16), elements 8·((l / 8) % 2)). See mma.cuh.
            mma::FragA fa[2];
            DSV3_UNROLL
            for (u32 i = 0; i < 2; i++) {
                mma::ldmatrix_x4(fa[i].r, &s.a[(wm + 16 * i + lane % 16) * PITCH + kk + 8 * (lane / 16)]);
            }
            mma::FragB fb[4];
            DSV3_UNROLL
            for (u32 j = 0; j < 2; j++) {
                u32 r[4];
                mma::ldmatrix_x4(r, &s.b[(wn + 16 * j + lane % 8 + 8 * (lane / 16)) * PITCH + kk + 8 * ((lane / 8) % 2)]);
                fb[2 * j] = {{r[0], r[1]}};
                fb[2 * j + 1] = {{r[2], r[3]}};
            }
            DSV3_UNROLL
            for (u32 i = 0; i < 2; i++) {
                DSV3_UNROLL
                for (u32 j = 0; j < 4; j++) mma::mma_bf16(acc[i][j], fa[i], fb[j]);
            }
        }
    }
    // Only empty groups can be pending here; waiting for them keeps the count honest.
    mma::cp_async_wait<0>();

    DSV3_UNROLL
    for (u32 i = 0; i < 2; i++) {
        DSV3_UNROLL
        for (u32 j = 0; j < 4; j++) {
            DSV3_UNROLL
            for (u32 slot = 0; slot < 4; slot++) {
                const u64 m = m0 + wm + 16 * i + mma::acc_row(slot);
                const u64 n = n0 + wn + 8 * j + mma::acc_col(slot);
                if (m < p.rows && n < p.n) c[m * p.ldc + n] = from_f32<c_t>(acc[i][j].v[slot]);
            }
        }
    }
}
