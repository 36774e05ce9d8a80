// One level of sample_split.cu's nucleus cut per launch (rows' top_p from row_sampling, sample_common.cuh): one block of HIST threads per row, thread d for
// digit d of the level. With `above` the mass above the digits chosen so far (0 at level 0) and S(d) the
// row's mass at digits ≥ d among the tokens that match them (the level's histogram, suffix-summed), the
// chosen digit is the largest d with above + S(d) ≥ top_p; the keys it leaves are the largest k_c with
// M(k_c) ≥ top_p, as sample.cu's binary search finds. At level 0, S(0) < top_p (the row's mass falls short
// of top_p by rounding) means every token is in. After level 2 the chosen digits are p_c's bits and
// `above` is M(k_c + 1); of the tokens equal to p_c, need = ⌈(top_p − M(k_c + 1)) / p_c⌉ are in (the
// lowest ids; sample_split's race ranks them). All masses are integers: no rounding, in any order.

struct Params {
    u64 chunks;
    const u64* hist;  // [R, 3, HIST]: sample_split's histograms
    const u32* ties;  // [R, chunks, HIST]: its blocks' tokens per level-2 digit
    u64* cut;         // [R, 4]: the state (sample_radix.cuh's CUT_*)
    const u32* rows;  // [R, 4] per-row parameters, or null: the launch's
    double temperature, top_p;  // f32 values
    u64 level;
};

DSV3_SHARED u64 suffix[HIST];
DSV3_SHARED u32 chosen;

DSV3_KERNEL void sample_cut(const Params p) {
    u64 row = blockIdx.x;
    u64* cut = p.cut + row * 4;
    u32 d = threadIdx.x;
    // sample_split skips greedy rows and rows with a bad entry (it reports those): no cut.
    RowSampling rs = row_sampling(p.rows, row, p.temperature, p.top_p, 0);
    if (!rs.ok || rs.temperature == 0.0f) return;
    if (p.level > 0 && cut[CUT_STATE] != CUT_ON) return;  // every token is in
    u64 above = p.level == 0 ? 0 : cut[CUT_ABOVE];
    u64 prefix = p.level == 0 ? 0 : cut[CUT_PREFIX];
    u64 top = fixed_top(rs.top_p);
    if (d == 0) chosen = 0;
    // suffix[d] = S(d), by doubling strides (Hillis–Steele): log2(HIST) steps of one add per thread.
    suffix[d] = p.hist[(row * 3 + p.level) * HIST + d];
    dsv3_sync();
    for (u32 s = 1; s < HIST; s *= 2) {
        u64 v = d + s < HIST ? suffix[d + s] : 0;
        dsv3_sync();
        suffix[d] += v;
        dsv3_sync();
    }
    // S falls as d rises, so exactly one digit reaches top_p with its successor not (or none reaches it).
    u64 after = d + 1 < HIST ? suffix[d + 1] : 0;
    if (above + suffix[d] >= top && above + after < top) {
        chosen = d;
        cut[CUT_STATE] = CUT_ON;
        cut[CUT_PREFIX] = (prefix << DIGIT_BITS) | d;
        cut[CUT_ABOVE] = above + after;
    }
    if (p.level == 0 && d == 0 && above + suffix[0] < top) cut[CUT_STATE] = CUT_OFF;
    if (p.level < 2) return;
    dsv3_sync();  // `chosen` and the state are written
    u32 ties = 0;
    for (u64 j = d; j < p.chunks; j += blockDim.x) ties += p.ties[(row * p.chunks + j) * HIST + chosen];
    ties = block_count(ties);
    if (d == 0) {
        u64 mass = fixed_mass(u2f((u32)cut[CUT_PREFIX]));  // p_c's, each tie's
        u64 missing = top - cut[CUT_ABOVE];                // > 0: the digits above p_c's fall short
        u64 need = mass > 0 ? (missing + mass - 1) / mass : 1;
        cut[CUT_NEED] = need < ties ? need : ties;
    }
}
