// A step's latent rows appended to each sequence's cache: rows[b, t, :] goes to position
// kv_lens[b] - T + t of sequence b, read on the device (so one launch serves any positions, and a captured
// step replays at new ones). The cache is contiguous (cache[b, position], `table` null: one page of L
// positions per sequence) or a page pool: position u of sequence b is row u % page of page
// table[b, u / page]. One block per row (b, t), its threads along the row (coalesced loads and stores).
// Numerics: none; rows and cache share an element type, so an element is copied bit for bit.
// Device-side checks: a length outside T..L, or a block table entry outside 0..pool, is reported (by
// thread 0 of the row) and the row is left unwritten; the error surfaces at the stream's next sync.
// Rows of one launch must be distinct cache rows (the op's contract; not checked here).

struct Params {
    u64 t, width, capacity;
    const x_t* rows;
    u64 rows_b, rows_t;  // element strides of rows' batch and token dimensions
    const i32* kv_lens;
    x_t* cache;
    u64 cache_b, cache_l;  // element strides of the cache's page (sequence) and position dimensions
    u32* err;              // the stream's error record
    u64 site;              // check site of "T <= kv_lens[b] <= L"
    const i32* table;      // [B, pages_per_seq], or null
    u64 page, pages_per_seq, pool;
    u64 page_site;  // check site of "block table entries in 0..pool"
};

DSV3_KERNEL void cache_append(const Params p) {
    const u64 b = blockIdx.x / p.t, t = blockIdx.x % p.t;
    const i64 len = p.kv_lens[b];
    if (len < (i64)p.t || len > (i64)p.capacity) {
        if (t == 0 && threadIdx.x == 0) report(p.err, (u32)p.site, (u32)b, (u32)len);
        return;
    }
    const u64 pos = (u64)len - p.t + t;
    const u64 entry = b * p.pages_per_seq + pos / p.page;
    const i64 page = p.table ? (i64)p.table[entry] : (i64)b;
    if (page < 0 || page >= (i64)p.pool) {
        if (threadIdx.x == 0) report(p.err, (u32)p.page_site, (u32)entry, (u32)page);
        return;
    }
    const x_t* src = p.rows + b * p.rows_b + t * p.rows_t;
    x_t* dst = p.cache + (u64)page * p.cache_b + (pos % p.page) * p.cache_l;
    for (u64 c = threadIdx.x; c < p.width; c += blockDim.x) dst[c] = src[c];
}
