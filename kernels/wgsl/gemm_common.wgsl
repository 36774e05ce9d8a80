// Shared by the GEMM kernels (gemm.wgsl, gemm_decode.wgsl, gemm_decode_subgroup.wgsl): operand loads with
// FP8 block scales folded into the decoded value, and the device-side check of grouped_gemm's offsets.
//
// P: [0] M, [1] N, [2] K, [3] a offset, [4] lda, [5] a-scales offset, [6] ceil(K/128), [7] b offset,
//    [8] b-scales offset, [9] n0 (first column, for the scale grid), [10] ceil(N_total/128), [11] c offset,
//    [12] ldc, [13] e_lo, [14] e_hi, [15] offs offset, [16] r0 (first row), [17] b elements per expert,
//    [18] check site (0: none), [19] rows in all, [20] experts in all.

fn load_a(m: u32, k: u32) -> f32 {
    let v = ld_a(p(3u) + m * p(4u) + k);
    if (A_FP8 == 1u) {
        return v * ld_asc(p(5u) + m * p(6u) + k / 128u);
    }
    return v;
}

fn load_b(e: u32, n: u32, k: u32) -> f32 {
    let kk = p(2u);
    let v = ld_b(p(7u) + (e - p(13u)) * p(17u) + n * kk + k);
    if (B_FP8 == 1u) {
        let kb = p(6u);
        return v * ld_bsc(p(8u) + e * p(10u) * kb + ((p(9u) + n) / 128u) * kb + k / 128u);
    }
    return v;
}

fn offs_at(e: u32) -> u32 {
    return u32(max(ldi_offs(p(15u) + e), 0));
}

fn check_offsets() {
    let e_n = p(20u);
    var prev = 0;
    for (var e = 0u; e <= e_n; e = e + 1u) {
        let v = ldi_offs(p(15u) + e);
        if ((e == 0u && v != 0) || v < prev || (e == e_n && v != i32(p(19u)))) {
            report(p(18u), e, bitcast<u32>(v));
            return;
        }
        prev = v;
    }
}

