// Seeded sampling, one workgroup per row (the contract in dsv3-core's ops/sampling.rs):
//   temperature 0: argmax (ties to the lower index);
//   else p = softmax(l / T) in f32 (l / T one correctly rounded division, as the CPU computes it), the
//   nucleus = the shortest prefix by decreasing p (ties to the lower id) whose mass reaches top_p, found
//   without sorting: a binary search over the f32 bit patterns of p for the cut value v_c (the largest
//   v with Σ_{p ≥ v} p ≥ top_p), then, among tokens equal to v_c, the lowest ids that complete the mass;
//   the winner maximises p_i / E_i with E_i = −ln u(seed, key, i), u computed in 64-bit integer
//   arithmetic on u32 pairs exactly as core's `uniform`, and E from it without cancellation.
// Each row's temperature, top_p, seed and key (core's `Sample::row`): the launch's, keyed by the global
// row; or, with per-row parameters, the row's entry of `rows` (i32 [R, 4]: temperature and top_p as f32
// bits, the seed's low and high words), keyed as row 0, checked here: a bad entry is reported and the row
// left unwritten.
// P: [0] R, [1] V, [2] logits offset, [3] logits row stride, [4] out offset, [5] temperature (f32 bits),
//    [6] top_p (f32 bits), [7] seed low word, [8] seed high word, [9] first row (global, for u),
//    [10] 1 with per-row parameters, [11] their offset, [12] their check site.

var<workgroup> rf: array<f32, WG>;
var<workgroup> rk: array<u32, WG>;
var<workgroup> rk2: array<u32, WG>;
var<workgroup> ri: array<u32, WG>;
var<workgroup> cut_idx: u32;

fn sum_all(lid: u32, v: f32) -> f32 {
    rf[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            rf[lid] = rf[lid] + rf[lid + s];
        }
        workgroupBarrier();
    }
    let r = rf[0];
    workgroupBarrier();
    return r;
}

fn max_all(lid: u32, v: f32) -> f32 {
    rf[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            rf[lid] = max(rf[lid], rf[lid + s]);
        }
        workgroupBarrier();
    }
    let r = rf[0];
    workgroupBarrier();
    return r;
}

// (key, key2, index) lexicographically best: larger key, then larger key2, then smaller index.
fn better(k: u32, k2: u32, i: u32, bk: u32, bk2: u32, bi: u32) -> bool {
    if (bi == 0xffffffffu) {
        return i != 0xffffffffu;
    }
    if (i == 0xffffffffu) {
        return false;
    }
    return k > bk || (k == bk && (k2 > bk2 || (k2 == bk2 && i < bi)));
}

fn best_all(lid: u32, k: u32, k2: u32, i: u32) -> u32 {
    rk[lid] = k;
    rk2[lid] = k2;
    ri[lid] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s && better(rk[lid + s], rk2[lid + s], ri[lid + s], rk[lid], rk2[lid], ri[lid])) {
            rk[lid] = rk[lid + s];
            rk2[lid] = rk2[lid + s];
            ri[lid] = ri[lid + s];
        }
        workgroupBarrier();
    }
    let r = ri[0];
    workgroupBarrier();
    return r;
}

// E = −ln u(seed, row, column), u = ((z >> 11) + ½) / 2^53 with z core's SplitMix64-style mix.
fn race_e(seed: vec2<u32>, row: u32, col: u32) -> f32 {
    var z = seed ^ mul64(vec2<u32>(row, 0u), vec2<u32>(0x7F4A7C15u, 0x9E3779B9u))
        ^ mul64(vec2<u32>(col, 0u), vec2<u32>(0xD192ED03u, 0xD1B54A32u));
    z = mul64(z ^ shr64(z, 30u), vec2<u32>(0x1CE4E5B9u, 0xBF58476Du));
    z = mul64(z ^ shr64(z, 27u), vec2<u32>(0x133111EBu, 0x94D049BBu));
    z = z ^ shr64(z, 31u);
    let m = shr64(z, 11u); // 53 bits
    if (m.y < 0x100000u) {
        // u < ½: ln u directly (u is exact up to one rounding of m + ½).
        let mf = f32(m.y) * 4294967296.0 + (f32(m.x) + 0.5);
        return -ln_f32(mf * 1.1102230246251565e-16);
    }
    // u ≥ ½: E = −ln(1 − v) with v = 1 − u = (2^53 − 1 − m + ½) / 2^53 formed exactly in integers, so E
    // keeps its relative accuracy when u is close to 1 (E small, the race key large).
    let n_hi = 0x1fffffu - m.y;
    let n_lo = 0xffffffffu - m.x;
    let v = (f32(n_hi) * 4294967296.0 + (f32(n_lo) + 0.5)) * 1.1102230246251565e-16;
    return -ln1p_f32(-v);
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
    let grow = p(9u) + row;
    var temperature = pf(5u);
    var top_p = pf(6u);
    var seed = vec2<u32>(p(7u), p(8u));
    var key = grow;
    if (p(10u) == 1u) {
        let e = p(11u) + 4u * grow;
        temperature = bitcast<f32>(raw_rows(e));
        top_p = bitcast<f32>(raw_rows(e + 1u));
        seed = vec2<u32>(raw_rows(e + 2u), raw_rows(e + 3u));
        key = 0u;
        // Finite and ≥ 0 (false for NaN: every comparison with it is), top_p in (0, 1].
        let t_ok = temperature >= 0.0 && temperature <= 3.4028234e38;
        if (!t_ok || !(top_p > 0.0 && top_p <= 1.0)) {
            if (lid == 0u) {
                report(p(12u), grow, select(raw_rows(e), raw_rows(e + 1u), t_ok));
            }
            return;
        }
    }
    if (temperature == 0.0) {
        var bk = 0u;
        var bi = 0xffffffffu;
        for (var c = lid; c < n; c = c + WG) {
            let k = order_key(ld_x(xb + c));
            if (better(k, 0u, c, bk, 0u, bi)) {
                bk = k;
                bi = c;
            }
        }
        let win = best_all(lid, bk, 0u, bi);
        if (lid == 0u) {
            sti_out(p(4u) + row, i32(win));
        }
        return;
    }
    var mx = -3.4028234e38;
    for (var c = lid; c < n; c = c + WG) {
        mx = max(mx, div_rn(ld_x(xb + c), temperature));
    }
    mx = max_all(lid, mx);
    var part = 0.0;
    for (var c = lid; c < n; c = c + WG) {
        part = part + exp_f32(div_rn(ld_x(xb + c), temperature) - mx);
    }
    let total = sum_all(lid, part);
    // Σ p over tokens whose key is ≥ `key` (p ≥ 0, so keys are ≥ 0x80000000).
    var lo = 0x80000000u;
    var hi = 0xbf800001u;
    var s_lo = 0.0;
    {
        var acc = 0.0;
        for (var c = lid; c < n; c = c + WG) {
            acc = acc + exp_f32(div_rn(ld_x(xb + c), temperature) - mx) / total;
        }
        s_lo = sum_all(lid, acc);
    }
    let cut = s_lo >= top_p;
    if (cut) {
        loop {
            if (hi - lo <= 1u) {
                break;
            }
            let mid = lo + (hi - lo) / 2u;
            var acc = 0.0;
            for (var c = lid; c < n; c = c + WG) {
                let pc = exp_f32(div_rn(ld_x(xb + c), temperature) - mx) / total;
                if (order_key(pc) >= mid) {
                    acc = acc + pc;
                }
            }
            if (sum_all(lid, acc) >= top_p) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let k_cut = lo;
    let v_cut = bitcast<f32>(k_cut & 0x7fffffffu);
    // Ties at the cut value: the lowest ids that complete the mass.
    if (lid == 0u) {
        cut_idx = 0xffffffffu;
    }
    if (cut) {
        var above = 0.0;
        var ties = 0u;
        let seg = (n + WG - 1u) / WG;
        for (var c = lid * seg; c < min(n, lid * seg + seg); c = c + 1u) {
            let pc = exp_f32(div_rn(ld_x(xb + c), temperature) - mx) / total;
            let k = order_key(pc);
            if (k > k_cut) {
                above = above + pc;
            } else if (k == k_cut) {
                ties = ties + 1u;
            }
        }
        let mass_above = sum_all(lid, above);
        rk[lid] = ties;
        workgroupBarrier();
        if (lid == 0u) {
            var need = 1u;
            if (v_cut > 0.0) {
                need = u32(clamp(ceil((top_p - mass_above) / v_cut), 1.0, 4294967040.0));
            }
            var seen = 0u;
            for (var t = 0u; t < WG; t = t + 1u) {
                if (seen + rk[t] >= need) {
                    // The (need − seen)-th tie of segment t.
                    var left = need - seen;
                    for (var c = t * seg; c < min(n, t * seg + seg); c = c + 1u) {
                        let pc = exp_f32(div_rn(ld_x(xb + c), temperature) - mx) / total;
                        if (order_key(pc) == k_cut) {
                            left = left - 1u;
                            if (left == 0u) {
                                cut_idx = c;
                                break;
                            }
                        }
                    }
                    break;
                }
                seen = seen + rk[t];
            }
        }
        workgroupBarrier();
    }
    let idx_cut = workgroupUniformLoad(&cut_idx);
    // The race among the nucleus.
    var bk = 0u;
    var bk2 = 0u;
    var bi = 0xffffffffu;
    for (var c = lid; c < n; c = c + WG) {
        let pc = exp_f32(div_rn(ld_x(xb + c), temperature) - mx) / total;
        let kp = order_key(pc);
        let inside = !cut || kp > k_cut || (kp == k_cut && c <= idx_cut);
        if (inside) {
            let rk_c = order_key(pc / race_e(seed, key, c));
            if (better(rk_c, kp, c, bk, bk2, bi)) {
                bk = rk_c;
                bk2 = kp;
                bi = c;
            }
        }
    }
    let win = best_all(lid, bk, bk2, bi);
    if (lid == 0u) {
        sti_out(p(4u) + row, i32(win));
    }
}
