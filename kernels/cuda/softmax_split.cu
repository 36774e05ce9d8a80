// Softmax over long rows of x [R, N] (rows may be strided, elements within a row adjacent), each row spread
// over `chunks` blocks: block b takes row b / chunks, and of it the elements [chunk·j, chunk·(j+1)),
// j = b mod chunks (the last block of a row to N). Three launches, `pass` 0, 1, 2, with `part` (scratch,
// f32 [R, 2·chunks]) carrying what a row's blocks share between them:
//   pass 0: each block's max of its elements → part[row][j];
//   pass 1: m = the row's max (of its blocks' maxes), each block's Σ expf(x − m) → part[row][chunks + j];
//   pass 2: m again, Σ = the blocks' sums, out = expf(x − m) / Σ (a correctly rounded division).
// The same formulas as rows.cu's one-block softmax (and as its contract): x decoded exactly to f32, one max,
// one f32 sum of the same terms, one rounding at `out`. Only the order of the sum's additions differs: each
// thread's elements in increasing index, a block's threads as in block_sum, then the row's blocks in
// increasing j (every block of pass 2 adds them in that order, so they all use the same bits of Σ). A row
// gives the same bits on every run.

struct Params {
    u64 n, chunk, chunks;
    const x_t* x;
    u64 x_stride;
    out_t* out;
    u64 out_stride;
    float* part;  // [R, 2·chunks] scratch: the blocks' maxes, then their sums
    u64 pass;
};

// Max (`sum` false) or sum of the row's blocks' partials from `part`, in increasing j per thread then as
// block_sum / block_max combine threads: the same bits in every block of the row.
DSV3_DEV float row_partials(const float* part, u64 chunks, bool sum) {
    float v = sum ? 0.0f : -f32_inf();
    for (u64 j = threadIdx.x; j < chunks; j += blockDim.x) v = sum ? v + part[j] : fmaxf(v, part[j]);
    return sum ? block_sum(v) : block_max(v);
}

DSV3_KERNEL void softmax_split(const Params p) {
    u64 row = blockIdx.x / p.chunks, j = blockIdx.x % p.chunks;
    u64 begin = j * p.chunk, end = j + 1 == p.chunks ? p.n : begin + p.chunk;
    const x_t* x = p.x + row * p.x_stride;
    float* part = p.part + row * 2 * p.chunks;
    if (p.pass == 0) {
        float m = -f32_inf();
        for (u64 c = begin + threadIdx.x; c < end; c += blockDim.x) m = fmaxf(m, to_f32(x[c]));
        m = block_max(m);
        if (threadIdx.x == 0) part[j] = m;
        return;
    }
    float m = row_partials(part, p.chunks, false);
    if (p.pass == 1) {
        float s = 0.0f;
        for (u64 c = begin + threadIdx.x; c < end; c += blockDim.x) s += expf(to_f32(x[c]) - m);
        s = block_sum(s);
        if (threadIdx.x == 0) part[p.chunks + j] = s;
        return;
    }
    float s = row_partials(part + p.chunks, p.chunks, true);
    out_t* out = p.out + row * p.out_stride;
    for (u64 c = begin + threadIdx.x; c < end; c += blockDim.x) out[c] = from_f32<out_t>(expf(to_f32(x[c]) - m) / s);
}
