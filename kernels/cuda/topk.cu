// argmax and top-k of each row of x [R, N] (row stride free); blockDim.x is a multiple of DSV3_WARP, at most
// 1024.
// The order is the contract's: value descending in f32 total order (order_key: −0 < +0, NaN at the ends),
// then index ascending — ties go to the lower index. No arithmetic on the values (a value written is its
// order key decoded back: the same bits), so the result is exact.
// A block selects from a range of one row: block b takes row b / chunks and of it the elements
// [chunk·j, chunk·(j+1)), j = b mod chunks (the last block of a row to N), and writes its k first to row b
// of `values` / `ids`. With one chunk per row that is the answer. Long rows take two launches: every chunk's
// k first into scratch ([R, chunks, k], each chunk at least k long), then one block per row selects the k
// first of those candidates, with `x_ids` giving each candidate's index in the row (the order compares
// indices, not positions among the candidates). The k first of a row are among its chunks' k first, so both
// launches give the same ids and values.
// Thread j looks after the slice c ≡ j (mod blockDim.x) of its range and holds a candidate: the first
// element of its slice in that order not chosen yet. Each of the k rounds takes the first candidate of the
// block (a reduction), writes it, and only the thread that owned it rescans its slice for its next
// candidate: every other candidate is still the first unchosen element of its slice. One pass over the
// range, then per round a block reduction and (range / blockDim.x) loads. argmax is k = 1 with no values.

struct Params {
    u64 n, k;
    const x_t* x;
    u64 x_stride;
    float* values;  // [R·chunks, k] contiguous; null for argmax (written by every pass that splits a row)
    i32* ids;       // [R·chunks, k] contiguous
    u64 chunk, chunks;
    const i32* x_ids;  // each element's index in its row, laid out as x; null: its position
};

// No candidate: after every element (a real index is below it).
#define NO_INDEX 0xffffffffu

// Whether (ka, ia) comes before (kb, ib) in the selection order.
DSV3_DEV bool before(u32 ka, u32 ia, u32 kb, u32 ib) { return ka > kb || (ka == kb && ia < ib); }

// The value whose order key is `key`, bit for bit.
DSV3_DEV float from_order_key(u32 key) { return u2f((key >> 31) ? (key & 0x7fffffffu) : ~key); }

// The first element of this thread's slice of [begin, end) that comes after (after_key, after_idx) (any,
// when `first`).
DSV3_DEV void slice_first(const x_t* x, const i32* x_ids, u32 begin, u32 end, bool first, u32 after_key,
                          u32 after_idx, u32& key, u32& idx) {
    key = 0;
    idx = NO_INDEX;
    for (u32 c = begin + threadIdx.x; c < end; c += blockDim.x) {
        u32 kc = order_key(to_f32(x[c]));
        u32 ic = x_ids ? (u32)x_ids[c] : c;
        if ((first || before(after_key, after_idx, kc, ic)) && before(kc, ic, key, idx)) {
            key = kc;
            idx = ic;
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
    u64 row = blockIdx.x / p.chunks, j = blockIdx.x % p.chunks;
    u32 begin = (u32)(j * p.chunk), end = j + 1 == p.chunks ? (u32)p.n : (u32)(j * p.chunk + p.chunk);
    const x_t* x = p.x + row * p.x_stride;
    const i32* x_ids = p.x_ids ? p.x_ids + row * p.x_stride : nullptr;
    u64 out = (u64)blockIdx.x * p.k;
    u32 mine_key, mine_idx;
    slice_first(x, x_ids, begin, end, true, 0, 0, mine_key, mine_idx);
    for (u64 r = 0; r < p.k; r++) {
        u32 key = mine_key, idx = mine_idx;
        block_first(key, idx);
        if (threadIdx.x == 0) {
            p.ids[out + r] = (i32)idx;
            if (p.values) p.values[out + r] = from_order_key(key);
        }
        if (idx == mine_idx) slice_first(x, x_ids, begin, end, false, key, idx, mine_key, mine_idx);
    }
}
