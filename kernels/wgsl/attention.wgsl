// Attention over one split of the keys, one workgroup per (query row, split); the combine kernel merges
// the splits. Shared by both forms:
//   MLA (absorbed): q = [q_latent | q_pe], key u = cache[u] (c_kv | k_pe), value u = c_kv part of cache[u];
//   MHA: q, key u = k[u, h], value u = v[u, h] (D2 = 0).
// The workgroup walks its keys CH at a time: each thread scores one key (dot products in f32), then an
// online softmax (running max m, running sum l) rescales the accumulators each thread keeps for its output
// dimensions (d = lid, lid + WG, ...). Scores are scale · (q·k); e^x is common.wgsl's exp_f32.
// Writes (m, l, acc[DV]) per (row, split) to `part` (f32).
// P: [0] rows in this dispatch, [1] T, [2] H, [3] D1, [4] D2, [5] DV, [6] S (splits per row),
//    [7] keys per split, [8] causal, [9] scale (f32 bits), [10] q1 offset, [11] q2 offset,
//    [12..16) k1 offset, token / head / sequence strides, [16..20) k2 the same, [20..24) v the same,
//    [24] kv_lens offset, [25] L, [26] check site, [27] first row (global), [28] first sequence of the
//    kv windows, [29] first key of the kv windows, [30] first split of this dispatch, [31] paged (0 / 1),
//    [32] block table offset, [33] positions per page, [34] table entries per sequence, [35] pages in the
//    pool, [36] check site of the table entries.
// A paged cache (MLA) is bound whole: key u of sequence b is row (table[b, u / page] · page + u % page)
// of the kv windows, whose sequence stride is then 0. Contiguous caches ignore `table` (bound to a dummy).

const CH: u32 = WG;
const QMAX: u32 = 2048u;

var<workgroup> qs: array<f32, QMAX>;
var<workgroup> sc: array<f32, CH>;
var<workgroup> rows: array<u32, CH>;
var<workgroup> red: array<f32, WG>;
var<workgroup> seq_len: u32;
var<workgroup> pages_ok: u32;

// The row of key u of sequence b within the kv windows (see the header).
fn key_row(b: u32, u: u32, uw: u32) -> u32 {
    if (p(31u) == 0u) {
        return u - uw;
    }
    let page = u32(ldi_table(p(32u) + b * p(34u) + u / p(33u)));
    return page * p(33u) + u % p(33u);
}

fn reduce(lid: u32, v: f32, is_max: bool) -> f32 {
    red[lid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        if (lid < s) {
            if (is_max) {
                red[lid] = max(red[lid], red[lid + s]);
            } else {
                red[lid] = red[lid] + red[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = red[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r_local = wid.y;
    if (r_local >= p(0u)) {
        return;
    }
    let t_n = p(1u);
    let h_n = p(2u);
    let d1 = p(3u);
    let d2 = p(4u);
    let dv = p(5u);
    let s_n = p(6u);
    let g = p(27u) + r_local;
    let b = g / (t_n * h_n);
    let t = (g / h_n) % t_n;
    let h = g % h_n;
    let s = p(30u) + wid.x;
    if (lid == 0u) {
        let len = ldi_lens(p(24u) + b);
        var ok = len >= i32(t_n) && u32(len) <= p(25u);
        if (!ok) {
            if (p(26u) != 0u && t == 0u && h == 0u && wid.x == 0u) {
                report(p(26u), b, bitcast<u32>(len));
            }
            seq_len = 0u;
        } else {
            seq_len = u32(len);
        }
    }
    let kv_len = workgroupUniformLoad(&seq_len);
    for (var d = lid; d < d1; d = d + WG) {
        qs[d] = ld_q1(p(10u) + r_local * d1 + d);
    }
    for (var d = lid; d < d2; d = d + WG) {
        qs[d1 + d] = ld_q2(p(11u) + r_local * d2 + d);
    }
    workgroupBarrier();
    var visible = kv_len;
    if (p(8u) == 1u && kv_len > 0u) {
        visible = kv_len - t_n + t + 1u;
    }
    let u_begin = s * p(7u);
    var u_end = min(u_begin + p(7u), visible);
    // The block table entries of this split's keys, checked before any key is read.
    if (lid == 0u) {
        pages_ok = 1u;
        if (p(31u) == 1u && u_begin < u_end) {
            for (var j = u_begin / p(33u); j <= (u_end - 1u) / p(33u); j = j + 1u) {
                let e = ldi_table(p(32u) + b * p(34u) + j);
                if (e < 0 || u32(e) >= p(35u)) {
                    if (t == 0u && h == 0u) {
                        report(p(36u), b * p(34u) + j, bitcast<u32>(e));
                    }
                    pages_ok = 0u;
                    break;
                }
            }
        }
    }
    if (workgroupUniformLoad(&pages_ok) == 0u) {
        u_end = u_begin;
    }
    let scale = pf(9u);
    let bw = b - p(28u);
    let uw = p(29u);
    let k1b = p(12u) + bw * p(15u) + h * p(14u);
    let k2b = p(16u) + bw * p(19u) + h * p(18u);
    let vb = p(20u) + bw * p(23u) + h * p(22u);
    var m = -1.0e30;
    var l = 0.0;
    var acc: array<f32, OPT>;
    for (var j = 0u; j < OPT; j = j + 1u) {
        acc[j] = 0.0;
    }
    for (var c0 = u_begin; c0 < u_end; c0 = c0 + CH) {
        let u = c0 + lid;
        var score = -1.0e30;
        if (u < u_end) {
            var dot1 = 0.0;
            let row = key_row(b, u, uw);
            // For the value sum below (the reductions' barriers order it before every read).
            rows[lid] = row;
            let k1 = k1b + row * p(13u);
            for (var d = 0u; d < d1; d = d + 1u) {
                dot1 = dot1 + qs[d] * ld_k1(k1 + d);
            }
            var dot2 = 0.0;
            let k2 = k2b + row * p(17u);
            for (var d = 0u; d < d2; d = d + 1u) {
                dot2 = dot2 + qs[d1 + d] * ld_k2(k2 + d);
            }
            score = scale * (dot1 + dot2);
        }
        let m_new = max(m, reduce(lid, score, true));
        let alpha = exp_f32(m - m_new);
        var pu = 0.0;
        if (u < u_end) {
            pu = exp_f32(score - m_new);
        }
        sc[lid] = pu;
        l = l * alpha + reduce(lid, pu, false);
        let count = min(CH, u_end - c0);
        for (var j = 0u; j < OPT; j = j + 1u) {
            let d = lid + j * WG;
            if (d < dv) {
                var a = acc[j] * alpha;
                for (var x = 0u; x < count; x = x + 1u) {
                    a = a + sc[x] * ld_vv(vb + rows[x] * p(21u) + d);
                }
                acc[j] = a;
            }
        }
        workgroupBarrier();
        m = m_new;
    }
    let base = (r_local * s_n + s) * (dv + 2u);
    if (lid == 0u) {
        part[base] = bitcast<u32>(m);
        part[base + 1u] = bitcast<u32>(l);
    }
    for (var j = 0u; j < OPT; j = j + 1u) {
        let d = lid + j * WG;
        if (d < dv) {
            part[base + 2u + d] = bitcast<u32>(acc[j]);
        }
    }
}
