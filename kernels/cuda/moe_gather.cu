// moe_dispatch, pass 3 of 3, one block per slot s (expert id = ids[s], index block b = s / chunk): its row
// is offsets[id] + prefix[b, id] + rank[s] (moe_offsets, moe_index) — expert-contiguous, slots in order
// within an expert. The block writes slot_rows[s] and copies token s / k's row of x to that row. The copy
// is of bytes (x and rows share their dtype: no decoding), in the widest words (16, 8, 4, 2 or 1 bytes)
// that the addresses, row strides and row length allow, consecutive threads on consecutive words.
// A slot with an id outside 0..E (reported by moe_index) gets row −1 and copies nothing.

struct Params {
    const i32* ids;      // [S]
    const i32* offsets;  // [E + 1]
    const u32* prefix;   // [blocks, E]
    const i32* rank;     // [S]
    i32* slot_rows;      // [S]
    const u8* x;
    u64 x_stride;  // bytes
    u8* rows;
    u64 rows_stride;  // bytes
    u64 row_bytes, k, e, chunk;
    u64 width;  // bytes per word: 16, 8, 4, 2 or 1
};

struct alignas(16) word16 {
    u64 lo, hi;
};

template <class W> DSV3_DEV void copy_row(const u8* src, u8* dst, u64 bytes) {
    const W* s = (const W*)src;
    W* d = (W*)dst;
    for (u64 i = threadIdx.x; i < bytes / sizeof(W); i += blockDim.x) d[i] = s[i];
}

DSV3_KERNEL void moe_gather(const Params p) {
    const u64 s = blockIdx.x;
    const i32 id = p.ids[s];
    const bool valid = id >= 0 && (u64)id < p.e;
    i32 row = -1;
    if (valid) row = p.offsets[id] + (i32)p.prefix[(s / p.chunk) * p.e + (u64)id] + p.rank[s];
    if (threadIdx.x == 0) p.slot_rows[s] = row;
    if (valid) {
        const u8* src = p.x + (s / p.k) * p.x_stride;
        u8* dst = p.rows + (u64)row * p.rows_stride;
        if (p.width == 16) {
            copy_row<word16>(src, dst, p.row_bytes);
        } else if (p.width == 8) {
            copy_row<u64>(src, dst, p.row_bytes);
        } else if (p.width == 4) {
            copy_row<u32>(src, dst, p.row_bytes);
        } else if (p.width == 2) {
            copy_row<u16>(src, dst, p.row_bytes);
        } else {
            copy_row<u8>(src, dst, p.row_bytes);
        }
    }
}
