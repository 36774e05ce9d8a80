// What sample.cu (one block per row) and sample_split.cu (long rows over many blocks) share: each row's
// parameters, the race's exponential E, the order of its candidates and the block's best of them, a
// block's u32 sum.

#define NO_INDEX 0xffffffffu

// Sum of a u32 over the block; every thread gets it.
DSV3_SHARED u32 partial_count[1024 / DSV3_WARP];

DSV3_DEV u32 block_count(u32 v) {
    for (int m = DSV3_WARP / 2; m > 0; m /= 2) v += dsv3_shfl_xor(v, m);
    if (dsv3_lane() == 0) partial_count[threadIdx.x / DSV3_WARP] = v;
    dsv3_sync();
    u32 total = 0;
    for (u32 w = 0; w < blockDim.x / DSV3_WARP; w++) total += partial_count[w];
    dsv3_sync();
    return total;
}

// Candidates are (key, p's order key, index): larger key first, then larger p, then lower index.
DSV3_DEV bool better(double k, u32 kp, u32 i, double bk, u32 bkp, u32 bi) {
    return k > bk || (k == bk && (kp > bkp || (kp == bkp && i < bi)));
}

DSV3_SHARED double win_key[1024];
DSV3_SHARED u32 win_p[1024];
DSV3_SHARED u32 win_idx[1024];

// The index of the block's best candidate, for thread 0 (a tree over shared memory: f64 keys have no
// portable shuffle).
DSV3_DEV u32 block_winner(double key, u32 kp, u32 idx) {
    u32 t = threadIdx.x;
    win_key[t] = key;
    win_p[t] = kp;
    win_idx[t] = idx;
    dsv3_sync();
    for (u32 s = blockDim.x / 2; s > 0; s /= 2) {
        if (t < s && better(win_key[t + s], win_p[t + s], win_idx[t + s], win_key[t], win_p[t], win_idx[t])) {
            win_key[t] = win_key[t + s];
            win_p[t] = win_p[t + s];
            win_idx[t] = win_idx[t + s];
        }
        dsv3_sync();
    }
    return win_idx[0];
}

// E = −ln u(seed, row, column), u = ((z >> 11) + ½) / 2^53 with z core's mix of the three.
DSV3_DEV double race_e(u64 seed, u64 row, u64 column) {
    u64 z = seed ^ (row * 0x9E3779B97F4A7C15ull) ^ (column * 0xD1B54A32D192ED03ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    double u = ((double)(z >> 11) + 0.5) / 9007199254740992.0;
    return -log(u);
}


// One row's sampling parameters (core's `Sample::row`): the launch's own, whose uniforms are keyed by the
// row, or, with `rows` (core's `row_params`, i32 [R, 4]: temperature and top_p as f32 bits, the seed's low
// and high words), the row's own, keyed as row 0 (what a one-row launch of them draws). `ok` is false for
// an entry outside core's `RowSampling` rules (temperature finite and ≥ 0, top_p in (0, 1]); `bad` is then
// the offending word, for the report.
struct RowSampling {
    float temperature, top_p;
    u64 seed, key;
    bool ok;
    u32 bad;
};

DSV3_DEV RowSampling row_sampling(const u32* rows, u64 row, double temperature, double top_p, u64 seed) {
    RowSampling s;
    if (rows == nullptr) {
        s.temperature = (float)temperature;
        s.top_p = (float)top_p;
        s.seed = seed;
        s.key = row;
        s.ok = true;
        s.bad = 0;
        return s;
    }
    const u32* e = rows + 4 * row;
    s.temperature = u2f(e[0]);
    s.top_p = u2f(e[1]);
    s.seed = (u64)e[2] | ((u64)e[3] << 32);
    s.key = 0;
    bool t_ok = s.temperature >= 0.0f && s.temperature < f32_inf();  // false for NaN
    bool p_ok = s.top_p > 0.0f && s.top_p <= 1.0f;
    s.ok = t_ok && p_ok;
    s.bad = t_ok ? e[1] : e[0];
    return s;
}
