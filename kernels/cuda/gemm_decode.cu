// C = A · Bᵀ for few rows (decode): gemm with M ≤ 16, grouped_gemm with at most 16 rows in all, and
// batched_gemm's decode batches. Bandwidth-bound, so the kernel is built to stream B once at full width:
//
// * Columns. A group of LANES (8) consecutive threads computes one column n of C for all of the block's
//   rows; a block of 256 threads holds 32 columns (whatever the warp width). Each lane of a group reads one
//   RUN of B's row (16 bytes: 16 FP8 codes, 8 bf16, 4 f32) per SPAN = LANES · RUN elements of K, so a group
//   reads 128 contiguous bytes per step and a warp several whole lines; a run is one aligned 128-bit load
//   when the launch says B's rows allow it (`vec`: base and K · element size multiples of 16), element by
//   element otherwise and at the end of K. U runs are loaded before any is used, so each lane keeps U
//   16-byte loads in flight.
// * Activations. The block decodes a chunk of A (every row, as much of K as 48 KB of f32 holds: CHUNK) into
//   shared memory once, with FP8 activations' scales for the chunk's K blocks; a lane then takes, per run,
//   four f32 of each row at a time into registers (one 16-byte shared load, the same 128 bytes for every
//   group of a warp: no bank conflicts) and multiplies them with the run's decoded weights. Within each SPAN the chunk is stored so that lane j's elements 4q .. 4q + 3
//   sit at 32q + 4j: the eight lanes of a group read one contiguous 128 bytes.
// * FP8 decoding goes through to_f32x2 (dsv3.cuh): the hardware's exact e4m3 pair conversion on sm_89+,
//   the integer codec elsewhere; both give the same f32 values, so results do not depend on which ran.
// * Split K (gemm only, when N has too few column tiles to fill the device): the grid's y is the split;
//   split s covers K from s · k_split (a multiple of 128) and writes its f32 sums to
//   partial[s, m, n]; gemm_split_sum then adds the splits in order 0, 1, ... and rounds once. No atomics,
//   so the result does not depend on scheduling.
//
// Numerics. Operands are decoded exactly to f32 (FP8 codes without their scales). A lane accumulates the
// products of one run in f32 (a run never crosses a 128-wide K block: 128 is a multiple of RUN and splits
// start at multiples of 128), multiplies that partial by the block's scale, a_scale[m, kb] ·
// b_scale[n/128, kb] (one f32 product; a dense operand contributes 1), and adds it into its f32 sum; the
// group's eight sums are then added by a fixed butterfly (xor 4, 2, 1), and split sums in split order. C is
// rounded once when stored. This is gemm.cu's order (scales outside the accumulation of products) with
// runs of RUN products in place of whole 128-wide blocks.
//
// GROUPED = 1 (grouped_gemm): the grid's y is a row; the block works only when that row is the first of
// its expert e (offsets[e] <= row < offsets[e+1], i32 [E + 1] read on the device, found by a binary search
// every thread does alike), and then computes all of e's rows: each expert's weights are read once for all
// its rows. Block (0, 0) checks the offsets against the contract; they are read clamped to 0 .. rows, so bad
// offsets cannot make the kernel leave its arguments (an expert then has at most `rows` ≤ ROWS rows).
//
// batched_gemm: the grid's z is the batch, as in gemm.cu.
//
// Switches: A_FP8, B_FP8, GROUPED, as in gemm.cu; ROWS, the most rows a block computes (1, 4, 8 or 16: the
// launch picks the smallest that holds its rows, so the per-row loops of one row do not run sixteen times).

#define LANES 8
#define RUN (16 / (u32)sizeof(b_t))
#define SPAN (LANES * RUN)
#define U 4
// Rows are computed in groups of RG: a block computes its rows rounded up to a multiple of RG (the spare
// rows read shared memory no row was staged to and are never stored). One uniform test per group instead
// of one per row keeps the row tests from crowding out the registers (AMD's scalar registers at 16 rows).
#define RG (ROWS < 4 ? ROWS : 4)
// Shared memory for A: 12288 f32 (48 KB, the most a block may declare statically), as 16-byte words.
#define A_FLOATS 12288
// The K chunk staged at once: a multiple of 128 (so chunks start at 128-wide K blocks) that leaves room,
// for FP8 activations, for the chunk's scales of each row (CHUNK / 128 each) after the ROWS × CHUNK
// values. A constant, so each row's part of shared memory is at a fixed offset. At 8 rows: 1536 of K
// (q_b's whole K) for bf16 activations, 1408 for FP8.
#define CHUNK ((A_FLOATS / ROWS - (A_FP8 ? A_FLOATS / ROWS / QB : 0)) / QB * QB)
#define SLOTS (CHUNK / QB)

struct alignas(16) F4 {
    float v[4];
};

// One run of B as loaded: 16 bytes, seen as RUN elements.
struct alignas(16) Words {
    u32 w[4];
};
union Run {
    Words words;
    b_t v[16 / sizeof(b_t)];
};

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

// Where element kk of a chunk sits in shared memory (as f32), within its row's part.
DSV3_DEV u32 staged_at(u32 kk) {
    const u32 s = kk / SPAN, r = kk % SPAN, j = r / RUN, x = r % RUN;
    return s * SPAN + (x / 4) * 32 + j * 4 + x % 4;
}

// B's run from k: one 16-byte load when allowed and whole, else element by element with zeros past `end`.
DSV3_DEV Run load_run(const b_t* row, u32 k, u32 end, bool vec) {
    Run r;
    const b_t* src = row + k;
    if (vec && k + RUN <= end) {
        r.words = *(const Words*)src;
    } else {
        DSV3_UNROLL
        for (u32 j = 0; j < RUN; j++) r.v[j] = k + j < end ? src[j] : from_f32<b_t>(0.0f);
    }
    return r;
}

// A's scale of row m for the chunk's K block `slot` (as staged; 1 for dense activations).
DSV3_DEV float staged_a_scale(const F4* As, u32 m, u32 slot) {
#if A_FP8
    const u32 at = ROWS * CHUNK + m * SLOTS + slot;
    return As[at / 4].v[at % 4];
#else
    return 1.0f;
#endif
}

DSV3_KERNEL void gemm_decode(const Params p) {
    DSV3_SHARED F4 As[A_FLOATS / 4];
    const u32 j = threadIdx.x % LANES;
    const u64 n = (u64)blockIdx.x * (blockDim.x / LANES) + threadIdx.x / LANES;
    const u64 n_total = p.n;
    const u32 k_total = (u32)p.k;  // below 2^31: the launch uses the tiled kernel otherwise
    const bool column = n < n_total;
    u64 e = 0, m0 = 0;
    u32 k_begin = 0, k_end = k_total;
    u32 rows = (u32)p.rows;
#if GROUPED
    if (blockIdx.x == 0 && blockIdx.y == 0) check_offsets(p);
    e = expert_of(p, blockIdx.y);
    m0 = offset_at(p, e);
    const u64 m1 = offset_at(p, e + 1);
    // The same for the whole block, and before any barrier: only the expert's first row's block works.
    if (m0 != blockIdx.y || m1 <= m0) return;
    rows = (u32)(m1 - m0);  // at most p.rows, which the launch keeps at most ROWS
#else
    if (p.k_split > 0) {
        k_begin = blockIdx.y * (u32)p.k_split;
        k_end = k_total - k_begin > (u32)p.k_split ? k_begin + (u32)p.k_split : k_total;
    }
#endif
    const u64 z = blockIdx.z;
    const a_t* a = p.a + z * p.batch_a + m0 * p.lda;
    const b_t* b = p.b + z * p.batch_b + (e * n_total + (column ? n : 0)) * k_total;
    const bool vec = p.vec != 0;
    const u32 chunk = CHUNK;
    float acc[ROWS];
    DSV3_UNROLL
    for (u32 m = 0; m < ROWS; m++) acc[m] = 0.0f;
    for (u32 k0 = k_begin; k0 < k_end; k0 += chunk) {
        const u32 len = k_end - k0 < chunk ? k_end - k0 : chunk;
        // Stage rows × chunk of A (zeros past len), two elements at a time.
        for (u32 i = threadIdx.x; i < rows * (chunk / 2); i += blockDim.x) {
            const u32 m = i / (chunk / 2), kk = 2 * (i % (chunk / 2));
            const a_t* src = a + m * p.lda + k0 + kk;
            float x = 0.0f, y = 0.0f;
            if (kk + 1 < len) {
                to_f32x2(src[0], src[1], &x, &y);
            } else if (kk < len) {
                x = to_f32(src[0]);
            }
            const u32 at = m * chunk + staged_at(kk);  // kk + 1 follows it: same run, same four
            As[at / 4].v[at % 4] = x;
            As[(at + 1) / 4].v[(at + 1) % 4] = y;
        }
#if A_FP8
        // And the rows' scales of the chunk's K blocks, after the values (zeros past K).
        const u32 kb_n = (k_total + QB - 1) / QB, kb0 = k0 / QB;
        for (u32 i = threadIdx.x; i < rows * SLOTS; i += blockDim.x) {
            const u32 m = i / SLOTS, t = i % SLOTS;
            const float v = kb0 + t < kb_n ? to_f32(p.a_scales[(m0 + m) * kb_n + kb0 + t]) : 0.0f;
            const u32 at = ROWS * CHUNK + i;
            As[at / 4].v[at % 4] = v;
        }
#endif
        dsv3_sync();
        if (column) {
            for (u32 s0 = 0; s0 * SPAN < len; s0 += U) {
                Run r[U];
                DSV3_UNROLL
                for (u32 u = 0; u < U; u++) {
                    const u32 k = k0 + (s0 + u) * SPAN + j * RUN;
                    if (k < k0 + len) r[u] = load_run(b, k, k_end, vec);
                }
                DSV3_UNROLL
                for (u32 u = 0; u < U; u++) {
                    const u32 s = s0 + u;
                    const u32 k = k0 + s * SPAN + j * RUN;
                    if (k >= k0 + len) continue;  // past K (a partial last span) or past the chunk
                    float part[ROWS];
                    DSV3_UNROLL
                    for (u32 m = 0; m < ROWS; m++) part[m] = 0.0f;
                    DSV3_UNROLL
                    for (u32 q = 0; q < RUN / 4; q++) {
                        float w[4];
                        to_f32x2(r[u].v[4 * q], r[u].v[4 * q + 1], &w[0], &w[1]);
                        to_f32x2(r[u].v[4 * q + 2], r[u].v[4 * q + 3], &w[2], &w[3]);
                        DSV3_UNROLL
                        for (u32 m = 0; m < ROWS; m++) {
                            if (m / RG * RG < rows) {
                                const F4 x = As[(m * chunk + s * SPAN) / 4 + q * 8 + j];
                                DSV3_UNROLL
                                for (u32 t = 0; t < 4; t++) part[m] += x.v[t] * w[t];
                            }
                        }
                    }
                    const u32 kb = k / QB;
                    const float sb = b_scale(p, e, n, kb);
                    DSV3_UNROLL
                    for (u32 m = 0; m < ROWS; m++) {
                        if (m / RG * RG < rows) acc[m] += part[m] * (staged_a_scale(As, m, kb - k0 / QB) * sb);
                    }
                }
            }
        }
        dsv3_sync();  // the next chunk overwrites As
    }
    // `rows` is the same for the whole block, so every lane of a warp takes part in each shuffle.
    DSV3_UNROLL
    for (u32 m = 0; m < ROWS; m++) {
        if (m < rows) {
            for (int x = LANES / 2; x > 0; x /= 2) acc[m] += dsv3_shfl_xor(acc[m], x);
        }
    }
    if (j == 0 && column) {
        if (p.partial) {
            float* out = p.partial + (u64)blockIdx.y * p.rows * n_total;
            DSV3_UNROLL
            for (u32 m = 0; m < ROWS; m++) {
                if (m < rows) out[m * n_total + n] = acc[m];
            }
        } else {
            c_t* c = p.c + z * p.batch_c;
            DSV3_UNROLL
            for (u32 m = 0; m < ROWS; m++) {
                if (m < rows) c[(m0 + m) * p.ldc + n] = from_f32<c_t>(acc[m]);
            }
        }
    }
}
