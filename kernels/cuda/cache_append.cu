// cache[b, kv_lens[b] - T + t, :] = rows[b, t, :]: a step's latent rows appended to each sequence's cache
// at positions read on the device (so one launch serves any positions, and a captured step replays at new
// ones). One block per row (b, t), its threads along the row (coalesced loads and stores).
// Numerics: none; rows and cache share an element type, so an element is copied bit for bit.
// Device-side check: a length outside T..L is reported (by thread 0 of the sequence's first row) and the
// sequence is left unwritten; the error surfaces at the stream's next sync.

struct Params {
    u64 t, width, capacity;
    const x_t* rows;
    u64 rows_b, rows_t;  // element strides of rows' batch and token dimensions
    const i32* kv_lens;
    x_t* cache;
    u64 cache_b, cache_l;  // element strides of the cache's batch and position dimensions
    u32* err;              // the stream's error record
    u64 site;              // check site of "T <= kv_lens[b] <= L"
};

DSV3_KERNEL void cache_append(const Params p) {
    const u64 b = blockIdx.x / p.t, t = blockIdx.x % p.t;
    const i64 len = p.kv_lens[b];
    if (len < (i64)p.t || len > (i64)p.capacity) {
        if (t == 0 && threadIdx.x == 0) report(p.err, (u32)p.site, (u32)b, (u32)len);
        return;
    }
    const x_t* src = p.rows + b * p.rows_b + t * p.rows_t;
    x_t* dst = p.cache + b * p.cache_b + ((u64)len - p.t + t) * p.cache_l;
    for (u64 c = threadIdx.x; c < p.width; c += blockDim.x) dst[c] = src[c];
}
