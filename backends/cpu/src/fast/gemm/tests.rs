//! Checks every path (each ISA this machine has) against an f64 reference over the decoded values.
//!
//! Tolerance derivation: let u = 2⁻²⁴ (f32 unit roundoff) and `S = Σ_k |a_mk|·|b_nk|` over the operand
//! values the contract defines (FP8: `decode(q)·s` rounded once to f32, which the reference uses too, so
//! operand values are identical and only the summation differs). Any order of summation of K products
//! with f32 FMA (or multiply + add) has every term pass through at most `d` roundings, where `d` is the
//! depth of the summation tree: here at most K sequential FMAs plus the KC-slice accumulations, the lane
//! reduction of the decode path (log2 16 = 4) and the product rounding of the scalar path — fewer than
//! K + 8. Hence `|C − C_ref| ≤ γ(K+8)·S`, `γ(d) = d·u / (1 − d·u)`. For `Out::Bf16`, add the final
//! rounding: half a bf16 ulp, `2⁻⁸·|C|`, bounded by `2⁻⁸·(|C_ref| + err_f32)`.

use half::bf16;

use super::*;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f32(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    /// A random non-NaN, finite code of `format`.
    fn code(&mut self, format: Fp8Format) -> u8 {
        loop {
            let c = self.next() as u8;
            if format.decode(c).is_finite() {
                return c;
            }
        }
    }
    fn scale(&mut self) -> f32 {
        2f32.powi(-((self.next() % 12) as i32)) * (1.0 + self.f32().abs())
    }
}

#[derive(Clone, Copy, Debug)]
enum LKind {
    F32,
    Bf16,
    Fp8(Fp8Format),
}
#[derive(Clone, Copy, Debug)]
enum RKind {
    F32,
    Bf16,
    Fp8(Fp8Format),
}

struct LhsData {
    f: Vec<f32>,
    h: Vec<bf16>,
    q: Vec<u8>,
    s: Vec<f32>,
    lda: usize,
    kind: LKind,
    /// Decoded values (contract), row-major [M, K].
    vals: Vec<f64>,
}

impl LhsData {
    fn new(rng: &mut Rng, m: usize, k: usize, lda: usize, kind: LKind) -> Self {
        let kb = k.div_ceil(SCALE_BLOCK);
        let len = if m == 0 { 0 } else { (m - 1) * lda + k };
        let mut d = LhsData { f: vec![], h: vec![], q: vec![], s: vec![], lda, kind, vals: vec![0.0; m * k] };
        match kind {
            LKind::F32 => d.f = (0..len).map(|_| rng.f32()).collect(),
            LKind::Bf16 => d.h = (0..len).map(|_| bf16::from_f32(rng.f32())).collect(),
            LKind::Fp8(fmt) => {
                d.q = (0..len).map(|_| rng.code(fmt)).collect();
                d.s = (0..m * kb).map(|_| rng.scale()).collect();
            }
        }
        for i in 0..m {
            for kk in 0..k {
                let idx = i * lda + kk;
                d.vals[i * k + kk] = match kind {
                    LKind::F32 => d.f[idx] as f64,
                    LKind::Bf16 => d.h[idx].to_f32() as f64,
                    LKind::Fp8(fmt) => (fmt.decode(d.q[idx]) * d.s[i * kb + kk / SCALE_BLOCK]) as f64,
                };
            }
        }
        d
    }
    /// f32 rows given as they are (`[m, k]`, dense).
    fn f32_rows(f: Vec<f32>, k: usize) -> Self {
        let vals = f.iter().map(|&x| x as f64).collect();
        LhsData { f, h: vec![], q: vec![], s: vec![], lda: k, kind: LKind::F32, vals }
    }
    /// The same rows rounded to bf16.
    fn bf16_rows(f: &[f32], k: usize) -> Self {
        let h: Vec<bf16> = f.iter().map(|&x| bf16::from_f32(x)).collect();
        let vals = h.iter().map(|x| x.to_f64()).collect();
        LhsData { f: vec![], h, q: vec![], s: vec![], lda: k, kind: LKind::Bf16, vals }
    }
    fn lhs(&self) -> Lhs<'_> {
        match self.kind {
            LKind::F32 => Lhs::F32 { data: &self.f, lda: self.lda },
            LKind::Bf16 => Lhs::Bf16 { data: &self.h, lda: self.lda },
            LKind::Fp8(format) => Lhs::Fp8 { codes: &self.q, lda: self.lda, scales: &self.s, format },
        }
    }
}

struct RhsData {
    f: Vec<f32>,
    h: Vec<bf16>,
    q: Vec<u8>,
    s: Vec<f32>,
    kind: RKind,
    vals: Vec<f64>,
}

impl RhsData {
    fn new(rng: &mut Rng, n: usize, k: usize, kind: RKind, big_scale: bool) -> Self {
        let kb = k.div_ceil(SCALE_BLOCK);
        let mut d = RhsData { f: vec![], h: vec![], q: vec![], s: vec![], kind, vals: vec![0.0; n * k] };
        match kind {
            RKind::F32 => d.f = (0..n * k).map(|_| rng.f32()).collect(),
            RKind::Bf16 => d.h = (0..n * k).map(|_| bf16::from_f32(rng.f32())).collect(),
            RKind::Fp8(fmt) => {
                d.q = (0..n * k).map(|_| rng.code(fmt)).collect();
                d.s = (0..n.div_ceil(SCALE_BLOCK) * kb)
                    .map(|_| if big_scale { BIG_SCALE * (1.0 + rng.f32().abs()) } else { rng.scale() })
                    .collect();
            }
        }
        for j in 0..n {
            for kk in 0..k {
                let idx = j * k + kk;
                d.vals[idx] = match kind {
                    RKind::F32 => d.f[idx] as f64,
                    RKind::Bf16 => d.h[idx].to_f32() as f64,
                    RKind::Fp8(fmt) => {
                        (fmt.decode(d.q[idx]) * d.s[(j / SCALE_BLOCK) * kb + kk / SCALE_BLOCK]) as f64
                    }
                };
            }
        }
        d
    }
    fn rhs(&self) -> Rhs<'_> {
        match self.kind {
            RKind::F32 => Rhs::F32(&self.f),
            RKind::Bf16 => Rhs::Bf16(&self.h),
            RKind::Fp8(format) => Rhs::BlockFp8 { codes: &self.q, scales: &self.s, format },
        }
    }
}

const SENTINEL: f32 = 12345.0;

/// Block scales of `big_scale` weights: above the table-free FP8 decode kernels' limit for K ≤ 384
/// (`f32::MAX / (2^24 · ceil(K/128))` ≈ 2^102.4, decode.rs), so those weights take the portable
/// fallback. That limit is where K products of |a| ≤ 1 and e5m2's largest code could overflow f32;
/// random codes and signs keep these sums far below it, and an overflow would fail the comparison.
const BIG_SCALE: f32 = 1.0e31; // ≈ 2^103

#[allow(clippy::too_many_arguments)]
fn check(rng: &mut Rng, m: usize, n: usize, k: usize, lk: LKind, rk: RKind, isas: &[Isa], big_scale: bool) {
    let lda = k + (m + n) % 3;
    let ldc = n + (m + k) % 4;
    let a = LhsData::new(rng, m, k, lda, lk);
    let b = RhsData::new(rng, n, k, rk, big_scale);
    check_operands(&a, &b, m, n, k, ldc, isas);
}

/// `a · bᵀ` on every path in `isas`, f32 and bf16 out (C with stride `ldc`), within the bound of the
/// f64 reference.
fn check_operands(a: &LhsData, b: &RhsData, m: usize, n: usize, k: usize, ldc: usize, isas: &[Isa]) {
    let (refc, tol) = reference(&a.vals, &b.vals, m, n, k);
    let clen = if m == 0 { 0 } else { (m - 1) * ldc + n };
    for &isa in isas {
        for bf in [false, true] {
            let ctx = format!("{isa:?} m={m} n={n} k={k} {:?} {:?} bf16_out={bf}", a.kind, b.kind);
            let mut cf = vec![SENTINEL; clen];
            let mut ch = vec![bf16::from_f32(SENTINEL); clen];
            let out = if bf { Out::Bf16 { data: &mut ch, ldc } } else { Out::F32 { data: &mut cf, ldc } };
            gemm_with(isa, m, n, k, a.lhs(), b.rhs(), out);
            let got = |idx: usize| if bf { ch[idx].to_f32() } else { cf[idx] } as f64;
            assert_within(&ctx, bf, got, clen, n, ldc, &refc, &tol);
        }
    }
}

/// The f64 product of decoded values `a` (`[m, k]`) and `b` (`[n, k]`), and the tolerance of each entry
/// (`γ(K+8)·S`, module documentation).
fn reference(a: &[f64], b: &[f64], m: usize, n: usize, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut refc = vec![0f64; m * n];
    let mut tol = vec![0f64; m * n];
    let u = 2f64.powi(-24);
    let d = (k + 8) as f64;
    let gamma = d * u / (1.0 - d * u);
    for i in 0..m {
        for j in 0..n {
            let (mut s, mut sa) = (0f64, 0f64);
            for (x, y) in a[i * k..(i + 1) * k].iter().zip(&b[j * k..(j + 1) * k]) {
                s += x * y;
                sa += (x * y).abs();
            }
            refc[i * n + j] = s;
            tol[i * n + j] = gamma * sa + 1e-30;
        }
    }
    (refc, tol)
}

/// Every entry `got(idx)` of a C with `clen` elements and stride `ldc` is within `tol` of `refc` (plus the
/// bf16 output rounding when `bf`), and the padding past `n` still holds the sentinel.
#[allow(clippy::too_many_arguments)]
fn assert_within(
    ctx: &str,
    bf: bool,
    got: impl Fn(usize) -> f64,
    clen: usize,
    n: usize,
    ldc: usize,
    refc: &[f64],
    tol: &[f64],
) {
    for idx in 0..clen {
        let (i, j) = (idx / ldc, idx % ldc);
        let got = got(idx);
        if j >= n {
            let want = if bf { bf16::from_f32(SENTINEL).to_f32() } else { SENTINEL };
            assert_eq!(got, want as f64, "{ctx}: padding at ({i},{j}) written");
            continue;
        }
        let (r, t) = (refc[i * n + j], tol[i * n + j]);
        let t = if bf { t + 2f64.powi(-8) * (r.abs() + t) } else { t };
        assert!((got - r).abs() <= t, "{ctx}: C[{i},{j}] = {got}, reference {r}, tolerance {t}");
    }
}

/// A grouped GEMM with `counts[e]` rows for expert `e` (expert `big` gets block scales large enough to
/// take the exact portable fallback), on every path in `isas`: the [`Grouping::Auto`] schedule must equal
/// [`Grouping::PerExpert`] bit for bit (same kernel per expert; a decode output does not depend on the task
/// split), and both must be within the contract's bound of the f64 reference.
#[allow(clippy::too_many_arguments)]
fn check_grouped(
    rng: &mut Rng,
    counts: &[usize],
    n: usize,
    k: usize,
    lk: LKind,
    rk: RKind,
    isas: &[Isa],
    big: Option<usize>,
) {
    let rows: usize = counts.iter().sum();
    let lda = k + (rows + n) % 3;
    let ldc = n + (rows + k) % 4;
    let a = LhsData::new(rng, rows, k, lda, lk);
    let bs: Vec<RhsData> = (0..counts.len()).map(|e| RhsData::new(rng, n, k, rk, big == Some(e))).collect();
    let mut groups = Vec::new();
    let mut lo = 0;
    for (b, &c) in bs.iter().zip(counts) {
        groups.push(Group { lo, hi: lo + c, b: b.rhs() });
        lo += c;
    }
    // The reference: row r of A against its expert's weights.
    let mut refc = vec![0f64; rows * n];
    let mut tol = vec![0f64; rows * n];
    for (g, b) in groups.iter().zip(&bs) {
        let (r, t) = reference(&a.vals[g.lo * k..g.hi * k], &b.vals, g.hi - g.lo, n, k);
        refc[g.lo * n..g.hi * n].copy_from_slice(&r);
        tol[g.lo * n..g.hi * n].copy_from_slice(&t);
    }
    let clen = if rows == 0 { 0 } else { (rows - 1) * ldc + n };
    for &isa in isas {
        for bf in [false, true] {
            let ctx =
                format!("{isa:?} counts={counts:?} n={n} k={k} {lk:?} {rk:?} big={big:?} bf16_out={bf}");
            let run = |grouping| {
                let mut cf = vec![SENTINEL; clen];
                let mut ch = vec![bf16::from_f32(SENTINEL); clen];
                let out = if bf { Out::Bf16 { data: &mut ch, ldc } } else { Out::F32 { data: &mut cf, ldc } };
                gemm_grouped_with(isa, grouping, n, k, a.lhs(), &groups, out);
                if bf {
                    ch.iter().map(|x| x.to_f32()).collect::<Vec<f32>>()
                } else {
                    cf
                }
            };
            let (auto, per_expert) = (run(Grouping::Auto), run(Grouping::PerExpert));
            for (idx, (x, y)) in auto.iter().zip(&per_expert).enumerate() {
                assert!(x.to_bits() == y.to_bits(), "{ctx}: element {idx}: grouped {x}, per expert {y}");
            }
            assert_within(&ctx, bf, |idx| auto[idx] as f64, clen, n, ldc, &refc, &tol);
        }
    }
}

const RKINDS: [RKind; 5] = [
    RKind::F32,
    RKind::Bf16,
    RKind::Fp8(Fp8Format::E4M3Fn),
    RKind::Fp8(Fp8Format::E4M3Fnuz),
    RKind::Fp8(Fp8Format::E5M2),
];

#[test]
fn grouped_equals_one_gemm_per_expert() {
    let mut rng = Rng(0x6A09_E667_F3BC_C908);
    let isas = Isa::available();
    let e4 = Fp8Format::E4M3Fn;
    // Empty experts, uneven offsets, one row per expert, every decode M up to 16, and experts above 16 rows
    // (their own GEMM) mixed with decode-sized ones in one launch.
    let launches: [&[usize]; 7] = [
        &[1, 1, 1, 1, 1, 1, 1, 1],
        &[0, 3, 0, 0, 1, 2, 0],
        &[4, 4, 4, 4],
        &[16, 0, 5, 9, 16],
        &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
        &[0, 17, 2, 40, 1],
        &[0, 0, 0],
    ];
    for lk in [LKind::F32, LKind::Bf16, LKind::Fp8(e4)] {
        for rk in RKINDS {
            for counts in launches {
                // N over two scale blocks with a partial one; K with a partial scale block and step.
                check_grouped(&mut rng, counts, 200, 300, lk, rk, &isas, None);
            }
        }
    }
    // Small N (fewer weight rows than a task), K = 0 (zeros), and one expert's scales large enough for the
    // exact portable fallback while the others run the SIMD kernels.
    for rk in RKINDS {
        check_grouped(&mut rng, &[2, 1, 0, 3], 13, 200, LKind::Bf16, rk, &isas, None);
        check_grouped(&mut rng, &[2, 0, 18, 3], 13, 0, LKind::F32, rk, &isas, None);
    }
    for fmt in [Fp8Format::E4M3Fn, Fp8Format::E4M3Fnuz, Fp8Format::E5M2] {
        check_grouped(&mut rng, &[3, 1, 4, 1], 200, 384, LKind::F32, RKind::Fp8(fmt), &isas, Some(1));
    }
}

const SIZES: [usize; 8] = [0, 1, 3, 7, 17, 33, 130, 257];

#[test]
fn f32_all_odd_shapes_all_isas() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let isas = Isa::available();
    for &m in &SIZES {
        for &n in &SIZES {
            for &k in &SIZES {
                check(&mut rng, m, n, k, LKind::F32, RKind::F32, &isas, false);
            }
        }
    }
}

#[test]
fn every_operand_combination() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let isas = Isa::available();
    let lks = [
        LKind::F32,
        LKind::Bf16,
        LKind::Fp8(Fp8Format::E4M3Fn),
        LKind::Fp8(Fp8Format::E4M3Fnuz),
        LKind::Fp8(Fp8Format::E5M2),
    ];
    let rks = [
        RKind::F32,
        RKind::Bf16,
        RKind::Fp8(Fp8Format::E4M3Fn),
        RKind::Fp8(Fp8Format::E4M3Fnuz),
        RKind::Fp8(Fp8Format::E5M2),
    ];
    let shapes = [
        (0, 5, 7),
        (5, 0, 7),
        (5, 7, 0),
        (1, 1, 1),
        (3, 7, 17),
        (7, 33, 130),
        (8, 200, 384),
        (9, 200, 384),
        (16, 131, 200),
        (17, 3, 257),
        (33, 130, 7),
        (1, 576, 300),
        (4, 576, 256),
        (37, 576, 130),
        (130, 17, 33),
    ];
    for lk in lks {
        for rk in rks {
            for &(m, n, k) in &shapes {
                check(&mut rng, m, n, k, lk, rk, &isas, false);
            }
        }
    }
}

#[test]
fn larger_shapes_span_several_kc_slices_and_tiles() {
    let mut rng = Rng(0x1234_5678_9ABC_DEF1);
    let isas = Isa::available();
    let e4 = Fp8Format::E4M3Fn;
    check(&mut rng, 200, 700, 600, LKind::F32, RKind::F32, &isas, false);
    check(&mut rng, 200, 700, 600, LKind::Fp8(e4), RKind::Fp8(e4), &isas, false);
    check(&mut rng, 4, 1100, 900, LKind::Bf16, RKind::Bf16, &isas, false);
    check(&mut rng, 8, 300, 1000, LKind::F32, RKind::Fp8(e4), &isas, false);
}

#[test]
fn large_block_scales_take_the_exact_fallback() {
    // Scales of BIG_SCALE exceed the decode kernels' limit: the decode path must fall back without losing
    // exactness.
    let mut rng = Rng(42);
    let isas = Isa::available();
    for fmt in [Fp8Format::E4M3Fn, Fp8Format::E4M3Fnuz, Fp8Format::E5M2] {
        check(&mut rng, 3, 200, 384, LKind::F32, RKind::Fp8(fmt), &isas, true);
        check(&mut rng, 12, 200, 384, LKind::F32, RKind::Fp8(fmt), &isas, true);
    }
}

#[test]
fn decode_rows_of_any_magnitude() {
    // The table-free FP8 decode kernels and the bf16 form of the VBMI kernel scale each row of A by a
    // power of two and their outputs back (decode.rs, `scale_fp8_lhs_row`; two_level.rs, `bf16_lhs`):
    // rows of subnormal, small, ordinary and huge magnitude and a zero row must come out within the
    // bound, on every path and M chunking. In bf16, the subnormal row is bf16-subnormal (scaled up to
    // normal, exactly), and the last row spans 2^-80 .. 2^100: scaled, its small values would be bf16
    // subnormals, which `vdpbf16ps` reads as zero, so that A takes the f32 form instead.
    let mut rng = Rng(0xA5CA_1E00);
    let isas = Isa::available();
    let (n, k) = (13, 200);
    let exps = [-140, -60, 0, 60, 100];
    let m = exps.len() + 1;
    let mut rows = vec![0f32; m * k];
    for (row, &e) in rows.chunks_exact_mut(k).zip(&exps) {
        row.iter_mut().for_each(|x| *x = rng.f32() * 2f32.powi(e));
    }
    let mut bf16_rows = rows.clone();
    for (row, &e) in bf16_rows.chunks_exact_mut(k).zip(&[-130, -60, 0, 60, 100]) {
        row.iter_mut().for_each(|x| *x = rng.f32() * 2f32.powi(e));
    }
    let a_bf16 = LhsData::bf16_rows(&bf16_rows, k);
    bf16_rows[(m - 1) * k..].iter_mut().enumerate().for_each(|(i, x)| *x = 2f32.powi(i as i32 % 181 - 80));
    let a_bf16_wide = LhsData::bf16_rows(&bf16_rows, k);
    let a = LhsData::f32_rows(rows, k);
    for fmt in Fp8Format::ALL {
        let b = RhsData::new(&mut rng, n, k, RKind::Fp8(fmt), false);
        check_operands(&a, &b, m, n, k, n, &isas);
        check_operands(&a_bf16, &b, m, n, k, n, &isas);
        check_operands(&a_bf16_wide, &b, m, n, k, n, &isas);
        // A row holding an infinity: ±inf or NaN wherever the f64 reference is.
        let mut inf_row: Vec<f32> = (0..k).map(|_| rng.f32()).collect();
        inf_row[77] = f32::INFINITY;
        let inf = LhsData::f32_rows(inf_row, k);
        let (refc, _) = reference(&inf.vals, &b.vals, 1, n, k);
        for &isa in &isas {
            let mut c = vec![SENTINEL; n];
            gemm_with(isa, 1, n, k, inf.lhs(), b.rhs(), Out::F32 { data: &mut c, ldc: n });
            for (j, (&got, &want)) in c.iter().zip(&refc).enumerate() {
                let same = if want.is_nan() { got.is_nan() } else { got as f64 == want };
                assert!(same, "{isa:?} {fmt:?} inf row: C[0,{j}] = {got}, reference {want}");
            }
        }
    }
}

#[test]
fn kernel_name_is_reported() {
    assert!(!kernel_name().is_empty());
    // `cargo test` may run under DSV3_CPU_KERNEL (ci/test.sh does, for the forced-path runs).
    match std::env::var(KERNEL_ENV).ok().and_then(|v| path_named(&v)) {
        Some(forced) => assert_eq!(forced, isa()),
        None => assert_eq!(Isa::available()[0], isa()),
    }
}

#[test]
fn every_decode_m_on_every_path() {
    // Each M of the streaming decode path (its register blocking and, on AVX2, the split of M > 8 into
    // two chunks), with N not a multiple of the row groups and K with a partial last step.
    let mut rng = Rng(0x5EED_0F16);
    let isas = Isa::available();
    let rks = [
        RKind::Bf16,
        RKind::Fp8(Fp8Format::E4M3Fn),
        RKind::Fp8(Fp8Format::E4M3Fnuz),
        RKind::Fp8(Fp8Format::E5M2),
    ];
    for m in 1..=DECODE_MAX_M {
        for rk in rks {
            // bf16 A: the bf16 form of the VBMI kernel on AVX512-BF16 (chunks of ≤ 6 rows of A) for FP8 weights.
            for lk in [LKind::F32, LKind::Bf16] {
                check(&mut rng, m, 13, 200, lk, rk, &isas, false);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn table_free_decoders_are_exact_for_every_code() {
    use super::decode::{decode_step_for_test, fold, fp8_kind};
    let simd: Vec<Isa> = Isa::available().into_iter().filter(|&i| i != Isa::Scalar).collect();
    if simd.is_empty() {
        let why = "this CPU has neither AVX2+FMA+F16C nor AVX-512";
        return dsv3_core::testing::not_run("table_free_decoders_are_exact_for_every_code", why);
    }
    for &isa in &simd {
        // FP8: all 256 codes, four steps of 64. The decoder yields decode(q)·2^-fold (a power of two the
        // kernel folds into the block scale), so v·2^fold must equal decode(q) bit for bit (scaling a
        // subnormal or normal f32 up by a power of two is exact), NaN exactly where decode gives NaN.
        for fmt in Fp8Format::ALL {
            let fold = fold(isa, fmt);
            // Each step as is, and with its NaN and infinite codes replaced by 0: a step without them
            // takes the decoder's fast form (AVX2), which must be exact for every other code too.
            for (step, finite) in (0..4u8).flat_map(|s| [(s, false), (s, true)]) {
                let src: [u8; 64] = std::array::from_fn(|i| {
                    let q = step * 64 + i as u8;
                    if finite && !fmt.decode(q).is_finite() {
                        0
                    } else {
                        q
                    }
                });
                let got = decode_step_for_test(isa, fp8_kind(fmt), &src);
                assert_eq!(got.len(), 64);
                for (&q, &v) in src.iter().zip(&got) {
                    let want = fmt.decode(q);
                    let ctx = format!("{isa:?} {fmt:?} code {q:#04x}: got {v}·{fold}, want {want}");
                    if want.is_nan() {
                        assert!(v.is_nan(), "{ctx}");
                    } else {
                        assert_eq!((v * fold).to_bits(), want.to_bits(), "{ctx}");
                    }
                }
            }
            // Each NaN or infinite code at each position of a step of finite codes (the per-step test
            // sees it wherever it lies), the other codes unchanged.
            for special in (0..=255u8).filter(|&q| !fmt.decode(q).is_finite()) {
                for pos in 0..64 {
                    let src: [u8; 64] =
                        std::array::from_fn(|i| if i == pos { special } else { 0x38 + i as u8 });
                    let got = decode_step_for_test(isa, fp8_kind(fmt), &src);
                    for (&q, &v) in src.iter().zip(&got) {
                        let want = fmt.decode(q);
                        let ctx = format!("{isa:?} {fmt:?} {special:#04x} at {pos}: code {q:#04x} gave {v}");
                        if want.is_nan() {
                            assert!(v.is_nan(), "{ctx}");
                        } else {
                            assert_eq!((v * fold).to_bits(), want.to_bits(), "{ctx}");
                        }
                    }
                }
            }
        }
        // bf16: all 65536 patterns, 32 per step; the shift keeps every bit (NaN payloads included).
        for step in 0..2048u32 {
            let vals: [u16; 32] = std::array::from_fn(|i| (step * 32 + i as u32) as u16);
            let src: [u8; 64] = bytemuck::cast(vals);
            let got = decode_step_for_test(isa, super::decode::BF16, &src);
            for (&h, &v) in vals.iter().zip(&got) {
                assert_eq!(v.to_bits(), (h as u32) << 16, "{isa:?} bf16 {h:#06x}");
            }
        }
    }
}

#[test]
fn nan_weight_codes_give_nan_on_every_path() {
    // The oracle decodes NaN codes to NaN, so every output column that reads one is NaN; the others stay
    // finite. Weight row 1 holds a NaN code at k = 70 (inside the second 64-byte step).
    // M = 1 and 3 take the decode kernels, M = 17 the packed prefill path.
    let (n, k) = (5, 150);
    let a: Vec<f32> = (0..17 * k).map(|i| (i % 7) as f32 - 3.0).collect();
    for fmt in Fp8Format::ALL {
        let nan_code = (0..=255u8).find(|&q| fmt.is_nan_code(q)).unwrap();
        let mut q = vec![0x38u8; n * k];
        q[k + 70] = nan_code;
        let scales = vec![0.5f32; 2];
        for isa in Isa::available() {
            for mm in [1, 3, DECODE_MAX_M + 1] {
                let mut c = vec![0f32; mm * n];
                let (a, b) = (
                    Lhs::F32 { data: &a, lda: k },
                    Rhs::BlockFp8 { codes: &q, scales: &scales, format: fmt },
                );
                gemm_with(isa, mm, n, k, a, b, Out::F32 { data: &mut c, ldc: n });
                for i in 0..mm {
                    for j in 0..n {
                        assert_eq!(c[i * n + j].is_nan(), j == 1, "{isa:?} {fmt:?} m={mm} C[{i},{j}]");
                    }
                }
            }
        }
    }
}

#[test]
fn vbmi_decode_is_exact_for_all_256_codes() {
    for fmt in [Fp8Format::E4M3Fn, Fp8Format::E4M3Fnuz, Fp8Format::E5M2] {
        let Some(t) = fp8_simd::Fp8Tables::new(fmt) else {
            let why = "this CPU has no AVX-512 VBMI: its FP8 decode path cannot run here";
            return dsv3_core::testing::cpu_lacks("vbmi_decode_is_exact_for_all_256_codes", why);
        };
        // Odd lengths and offsets exercise the masked tail.
        for (lo, hi) in [(0usize, 256usize), (3, 200), (250, 256), (7, 8)] {
            let src: Vec<u8> = (lo..hi).map(|c| c as u8).collect();
            let mut out = vec![SENTINEL; src.len()];
            fp8_simd::scaled_to_f32(&t, &src, 1.0, &mut out);
            // The bf16 form (prefill packing), in order: the top half of the same f32 bits.
            let mut words = vec![0xDEADu16; src.len() + 1];
            fp8_simd::to_bf16(&t, &src, &mut words[..src.len()]);
            assert_eq!(words[src.len()], 0xDEAD, "{fmt:?}: to_bf16 wrote past its output");
            for ((&q, &v), &w) in src.iter().zip(&out).zip(&words) {
                let want = fmt.decode(q);
                let bf = f32::from_bits((w as u32) << 16);
                if fmt.is_nan_code(q) {
                    assert!(v.is_nan() && bf.is_nan(), "{fmt:?} code {q:#04x}: got {v} / {bf}, want NaN");
                } else {
                    assert_eq!(v.to_bits(), want.to_bits(), "{fmt:?} code {q:#04x}: got {v}, want {want}");
                    assert_eq!(bf.to_bits(), want.to_bits(), "{fmt:?} code {q:#04x}: bf16 {bf}, want {want}");
                }
            }
        }
        // With a scale: decode(q)·s rounded once, as the scalar table path computes it.
        let src: Vec<u8> = (0..=255u8).collect();
        let s = 0.3f32;
        let mut out = vec![0f32; 256];
        fp8_simd::scaled_to_f32(&t, &src, s, &mut out);
        for (&q, &v) in src.iter().zip(&out) {
            let want = fmt.decode(q) * s;
            assert!(v.to_bits() == want.to_bits() || (v.is_nan() && want.is_nan()), "{fmt:?} {q:#04x}");
        }
    }
}

#[test]
fn fp8_paths_without_vbmi() {
    fp8_simd::FORCE_NO_VBMI.with(|f| f.set(true));
    let mut rng = Rng(0xABCD_EF01_2345_6789);
    let isas = Isa::available();
    for fmt in [Fp8Format::E4M3Fn, Fp8Format::E4M3Fnuz, Fp8Format::E5M2] {
        for &(m, n, k) in &[(1, 130, 300), (4, 576, 256), (8, 33, 130), (9, 200, 384), (37, 70, 257)] {
            check(&mut rng, m, n, k, LKind::Fp8(fmt), RKind::Fp8(fmt), &isas, false);
            check(&mut rng, m, n, k, LKind::F32, RKind::Fp8(fmt), &isas, false);
        }
        check(&mut rng, 3, 200, 384, LKind::F32, RKind::Fp8(fmt), &isas, true);
        check_grouped(&mut rng, &[1, 0, 4, 2, 1], 130, 300, LKind::Bf16, RKind::Fp8(fmt), &isas, None);
    }
    fp8_simd::FORCE_NO_VBMI.with(|f| f.set(false));
}

#[test]
fn bf16_panels_across_slices_blocks_and_edges() {
    // bf16 activations take the bf16 prefill kernels (vdpbf16ps, AMX) where the CPU has them: several KC
    // slices (K = 1100, KC = 1024), partial scale blocks and K steps (K = 300, 1100), tile edges in M and
    // N, and every FP8 format's per-block scaling.
    let mut rng = Rng(0xB16B_00B5_0000_0001);
    let isas = Isa::available();
    let rks = [
        RKind::Bf16,
        RKind::Fp8(Fp8Format::E4M3Fn),
        RKind::Fp8(Fp8Format::E4M3Fnuz),
        RKind::Fp8(Fp8Format::E5M2),
    ];
    for rk in rks {
        for &(m, n, k) in &[(200, 300, 1100), (64, 576, 300), (33, 40, 1), (47, 129, 31)] {
            check(&mut rng, m, n, k, LKind::Bf16, rk, &isas, false);
        }
    }
}

#[test]
fn bf16_subnormal_operands_are_computed_exactly() {
    // The bf16 units read subnormal bf16 as zero; the packing sees them and the product runs on f32
    // panels instead. Here every nonzero product has a subnormal factor (2^-130 times 2^100), so a
    // product computed with them flushed would be all zeros.
    let (m, n, k) = (40, 33, 70);
    let tiny = bf16::from_bits(0x0008); // 2^-130, subnormal
    let big = bf16::from_f32(2f32.powi(100));
    for subnormal_in_a in [true, false] {
        let (x, w) = if subnormal_in_a { (tiny, big) } else { (big, tiny) };
        let a: Vec<bf16> = (0..m * k).map(|i| if i % 3 == 0 { x } else { bf16::ZERO }).collect();
        let b: Vec<bf16> = (0..n * k).map(|i| if i % 2 == 0 { w } else { bf16::ZERO }).collect();
        for isa in Isa::available() {
            let mut c = vec![0f32; m * n];
            let out = Out::F32 { data: &mut c, ldc: n };
            gemm_with(isa, m, n, k, Lhs::Bf16 { data: &a, lda: k }, Rhs::Bf16(&b), out);
            for i in 0..m {
                for j in 0..n {
                    let terms = (0..k).filter(|&kk| (i * k + kk) % 3 == 0 && (j * k + kk) % 2 == 0).count();
                    let want = terms as f32 * 2f32.powi(-30);
                    assert_eq!(c[i * n + j], want, "{isa:?} subnormal in a: {subnormal_in_a}, C[{i},{j}]");
                }
            }
        }
    }
}

/// The bf16 bits of a random value in ±[2^-8, 2^8) (normal, so nothing is flushed).
#[cfg(target_arch = "x86_64")]
fn bf16_bits(rng: &mut Rng) -> u16 {
    let v = rng.f32().abs().max(0.5) * 2f32.powi((rng.next() % 16) as i32 - 8);
    let v = if rng.next().is_multiple_of(2) { v } else { -v };
    (v.to_bits() >> 16) as u16
}

#[cfg(target_arch = "x86_64")]
fn bf16_val(x: u16) -> f32 {
    f32::from_bits((x as u32) << 16)
}

#[cfg(target_arch = "x86_64")]
#[test]
fn bf16_units_add_exact_products_in_f32_as_documented() {
    // The contract derivation of the bf16 kernels rests on the SDM's description of `vdpbf16ps` and
    // `tdpbf16ps`: exact products, each addition rounded to nearest even in f32, in a given order. Check
    // it bit for bit against that order emulated with f32 FMAs (exact product, one rounding), on one
    // 32×32 tile over K = 64 (two AMX steps, 32 vdpbf16ps pairs), unscaled, through the microkernels.
    use super::driver::Micro;
    use super::pack::Panel;
    let (mr, nr, kc) = (32usize, 32usize, 64usize);
    let mut rng = Rng(0x5EED_B16F);
    let a: Vec<u16> = (0..mr * kc).map(|_| bf16_bits(&mut rng)).collect(); // rows i, a[i*kc + k]
    let w: Vec<u16> = (0..nr * kc).map(|_| bf16_bits(&mut rng)).collect(); // rows j, w[j*kc + k]
    let lhs = pack::LhsSrc::new(&Lhs::Bf16 { data: bytemuck::cast_slice(&a), lda: kc }, kc);
    let rhs_b = Rhs::Bf16(bytemuck::cast_slice(&w));
    let rhs = pack::RhsSrc::new(&rhs_b, kc);
    let run = |micro: &Micro<u16>| {
        let mut out = vec![0f32; mr * nr];
        let panels = mr.div_ceil(micro.mr);
        let (mut ap, mut bp) = (vec![0u16; panels * micro.mr * kc], vec![0u16; nr * kc]);
        for p in 0..panels {
            let panel = &mut ap[p * micro.mr * kc..][..micro.mr * kc];
            let rows = micro.mr.min(mr - p * micro.mr);
            assert!(u16::pack_a(&lhs, panel, micro.mr, p * micro.mr, rows, 0, kc));
        }
        assert!(u16::pack_b(&rhs, &mut bp, nr, 0, nr, kc, 0, kc));
        let mut rows: Vec<&mut [f32]> = out.chunks_mut(nr).collect();
        (micro.begin)();
        for (p, r) in rows.chunks_mut(micro.mr).enumerate() {
            (micro.run)(kc, &ap[p * micro.mr * kc..][..micro.mr * kc], &bp, &[], r, 0, nr, false);
        }
        (micro.end)();
        out
    };
    let (x, y) =
        (|i: usize, kk: usize| bf16_val(a[i * kc + kk]), |j: usize, kk: usize| bf16_val(w[j * kc + kk]));
    let mut checked = 0;
    if Isa::available().contains(&Isa::Avx512Bf16) {
        // vdpbf16ps, per pair: lane += odd product, then lane += even product.
        let got = run(&super::microkernel_avx512bf16::MICRO);
        for i in 0..mr {
            for j in 0..nr {
                let mut lane = 0f32;
                for kp in 0..kc / 2 {
                    lane = x(i, 2 * kp + 1).mul_add(y(j, 2 * kp + 1), lane);
                    lane = x(i, 2 * kp).mul_add(y(j, 2 * kp), lane);
                }
                assert_eq!(got[i * nr + j].to_bits(), lane.to_bits(), "vdpbf16ps C[{i},{j}]");
            }
        }
        checked += 1;
    }
    if Isa::available().contains(&Isa::Amx) {
        // tdpbf16ps, per 32-wide step: even and odd products in two sums from zero, their sum added.
        let got = run(&super::microkernel_amx::MICRO);
        for i in 0..mr {
            for j in 0..nr {
                let mut acc = 0f32;
                for step in 0..kc / 32 {
                    let (mut even, mut odd) = (0f32, 0f32);
                    for kp in 0..16 {
                        let kk = 32 * step + 2 * kp;
                        even = x(i, kk).mul_add(y(j, kk), even);
                        odd = x(i, kk + 1).mul_add(y(j, kk + 1), odd);
                    }
                    acc += even + odd;
                }
                assert_eq!(got[i * nr + j].to_bits(), acc.to_bits(), "tdpbf16ps C[{i},{j}]");
            }
        }
        checked += 1;
    }
    if checked == 0 {
        let why = "this CPU has neither AVX512-BF16 nor AMX-BF16 (with tile data granted)";
        dsv3_core::testing::cpu_lacks("bf16_units_add_exact_products_in_f32_as_documented", why);
    }
}

/// The decode pass with the weights split over fake NUMA nodes (this machine has one: every worker is on
/// node index 0, so node 0's workers take their blocks and then steal all the others') gives bit for bit
/// the unsplit result, on the rayon pool and on the shared pinned pool, for every weight kind: each
/// block's rows are computed once, wherever the cuts fall.
#[test]
fn node_split_changes_nothing() {
    use crate::placement::Placement;
    let mut rng = Rng(0x00A5_1DE5);
    let (n, k) = (300, 256);
    let a = LhsData::new(&mut rng, 7, k, k, LKind::Bf16);
    let a_src = pack::LhsSrc::new(&a.lhs(), k);
    // Pages of 64 bytes and no threshold, so that these small matrices are cut mid-row.
    let placements = [
        Placement::new(vec![1], 64, 0),
        Placement::new(vec![1, 1], 64, 0),
        Placement::new(vec![2, 1, 1], 64, 0),
        Placement::new(vec![0, 3], 64, 0),
    ];
    for rk in RKINDS {
        let bs: Vec<RhsData> = (0..3).map(|_| RhsData::new(&mut rng, n, k, rk, false)).collect();
        let b_src: Vec<pack::RhsSrc> = bs.iter().map(|b| pack::RhsSrc::new(&b.rhs(), k)).collect();
        for isa in Isa::available() {
            // Experts of 1, 2 and 4 rows of A.
            let jobs: Vec<decode::Job> = [(0, 1), (1, 3), (3, 7)]
                .iter()
                .zip(&b_src)
                .map(|(&(lo, hi), b)| decode::Job::new(isa, hi - lo, k, &a_src, lo, b))
                .collect();
            let whole = decode::run_jobs_placed(&jobs, n, &placements[0]);
            assert!(whole.iter().flatten().all(|x| x.is_finite() && *x != 0.0), "{isa:?} {rk:?}");
            for p in &placements[1..] {
                let (start, row_bytes) = match &b_src[0] {
                    pack::RhsSrc::F32(d) => (d.as_ptr() as usize, 4 * k),
                    pack::RhsSrc::Bf16(d) => (d.as_ptr() as usize, 2 * k),
                    pack::RhsSrc::BlockFp8 { codes, .. } => (codes.as_ptr() as usize, k),
                };
                assert!(p.row_bounds(start, row_bytes, n).len() > 2, "{p:?} splits the rows");
                let on_rayon = decode::run_jobs_placed(&jobs, n, p);
                let on_pool = crate::threads::run(f64::INFINITY, || decode::run_jobs_placed(&jobs, n, p));
                for got in [on_rayon, on_pool] {
                    for (e, (x, y)) in got.iter().zip(&whole).enumerate() {
                        let same = x.iter().zip(y).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{isa:?} {rk:?} {p:?}: expert {e} differs from the unsplit pass");
                    }
                }
            }
        }
    }
}
