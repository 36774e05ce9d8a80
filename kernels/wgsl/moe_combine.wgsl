// out[t, n] = Σ_j weights[t, j] · expert_out[slot_rows[t·k + j], n], summed in f32 in j order, one thread
// per output element. A slot row outside 0..T·k is reported and its term skipped.
// P: [0] T, [1] k, [2] N, [3] expert_out offset, [4] expert_out row stride, [5] slot_rows offset,
//    [6] weights offset, [7] out offset, [8] out row stride, [9] check site, [10..12) the expert_out rows
//    r_lo..r_hi bound in this dispatch, [12] first (start from 0, else from the f32 partial sums in
//    `acc`), [13] last (write `out`, else `acc`). An expert_out larger than a binding is split into row
//    windows; the sum then runs through `acc` in f32.

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t_n = p(0u);
    let k_n = p(1u);
    let n_n = p(2u);
    let i = gid.x + gid.y * nwg.x * WG;
    if (i >= t_n * n_n) {
        return;
    }
    let t = i / n_n;
    let n = i % n_n;
    var acc = 0.0;
    if (p(12u) == 0u) {
        acc = bitcast<f32>(part[i]);
    }
    for (var j = 0u; j < k_n; j = j + 1u) {
        let slot = t * k_n + j;
        let r = ldi_slot_rows(p(5u) + slot);
        if (r < 0 || u32(r) >= t_n * k_n) {
            if (n == 0u && p(9u) != 0u) {
                report(p(9u), slot, bitcast<u32>(r));
            }
            continue;
        }
        if (u32(r) < p(10u) || u32(r) >= p(11u)) {
            continue;
        }
        acc = acc + ld_weights(p(6u) + slot) * ld_eo(p(3u) + (u32(r) - p(10u)) * p(4u) + n);
    }
    if (p(13u) == 1u) {
        st_out(p(7u) + t * p(8u) + n, acc);
    } else {
        part[i] = bitcast<u32>(acc);
    }
}
