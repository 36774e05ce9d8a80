// Seeded sampling (sample.cu's contract) over long rows of
// logits [R, V] (row stride free), each row spread over `chunks` blocks: block b takes row b / chunks and
// of it the elements [chunk·j, chunk·(j+1)), j = b mod chunks (the last block of a row to V). Seven launches
// of this kernel (`pass` 0..6) and three of sample_cut.cu, in this order:
//   0  each block's max of s_i = x_i / T (one correctly rounded f32 division) → part; zeroes `hist`;
//   1  m = the row's max, each block's Σ expf(s_i − m) → part;
//   2  Σ = the blocks' sums (in increasing j, the same bits in every block), p_i = expf(s_i − m) / Σ →
//      `probs`, and the row's level-0 histogram;            then sample_cut level 0;
//   3  the level-1 histogram;                               then sample_cut level 1;
//   4  the level-2 histogram and each block's count per digit → `ties`;  then sample_cut level 2;
//   5  each block's race winner among its nucleus tokens → win_key / win;
//   6  (one block per row) the row's winner → out.
// The cut is a radix select over p's f32 bits (p ∈ [0, 1], so its order key is 0x80000000 | bits, bits
// < 2^30): three levels of 10-bit digits (bits 29–20, 19–10, 9–0) narrow the largest key k_c with
// M(k_c) ≥ top_p, M(v) = the mass of the tokens whose p has key ≥ v. The histograms hold each digit's mass
// among the tokens that match the digits chosen so far, as fixed-point integers (p · 2^56, truncated), so
// the blocks add theirs with integer atomics and a row gets the same masses in any order of arrival: the
// cut is the same on every run. Each mass is then exact up to 2^-56 per token (the one-block kernel's are
// f32 sums, within f32 rounding of the same value), a difference the conformance treats as a near-tie,
// as it does the CPU's sequential sums. Ties at p_c: the lowest ids, `need` of them (sample_cut), so a
// block ranks its ties by index: the ties of earlier blocks (`ties`), then of its earlier threads (each
// thread takes a contiguous part of the block's range), then its own.
// The race is sample.cu's: key p_i / E_i in f64, candidates in `better`'s order (a total order, so the
// blocks' winners and then the row's give the same winner as one block would).
// Rows' parameters are row_sampling's (sample_common.cuh). A greedy row (temperature 0: only with per-row
// parameters, the host sends a greedy launch to topk.cu) skips passes 0–4 and the cuts; in pass 5 each
// block offers its argmax as sample.cu's greedy path ranks it (key: the logit's order key), so pass 6
// picks the row's argmax. A row with a bad entry is reported once (pass 0, its first block) and skipped.

struct Params {
    u64 n, chunk, chunks;
    const x_t* x;
    u64 x_stride;
    i32* out;
    float* probs;      // [R, V]
    float* part;       // [R, 2·chunks]: the blocks' maxes, then their sums
    u64* hist;         // [R, 3, 1024]: the row's mass per digit at each level
    u32* ties;         // [R, chunks, 1024]: each block's tokens per level-2 digit
    const u64* cut;    // [R, 4]: sample_cut's state (CUT_*)
    double* win_key;   // [R, chunks]: each block's winner's race key
    u32* win;          // [R, chunks, 2]: its p's order key and its index
    const u32* rows;   // [R, 4] per-row parameters, or null: the launch's
    u32* err;
    u64 site;          // check site of `rows`' entries
    double temperature, top_p;  // f32 values
    u64 seed, pass;
};

DSV3_SHARED u64 digit_mass[HIST];
DSV3_SHARED u32 digit_count[HIST];
DSV3_SHARED u32 thread_ties[1024];

// Max (`sum` false) or sum of the row's blocks' partials, per thread in increasing j, then across threads as
// block_sum / block_max do: the same bits in every block of the row.
DSV3_DEV float row_partials(const float* part, u64 chunks, bool sum) {
    float v = sum ? 0.0f : -f32_inf();
    for (u64 j = threadIdx.x; j < chunks; j += blockDim.x) v = sum ? v + part[j] : fmaxf(v, part[j]);
    return sum ? block_sum(v) : block_max(v);
}

// Adds this block's tokens in [begin, end) whose p bits match `prefix` above `level`'s digit to the
// block's histogram of that digit, then the block's histogram to the row's.
DSV3_DEV void histogram(const float* probs, u64 begin, u64 end, u32 level, u32 prefix, u64* row_hist) {
    for (u32 d = threadIdx.x; d < HIST; d += blockDim.x) {
        digit_mass[d] = 0;
        digit_count[d] = 0;
    }
    dsv3_sync();
    u32 shift = DIGIT_BITS * (2u - level);
    for (u64 c = begin + threadIdx.x; c < end; c += blockDim.x) {
        float pc = probs[c];
        u32 bits = f2u(pc);
        if (level > 0 && (bits >> (shift + DIGIT_BITS)) != prefix) continue;
        u32 d = (bits >> shift) & (HIST - 1u);
        atomicAdd(&digit_mass[d], fixed_mass(pc));
        atomicAdd(&digit_count[d], 1u);
    }
    dsv3_sync();
    for (u32 d = threadIdx.x; d < HIST; d += blockDim.x) {
        if (digit_mass[d] != 0) atomicAdd(&row_hist[level * HIST + d], digit_mass[d]);
    }
}

DSV3_KERNEL void sample_split(const Params p) {
    if (p.pass == 6) {
        // One block per row: the best of its blocks' winners (a block without nucleus tokens offers key −1).
        u64 row = blockIdx.x;
        if (!row_sampling(p.rows, row, p.temperature, p.top_p, p.seed).ok) return;
        double bk = -1.0;
        u32 bkp = 0, bi = NO_INDEX;
        for (u64 j = threadIdx.x; j < p.chunks; j += blockDim.x) {
            u64 w = row * p.chunks + j;
            if (better(p.win_key[w], p.win[2 * w], p.win[2 * w + 1], bk, bkp, bi)) {
                bk = p.win_key[w];
                bkp = p.win[2 * w];
                bi = p.win[2 * w + 1];
            }
        }
        u32 winner = block_winner(bk, bkp, bi);
        if (threadIdx.x == 0) p.out[row] = (i32)winner;
        return;
    }
    u64 row = blockIdx.x / p.chunks, j = blockIdx.x % p.chunks;
    u64 begin = j * p.chunk, end = j + 1 == p.chunks ? p.n : begin + p.chunk;
    const x_t* x = p.x + row * p.x_stride;
    float* probs = p.probs + row * p.n;
    float* part = p.part + row * 2 * p.chunks;
    u64* row_hist = p.hist + row * 3 * HIST;
    const u64* cut = p.cut + row * 4;
    RowSampling rs = row_sampling(p.rows, row, p.temperature, p.top_p, p.seed);
    if (!rs.ok) {
        if (p.pass == 0 && j == 0 && threadIdx.x == 0) report(p.err, (u32)p.site, (u32)row, rs.bad);
        return;
    }
    float temperature = rs.temperature;
    if (temperature == 0.0f) {
        if (p.pass != 5) return;
        double bk = -1.0;
        u32 bi = NO_INDEX;
        for (u64 c = begin + threadIdx.x; c < end; c += blockDim.x) {
            double k = (double)order_key(to_f32(x[c]));
            if (better(k, 0, (u32)c, bk, 0, bi)) {
                bk = k;
                bi = (u32)c;
            }
        }
        block_winner(bk, 0, bi);
        if (threadIdx.x == 0) {
            u64 w = row * p.chunks + j;
            p.win_key[w] = win_key[0];
            p.win[2 * w] = win_p[0];
            p.win[2 * w + 1] = win_idx[0];
        }
        return;
    }
    if (p.pass == 0) {
        if (j == 0) {
            for (u32 d = threadIdx.x; d < 3 * HIST; d += blockDim.x) row_hist[d] = 0;
        }
        float m = -f32_inf();
        for (u64 c = begin + threadIdx.x; c < end; c += blockDim.x) m = fmaxf(m, to_f32(x[c]) / temperature);
        m = block_max(m);
        if (threadIdx.x == 0) part[j] = m;
        return;
    }
    if (p.pass <= 2) {
        float m = row_partials(part, p.chunks, false);
        if (p.pass == 1) {
            float s = 0.0f;
            for (u64 c = begin + threadIdx.x; c < end; c += blockDim.x) s += expf(to_f32(x[c]) / temperature - m);
            s = block_sum(s);
            if (threadIdx.x == 0) part[p.chunks + j] = s;
            return;
        }
        float s = row_partials(part + p.chunks, p.chunks, true);
        for (u64 c = begin + threadIdx.x; c < end; c += blockDim.x) {
            probs[c] = expf(to_f32(x[c]) / temperature - m) / s;
        }
        // Each thread reads back only what it wrote: no barrier needed before the histogram's loads.
        histogram(probs, begin, end, 0, 0, row_hist);
        return;
    }
    bool cutting = cut[CUT_STATE] == CUT_ON;
    if (p.pass == 3 || p.pass == 4) {
        if (!cutting) return;  // every token is in: no digit to narrow
        u32 level = (u32)p.pass - 2u;
        histogram(probs, begin, end, level, (u32)cut[CUT_PREFIX], row_hist);
        if (level == 2) {
            u32* ties = p.ties + (row * p.chunks + j) * HIST;
            for (u32 d = threadIdx.x; d < HIST; d += blockDim.x) ties[d] = digit_count[d];
        }
        return;
    }
    // pass 5: the race over this block's nucleus tokens.
    u32 k_cut = 0x80000000u | (u32)cut[CUT_PREFIX];  // the order key of p_c
    u32 need = (u32)cut[CUT_NEED];
    // Ties before this block's range, then before this thread's part of it.
    u32 rank = 0;
    u64 per = (end - begin + blockDim.x - 1) / blockDim.x;
    u64 lo = begin + threadIdx.x * per, hi = lo + per < end ? lo + per : end;
    if (cutting) {
        u32 earlier = 0, digit = k_cut & (HIST - 1u);
        for (u64 i = threadIdx.x; i < j; i += blockDim.x) earlier += p.ties[(row * p.chunks + i) * HIST + digit];
        earlier = block_count(earlier);
        u32 mine = 0;
        for (u64 c = lo; c < hi; c++) mine += order_key(probs[c]) == k_cut ? 1u : 0u;
        thread_ties[threadIdx.x] = mine;
        dsv3_sync();
        rank = earlier;
        for (u32 t = 0; t < threadIdx.x; t++) rank += thread_ties[t];
    }
    double bk = -1.0;
    u32 bkp = 0, bi = NO_INDEX;
    for (u64 c = lo; c < hi; c++) {
        float pc = probs[c];
        u32 kc = order_key(pc);
        if (cutting) {
            if (kc < k_cut) continue;
            if (kc == k_cut && rank++ >= need) continue;
        }
        double key = (double)pc / race_e(rs.seed, rs.key, c);
        // p = 0, or E = −0 (u rounded to 1, probability 2^-53): such a token only wins a race of zeros.
        if (!(key > 0.0)) key = 0.0;
        if (better(key, kc, (u32)c, bk, bkp, bi)) {
            bk = key;
            bkp = kc;
            bi = (u32)c;
        }
    }
    // block_winner's tree leaves the block's best in slot 0: its key and p's key too.
    block_winner(bk, bkp, bi);
    if (threadIdx.x == 0) {
        u64 w = row * p.chunks + j;
        p.win_key[w] = win_key[0];
        p.win[2 * w] = win_p[0];
        p.win[2 * w + 1] = win_idx[0];
    }
}
