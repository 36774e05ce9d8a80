// out = decode(q) · scale of its 128×128 block, one f32 multiply (correctly rounded), then rounded once
// more to bf16 for a bf16 output (as the contract and DeepSeek's weight_dequant do). One thread per
// element of the [rows, K] view (rows = experts × N), split into row ranges by the host.
// P: [0] rows in this dispatch, [1] K, [2] N, [3] codes offset, [4] scales offset (whole grid),
//    [5] out offset, [6] ceil(K/128), [7] ceil(N/128), [8] first row (absolute).

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let kk = p(1u);
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p(0u) * kk) {
        return;
    }
    let r = i / kk;
    let c = i % kk;
    let row = p(8u) + r;
    let e = row / p(2u);
    let rn = row % p(2u);
    let kb = p(6u);
    let s = ld_scales(p(4u) + e * p(7u) * kb + (rn / 128u) * kb + c / 128u);
    st_out(p(5u) + r * kk + c, ld_codes(p(3u) + r * kk + c) * s);
}
