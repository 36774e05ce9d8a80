// DeepSeek's act_quant: one workgroup of 128 threads per (row, 128-channel group). amax is an exact max;
// s = amax' / fp8_max and q = x / s are each one correctly rounded f32 division (div_rn: WGSL's `/` may
// be 2.5 ulp off, and an FP8 tie would then round the other way); s is rounded up to a power of two for
// ue8m0 (UE8M0 = 1); codes round to nearest even, saturating.
// P: [0] rows, [1] K, [2] x offset, [3] x row stride, [4] codes offset, [5] codes row stride,
//    [6] scales offset, [7] ceil(K/128).

var<workgroup> red: array<f32, 128>;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let kb = p(7u);
    let id = wid.x + wid.y * nwg.x;
    if (id >= p(0u) * kb) {
        return;
    }
    let row = id / kb;
    let g = id % kb;
    let col = g * 128u + lid;
    let inside = col < p(1u);
    var x = 0.0;
    if (inside) {
        x = ld_x(p(2u) + row * p(3u) + col);
    }
    red[lid] = abs(x);
    workgroupBarrier();
    for (var s = 64u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let amax = max(red[0], 1e-4);
    var scale = div_rn(amax, fp8_max(KIND));
    if (UE8M0 == 1u) {
        scale = dec_ue8m0(enc_ue8m0_ceil(scale));
    }
    if (inside) {
        stw_codes(p(4u) + row * p(5u) + col, enc_fp8(div_rn(x, scale), KIND));
    }
    if (lid == 0u) {
        st_scales(p(6u) + row * kb + g, scale);
    }
}
