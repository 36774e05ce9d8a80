// out[t, d] = table[ids[t], d]: table [V, D] contiguous, ids i32 [T], out [T, D] with a row stride; one
// block per token, its threads along d (coalesced loads and stores).
// Numerics: none. Same element type: a bit copy; otherwise decoded exactly to f32 and rounded once.
// Device-side check: an id outside 0..V is reported (by thread 0 of its token's block) and its output row
// is left untouched; the error surfaces at the stream's next sync.

struct Params {
    u64 dim, vocab;
    const table_t* table;
    const i32* ids;
    out_t* out;
    u64 out_stride;
    u32* err;  // the stream's error record
    u64 site;  // check site of "ids in 0..V"
};

template <class O, class T> struct Convert {
    static DSV3_DEV_INLINE O run(T v) { return from_f32<O>(to_f32(v)); }
};
template <class T> struct Convert<T, T> {
    static DSV3_DEV_INLINE T run(T v) { return v; }
};

DSV3_KERNEL void embedding(const Params p) {
    u64 t = blockIdx.x;
    i32 id = p.ids[t];
    if (id < 0 || (u64)id >= p.vocab) {
        if (threadIdx.x == 0) report(p.err, (u32)p.site, (u32)t, (u32)id);
        return;
    }
    const table_t* src = p.table + (u64)id * p.dim;
    out_t* dst = p.out + t * p.out_stride;
    for (u64 d = threadIdx.x; d < p.dim; d += blockDim.x) dst[d] = Convert<out_t, table_t>::run(src[d]);
}
