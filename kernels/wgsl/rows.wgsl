// One workgroup per row of an [R, N] row view. OPK 0: rms_norm, out = w ⊙ (x · 1/√(mean(x²) + eps));
// OPK 1: softmax, out = e^(x − max) / Σ e^(x − max). Sums are f32 tree reductions (a fixed order);
// the output is rounded once.
// P: [0] R, [1] N, [2] x offset, [3] x row stride, [4] w offset (rms_norm), [5] out offset,
//    [6] out row stride, [7] eps (f32 bits).

var<workgroup> red: array<f32, WG>;

fn reduce_sum(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = red[lid] + red[lid + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

fn reduce_max(lid: u32, v: f32) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            red[lid] = max(red[lid], red[lid + s]);
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p(0u)) {
        return;
    }
    let n = p(1u);
    let xb = p(2u) + row * p(3u);
    let ob = p(5u) + row * p(6u);
    if (OPK == 0u) {
        var ss = 0.0;
        for (var c = lid; c < n; c = c + WG) {
            let v = ld_x(xb + c);
            ss = ss + v * v;
        }
        let mean_square = reduce_sum(lid, ss) / f32(n);
        let inv_rms = 1.0 / sqrt(mean_square + pf(7u));
        for (var c = lid; c < n; c = c + WG) {
            st_out(ob + c, ld_w(p(4u) + c) * (ld_x(xb + c) * inv_rms));
        }
    } else {
        var m = -3.4028234e38;
        for (var c = lid; c < n; c = c + WG) {
            m = max(m, ld_x(xb + c));
        }
        m = reduce_max(lid, m);
        var s = 0.0;
        for (var c = lid; c < n; c = c + WG) {
            s = s + exp_f32(ld_x(xb + c) - m);
        }
        s = reduce_sum(lid, s);
        for (var c = lid; c < n; c = c + WG) {
            st_out(ob + c, exp_f32(ld_x(xb + c) - m) / s);
        }
    }
}
