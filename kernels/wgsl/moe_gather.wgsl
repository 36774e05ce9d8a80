// moe_dispatch, part 2: rows[slot_rows[s]] = x[s / k], one thread per element (a copy: the dtypes are
// equal, so decode then encode returns the same bits).
// P: [0] slots, [1] D, [2] k, [3] x offset, [4] x row stride, [5] slot_rows offset, [6] rows offset,
//    [7] rows row stride, [8..10) the rows r_lo..r_hi bound in this dispatch, [10..12) the tokens
//    t_lo..t_hi of x bound (larger tensors are split into windows, one dispatch per pair).

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s_n = p(0u);
    let d_n = p(1u);
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= s_n * d_n) {
        return;
    }
    let s = i / d_n;
    let d = i % d_n;
    let r = ldi_slot_rows(p(5u) + s);
    let token = s / p(2u);
    if (r < 0 || u32(r) < p(8u) || u32(r) >= p(9u) || token < p(10u) || token >= p(11u)) {
        return;
    }
    st_rows(p(6u) + (u32(r) - p(8u)) * p(7u) + d, ld_x(p(3u) + (token - p(10u)) * p(4u) + d));
}
