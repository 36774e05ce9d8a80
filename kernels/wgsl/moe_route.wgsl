// The router, one workgroup per token: scores in parallel (sigmoid, or softmax over all experts with a
// tree-reduced max and sum), then the selection in one thread, exactly as the contract orders it:
// groups by score (noaux_tc: sum of the top-2 biased scores; group-limited: max), the kept groups' experts
// by decreasing selection score, ties to the lower index (total order on f32), weights from the unbiased
// scores, normalised by their sum in choice order if asked, times the scaling factor.
// P: [0] T, [1] E, [2] n_group, [3] topk_group, [4] top_k, [5] scoring (0 sigmoid, 1 softmax),
//    [6] method (0 greedy, 1 group-limited, 2 noaux_tc), [7] normalise, [8] scaling factor (f32 bits),
//    [9] logits offset, [10] bias offset, [11] ids offset, [12] weights offset.

const MAXE: u32 = 512u;

var<workgroup> score: array<f32, MAXE>;
var<workgroup> sel: array<f32, MAXE>;
var<workgroup> taken: array<u32, MAXE>;
var<workgroup> red: array<f32, WG>;
var<workgroup> gscore: array<f32, MAXE>;
var<workgroup> gkept: array<u32, MAXE>;
var<workgroup> chosen: array<u32, MAXE>;

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
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let t = wid.x + wid.y * nwg.x;
    if (t >= p(0u)) {
        return;
    }
    let e_n = p(1u);
    let base = p(9u) + t * e_n;
    if (p(5u) == 0u) {
        for (var e = lid; e < e_n; e = e + WG) {
            score[e] = 1.0 / (1.0 + exp_f32(-ld_logits(base + e)));
        }
    } else {
        var m = -3.4028234e38;
        for (var e = lid; e < e_n; e = e + WG) {
            m = max(m, ld_logits(base + e));
        }
        m = reduce(lid, m, true);
        var s = 0.0;
        for (var e = lid; e < e_n; e = e + WG) {
            let x = exp_f32(ld_logits(base + e) - m);
            score[e] = x;
            s = s + x;
        }
        s = reduce(lid, s, false);
        for (var e = lid; e < e_n; e = e + WG) {
            score[e] = score[e] / s;
        }
    }
    for (var e = lid; e < e_n; e = e + WG) {
        var c = score[e];
        if (p(6u) == 2u) {
            c = c + ld_bias(p(10u) + e);
        }
        sel[e] = c;
        taken[e] = 0u;
    }
    workgroupBarrier();
    if (lid != 0u) {
        return;
    }
    let groups = p(2u);
    let per = e_n / groups;
    let method = p(6u);
    if (method != 0u) {
        // Group scores, then keep the top `topk_group` groups; experts of the others are excluded.
        for (var g = 0u; g < groups; g = g + 1u) {
            var i1 = 0u;
            for (var i = 1u; i < per; i = i + 1u) {
                if (order_key(sel[g * per + i]) > order_key(sel[g * per + i1])) {
                    i1 = i;
                }
            }
            var gs = sel[g * per + i1];
            if (method == 2u) {
                var i2 = select(0u, 1u, i1 == 0u);
                for (var i = 0u; i < per; i = i + 1u) {
                    if (i != i1 && order_key(sel[g * per + i]) > order_key(sel[g * per + i2])) {
                        i2 = i;
                    }
                }
                gs = gs + sel[g * per + i2];
            }
            gscore[g] = gs;
            gkept[g] = 0u;
        }
        for (var round = 0u; round < p(3u); round = round + 1u) {
            var best = 0xffffffffu;
            for (var g = 0u; g < groups; g = g + 1u) {
                if (gkept[g] == 0u && (best == 0xffffffffu || order_key(gscore[g]) > order_key(gscore[best]))) {
                    best = g;
                }
            }
            gkept[best] = 1u;
        }
        for (var e = 0u; e < e_n; e = e + 1u) {
            taken[e] = 1u - gkept[e / per];
        }
    }
    // Top-k of the selection scores among the experts not excluded, in decreasing order.
    let k_n = p(4u);
    for (var j = 0u; j < k_n; j = j + 1u) {
        var best = 0xffffffffu;
        for (var e = 0u; e < e_n; e = e + 1u) {
            if (taken[e] == 0u && (best == 0xffffffffu || order_key(sel[e]) > order_key(sel[best]))) {
                best = e;
            }
        }
        taken[best] = 1u;
        chosen[j] = best;
    }
    var sum = 0.0;
    for (var j = 0u; j < k_n; j = j + 1u) {
        sum = sum + score[chosen[j]];
    }
    let scale = pf(8u);
    for (var j = 0u; j < k_n; j = j + 1u) {
        var w = score[chosen[j]];
        if (p(7u) == 1u) {
            w = w / sum;
        }
        sti_ids(p(11u) + t * k_n + j, i32(chosen[j]));
        st_weights(p(12u) + t * k_n + j, w * scale);
    }
}
