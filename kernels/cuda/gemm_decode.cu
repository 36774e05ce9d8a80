// C = A · Bᵀ for few rows (decode): gemm with M ≤ MAXM, or grouped_gemm with few rows. Bandwidth-bound,
// so the kernel is built to read each weight once: one warp per column n of C (blockDim / DSV3_WARP
// columns per block), its lanes splitting K in runs of RUN consecutive elements, each run one aligned
// vector load where the row allows (16 bytes of FP8 codes), every lane computing all rows of A at once.
// A is staged by the block in KC-wide chunks, decoded to f32 into shared memory once for all the block's
// warps, in a layout where the lanes of a warp read consecutive words (element k of a chunk at
// (k % RUN) · PITCH + k / RUN).
//
// Numerics. Operands are decoded exactly to f32 (FP8 codes without their scales). A lane accumulates the
// products of one run in f32 (a run never crosses a 128-wide K block, 128 being a multiple of RUN),
// multiplies that partial by the block's scale, a_scale[m, kb] · b_scale[n/128, kb] (one f32 product; a
// dense operand contributes 1), and adds it into its f32 sum; the lanes' sums are then added with warp_sum
// (fixed butterfly order). C is rounded once when stored. This is gemm.cu's order (scales outside the
// accumulation of products) with runs of RUN products in place of whole 128-wide blocks.
//
// GROUPED = 1 (grouped_gemm): one row per block (grid y); its expert e (offsets[e] <= row < offsets[e+1],
// i32 [E + 1] read on the device) is found by a binary search that every thread does alike. Block (0, 0)
// checks the offsets against the contract; the search reads them clamped to 0 .. rows, so bad offsets
// cannot make it leave its arguments.
//
// batched_gemm: the grid's z is the batch, as in gemm.cu.
//
// Switches: A_FP8, B_FP8, GROUPED, as in gemm.cu.

#define MAXM 8
#define RUN 16
// A chunk: a whole number of warp steps (DSV3_WARP · RUN) for warps of 32 and 64 lanes.
#define KC 1024
#define PITCH (KC / RUN + 1)

// The last expert x < E with offsets[x] <= row: the one whose rows hold `row` (experts without rows share
// their offset with the next and are passed over).
DSV3_DEV u64 expert_of(const Params& p, u64 row) {
    u64 lo = 0, hi = p.experts;
    while (hi - lo > 1) {
        u64 mid = (lo + hi) / 2;
        if (offset_at(p, mid) <= row) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// One run of B's row: RUN elements from k.
struct alignas(RUN * sizeof(b_t)) BRun {
    b_t v[RUN];
};

// B's row from k, decoded: one vector load when the run is whole and aligned, else element by element
// (zeros past K).
DSV3_DEV void load_run(const b_t* row, u64 k, u64 k_total, float* w) {
    const b_t* src = row + k;
    if (k + RUN <= k_total && (u64)src % sizeof(BRun) == 0) {
        const BRun r = *(const BRun*)src;
        for (u32 j = 0; j < RUN; j++) w[j] = to_f32(r.v[j]);
    } else {
        for (u32 j = 0; j < RUN; j++) w[j] = k + j < k_total ? to_f32(src[j]) : 0.0f;
    }
}

DSV3_KERNEL void gemm_decode(const Params p) {
    DSV3_SHARED float As[MAXM * RUN * PITCH];
    const u32 lane = dsv3_lane();
    const u64 n = (u64)blockIdx.x * (blockDim.x / DSV3_WARP) + threadIdx.x / DSV3_WARP;
    const u64 n_total = p.n, k_total = p.k;
    u64 e = 0, m0 = 0;
    u32 rows = (u32)p.rows;
#if GROUPED
    if (blockIdx.x == 0 && blockIdx.y == 0) check_offsets(p);
    m0 = blockIdx.y;
    rows = 1;
    e = expert_of(p, m0);
#endif
    const u64 z = blockIdx.z;
    const a_t* a = p.a + z * p.batch_a;
    const b_t* b = p.b + z * p.batch_b + (e * n_total + n) * k_total;
    c_t* c = p.c + z * p.batch_c;
    float acc[MAXM];
    for (u32 m = 0; m < MAXM; m++) acc[m] = 0.0f;
    for (u64 k0 = 0; k0 < k_total; k0 += KC) {
        for (u32 i = threadIdx.x; i < rows * KC; i += blockDim.x) {
            const u32 m = i / KC, k = i % KC;
            const float v = k0 + k < k_total ? to_f32(a[(m0 + m) * p.lda + k0 + k]) : 0.0f;
            As[(m * RUN + k % RUN) * PITCH + k / RUN] = v;
        }
        dsv3_sync();
        for (u32 r = lane; r < KC / RUN; r += DSV3_WARP) {
            const u64 k = k0 + (u64)r * RUN;
            if (n < n_total && k < k_total) {
                float w[RUN];
                load_run(b, k, k_total, w);
                float part[MAXM];
                for (u32 m = 0; m < MAXM; m++) part[m] = 0.0f;
                for (u32 j = 0; j < RUN; j++) {
                    for (u32 m = 0; m < MAXM; m++) {
                        if (m < rows) part[m] += As[(m * RUN + j) * PITCH + r] * w[j];
                    }
                }
                const u64 kb = k / QB;
                const float sb = b_scale(p, e, n, kb);
                for (u32 m = 0; m < MAXM; m++) {
                    if (m < rows) acc[m] += part[m] * (a_scale(p, m0 + m, kb) * sb);
                }
            }
        }
        dsv3_sync();
    }
    // `rows` is the same for the whole block, so every lane of a warp takes part in each warp_sum.
    for (u32 m = 0; m < MAXM; m++) {
        if (m < rows) acc[m] = warp_sum(acc[m]);
    }
    if (lane == 0 && n < n_total) {
        for (u32 m = 0; m < rows; m++) c[(m0 + m) * p.ldc + n] = from_f32<c_t>(acc[m]);
    }
}
