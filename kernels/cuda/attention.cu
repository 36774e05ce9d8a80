// Attention of one query token over one range of keys (a split), for a group of heads; both forms:
//   MLA 1 (absorbed): q = [q_latent | q_pe] (D1 + D2 values), key u = the cache row of position u of
//         sequence b (c_kv | k_pe), value u = its c_kv part (D1 = DV values). Every head reads the same
//         cache rows, so a block takes G ≤ HG heads and reads each key once for all of them. The cache is
//         contiguous ([B, L, D1 + D2], `table` null) or a page pool with a block table: see cache_row.
//   MLA 0 (MHA): q = q[b, t, h] (D1 values, D2 = 0), key u = k[b, u, h], value u = v[b, u, h]; one head
//         per block (HG = 1).
// Grid: x = (sequence, token, head group) rows, y = key splits of `split_len` keys. A split walks its keys
// CH at a time: (1) each warp scores whole keys, lanes over the query dimensions; (2) the warp owning a
// head updates that head's running max m and sum l (online softmax) and turns the chunk's scores into
// weights; (3) each thread rescales and accumulates OPT output dimensions (d = tid + j·BLOCK) of every head.
// With one split the block writes out = acc / l itself; otherwise it writes (m, l, acc[DV]) per head to
// `part` (only (m, l) = (−inf, 0) for a split with no keys) and attention_combine.cu merges the splits.
//
// Numerics: inputs decoded exactly to f32; all arithmetic in f32.
//   score(u) = scale · dot, where each lane sums q[d]·k[d] for d = lane, lane + DSV3_WARP, ... in
//     ascending d, then warp_sum's butterfly adds the lanes (one sum over D1 + D2 for MLA);
//   per chunk: M' = max(M, max of the chunk's scores), α = expf(M − M'), p(u) = expf(score(u) − M'),
//     l ← l·α + (lane-strided then butterfly sum of the chunk's p), acc ← acc·α + Σ p(u)·v(u) in
//     ascending u (M starts at −inf, so the first chunk's α is 0);
//   one split: out = acc / l, rounded once to out_t.
// Keys past a query's visible length (rows ≥ kv_len, or beyond its position under causal masking) are
// never read: they may hold anything, NaN included.
// Device-side checks: kv_lens[b] in T..=L, and every block table entry a split reads in 0..pool; a
// sequence or split that breaks them is reported and given no keys.

#define BLOCK 256
#define NW (BLOCK / DSV3_WARP)
// Keys per chunk.
#define CH 32
// Shared floats for the queries of a head group: G · (D1 + D2) ≤ QBUF.
#define QBUF 6144
#if MLA
#define HG 8
#else
#define HG 1
#endif

DSV3_KERNEL void attention(const Params p) {
    DSV3_SHARED float qs[QBUF];
    DSV3_SHARED float sc[HG][CH];
    DSV3_SHARED float alpha_s[HG];
    DSV3_SHARED float l_s[HG];
    DSV3_SHARED float m_s[HG];
    DSV3_SHARED u64 rows_s[CH];
    DSV3_SHARED u32 bad_page;

    const u32 tid = threadIdx.x, lane = dsv3_lane(), warp = tid / DSV3_WARP;
    const u64 row = blockIdx.x;
    const u64 grp = row % p.groups;
    const u64 t = (row / p.groups) % p.t_n;
    const u64 b = row / (p.groups * p.t_n);
    const u64 s = blockIdx.y;
    const u64 h0 = grp * p.g;
    // Within a row 32-bit indices do: the host keeps G ≤ HG, D1 + D2 ≤ QBUF and DV ≤ OPT · BLOCK.
    const int g_n = (int)min_u64(p.g, p.h_n - h0);
    const u32 qd = (u32)(p.d1 + p.d2), d1 = (u32)p.d1, dv = (u32)p.dv;
    const float scale = (float)p.scale;

    u64 u_begin, u_end;
    key_range(p, b, t, s, grp == 0 && t == 0, BLOCK, bad_page, u_begin, u_end);

#if MLA
    const u64 k_tok = qd, v_tok = qd;
    const k_t* kb = p.k;
    const v_t* vb = p.v;
#else
    const u64 k_tok = p.h_n * qd, v_tok = p.h_n * dv;
    const k_t* kb = p.k + h0 * qd;
    const v_t* vb = p.v + h0 * dv;
#endif

    // Queries of the group's heads, rows (b, t, h0 + g) of q (followed by q_pe's for MLA).
    const u64 q_row = (b * p.t_n + t) * p.h_n + h0;
    // (A split with no keys only reports that: m = −inf, l = 0.)
    const u32 q_count = u_begin < u_end ? (u32)g_n * qd : 0;
    for (u32 i = tid; i < q_count; i += BLOCK) {
        const u32 g = i / qd, d = i % qd;
        qs[i] = d < d1 ? to_f32(p.q[(q_row + g) * d1 + d]) : to_f32(p.qr[(q_row + g) * (qd - d1) + (d - d1)]);
    }
    dsv3_sync();

    // Running max and sum of the heads this warp owns (g % NW == warp); every lane holds the same values.
    float m_run[HG], l_run[HG];
    float acc[HG][OPT];
    for (int g = 0; g < HG; g++) {
        m_run[g] = -f32_inf();
        l_run[g] = 0.0f;
        for (int j = 0; j < OPT; j++) acc[g][j] = 0.0f;
    }

    for (u64 c0 = u_begin; c0 < u_end; c0 += CH) {
        const u32 count = (u32)min_u64(CH, u_end - c0);
        // (0) The chunk's cache rows, looked up once (a 64-bit division each) for every use below.
        for (u32 x = tid; x < count; x += BLOCK) rows_s[x] = cache_row(p, b, c0 + x);
        dsv3_sync();
        // (1) Scores: warp `warp` takes keys x = warp, warp + NW, ... of the chunk.
        for (u32 x = warp; x < count; x += NW) {
            const k_t* kr = kb + rows_s[x] * k_tok;
            float dot[HG];
            for (int g = 0; g < HG; g++) dot[g] = 0.0f;
            for (u32 d = lane; d < qd; d += DSV3_WARP) {
                const float kv = to_f32(kr[d]);
                for (int g = 0; g < HG; g++) {
                    if (g < g_n) dot[g] += qs[(u32)g * qd + d] * kv;
                }
            }
            for (int g = 0; g < HG; g++) {
                if (g < g_n) {
                    const float sum = warp_sum(dot[g]);
                    if (lane == 0) sc[g][x] = scale * sum;
                }
            }
        }
        dsv3_sync();
        // (2) Online softmax, one warp per head.
        for (int g = 0; g < HG; g++) {
            if (g < g_n && g % NW == (int)warp) {
                float mx = -f32_inf();
                for (u32 x = lane; x < count; x += DSV3_WARP) mx = fmaxf(mx, sc[g][x]);
                const float m_new = fmaxf(m_run[g], warp_max(mx));
                const float alpha = expf(m_run[g] - m_new);
                float sum = 0.0f;
                for (u32 x = lane; x < count; x += DSV3_WARP) {
                    const float e = expf(sc[g][x] - m_new);
                    sc[g][x] = e;
                    sum += e;
                }
                l_run[g] = l_run[g] * alpha + warp_sum(sum);
                m_run[g] = m_new;
                if (lane == 0) alpha_s[g] = alpha;
            }
        }
        dsv3_sync();
        // (3) Weighted values: thread `tid` owns dimensions tid + j·BLOCK of every head.
        for (int j = 0; j < OPT; j++) {
            const u32 d = tid + (u32)j * BLOCK;
            if (d < dv) {
                for (int g = 0; g < HG; g++) {
                    if (g < g_n) acc[g][j] *= alpha_s[g];
                }
                for (u32 x = 0; x < count; x++) {
                    const float vv = to_f32(vb[rows_s[x] * v_tok + d]);
                    for (int g = 0; g < HG; g++) {
                        if (g < g_n) acc[g][j] += sc[g][x] * vv;
                    }
                }
            }
        }
        // The next chunk overwrites the scores.
        dsv3_sync();
    }

    for (int g = 0; g < HG; g++) {
        if (g < g_n && g % NW == (int)warp && lane == 0) {
            m_s[g] = m_run[g];
            l_s[g] = l_run[g];
        }
    }
    dsv3_sync();
    for (int g = 0; g < HG; g++) {
        if (g < g_n) {
            const u64 r = q_row + (u64)g;
            if (p.splits == 1) {
                for (int j = 0; j < OPT; j++) {
                    const u32 d = tid + (u32)j * BLOCK;
                    if (d < dv) p.out[r * dv + d] = from_f32<out_t>(acc[g][j] / l_s[g]);
                }
            } else {
                float* pr = p.part + (r * p.splits + s) * (dv + 2);
                if (tid == 0) {
                    pr[0] = m_s[g];
                    pr[1] = l_s[g];
                }
                for (int j = 0; j < OPT; j++) {
                    const u32 d = tid + (u32)j * BLOCK;
                    if (d < dv && u_begin < u_end) pr[2 + d] = acc[g][j];
                }
            }
        }
    }
}
