// The decode GEMM (few rows) where the device has subgroup operations: each subgroup owns a column of C,
// its lanes split K and the partial sums are added with subgroupAdd — no workgroup memory and no barrier
// in the reduction (gemm_decode.wgsl is the path without subgroups). A workgroup covers COLS columns with
// however many subgroups the device forms (8 lanes on lavapipe, 32 on NVIDIA, 64 on AMD).
// GROUPED = 1: one row per workgroup (y), its expert found from `offs`.
// P: see gemm_common.wgsl.

var<workgroup> row_expert: u32;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_invocation_id) lane: u32, @builtin(subgroup_size) sgs: u32,
        @builtin(subgroup_id) sid: u32, @builtin(num_subgroups) nsg: u32) {
    let n_total = p(1u);
    let kk = p(2u);
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
                if (i32(r) >= ldi_offs(p(15u) + x) && i32(r) < ldi_offs(p(15u) + x + 1u)) {
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
    for (var j = 0u; j < COLS; j = j + nsg) {
        let n = wid.x * COLS + j + sid;
        let live = n < n_total && j + sid < COLS;
        var acc: array<f32, MAXM>;
        for (var m = 0u; m < MAXM; m = m + 1u) {
            acc[m] = 0.0;
        }
        if (live) {
            for (var k = lane; k < kk; k = k + sgs) {
                let b = load_b(e, n, k);
                // A constant trip count (unrolled): lavapipe stops any shader after 65535 loop
                // iterations in all, and a runtime-bounded inner loop would count once per k.
                for (var m = 0u; m < MAXM; m = m + 1u) {
                    if (m < m_n) {
                        acc[m] = acc[m] + load_a(m0 + m, k) * b;
                    }
                }
            }
        }
        for (var m = 0u; m < MAXM; m = m + 1u) {
            let total = subgroupAdd(acc[m]);
            if (live && lane == 0u && m < m_n) {
                st_c(p(11u) + (m0 + m) * p(12u) + n, total);
            }
        }
    }
}
