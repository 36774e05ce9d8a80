// out[t, d] = table[ids[t], d], one thread per output element; tables larger than a binding are split
// into row ranges [v0, v1), one dispatch each, each writing the tokens whose id falls in its range.
// An id outside 0..V is reported (by the first dispatch) and its row is left alone.
// P: [0] T, [1] D, [2] V, [3] v0, [4] v1, [5] table offset (of row v0), [6] ids offset, [7] out offset,
//    [8] out row stride, [9] check site (0: none).

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t_n = p(0u);
    let d_n = p(1u);
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= t_n * d_n) {
        return;
    }
    let t = e / d_n;
    let d = e % d_n;
    let id = ldi_ids(p(6u) + t);
    if (id < 0 || u32(id) >= p(2u)) {
        if (d == 0u && p(9u) != 0u) {
            report(p(9u), t, bitcast<u32>(id));
        }
        return;
    }
    let v = u32(id);
    if (v < p(3u) || v >= p(4u)) {
        return;
    }
    st_out(p(7u) + t * p(8u) + d, ld_table(p(5u) + (v - p(3u)) * d_n + d));
}
