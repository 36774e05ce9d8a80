//! FP8 weights on AVX-512 + VBMI: exact 64-code decode by byte tables ([`fp8_simd`]) and the
//! contract's two-level form — per 128-wide K block `p = Σ a·decode(q)` in f32, then `acc += p·s` with
//! one FMA. The block sum has two forms ([`Dot`]):
//! * [`F32Dot`] (M ≤ 4): the codes decoded to four f32 vectors, one FMA per vector and row of A. Measured
//!   faster than the table-free decoder (benches/results/2026-12-06-cpu-decode-gemm.md).
//! * [`Bf16Dot`] (AVX512-BF16, A in bf16, chunks of ≤ 6 rows of A): the codes decoded to two bf16 vectors, one `vdpbf16ps`
//!   per vector and row — half the decode and half the multiply instructions, which is what bounds M ≥ 2
//!   (the f32 form measured 28–48 % of the bandwidth at M = 4 on Zen 4,
//!   benches/results/2026-12-07-cpu-zen4-decode-and-prefill.md). Exact as the contract asks: every FP8
//!   value is a bf16, A's rows are bf16 scaled by a power of two ([`bf16_lhs`], which refuses rows that
//!   would hold a subnormal, since the unit reads those as zero), and the unit forms each bf16 product
//!   exactly and adds it to its f32 lane rounded to nearest even (as `microkernel_avx512bf16` checks bit
//!   for bit). Per lane and block that is 128/16 = 8 roundings, as for the f32 form.
//!
//! [`fp8_simd`]: super::super::fp8_simd

use std::arch::x86_64::*;

use smallvec::SmallVec;

use super::super::fp8_simd::{bf16_lane_order, decode64_bf16, decode64_lanes, regs, Fp8Tables, Regs};
use super::{row_exponent, run_rows, Kern, Piece, Prefetch, WView, SCALE_BLOCK, STEP};
use crate::fast::gemm::DECODE_MAX_M;
use crate::fast::scratch::Scratch;

/// Largest M of the f32 form: above it, the partial sums no longer fit in registers beside the decode.
pub(super) const F32_MAX_M: usize = 4;

/// Largest chunk of A's rows in the bf16 form: 2 weight rows × 6 rows of A are 12 partial sums and 12
/// accumulators; chunks of 7–8 (spilled) measured up to 2.3x slower on Zen 4 (2026-12-07).
const BF16_MAX_M: usize = 6;

/// One form of the block sum. Its methods are `#[inline(always)]` and only inlined into the
/// `#[target_feature]` wrappers below ([`group_f32`], [`group_bf16`]), whose callers checked the features.
trait Dot {
    /// A's element type, laid out in the order of this form's decode.
    type Elem: Copy;
    /// Decodes the 64 codes of `x` and adds their products with the 64 values of each row `i` of A at
    /// `a + i·kp` to `part[i]`.
    ///
    /// # Safety
    /// The wrapper's features; `a + i·kp` readable for 64 elements for every `i < M`; `NAN80` is
    /// `r`'s tables' [`Fp8Tables::nan80`].
    unsafe fn madd<const M: usize, const NAN80: bool>(
        r: &Regs,
        x: __m512i,
        a: *const Self::Elem,
        kp: usize,
        part: &mut [__m512; M],
    );
}

/// f32 A, codes decoded to f32 (in `fp8_simd::lane_order`).
struct F32Dot;

impl Dot for F32Dot {
    type Elem = f32;
    #[inline(always)]
    unsafe fn madd<const M: usize, const NAN80: bool>(
        r: &Regs,
        x: __m512i,
        a: *const f32,
        kp: usize,
        part: &mut [__m512; M],
    ) {
        // SAFETY: the caller's features and slices (see the trait).
        unsafe {
            let wv = decode64_lanes::<NAN80>(r, x);
            for (c, wc) in wv.iter().enumerate() {
                for (i, p) in part.iter_mut().enumerate() {
                    let av = _mm512_loadu_ps(a.add(i * kp + 16 * c));
                    *p = _mm512_fmadd_ps(av, *wc, *p);
                }
            }
        }
    }
}

/// bf16 A (as bits), codes decoded to bf16 (in [`bf16_lane_order`]), `vdpbf16ps`.
struct Bf16Dot;

impl Dot for Bf16Dot {
    type Elem = u16;
    #[inline(always)]
    unsafe fn madd<const M: usize, const NAN80: bool>(
        r: &Regs,
        x: __m512i,
        a: *const u16,
        kp: usize,
        part: &mut [__m512; M],
    ) {
        // SAFETY: the caller's features and slices (see the trait). `__m512bh` is 32 bf16 in a 64-byte
        // vector, the same bits as the integer vector.
        unsafe {
            let wv = decode64_bf16::<NAN80>(r, x);
            for (h, wh) in wv.iter().enumerate() {
                let wb: __m512bh = std::mem::transmute(*wh);
                for (i, p) in part.iter_mut().enumerate() {
                    let av: __m512bh = std::mem::transmute(_mm512_loadu_si512(a.add(i * kp + 32 * h).cast()));
                    *p = _mm512_dpbf16_ps(*p, av, wb);
                }
            }
        }
    }
}

/// A's rows for [`rows_bf16`]: each of the `m` f32 rows of `a` (stride `kp`, `k` values) scaled by the
/// power of two `2^-e` that brings its largest magnitude to `[1, 2)` (a row of zeros or holding an
/// infinity unscaled), as bf16 bits in [`bf16_lane_order`] (stride `kp`, zero padded), and the factors
/// `2^e` of the rows' outputs. `None` when a scaled value is not a bf16 that is zero or normal: not a
/// bf16 at all (A was not bf16), or a subnormal, which the unit would read as zero — the f32 form then
/// runs. With `|a'| < 2` the block sums stay below `2^24 · max|s|` (see `super::scales_fit`).
pub(super) fn bf16_lhs(
    m: usize,
    k: usize,
    kp: usize,
    a: &[f32],
) -> Option<(Scratch, SmallVec<[f64; DECODE_MAX_M]>)> {
    // Two bf16 per f32 slot of the scratch vector (zeroed: the padding is +0).
    let mut buf = Scratch::zeroed(m * kp / 2);
    let bits: &mut [u16] = bytemuck::cast_slice_mut(&mut buf[..]);
    let mut out_scale = SmallVec::new();
    for (row, dst) in a.chunks_exact(kp).take(m).zip(bits.chunks_exact_mut(kp)) {
        let e = row_exponent(&row[..k], 0);
        let down = 2f64.powi(-e);
        for (i, &x) in row[..k].iter().enumerate() {
            // Exact in f64; the cast to f32 is exact unless the result is subnormal, refused below.
            let b = ((f64::from(x) * down) as f32).to_bits();
            let zero_or_normal = b & 0x7FFF_FFFF == 0 || b & 0x7F80_0000 != 0;
            if b & 0xFFFF != 0 || !zero_or_normal {
                return None;
            }
            dst[i / STEP * STEP + bf16_lane_order(i % STEP)] = (b >> 16) as u16;
        }
        out_scale.push(2f64.powi(e));
    }
    Some((buf, out_scale))
}

/// The f32 form: `a` is A in f32, each 64-value chunk in `fp8_simd::lane_order`; `w` has tables.
pub(super) fn rows_f32(m: usize, w: &WView, a: &[f32], kp: usize, n0: usize, out: &mut [f32]) {
    let pick = |mc: usize, _| -> (usize, Kern<f32>, Kern<f32>) {
        match mc {
            1 => (4, group_f32::<1, 4>, group_f32::<1, 1>),
            2 => (4, group_f32::<2, 4>, group_f32::<2, 1>),
            3 => (2, group_f32::<3, 2>, group_f32::<3, 1>),
            _ => (2, group_f32::<4, 2>, group_f32::<4, 1>),
        }
    };
    debug_assert!(m <= F32_MAX_M);
    run_rows(m, F32_MAX_M, pick, w, a, kp, n0, out);
}

/// The bf16 form: `a` from [`bf16_lhs`], `w` with tables; M > 6 runs as chunks of A over each group of
/// weight rows. The caller checked AVX512-BF16 (`Isa::Avx512Bf16`).
pub(super) fn rows_bf16(m: usize, w: &WView, a: &[u16], kp: usize, n0: usize, out: &mut [f32]) {
    debug_assert!(crate::fast::gemm::avx512bf16_ok());
    // Weight rows per group: M·NB partial sums and as many accumulators beside the tables, decoded
    // vectors and A's values of a whole 128-wide block (`group_with` loads them once for both steps).
    // Chosen by the kernel's rate with its weights in L2 and L3 on Zen 4, 8 alternated rounds (2026-12-07):
    // M = 2 at 4 rows 2.46 ns per 64 weight bytes (6: 2.62), M = 3 at 3 rows 3.65 (4: 4.12; 2: 3.52, but
    // fewer rows are fewer memory streams), M = 4 at 2 rows 3.44 (3, spilled: 5.96; 1: 5.22).
    let pick = |mc: usize, _| -> (usize, Kern<u16>, Kern<u16>) {
        match mc {
            1 => (8, group_bf16::<1, 8>, group_bf16::<1, 1>),
            2 => (4, group_bf16::<2, 4>, group_bf16::<2, 1>),
            3 => (3, group_bf16::<3, 3>, group_bf16::<3, 1>),
            4 => (2, group_bf16::<4, 2>, group_bf16::<4, 1>),
            5 => (2, group_bf16::<5, 2>, group_bf16::<5, 1>),
            _ => (2, group_bf16::<6, 2>, group_bf16::<6, 1>),
        }
    };
    run_rows(m, BF16_MAX_M, pick, w, a, kp, n0, out);
}

/// # Safety
/// AVX-512F/BW/VL + VBMI available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
unsafe fn group_f32<const M: usize, const NB: usize>(w: &WView, a: &[f32], kp: usize, p: &mut Piece) {
    // SAFETY: the features are enabled (caller's contract).
    unsafe { group::<F32Dot, M, NB>(w, a, kp, p) }
}

/// # Safety
/// AVX-512F/BW/VL + VBMI + AVX512-BF16 available.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi,avx512bf16")]
unsafe fn group_bf16<const M: usize, const NB: usize>(w: &WView, a: &[u16], kp: usize, p: &mut Piece) {
    // SAFETY: the features are enabled (caller's contract).
    unsafe { group::<Bf16Dot, M, NB>(w, a, kp, p) }
}

/// `p.out[j*p.ldo + i] = Σ_kb s(n0+j, kb) · Σ_{k in kb} a[i*kp + k] · decode(q(n0 + j, k))` for the
/// group's weight rows from `n0 = p.n0`.
///
/// # Safety
/// The features of `D`'s wrapper. Every pointer used is derived from a slice checked here.
#[inline(always)]
unsafe fn group<D: Dot, const M: usize, const NB: usize>(w: &WView, a: &[D::Elem], kp: usize, p: &mut Piece) {
    let t = w.tables.expect("the two-level kernel's view has tables");
    // The format's NaN fix-up is chosen once per group, not tested per step.
    if t.nan80() {
        // SAFETY: the caller's contract.
        unsafe { group_with::<D, M, NB, true>(w, t, a, kp, p) }
    } else {
        // SAFETY: the caller's contract.
        unsafe { group_with::<D, M, NB, false>(w, t, a, kp, p) }
    }
}

/// [`group`] with the tables' NaN rule fixed (`NAN80 == t.nan80()`).
///
/// # Safety
/// As [`group`].
#[inline(always)]
unsafe fn group_with<D: Dot, const M: usize, const NB: usize, const NAN80: bool>(
    w: &WView,
    t: &Fp8Tables,
    a: &[D::Elem],
    kp: usize,
    p: &mut Piece,
) {
    let (k, n0) = (w.k, p.n0);
    let rows: [&[u8]; NB] = std::array::from_fn(|j| &w.bytes[(n0 + j) * k..][..k]);
    let a = &a[..M * kp];
    assert!(kp >= k && kp.is_multiple_of(STEP), "A's row stride");
    assert!(p.out.len() > (NB - 1) * p.ldo + M - 1, "decode output too short");
    // SAFETY: the features are enabled (caller's contract).
    let r = unsafe { regs(t) };
    let pf = Prefetch::new(w.bytes, k, n0, p.next_row);
    let mut acc = [[_mm512_setzero_ps(); M]; NB];
    let mut kb0 = 0;
    while kb0 < k {
        let kend = (kb0 + SCALE_BLOCK).min(k);
        let mut part = [[_mm512_setzero_ps(); M]; NB];
        if kend - kb0 == SCALE_BLOCK {
            // A whole block (all but possibly the last): plain loads and a fixed trip count.
            for s in 0..SCALE_BLOCK / STEP {
                step::<D, M, NB, NAN80>(&r, &pf, &rows, a, kp, kb0 + s * STEP, None, &mut part);
            }
        } else {
            let mut k0 = kb0;
            while k0 < kend {
                let rem = kend - k0;
                let mask = if rem >= 64 { !0 } else { (1u64 << rem) - 1 };
                step::<D, M, NB, NAN80>(&r, &pf, &rows, a, kp, k0, Some(mask), &mut part);
                k0 += STEP;
            }
        }
        for (j, (acc_j, part_j)) in acc.iter_mut().zip(&part).enumerate() {
            let s = _mm512_set1_ps(w.scales[(n0 + j) / SCALE_BLOCK * w.kb + kb0 / SCALE_BLOCK]);
            for (acc_ji, part_ji) in acc_j.iter_mut().zip(part_j) {
                *acc_ji = _mm512_fmadd_ps(*part_ji, s, *acc_ji);
            }
        }
        kb0 = kend;
    }
    for (j, acc_j) in acc.iter().enumerate() {
        for (i, acc_ji) in acc_j.iter().enumerate() {
            p.out[j * p.ldo + i] = _mm512_reduce_add_ps(*acc_ji);
        }
    }
}

/// One step of [`group_with`]: the 64 codes from `k0` of every row of the group (`mask`: those inside
/// the row, `None` when all are) times A's values from `k0` into `part`. A function, not a closure:
/// a closure would not inherit the caller's target features.
///
/// # Safety
/// As [`group_with`], which checked `rows`, `a` (`M·kp` values), `kp`; `k0` a multiple of 64 below
/// every row's length, and without `mask` at least 64 codes from `k0` in every row.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn step<D: Dot, const M: usize, const NB: usize, const NAN80: bool>(
    r: &Regs,
    pf: &Prefetch,
    rows: &[&[u8]; NB],
    a: &[D::Elem],
    kp: usize,
    k0: usize,
    mask: Option<__mmask64>,
    part: &mut [[__m512; M]; NB],
) {
    let pf_at = pf.at(k0);
    for (j, (row, part_j)) in rows.iter().zip(part.iter_mut()).enumerate() {
        pf.fetch(pf_at, j);
        // SAFETY: without `mask`, k0 + 64 <= the row's length, so the 64 bytes lie inside `row`; with
        // it, the lanes it enables lie inside `row`, and masked-off lanes are zero (code 0 decodes to
        // +0), never read. k0 < k <= kp and k0, kp are multiples of 64, so every row's 64 elements of A
        // from k0 lie inside `a` (A is zero past k).
        unsafe {
            let src = row.as_ptr().add(k0);
            let x = match mask {
                None => _mm512_loadu_si512(src.cast()),
                Some(m) => _mm512_maskz_loadu_epi8(m, src.cast()),
            };
            D::madd::<M, NAN80>(r, x, a.as_ptr().add(k0), kp, part_j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `bf16_lhs` places each scaled value at its lane, returns the rows' factors, and refuses A that
    /// `vdpbf16ps` would not read exactly.
    #[test]
    fn bf16_lhs_scales_places_and_refuses() {
        let (k, kp) = (70, 128);
        let row = |f: &dyn Fn(usize) -> f32| -> Vec<f32> {
            (0..kp).map(|i| if i < k { f(i) } else { 0.0 }).collect()
        };
        // Row 0 bf16 values up to 33·2^-3 (factor 2^2), row 1 bf16 subnormals up to 2^-128 (scaled up to
        // normal).
        let mut a = row(&|i| (i as f32 - 35.0) * 2f32.powi(-5 + (i % 3) as i32));
        a.extend(row(&|i| (i % 5) as f32 * 2f32.powi(-130)));
        let (buf, out_scale) = bf16_lhs(2, k, kp, &a).expect("bf16 rows are taken");
        let bits: &[u16] = bytemuck::cast_slice(&buf[..]);
        for (r, e) in [(0usize, 2i32), (1, -128)] {
            assert_eq!(out_scale[r], 2f64.powi(e), "row {r}'s factor");
            for i in 0..kp {
                let v = f32::from_bits(
                    u32::from(bits[r * kp + i / STEP * STEP + bf16_lane_order(i % STEP)]) << 16,
                );
                assert_eq!(f64::from(v) * 2f64.powi(e), f64::from(a[r * kp + i]), "row {r}, value {i}");
            }
        }
        // Not bf16 (A was f32), and a row whose small values would be bf16 subnormals once scaled.
        let not_bf16 = row(&|i| 1.0 + i as f32 * 2f32.powi(-20));
        assert!(bf16_lhs(1, k, kp, &not_bf16).is_none());
        let wide = row(&|i| 2f32.powi(i as i32 * 3 - 100));
        assert!(bf16_lhs(1, k, kp, &wide).is_none());
    }
}
