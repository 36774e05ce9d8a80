// rows[b, t, :] to position kv_lens[b] - T + t of sequence b, one sequence b per dispatch. A contiguous
// cache binds only the sequence's rows (so caches larger than a storage binding work); a page pool is bound
// whole and position u is row u % page of page table[b, u / page]. One thread per element of the sequence's
// rows. Numerics: none (f32 and bf16 pass through f32 unchanged). A length outside T..L, or a block table
// entry outside 0..pool, is reported and the row is left unwritten.
// P: [0] T, [1] W, [2] L, [3] b, [4] rows offset (of the sequence's first row), [5] rows token stride,
//    [6] kv_lens offset, [7] cache offset (of the sequence's position 0, or of the pool), [8] cache position
//    stride, [9] check site, [10] paged (0 / 1), [11] block table offset, [12] positions per page,
//    [13] table entries per sequence, [14] pages in the pool, [15] cache page stride, [16] check site of the
//    table entries.

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t_n = p(0u);
    let w = p(1u);
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= t_n * w) {
        return;
    }
    let len = ldi_lens(p(6u) + p(3u));
    if (len < i32(t_n) || u32(len) > p(2u)) {
        if (e == 0u) {
            report(p(9u), p(3u), bitcast<u32>(len));
        }
        return;
    }
    let t = e / w;
    let c = e % w;
    let pos = u32(len) - t_n + t;
    var row = p(7u) + pos * p(8u);
    if (p(10u) == 1u) {
        let entry = p(3u) * p(13u) + pos / p(12u);
        let page = ldi_table(p(11u) + entry);
        if (page < 0 || u32(page) >= p(14u)) {
            if (c == 0u) {
                report(p(16u), entry, bitcast<u32>(page));
            }
            return;
        }
        row = p(7u) + u32(page) * p(15u) + (pos % p(12u)) * p(8u);
    }
    st_cache(row + c, ld_rows(p(4u) + t * p(5u) + c));
}
