// C = A · Bᵀ for few rows (decode, M ≤ MAXM): bandwidth-bound, so each workgroup streams COLS rows of B
// once, LANES threads per column splitting K, every thread accumulating all M rows in registers; the
// LANES partial sums are then added in a fixed tree order. GROUPED = 1: one row per workgroup (y), its
// expert found from `offs`; rows of one expert then read the same B rows (cache-friendly for decode, where
// rows mostly go to different experts).
// P: see gemm_common.wgsl.

const NT: u32 = COLS * LANES;

var<workgroup> red: array<f32, NT * MAXM>;
var<workgroup> row_expert: u32;

@compute @workgroup_size(NT)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let n_total = p(1u);
    let kk = p(2u);
    let col = lid / LANES;
    let lane = lid % LANES;
    let n = wid.x * COLS + col;
    var m0 = 0u;
    var m_n = p(0u);
    var e = p(13u);
    if (GROUPED == 1u) {
        m0 = wid.y;
        m_n = 1u;
        if (lid == 0u) {
            if (wid.x == 0u && wid.y == 0u && p(18u) != 0u) {
                check_offsets();
            }
            let r = p(16u) + wid.y;
            row_expert = 0xffffffffu;
            for (var x = p(13u); x < p(14u); x = x + 1u) {
                let lo = ldi_offs(p(15u) + x);
                let hi = ldi_offs(p(15u) + x + 1u);
                if (i32(r) >= lo && i32(r) < hi) {
                    row_expert = x;
                    break;
                }
            }
        }
        e = workgroupUniformLoad(&row_expert);
        if (e == 0xffffffffu) {
            return;
        }
    }
    var acc: array<f32, MAXM>;
    for (var m = 0u; m < MAXM; m = m + 1u) {
        acc[m] = 0.0;
    }
    if (n < n_total) {
        for (var k = lane; k < kk; k = k + LANES) {
            let b = load_b(e, n, k);
            // A constant trip count (unrolled): lavapipe stops any shader after 65535 loop iterations
            // in all, and a runtime-bounded inner loop would count once per k.
            for (var m = 0u; m < MAXM; m = m + 1u) {
                if (m < m_n) {
                    acc[m] = acc[m] + load_a(m0 + m, k) * b;
                }
            }
        }
    }
    for (var m = 0u; m < MAXM; m = m + 1u) {
        red[m * NT + lid] = acc[m];
    }
    workgroupBarrier();
    for (var s = LANES / 2u; s > 0u; s = s / 2u) {
        if (lane < s) {
            for (var m = 0u; m < MAXM; m = m + 1u) {
                red[m * NT + lid] = red[m * NT + lid] + red[m * NT + lid + s];
            }
        }
        workgroupBarrier();
    }
    if (lane == 0u && n < n_total) {
        for (var m = 0u; m < m_n; m = m + 1u) {
            st_c(p(11u) + (m0 + m) * p(12u) + n, red[m * NT + lid]);
        }
    }
}
