// argmax and top-k of each row of x [R, N] (row stride free), one block per row; blockDim.x is a multiple
// of DSV3_WARP, at most 1024.
// The order is the contract's: value descending in f32 total order (order_key: −0 < +0, NaN at the ends),
// then index ascending — ties go to the lower index. No arithmetic on the values, so the result is exact.
// Thread j looks after the slice c ≡ j (mod blockDim.x) and holds a candidate: the first element of its
// slice in that order not chosen yet. Each of the k rounds takes the first candidate of the block (a
// reduction), writes it, and only the thread that owned it rescans its slice for its next candidate:
// every other candidate is still the first unchosen element of its slice. One pass over the row, then
// per round a block reduction and N / blockDim.x loads. argmax is k = 1 with no values.

struct Params {
    u64 n, k;
    const x_t* x;
    u64 x_stride;
    float* values;  // [R, k] contiguous; null for argmax
    i32* ids;       // [R, k] contiguous
};

// No candidate: after every element (a real index is below it).
#define NO_INDEX 0xffffffffu

// Whether (ka, ia) comes before (kb, ib) in the selection order.
DSV3_DEV bool before(u32 ka, u32 ia, u32 kb, u32 ib) { return ka > kb || (ka == kb && ia < ib); }

// The first element of this thread's slice that comes after (after_key, after_idx) (any, when `first`).
DSV3_DEV void slice_first(const x_t* x, u32 n, bool first, u32 after_key, u32 after_idx, u32& key, u32& idx) {
    key = 0;
    idx = NO_INDEX;
    for (u32 c = threadIdx.x; c < n; c += blockDim.x) {
        u32 kc = order_key(to_f32(x[c]));
        if ((first || before(after_key, after_idx, kc, c)) && before(kc, c, key, idx)) {
            key = kc;
            idx = c;
        }
    }
}

DSV3_SHARED u32 warp_key[1024 / DSV3_WARP];
DSV3_SHARED u32 warp_idx[1024 / DSV3_WARP];

// The first of the block's candidates; every thread gets it. The order is total, so the butterfly gives
// every lane the same result.
DSV3_DEV void block_first(u32& key, u32& idx) {
    for (int m = DSV3_WARP / 2; m > 0; m /= 2) {
        u32 k = dsv3_shfl_xor(key, m), i = dsv3_shfl_xor(idx, m);
        if (before(k, i, key, idx)) {
            key = k;
            idx = i;
        }
    }
    if (dsv3_lane() == 0) {
        warp_key[threadIdx.x / DSV3_WARP] = key;
        warp_idx[threadIdx.x / DSV3_WARP] = idx;
    }
    dsv3_sync();
    key = warp_key[0];
    idx = warp_idx[0];
    for (u32 w = 1; w < blockDim.x / DSV3_WARP; w++) {
        if (before(warp_key[w], warp_idx[w], key, idx)) {
            key = warp_key[w];
            idx = warp_idx[w];
        }
    }
    dsv3_sync();  // the arrays are reused by the next round
}

DSV3_KERNEL void topk(const Params p) {
    u64 row = blockIdx.x;
    const x_t* x = p.x + row * p.x_stride;
    u32 n = (u32)p.n;
    u32 mine_key, mine_idx;
    slice_first(x, n, true, 0, 0, mine_key, mine_idx);
    for (u64 j = 0; j < p.k; j++) {
        u32 key = mine_key, idx = mine_idx;
        block_first(key, idx);
        if (threadIdx.x == 0) {
            p.ids[row * p.k + j] = (i32)idx;
            if (p.values) p.values[row * p.k + j] = to_f32(x[idx]);
        }
        if (idx == mine_idx) slice_first(x, n, false, key, idx, mine_key, mine_idx);
    }
}
