// Seeded sampling (the contract in dsv3-core's ops/sampling.rs), one block per row of logits [R, V] (row
// stride free) → out i32 [R]; blockDim.x is a power of two, a multiple of DSV3_WARP, at most 1024. Long rows
// go to sample_split.cu instead, which spreads each over many blocks.
//   temperature 0: argmax in f32 total order, ties to the lower index.
//   Otherwise p_i = e_i / Σ with s_i = l_i / T (one correctly rounded f32 division, as the CPU), m = max s,
//   e_i = expf(s_i − m), Σ = Σ e_i in f32. p is computed once into `probs` (scratch [R, V]; each thread
//   reads back only what it wrote), which the ~30 passes of the nucleus search then only load.
//   Nucleus (the shortest prefix by decreasing p, ties to the lower id, whose mass reaches top_p) without
//   sorting: M(v) = Σ_{order_key(p_i) ≥ v} p_i falls as v rises, so a binary search over the f32 order keys
//   finds the largest key k_c with M(k_c) ≥ top_p; k_c is some token's key and M(k_c + 1) < top_p. Tokens
//   above p_c are in; of those equal to p_c, the lowest ids that complete the mass,
//   need = ⌈(top_p − M(k_c + 1)) / p_c⌉ of them, the last found by a binary search over the index. When
//   Σ_i p_i < top_p (rounding), every token is in.
//   Race: the winner maximises p_i / E_i, E_i = −ln u(seed, key, i), in f64 exactly as the CPU computes it:
//   u from core's `uniform` (SplitMix64 finaliser in native 64-bit integers; (m + ½) / 2^53 rounds as the
//   CPU's f64), one f64 log and one f64 division. Equal keys go to the earlier token of the nucleus order
//   (larger p, then lower id), as the CPU's fold does.
// Each row's temperature, top_p, seed and key are row_sampling's (sample_common.cuh): the launch's, or the
// row's entry of `rows`, checked here (a bad entry is reported at `site` and the row left unwritten).
// Sums (Σ, the masses) are f32 per thread in increasing index, then combined across the block in a fixed
// order, so a row gives the same bits on every run; they differ from the CPU's sequential sums only by
// rounding, which the conformance treats as near-ties.

struct Params {
    u64 n;
    const x_t* x;
    u64 x_stride;
    i32* out;
    float* probs;  // [R, V] scratch for p (unused at temperature 0)
    const u32* rows;  // [R, 4] per-row parameters, or null: the launch's
    u32* err;
    u64 site;  // check site of `rows`' entries
    double temperature, top_p;  // f32 values
    u64 seed;
};

// Σ f(probs[c]) over this thread's c < end (c ≡ threadIdx.x mod blockDim.x), added in increasing c. Four
// loads are issued before their terms are added: the search's passes wait on memory, not on arithmetic.
template <class T, class F> DSV3_DEV T thread_sum(const float* probs, u32 end, F f) {
    T acc = 0;
    u32 c = threadIdx.x, b = blockDim.x;
    for (; c + 3u * b < end; c += 4u * b) {
        float q0 = probs[c], q1 = probs[c + b], q2 = probs[c + 2u * b], q3 = probs[c + 3u * b];
        acc += f(q0);
        acc += f(q1);
        acc += f(q2);
        acc += f(q3);
    }
    for (; c < end; c += b) acc += f(probs[c]);
    return acc;
}

// M(key): the mass of the tokens whose p has an order key ≥ `key` (adding +0 for the others changes no
// bit of the sum, so it equals the tie pass's conditional sums in the same order).
DSV3_DEV float mass_from(const float* probs, u32 n, u32 key) {
    return block_sum(thread_sum<float>(probs, n, [=](float q) { return order_key(q) >= key ? q : 0.0f; }));
}

DSV3_KERNEL void sample(const Params p) {
    u64 row = blockIdx.x;
    const x_t* x = p.x + row * p.x_stride;
    u32 n = (u32)p.n;
    RowSampling rs = row_sampling(p.rows, row, p.temperature, p.top_p, p.seed);
    if (!rs.ok) {
        if (threadIdx.x == 0) report(p.err, (u32)p.site, (u32)row, rs.bad);
        return;
    }
    float temperature = rs.temperature;
    if (temperature == 0.0f) {
        double bk = -1.0;
        u32 bi = NO_INDEX;
        for (u32 c = threadIdx.x; c < n; c += blockDim.x) {
            double k = (double)order_key(to_f32(x[c]));
            if (better(k, 0, c, bk, 0, bi)) {
                bk = k;
                bi = c;
            }
        }
        u32 win = block_winner(bk, 0, bi);
        if (threadIdx.x == 0) p.out[row] = (i32)win;
        return;
    }
    float top_p = rs.top_p;
    float* probs = p.probs + row * n;
    float m = -f32_inf();
    for (u32 c = threadIdx.x; c < n; c += blockDim.x) m = fmaxf(m, to_f32(x[c]) / temperature);
    m = block_max(m);
    float s = 0.0f;
    for (u32 c = threadIdx.x; c < n; c += blockDim.x) s += expf(to_f32(x[c]) / temperature - m);
    s = block_sum(s);
    // p, and M(order_key(+0)) = Σ p: every p is ≥ +0.
    float all = 0.0f;
    for (u32 c = threadIdx.x; c < n; c += blockDim.x) {
        probs[c] = expf(to_f32(x[c]) / temperature - m) / s;
        all += probs[c];
    }
    all = block_sum(all);

    // The cut: M(lo) ≥ top_p > M(hi) (p ≤ 1, so no key reaches order_key(1) + 1).
    u32 lo = order_key(0.0f), hi = order_key(1.0f) + 1u;
    bool cut = all >= top_p;
    if (cut) {
        while (hi - lo > 1u) {
            u32 mid = lo + (hi - lo) / 2u;
            if (mass_from(probs, n, mid) >= top_p) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    u32 k_cut = lo;
    // Tokens equal to p_c with an index up to `last` are in.
    u32 last = n - 1u;
    if (cut) {
        float above = 0.0f;
        u32 ties = 0;
        for (u32 c = threadIdx.x; c < n; c += blockDim.x) {
            float pc = probs[c];
            u32 kc = order_key(pc);
            if (kc > k_cut) {
                above += pc;
            } else if (kc == k_cut) {
                ties++;
            }
        }
        above = block_sum(above);  // = M(k_cut + 1): the same terms in the same order
        ties = block_count(ties);
        float p_cut = u2f(k_cut & 0x7fffffffu);
        u32 need = 1u;
        if (p_cut > 0.0f) {
            float q = -floorf(-((top_p - above) / p_cut));
            need = q >= (float)ties ? ties : (q > 1.0f ? (u32)q : 1u);
        }
        if (need < ties) {
            // The smallest index with `need` ties at or below it.
            u32 a = 0, b = n - 1u;
            while (a < b) {
                u32 mid = a + (b - a) / 2u;
                auto is_tie = [=](float q) { return (u32)(order_key(q) == k_cut); };
                if (block_count(thread_sum<u32>(probs, mid + 1u, is_tie)) >= need) {
                    b = mid;
                } else {
                    a = mid + 1u;
                }
            }
            last = a;
        }
    }

    double bk = -1.0;
    u32 bkp = 0, bi = NO_INDEX;
    for (u32 c = threadIdx.x; c < n; c += blockDim.x) {
        float pc = probs[c];
        u32 kc = order_key(pc);
        if (cut && (kc < k_cut || (kc == k_cut && c > last))) continue;
        double key = (double)pc / race_e(rs.seed, rs.key, c);
        // p = 0, or E = −0 (u rounded to 1, probability 2^-53): such a token only wins a race of zeros.
        if (!(key > 0.0)) key = 0.0;
        if (better(key, kc, c, bk, bkp, bi)) {
            bk = key;
            bkp = kc;
            bi = c;
        }
    }
    u32 win = block_winner(bk, bkp, bi);
    if (threadIdx.x == 0) p.out[row] = (i32)win;
}
