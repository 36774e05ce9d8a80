// Rotary embedding on interleaved pairs: one thread per (token, head, pair). The angle is
// f32(f32(position) · f'_i) as the contract fixes it; sin and cos come from common.wgsl's range-reduced
// polynomials (WGSL's own are only accurate on [−π, π], and angles reach 163840 rad).
// P: [0] T, [1] H, [2] D/2, [3] x offset, [4] x token stride, [5] x head stride, [6] positions offset,
//    [7] out offset, [8] out token stride, [9] out head stride, [10..10+D/2] f'_i (f32 bits).

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t_n = p(0u);
    let h_n = p(1u);
    let half = p(2u);
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= t_n * h_n * half) {
        return;
    }
    let i = e % half;
    let h = (e / half) % h_n;
    let t = e / (half * h_n);
    let position = f32(ldi_pos(p(6u) + t));
    let angle = position * pf(10u + i);
    let sc = sincos_f32(angle);
    let xi = p(3u) + t * p(4u) + h * p(5u) + 2u * i;
    let x0 = ld_x(xi);
    let x1 = ld_x(xi + 1u);
    let oi = p(7u) + t * p(8u) + h * p(9u) + 2u * i;
    st_out(oi, x0 * sc.y - x1 * sc.x);
    st_out(oi + 1u, x0 * sc.x + x1 * sc.y);
}
