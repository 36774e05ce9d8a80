//! M ≤ 8 ("decode") GEMM: memory-bandwidth bound, so B is not packed. Each weight row is streamed once
//! and decoded in registers (bf16: 16-bit shift; FP8 e4m3: bit trick; e5m2: via f16), the block scale is
//! folded in with one multiply, and M accumulators per weight row are kept; rows of B (columns of C) are
//! split among threads. A (at most 8 rows) is converted to f32 once, zero-padded to a multiple of 16.
//!
//! FP8 e4m3 decode: with `x` the code, `((x << 24) >>ₐ 4) & 0x87F0_0000` puts the sign in bit 31 and the
//! 7 magnitude bits at f32 bits 20..26 (exponent field's low 4 bits + top 3 mantissa bits); that f32 is
//! `decode(x) · 2⁻¹²⁰` exactly (e4m3fn; `2⁻¹¹⁹` for e4m3fnuz), subnormals included. The weight value is
//! then `t · (s · 2¹²⁰)`, one rounding, equal to `decode(x) · s` rounded once whenever `s · 2¹²⁰` is
//! finite (checked; otherwise the portable path runs). NaN codes give finite values here.
//!
//! FP8 weights with M ≤ 4 on AVX-512 + VBMI take the two-level kernel instead: 64 codes per step decoded
//! exactly by table lookup ([`super::fp8_simd`], in unpack order, A permuted to match), partial sums
//! per 128-wide K block without the scale, then `acc += partial · s` (one FMA per block). Its software
//! prefetch rolls over from the end of each row into the next group's rows, so groups start warm.

use half::bf16;
use rayon::prelude::*;

use super::fp8_simd::Fp8Tables;
use super::pack::{LhsSrc, RhsSrc};
use super::{Fp8Format, Isa, SCALE_BLOCK};

/// Weight element kinds of the SIMD paths.
const F32: u8 = 0;
const BF16: u8 = 1;
const E4M3: u8 = 2;
const E5M2: u8 = 3;

/// A byte view of B plus what its decode needs.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct WView<'a> {
    kind: u8,
    bytes: &'a [u8],
    k: usize,
    scales: &'a [f32],
    kb: usize,
    /// Multiplier folded into the block scale (2^120 e4m3fn, 2^119 e4m3fnuz, 1 otherwise).
    fold: f32,
    /// VBMI decode tables: when present (FP8 on AVX-512 with VBMI), the two-level kernel runs.
    tables: Option<&'a Fp8Tables>,
}

fn as_bytes_f32(x: &[f32]) -> &[u8] {
    // SAFETY: u8 has no alignment or validity requirement; the byte length covers exactly `x`.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

fn as_bytes_bf16(x: &[bf16]) -> &[u8] {
    // SAFETY: as above (bf16 is a plain 2-byte value).
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u8>(), std::mem::size_of_val(x)) }
}

/// Largest M for the two-level VBMI kernel (above it, the partial sums no longer fit in registers and
/// the scale-folded kernel is faster).
const TWO_LEVEL_MAX_M: usize = 4;

/// `two_level`: use the VBMI tables when `b` has them (AVX-512 path only).
fn view<'a>(b: &'a RhsSrc<'a>, k: usize, two_level: bool) -> Option<WView<'a>> {
    let kb = k.div_ceil(SCALE_BLOCK);
    Some(match b {
        RhsSrc::F32(d) => {
            WView { kind: F32, bytes: as_bytes_f32(d), k, scales: &[], kb, fold: 1.0, tables: None }
        }
        RhsSrc::Bf16(d) => {
            WView { kind: BF16, bytes: as_bytes_bf16(d), k, scales: &[], kb, fold: 1.0, tables: None }
        }
        RhsSrc::BlockFp8 { codes, scales, format, simd: Some(t), .. } if two_level => {
            let kind = if *format == Fp8Format::E5M2 { E5M2 } else { E4M3 };
            WView { kind, bytes: codes, k, scales, kb, fold: 1.0, tables: Some(t) }
        }
        RhsSrc::BlockFp8 { codes, scales, format, .. } => {
            let (kind, fold) = match format {
                Fp8Format::E4M3Fn => (E4M3, 2f32.powi(120)),
                Fp8Format::E4M3Fnuz => (E4M3, 2f32.powi(119)),
                Fp8Format::E5M2 => (E5M2, 1.0),
            };
            if scales.iter().any(|s| !(s * fold).is_finite() && s.is_finite()) {
                return None;
            }
            WView { kind, bytes: codes, k, scales, kb, fold, tables: None }
        }
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_decode(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &LhsSrc,
    b: &RhsSrc,
    c: &mut [f32],
    ldc: usize,
) {
    debug_assert!((1..=super::DECODE_MAX_M).contains(&m));
    let kp = k.next_multiple_of(64);
    let mut abuf = vec![0f32; m * kp];
    for (i, row) in abuf.chunks_exact_mut(kp).enumerate() {
        a.load_row(i, 0, &mut row[..k]);
    }
    #[cfg(target_arch = "x86_64")]
    let two_level = isa == Isa::Avx512 && m <= TWO_LEVEL_MAX_M;
    #[cfg(not(target_arch = "x86_64"))]
    let two_level = false;
    let w = view(b, k, two_level);
    #[cfg(target_arch = "x86_64")]
    if w.as_ref().is_some_and(|w| w.tables.is_some()) {
        // The two-level kernel decodes 64 codes at a time in the order of in-lane unpacks; permute A's
        // 64-value chunks to match (kp is a multiple of 64; the zero padding stays zero).
        for row in abuf.chunks_exact_mut(kp) {
            for chunk in row.chunks_exact_mut(64) {
                let src: [f32; 64] = (&*chunk).try_into().unwrap();
                for (i, &v) in src.iter().enumerate() {
                    chunk[super::fp8_simd::lane_order(i)] = v;
                }
            }
        }
    }
    let isa = if w.is_none() { Isa::Scalar } else { isa };

    // Output transposed ([N, M]) so that threads own disjoint chunks; scattered into C at the end.
    let mut ct = vec![0f32; n * m];
    let threads = rayon::current_num_threads().max(1);
    let rows_per_task = n.div_ceil(8 * threads).clamp(8, 256);
    ct.par_chunks_mut(rows_per_task * m).enumerate().for_each(|(t, out)| {
        let n0 = t * rows_per_task;
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::rows(m, w.as_ref().unwrap(), &abuf, kp, n0, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::rows(m, w.as_ref().unwrap(), &abuf, kp, n0, out),
            Isa::Scalar => scalar_rows(m, k, b, &abuf, kp, n0, out),
        }
    });
    for (i, row) in c.chunks_mut(ldc).take(m).enumerate() {
        for (d, src) in row[..n].iter_mut().zip(ct.chunks_exact(m)) {
            *d = src[i];
        }
    }
}

/// Portable path: decode each weight row in chunks, then M dot products.
fn scalar_rows(m: usize, k: usize, b: &RhsSrc, abuf: &[f32], kp: usize, n0: usize, out: &mut [f32]) {
    const CH: usize = 256;
    let mut wbuf = [0f32; CH];
    for (r, o) in out.chunks_exact_mut(m).enumerate() {
        let mut sums = [0f32; super::DECODE_MAX_M];
        for k0 in (0..k).step_by(CH) {
            let len = CH.min(k - k0);
            b.load_row(n0 + r, k, k0, &mut wbuf[..len]);
            for (i, s) in sums[..m].iter_mut().enumerate() {
                let arow = &abuf[i * kp + k0..][..len];
                let mut part = [0f32; 8];
                for (wc, ac) in wbuf[..len].chunks(8).zip(arow.chunks(8)) {
                    for ((p, &x), &y) in part.iter_mut().zip(wc).zip(ac) {
                        *p += x * y;
                    }
                }
                *s += part.iter().sum::<f32>();
            }
        }
        o.copy_from_slice(&sums[..m]);
    }
}

/// Dispatches a row chunk to the monomorphised kernel for (M, rows per group, weight kind).
#[cfg(target_arch = "x86_64")]
macro_rules! dispatch_rows {
    ($kern:ident, $m:expr, $w:expr, $a:expr, $kp:expr, $n0:expr, $out:expr) => {{
        macro_rules! by_kind {
            ($M:literal, $NB:literal) => {
                match $w.kind {
                    F32 => group::<$M, $NB, F32>,
                    BF16 => group::<$M, $NB, BF16>,
                    E4M3 => group::<$M, $NB, E4M3>,
                    _ => group::<$M, $NB, E5M2>,
                }
            };
        }
        let (nb, f, f1): (usize, Kern, Kern) = match $m {
            1 => (4, by_kind!(1, 4), by_kind!(1, 1)),
            2 => (4, by_kind!(2, 4), by_kind!(2, 1)),
            3 => (4, by_kind!(3, 4), by_kind!(3, 1)),
            4 => (4, by_kind!(4, 4), by_kind!(4, 1)),
            5 => (2, by_kind!(5, 2), by_kind!(5, 1)),
            6 => (2, by_kind!(6, 2), by_kind!(6, 1)),
            7 => (2, by_kind!(7, 2), by_kind!(7, 1)),
            _ => (2, by_kind!(8, 2), by_kind!(8, 1)),
        };
        let rows = $out.len() / $m;
        let mut r = 0;
        while r < rows {
            let (g, kern) = if r + nb <= rows { (nb, f) } else { (1, f1) };
            let o = &mut $out[r * $m..(r + g) * $m];
            // SAFETY: this module is reached only through an Isa chosen after feature detection; the
            // kernel's own slice checks cover its memory accesses.
            unsafe { kern($w, $a, $kp, $n0 + r, o) };
            r += g;
        }
    }};
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{WView, BF16, E4M3, E5M2, F32, SCALE_BLOCK};

    type Kern = unsafe fn(&WView, &[f32], usize, usize, &mut [f32]);

    /// Software prefetch distance in bytes.
    const PF: usize = 1024;

    pub(super) fn rows(m: usize, w: &WView, a: &[f32], kp: usize, n0: usize, out: &mut [f32]) {
        debug_assert!(crate::fast::gemm::avx512_ok());
        if let Some(t) = w.tables {
            super::two_level::rows(m, w, t, a, kp, n0, out);
            return;
        }
        dispatch_rows!(group, m, w, a, kp, n0, out);
    }

    /// Decodes 16 weights (lanes past `mask` are zero and not read).
    ///
    /// # Safety
    /// AVX-512F/BW/VL available; `p` readable for `popcount(mask)` leading elements of the kind.
    #[inline(always)]
    unsafe fn load<const KIND: u8>(p: *const u8, mask: __mmask16) -> __m512 {
        // SAFETY: masked loads read only the enabled lanes (masked-off lanes never fault).
        unsafe {
            match KIND {
                F32 => _mm512_maskz_loadu_ps(mask, p.cast()),
                BF16 => _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                    _mm256_maskz_loadu_epi16(mask, p.cast()),
                ))),
                E4M3 => {
                    let x = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, p.cast()));
                    let t = _mm512_srai_epi32::<4>(_mm512_slli_epi32::<24>(x));
                    _mm512_castsi512_ps(_mm512_and_si512(t, _mm512_set1_epi32(0x87F0_0000u32 as i32)))
                }
                _ => {
                    let x = _mm256_cvtepu8_epi16(_mm_maskz_loadu_epi8(mask, p.cast()));
                    _mm512_cvtph_ps(_mm256_slli_epi16::<8>(x))
                }
            }
        }
    }

    /// `out[j*M + i] = Σ_k a[i*kp + k] · w(n0 + j, k)` for `j < NB`, `i < M`.
    ///
    /// # Safety
    /// AVX-512F/BW/VL available. Every pointer used is derived from a slice checked here.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    unsafe fn group<const M: usize, const NB: usize, const KIND: u8>(
        w: &WView,
        a: &[f32],
        kp: usize,
        n0: usize,
        out: &mut [f32],
    ) {
        let k = w.k;
        let esz = match KIND {
            F32 => 4,
            BF16 => 2,
            _ => 1,
        };
        let rows: [&[u8]; NB] = std::array::from_fn(|j| &w.bytes[(n0 + j) * k * esz..][..k * esz]);
        let a = &a[..M * kp];
        assert!(kp >= k && kp.is_multiple_of(16) && out.len() == M * NB);
        let mut acc = [[_mm512_setzero_ps(); NB]; M];
        let mut kb0 = 0;
        while kb0 < k {
            let kend = (kb0 + SCALE_BLOCK).min(k);
            let scale: [__m512; NB] = std::array::from_fn(|j| {
                if KIND == E4M3 || KIND == E5M2 {
                    let s = w.scales[(n0 + j) / SCALE_BLOCK * w.kb + kb0 / SCALE_BLOCK];
                    _mm512_set1_ps(s * w.fold)
                } else {
                    _mm512_set1_ps(1.0)
                }
            });
            let mut k0 = kb0;
            while k0 < kend {
                let rem = kend - k0;
                let mask: __mmask16 = if rem >= 16 { 0xFFFF } else { (1u16 << rem) - 1 };
                let av: [__m512; M] = std::array::from_fn(|i| {
                    // SAFETY: k0 < k <= kp, k0 % 16 == 0 and kp % 16 == 0, so i*kp + k0 + 16 <= M*kp.
                    unsafe { _mm512_loadu_ps(a.as_ptr().add(i * kp + k0)) }
                });
                for j in 0..NB {
                    // Software prefetch PF bytes ahead (the hardware streamer stops at 4 KiB pages).
                    // `wrapping_add`: the address may lie past the row; prefetches never fault.
                    let ahead = rows[j].as_ptr().wrapping_add(k0 * esz + PF);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    // SAFETY: rows[j] holds k elements of esz bytes; lanes enabled by `mask` are
                    // k0..k0+min(rem,16) <= k.
                    let mut wv = unsafe { load::<KIND>(rows[j].as_ptr().add(k0 * esz), mask) };
                    if KIND == E4M3 || KIND == E5M2 {
                        wv = _mm512_mul_ps(wv, scale[j]);
                    }
                    for i in 0..M {
                        acc[i][j] = _mm512_fmadd_ps(av[i], wv, acc[i][j]);
                    }
                }
                k0 += 16;
            }
            kb0 = kend;
        }
        for i in 0..M {
            for j in 0..NB {
                out[j * M + i] = _mm512_reduce_add_ps(acc[i][j]);
            }
        }
    }
}

/// FP8 weights on AVX-512 + VBMI: exact 64-code decode ([`super::fp8_simd`]) and the two-level form
/// (per 128-wide K block, `p = Σ a·decode(q)` in f32, then `acc += p·s` with one FMA).
#[cfg(target_arch = "x86_64")]
mod two_level {
    use std::arch::x86_64::*;

    use super::super::fp8_simd::{decode64_lanes, regs, Fp8Tables};
    use super::{WView, SCALE_BLOCK};

    type Kern = unsafe fn(&WView, &Fp8Tables, &[f32], usize, usize, &mut [f32]);

    /// Software prefetch distance in bytes.
    const PF: usize = 1024;

    pub(super) fn rows(m: usize, w: &WView, t: &Fp8Tables, a: &[f32], kp: usize, n0: usize, out: &mut [f32]) {
        let (nb, f, f1): (usize, Kern, Kern) = match m {
            1 => (4, group::<1, 4>, group::<1, 1>),
            2 => (4, group::<2, 4>, group::<2, 1>),
            3 => (2, group::<3, 2>, group::<3, 1>),
            4 => (2, group::<4, 2>, group::<4, 1>),
            _ => (2, group::<4, 2>, group::<4, 1>),
        };
        debug_assert!(m <= super::TWO_LEVEL_MAX_M);
        let rows = out.len() / m;
        let mut r = 0;
        while r < rows {
            let (g, kern) = if r + nb <= rows { (nb, f) } else { (1, f1) };
            let o = &mut out[r * m..(r + g) * m];
            // SAFETY: `t` exists only on CPUs with AVX-512F/BW/VL + VBMI; the kernel checks its slices.
            unsafe { kern(w, t, a, kp, n0 + r, o) };
            r += g;
        }
    }

    /// `out[j*M + i] = Σ_kb s(n0+j, kb) · Σ_{k in kb} a[i*kp + k] · decode(q(n0 + j, k))`.
    ///
    /// # Safety
    /// AVX-512F/BW/VL + VBMI available. Every pointer used is derived from a slice checked here.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    unsafe fn group<const M: usize, const NB: usize>(
        w: &WView,
        t: &Fp8Tables,
        a: &[f32],
        kp: usize,
        n0: usize,
        out: &mut [f32],
    ) {
        let k = w.k;
        let rows: [&[u8]; NB] = std::array::from_fn(|j| &w.bytes[(n0 + j) * k..][..k]);
        let a = &a[..M * kp];
        assert!(kp >= k && kp.is_multiple_of(64) && out.len() == M * NB);
        // SAFETY: the features are enabled (caller's contract).
        let r = unsafe { regs(t) };
        let mut acc = [[_mm512_setzero_ps(); NB]; M];
        let mut kb0 = 0;
        while kb0 < k {
            let kend = (kb0 + SCALE_BLOCK).min(k);
            let mut part = [[_mm512_setzero_ps(); NB]; M];
            let mut k0 = kb0;
            while k0 < kend {
                let rem = kend - k0;
                let mask: __mmask64 = if rem >= 64 { !0 } else { (1u64 << rem) - 1 };
                // Prefetch PF bytes ahead in each row; past a row's end, continue into the same row of
                // the next group (NB rows further on), so that the next group starts warm.
                let off = if k0 + PF < k { k0 + PF } else { k0 + PF - k + NB * k };
                for j in 0..NB {
                    // `wrapping_add`: the address may lie past the weights; prefetches never fault.
                    let ahead = rows[j].as_ptr().wrapping_add(off);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    // SAFETY: the lanes enabled by `mask` are k0..k0+min(rem,64) <= k, inside rows[j];
                    // masked-off lanes are zero (code 0 decodes to +0) and never read.
                    let x = unsafe { _mm512_maskz_loadu_epi8(mask, rows[j].as_ptr().add(k0).cast()) };
                    // SAFETY: features enabled.
                    let wv = unsafe { decode64_lanes(&r, x) };
                    for (c, wc) in wv.iter().enumerate() {
                        for (i, part_i) in part.iter_mut().enumerate() {
                            // SAFETY: k0 < k <= kp, k0 % 64 == 0 and kp % 64 == 0, so
                            // i*kp + k0 + 16c + 16 <= M*kp (A is zero past k).
                            let av = unsafe { _mm512_loadu_ps(a.as_ptr().add(i * kp + k0 + 16 * c)) };
                            part_i[j] = _mm512_fmadd_ps(av, *wc, part_i[j]);
                        }
                    }
                }
                k0 += 64;
            }
            for j in 0..NB {
                let s = _mm512_set1_ps(w.scales[(n0 + j) / SCALE_BLOCK * w.kb + kb0 / SCALE_BLOCK]);
                for i in 0..M {
                    acc[i][j] = _mm512_fmadd_ps(part[i][j], s, acc[i][j]);
                }
            }
            kb0 = kend;
        }
        for i in 0..M {
            for j in 0..NB {
                out[j * M + i] = _mm512_reduce_add_ps(acc[i][j]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{WView, BF16, E4M3, E5M2, F32, SCALE_BLOCK};

    type Kern = unsafe fn(&WView, &[f32], usize, usize, &mut [f32]);

    /// Software prefetch distance in bytes.
    const PF: usize = 1024;

    pub(super) fn rows(m: usize, w: &WView, a: &[f32], kp: usize, n0: usize, out: &mut [f32]) {
        debug_assert!(crate::fast::gemm::avx2_ok());
        dispatch_rows!(group, m, w, a, kp, n0, out);
    }

    /// Decodes 8 weights from `p`, which is readable for 8 elements of the kind.
    ///
    /// # Safety
    /// AVX2/FMA/F16C available; `p` readable for 8 elements.
    #[inline(always)]
    unsafe fn load<const KIND: u8>(p: *const u8) -> __m256 {
        // SAFETY: the caller guarantees 8 readable elements (32, 16 or 8 bytes).
        unsafe {
            match KIND {
                F32 => _mm256_loadu_ps(p.cast()),
                BF16 => _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(_mm_loadu_si128(
                    p.cast(),
                )))),
                E4M3 => {
                    let x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
                    let t = _mm256_srai_epi32::<4>(_mm256_slli_epi32::<24>(x));
                    _mm256_castsi256_ps(_mm256_and_si256(t, _mm256_set1_epi32(0x87F0_0000u32 as i32)))
                }
                _ => {
                    let x = _mm_cvtepu8_epi16(_mm_loadl_epi64(p.cast()));
                    _mm256_cvtph_ps(_mm_slli_epi16::<8>(x))
                }
            }
        }
    }

    #[inline(always)]
    fn hsum(v: __m256) -> f32 {
        let mut t = [0f32; 8];
        // SAFETY: `t` holds 8 f32; AVX is available in the callers' context.
        unsafe { _mm256_storeu_ps(t.as_mut_ptr(), v) };
        ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]))
    }

    /// # Safety
    /// AVX2/FMA/F16C available. Every pointer used is derived from a slice checked here.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group<const M: usize, const NB: usize, const KIND: u8>(
        w: &WView,
        a: &[f32],
        kp: usize,
        n0: usize,
        out: &mut [f32],
    ) {
        let k = w.k;
        let esz = match KIND {
            F32 => 4,
            BF16 => 2,
            _ => 1,
        };
        let rows: [&[u8]; NB] = std::array::from_fn(|j| &w.bytes[(n0 + j) * k * esz..][..k * esz]);
        let a = &a[..M * kp];
        assert!(kp >= k && kp.is_multiple_of(16) && out.len() == M * NB);
        let mut acc = [[_mm256_setzero_ps(); NB]; M];
        let mut tail = [0u8; 32];
        let mut kb0 = 0;
        while kb0 < k {
            let kend = (kb0 + SCALE_BLOCK).min(k);
            let scale: [__m256; NB] = std::array::from_fn(|j| {
                if KIND == E4M3 || KIND == E5M2 {
                    let s = w.scales[(n0 + j) / SCALE_BLOCK * w.kb + kb0 / SCALE_BLOCK];
                    _mm256_set1_ps(s * w.fold)
                } else {
                    _mm256_set1_ps(1.0)
                }
            });
            let mut k0 = kb0;
            while k0 < kend {
                let rem = kend - k0;
                let av: [__m256; M] = std::array::from_fn(|i| {
                    // SAFETY: k0 < k <= kp, k0 % 8 == 0, kp % 16 == 0, so i*kp + k0 + 8 <= M*kp.
                    unsafe { _mm256_loadu_ps(a.as_ptr().add(i * kp + k0)) }
                });
                for j in 0..NB {
                    // Software prefetch (see the AVX-512 kernel).
                    let ahead = rows[j].as_ptr().wrapping_add(k0 * esz + PF);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                    let mut wv = if rem >= 8 {
                        // SAFETY: rows[j] holds k elements; k0 + 8 <= k.
                        unsafe { load::<KIND>(rows[j][k0 * esz..(k0 + 8) * esz].as_ptr()) }
                    } else {
                        tail = [0u8; 32];
                        tail[..rem * esz].copy_from_slice(&rows[j][k0 * esz..(k0 + rem) * esz]);
                        // SAFETY: `tail` holds 32 bytes >= 8 elements of any kind.
                        unsafe { load::<KIND>(tail.as_ptr()) }
                    };
                    if KIND == E4M3 || KIND == E5M2 {
                        wv = _mm256_mul_ps(wv, scale[j]);
                    }
                    for i in 0..M {
                        acc[i][j] = _mm256_fmadd_ps(av[i], wv, acc[i][j]);
                    }
                }
                k0 += 8;
            }
            kb0 = kend;
        }
        let _ = &tail;
        for i in 0..M {
            for j in 0..NB {
                out[j * M + i] = hsum(acc[i][j]);
            }
        }
    }
}
