// C[M, N] = A[M, K] · B[N, K]ᵀ, tiled through workgroup memory: a workgroup of TX × TY threads computes a
// BM × BN tile (each thread TM × TN outputs), stepping over K in BK-wide slices that the workgroup decodes
// to f32 into shared memory. FP8 operands are decoded with their block scale folded in (the contract
// allows scales applied to the operand value); products accumulate in f32; C is rounded once.
//
// GROUPED = 1 (grouped_gemm): rows are grouped by expert through `offs` (i32 [E + 1], on the device);
// workgroup row index g walks the experts e_lo..e_hi, each contributing ceil(rows_e / BM) tiles, and uses
// b[e]. The first dispatch of an op also checks the offsets (0, non-decreasing, ending at the row count).
//
// P: see gemm_common.wgsl.

const BM: u32 = TY * TM;
const BN: u32 = TX * TN;
const BK: u32 = 16u;
const NT: u32 = TX * TY;

var<workgroup> As: array<f32, BK * BM>;
var<workgroup> Bs: array<f32, BK * BN>;
var<workgroup> tile_expert: u32;
var<workgroup> tile_lo: u32;
var<workgroup> tile_hi: u32;

@compute @workgroup_size(TX, TY, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid3: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let m_total = p(0u);
    let n_total = p(1u);
    let kk = p(2u);
    let tx = lid3.x;
    let ty = lid3.y;
    let n_base = wid.x * BN;
    var m_base = wid.y * BM;
    var m_end = m_total;
    var e = 0u;
    if (GROUPED == 1u) {
        if (lid == 0u) {
            if (wid.x == 0u && wid.y == 0u && p(18u) != 0u) {
                check_offsets();
            }
            // Which expert's which tile this workgroup computes (rows clipped to this dispatch's r0..r0+M).
            let r0 = p(16u);
            var g = wid.y;
            tile_expert = 0xffffffffu;
            for (var x = p(13u); x < p(14u); x = x + 1u) {
                let lo = clamp(offs_at(x), r0, r0 + m_total) - r0;
                let hi = clamp(offs_at(x + 1u), r0, r0 + m_total) - r0;
                let tiles = select(0u, (hi - lo + BM - 1u) / BM, hi > lo);
                if (g < tiles) {
                    tile_expert = x;
                    tile_lo = lo + g * BM;
                    tile_hi = hi;
                    break;
                }
                g = g - tiles;
            }
        }
        e = workgroupUniformLoad(&tile_expert);
        if (e == 0xffffffffu) {
            return;
        }
        m_base = workgroupUniformLoad(&tile_lo);
        m_end = workgroupUniformLoad(&tile_hi);
    } else {
        e = p(13u);
    }
    var acc: array<f32, 16>;
    for (var i = 0u; i < TM * TN; i = i + 1u) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < kk; k0 = k0 + BK) {
        for (var i = lid; i < BM * BK; i = i + NT) {
            let r = i / BK;
            let c = i % BK;
            let m = m_base + r;
            let k = k0 + c;
            var v = 0.0;
            if (m < m_end && k < kk) {
                v = load_a(m, k);
            }
            As[c * BM + r] = v;
        }
        for (var i = lid; i < BN * BK; i = i + NT) {
            let r = i / BK;
            let c = i % BK;
            let n = n_base + r;
            let k = k0 + c;
            var v = 0.0;
            if (n < n_total && k < kk) {
                v = load_b(e, n, k);
            }
            Bs[c * BN + r] = v;
        }
        workgroupBarrier();
        for (var c = 0u; c < BK; c = c + 1u) {
            var a: array<f32, 4>;
            var b: array<f32, 4>;
            for (var i = 0u; i < TM; i = i + 1u) {
                a[i] = As[c * BM + ty + i * TY];
            }
            for (var j = 0u; j < TN; j = j + 1u) {
                b[j] = Bs[c * BN + tx + j * TX];
            }
            for (var i = 0u; i < TM; i = i + 1u) {
                for (var j = 0u; j < TN; j = j + 1u) {
                    acc[i * TN + j] = acc[i * TN + j] + a[i] * b[j];
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < TM; i = i + 1u) {
        let m = m_base + ty + i * TY;
        if (m >= m_end) {
            continue;
        }
        for (var j = 0u; j < TN; j = j + 1u) {
            let n = n_base + tx + j * TX;
            if (n < n_total) {
                st_c(p(11u) + m * p(12u) + n, acc[i * TN + j]);
            }
        }
    }
}
