// Merges the per-split partial results of attention.wgsl: with M = max_s m_s,
// out = Σ_s e^(m_s − M) acc_s / Σ_s e^(m_s − M) l_s, one thread per output element, rounded once.
// P: [0] rows, [1] S, [2] DV, [3] out offset.

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let s_n = p(1u);
    let dv = p(2u);
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= p(0u) * dv) {
        return;
    }
    let r = i / dv;
    let d = i % dv;
    var mx = -1.0e30;
    for (var s = 0u; s < s_n; s = s + 1u) {
        mx = max(mx, bitcast<f32>(part[(r * s_n + s) * (dv + 2u)]));
    }
    var num = 0.0;
    var den = 0.0;
    for (var s = 0u; s < s_n; s = s + 1u) {
        let base = (r * s_n + s) * (dv + 2u);
        let w = exp_f32(bitcast<f32>(part[base]) - mx);
        den = den + w * bitcast<f32>(part[base + 1u]);
        num = num + w * bitcast<f32>(part[base + 2u + d]);
    }
    st_out(p(3u) + r * dv + d, num / den);
}
