// Peak probes for "% of peak" figures. OPK 0: f32 fused multiply-adds, 8 independent chains per thread,
// P[2] iterations (the factors come from the parameters, so nothing folds); OPK 1: a streaming read of
// `buf` (P[3] words), one word per thread per step. Results reach memory only in a case that never
// happens, which keeps the work alive.
// P: [0] multiplier (f32 bits), [1] addend (f32 bits), [2] iterations, [3] words.

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t = gid.x + gid.y * nwg.x * 256u;
    if (OPK == 0u) {
        let m = pf(0u);
        let k = pf(1u);
        var a = array<f32, 8>(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0);
        for (var j = 0u; j < 8u; j = j + 1u) {
            a[j] = a[j] + f32(t) * 1e-7;
        }
        for (var i = 0u; i < p(2u); i = i + 1u) {
            a[0] = fma(a[0], m, k);
            a[1] = fma(a[1], m, k);
            a[2] = fma(a[2], m, k);
            a[3] = fma(a[3], m, k);
            a[4] = fma(a[4], m, k);
            a[5] = fma(a[5], m, k);
            a[6] = fma(a[6], m, k);
            a[7] = fma(a[7], m, k);
        }
        let s = a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
        if (s == 1234.5678) {
            sink[0] = bitcast<u32>(s);
        }
    } else {
        let stride = nwg.x * nwg.y * 256u;
        var s = 0u;
        for (var i = t; i < p(3u); i = i + stride) {
            s = s ^ buf[i];
        }
        if (s == 0x9e3779b9u) {
            sink[0] = s;
        }
    }
}
