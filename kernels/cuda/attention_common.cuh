// What attention.cu (SIMT, both forms) and attention_mma.cu (MLA on tensor cores) share: the launch
// parameters (ops/attention.rs fills both alike), the cache addressing, and the keys a block's split sees
// after the device-side checks of the cache length and the block table.

// min of two u64, local so that no 64-bit overload of `min` is needed from NVRTC, hipcc or the host.
DSV3_DEV u64 min_u64(u64 a, u64 b) { return a < b ? a : b; }

struct Params {
    const q_t* q;    // [B, T, H, D1]
    const qr_t* qr;  // [B, T, H, D2] (MLA; unused by MHA)
    const k_t* k;    // MLA: kv_cache [B, L, D1 + D2]; MHA: k [B, L, H, D1]
    const v_t* v;    // MLA: kv_cache (its first DV = D1 columns); MHA: v [B, L, H, DV]
    const i32* lens;
    const i32* table;  // [B, pages_per_seq] page of each `page` positions; null: contiguous (page = L)
    out_t* out;      // [B, T, H, DV]
    float* part;     // [B·T·H, splits, DV + 2] when splits > 1
    u32* err;
    u64 t_n, h_n, d1, d2, dv, l;
    u64 g;        // heads per block
    u64 groups;   // head groups per token, ceil(H / g)
    u64 splits, split_len;
    u64 causal;
    u64 site;
    u64 page, pages_per_seq, pool;
    u64 page_site;  // check site of "block table entries in 0..pool"
    double scale;
};

// The page holding position u of sequence b: its block table entry, or b itself for a contiguous cache
// (one page of L positions per sequence). The caller has checked the entry (key_range).
DSV3_DEV u64 page_of(const Params& p, u64 b, u64 u) {
    return p.table ? (u64)p.table[b * p.pages_per_seq + u / p.page] : b;
}

// The cache row (of the cache viewed as [pool · page, width]) of position u of sequence b.
DSV3_DEV u64 cache_row(const Params& p, u64 b, u64 u) { return page_of(p, b, u) * p.page + u % p.page; }

// The keys [u_begin, u_end) that split s of query t of sequence b reads: those of the split this query
// may see (under causal masking up to its own position kv_len − T + t), or none when kv_lens[b] is outside
// T..=L or a block table entry the split needs is outside 0..pool. Both breaks are reported, by the
// blocks of the first head group of token 0 (`reporter`), the length once per sequence. Every thread of
// the block calls it (it has barriers); `bad_page` is a shared flag; `threads` is the block size.
DSV3_DEV void key_range(const Params& p, u64 b, u64 t, u64 s, bool reporter, u32 threads, u32& bad_page,
                        u64& u_begin, u64& u_end) {
    const u32 tid = threadIdx.x;
    const i32 len = p.lens[b];
    const bool len_ok = len >= (i64)p.t_n && (u64)len <= p.l;
    if (!len_ok && tid == 0 && s == 0 && reporter) report(p.err, (u32)p.site, (u32)b, (u32)len);
    const u64 visible = !len_ok ? 0 : (p.causal ? (u64)len - p.t_n + t + 1 : (u64)len);
    u_begin = s * p.split_len;
    // (u_end = u_begin for a split past the visible keys: the range is empty, never reversed.)
    u_end = u_begin < visible ? min_u64(u_begin + p.split_len, visible) : u_begin;
    // The block table entries of this split's keys, checked before any key is read.
    if (tid == 0) bad_page = 0;
    dsv3_sync();
    if (p.table && u_begin < u_end) {
        for (u64 j = u_begin / p.page + tid; j <= (u_end - 1) / p.page; j += threads) {
            const i32 e = p.table[b * p.pages_per_seq + j];
            if (e < 0 || (u64)e >= p.pool) {
                bad_page = 1;
                if (reporter) report(p.err, (u32)p.page_site, (u32)(b * p.pages_per_seq + j), (u32)e);
            }
        }
    }
    dsv3_sync();
    if (bad_page) u_end = u_begin;
}
