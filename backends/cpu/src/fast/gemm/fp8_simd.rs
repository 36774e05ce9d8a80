//! AVX-512 VBMI decode of 64 FP8 codes at a time into exact f32 values: about a quarter of the
//! instructions per code of the table-free f16 decoder in `decode.rs`, so FP8 GEMMs use it where the CPU
//! has VBMI (the prefill packing, and the decode kernel for M ≤ 4).
//!
//! Every FP8 value (e4m3fn, e4m3fnuz, e5m2; subnormals, ±0 and ±inf included) is an f32 whose low 16 bits
//! are zero, so it is fully described by two bytes: `bits = hi << 24 | lo << 16`. Both bytes of a
//! positive value are functions of the 7 magnitude bits of the code, so two 128-entry byte tables, looked
//! up 64 codes at a time with `vpermi2b` (which indexes by the low 7 bits of each byte), give them; the
//! sign bit of the code is then OR-ed into `hi` (one `vpternlogd`), and four zero-masked `vpermt2b`
//! interleave `lo`/`hi` into the upper halves of 64 dwords, in order. The tables are built from
//! [`Fp8Format::decode`], so the result is exact by construction (checked for all 256 codes in the tests);
//! NaN codes give a quiet NaN (e4m3fnuz's NaN, 0x80, is special-cased: it has no magnitude bits).

use super::Fp8Format;

/// Decode tables of one format. Holding one proves that this CPU has AVX-512F/BW/VL + VBMI (the only
/// constructor, [`Fp8Tables::new`], checks).
#[derive(Clone, Debug)]
#[repr(C, align(64))]
pub(crate) struct Fp8Tables {
    hi: [u8; 128],
    lo: [u8; 128],
    /// e4m3fnuz: code 0x80 is NaN.
    nan80: bool,
}

#[cfg(test)]
thread_local! {
    /// Tests set this to exercise the paths used on CPUs without VBMI.
    pub(crate) static FORCE_NO_VBMI: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the VBMI decode can run here (AVX-512F/BW/VL + VBMI).
pub(crate) fn vbmi_ok() -> bool {
    #[cfg(test)]
    if FORCE_NO_VBMI.with(|f| f.get()) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| super::avx512_ok() && is_x86_feature_detected!("avx512vbmi"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl Fp8Tables {
    /// The tables of `format`, or `None` when this CPU cannot run the VBMI decode.
    pub(crate) fn new(format: Fp8Format) -> Option<Box<Self>> {
        if !vbmi_ok() {
            return None;
        }
        let mut t = Box::new(Fp8Tables { hi: [0; 128], lo: [0; 128], nan80: format.is_nan_code(0x80) });
        for mag in 0..128u8 {
            let v = format.decode_table()[mag as usize];
            let bits = if v.is_nan() { 0x7FC0_0000 } else { v.to_bits() };
            assert_eq!(bits & 0xFFFF, 0, "FP8 value with more than 16 significant bits");
            t.hi[mag as usize] = (bits >> 24) as u8;
            t.lo[mag as usize] = (bits >> 16) as u8;
        }
        Some(t)
    }

    /// Whether code 0x80 is NaN (e4m3fnuz): the decoders' one fix-up that the tables do not hold.
    pub(crate) fn nan80(&self) -> bool {
        self.nan80
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) use x86::*;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Fp8Tables;

    /// The tables and constants in registers.
    #[derive(Clone, Copy)]
    pub(crate) struct Regs {
        hi0: __m512i,
        hi1: __m512i,
        lo0: __m512i,
        lo1: __m512i,
        sign: __m512i,
        idx: [__m512i; 4],
        nan80: bool,
    }

    /// Index for `vpermt2b` over (lo, hi) that places the bytes of 64 / `width` values as the top two
    /// bytes of `width`-byte elements: in output vector `c`, byte `width·d + width − 2` takes
    /// `lo[(64 / width)·c + d]` and the byte above it `hi[…]` (index bit 6 selects the second source).
    /// `width` 4: f32 bits (bytes `4d`, `4d+1` are zeroed by [`HI_HALVES`]); 2: bf16 bits.
    const fn byte_index(width: usize, c: usize) -> [u8; 64] {
        let mut v = [0u8; 64];
        let n = 64 / width;
        let mut d = 0;
        while d < n {
            v[width * d + width - 2] = (n * c + d) as u8;
            v[width * d + width - 1] = (64 + n * c + d) as u8;
            d += 1;
        }
        v
    }
    const IDX: [[u8; 64]; 4] = [byte_index(4, 0), byte_index(4, 1), byte_index(4, 2), byte_index(4, 3)];
    const HI_HALVES: __mmask64 = 0xCCCC_CCCC_CCCC_CCCC;

    /// # Safety
    /// AVX-512F/BW/VBMI available (implied by the existence of `t`).
    #[inline(always)]
    pub(crate) unsafe fn regs(t: &Fp8Tables) -> Regs {
        // SAFETY: each table is 128 bytes (two 64-byte loads each); IDX rows are 64 bytes.
        unsafe {
            Regs {
                hi0: _mm512_loadu_si512(t.hi.as_ptr().cast()),
                hi1: _mm512_loadu_si512(t.hi.as_ptr().add(64).cast()),
                lo0: _mm512_loadu_si512(t.lo.as_ptr().cast()),
                lo1: _mm512_loadu_si512(t.lo.as_ptr().add(64).cast()),
                sign: _mm512_set1_epi8(0x80u8 as i8),
                idx: std::array::from_fn(|c| _mm512_loadu_si512(IDX[c].as_ptr().cast())),
                nan80: t.nan80,
            }
        }
    }

    /// The low and high bytes of the f32 bit patterns of the 64 codes of `x`, for tables whose
    /// `nan80` is `NAN80` (a constant, so that loops test it once, outside).
    #[inline(always)]
    unsafe fn lo_hi_of<const NAN80: bool>(r: &Regs, x: __m512i) -> (__m512i, __m512i) {
        // SAFETY: register-only intrinsics of the features the caller guarantees.
        unsafe {
            let mut hi = _mm512_permutex2var_epi8(r.hi0, x, r.hi1);
            let mut lo = _mm512_permutex2var_epi8(r.lo0, x, r.lo1);
            // hi | (x & 0x80)
            hi = _mm512_ternarylogic_epi32::<0xF8>(hi, x, r.sign);
            if NAN80 {
                debug_assert!(r.nan80);
                let m = _mm512_cmpeq_epi8_mask(x, r.sign);
                hi = _mm512_mask_mov_epi8(hi, m, _mm512_set1_epi8(0x7F));
                lo = _mm512_mask_mov_epi8(lo, m, _mm512_set1_epi8(0xC0u8 as i8));
            }
            (lo, hi)
        }
    }

    /// [`lo_hi_of`] for the tables' own rule, tested at run time.
    #[inline(always)]
    unsafe fn lo_hi(r: &Regs, x: __m512i) -> (__m512i, __m512i) {
        // SAFETY: as `lo_hi_of`, with its constant matching the tables.
        unsafe {
            if r.nan80 {
                lo_hi_of::<true>(r, x)
            } else {
                lo_hi_of::<false>(r, x)
            }
        }
    }

    /// Position of value `i` of a 64-code chunk in the output of [`decode64_lanes`], as an index into the
    /// four vectors laid end to end: `16c + 4L + d` for `i = 16L + 4c + d`.
    pub(crate) const fn lane_order(i: usize) -> usize {
        let (l, c, d) = (i / 16, (i / 4) % 4, i % 4);
        16 * c + 4 * l + d
    }

    /// Decodes the 64 codes of `x`: `out[c]` lane `d` is `decode(x[16c + d])` exactly.
    ///
    /// # Safety
    /// AVX-512F/BW/VBMI available.
    #[inline(always)]
    pub(crate) unsafe fn decode64(r: &Regs, x: __m512i) -> [__m512; 4] {
        // SAFETY: register-only intrinsics of the features the caller guarantees.
        unsafe {
            let (lo, hi) = lo_hi(r, x);
            std::array::from_fn(|c| {
                _mm512_castsi512_ps(_mm512_maskz_permutex2var_epi8(HI_HALVES, lo, r.idx[c], hi))
            })
        }
    }

    /// Decodes the 64 codes of `x` in the order of in-lane unpacks (one op fewer per 16 values than
    /// [`decode64`]): `out[c]` lane `4L + d` is `decode(x[16L + 4c + d])` (`L`: 128-bit lane, `d < 4`);
    /// see [`lane_order`].
    ///
    /// # Safety
    /// AVX-512F/BW/VBMI available; `NAN80` is the tables' [`Fp8Tables::nan80`].
    #[inline(always)]
    pub(crate) unsafe fn decode64_lanes<const NAN80: bool>(r: &Regs, x: __m512i) -> [__m512; 4] {
        // SAFETY: register-only intrinsics of the features the caller guarantees.
        unsafe {
            let (lo, hi) = lo_hi_of::<NAN80>(r, x);
            let w0 = _mm512_unpacklo_epi8(lo, hi);
            let w1 = _mm512_unpackhi_epi8(lo, hi);
            let z = _mm512_setzero_si512();
            [
                _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, w0)),
                _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, w0)),
                _mm512_castsi512_ps(_mm512_unpacklo_epi16(z, w1)),
                _mm512_castsi512_ps(_mm512_unpackhi_epi16(z, w1)),
            ]
        }
    }

    /// Position of value `i` of a 64-code chunk in the output of [`decode64_bf16`], as an index into the
    /// two vectors of 32 laid end to end: `32h + 8L + d` for `i = 16L + 8h + d`.
    pub(crate) const fn bf16_lane_order(i: usize) -> usize {
        let (l, h, d) = (i / 16, (i / 8) % 2, i % 8);
        32 * h + 8 * l + d
    }

    /// Decodes the 64 codes of `x` to bf16 (exact: every FP8 value is a bf16, its bits the top half of
    /// its f32's, `hi << 8 | lo`), in the order of one in-lane unpack: `out[h]` word `8L + d` is
    /// `decode(x[16L + 8h + d])` (see [`bf16_lane_order`]).
    ///
    /// # Safety
    /// AVX-512F/BW/VBMI available; `NAN80` is the tables' [`Fp8Tables::nan80`].
    #[inline(always)]
    pub(crate) unsafe fn decode64_bf16<const NAN80: bool>(r: &Regs, x: __m512i) -> [__m512i; 2] {
        // SAFETY: register-only intrinsics of the features the caller guarantees.
        unsafe {
            let (lo, hi) = lo_hi_of::<NAN80>(r, x);
            [_mm512_unpacklo_epi8(lo, hi), _mm512_unpackhi_epi8(lo, hi)]
        }
    }

    /// [`byte_index`] for bf16 words: the codes `32h..32h + 32` in their order.
    const BF16_IDX: [[u8; 64]; 2] = [byte_index(2, 0), byte_index(2, 1)];

    /// `out[i]` = the bf16 bits of `decode(src[i])` (exact, as [`decode64_bf16`]; NaN codes give a
    /// quiet NaN); `src.len() == out.len()`. For packing, where the values' order matters.
    pub(crate) fn to_bf16(t: &Fp8Tables, src: &[u8], out: &mut [u16]) {
        assert_eq!(src.len(), out.len());
        // SAFETY: `t` exists, so the CPU has the features (see `Fp8Tables::new`); accesses are checked.
        unsafe { to_bf16_impl(t, src, out) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    unsafe fn to_bf16_impl(t: &Fp8Tables, src: &[u8], out: &mut [u16]) {
        // SAFETY: the features are enabled; loads and stores below are masked to `src.len()` elements.
        unsafe {
            let r = regs(t);
            let idx: [__m512i; 2] = std::array::from_fn(|h| _mm512_loadu_si512(BF16_IDX[h].as_ptr().cast()));
            for (i, chunk) in src.chunks(64).enumerate() {
                let m: __mmask64 = if chunk.len() == 64 { !0 } else { (1u64 << chunk.len()) - 1 };
                let (lo, hi) = lo_hi(&r, _mm512_maskz_loadu_epi8(m, chunk.as_ptr().cast()));
                for (h, ih) in idx.iter().enumerate() {
                    let words = _mm512_permutex2var_epi8(lo, *ih, hi);
                    let mh = (m >> (32 * h)) as __mmask32;
                    _mm512_mask_storeu_epi16(
                        out.as_mut_ptr().wrapping_add(64 * i + 32 * h).cast(),
                        mh,
                        words,
                    );
                }
            }
        }
    }

    /// `out[i] = decode(src[i]) · s`, one rounding per value; `src.len() == out.len()`.
    pub(crate) fn scaled_to_f32(t: &Fp8Tables, src: &[u8], s: f32, out: &mut [f32]) {
        assert_eq!(src.len(), out.len());
        // SAFETY: `t` exists, so the CPU has the features (see `Fp8Tables::new`); accesses are checked.
        unsafe { scaled_impl(t, src, s, out) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi")]
    unsafe fn scaled_impl(t: &Fp8Tables, src: &[u8], s: f32, out: &mut [f32]) {
        // SAFETY: the features are enabled; loads and stores below are masked to `src.len()` elements.
        unsafe {
            let r = regs(t);
            let sv = _mm512_set1_ps(s);
            let len = src.len();
            let mut i = 0;
            while i < len {
                let rem = len - i;
                let m: __mmask64 = if rem >= 64 { !0 } else { (1u64 << rem) - 1 };
                let x = _mm512_maskz_loadu_epi8(m, src.as_ptr().add(i).cast());
                let v = decode64(&r, x);
                for (c, vc) in v.iter().enumerate() {
                    let mc = (m >> (16 * c)) as __mmask16;
                    _mm512_mask_storeu_ps(
                        out.as_mut_ptr().wrapping_add(i + 16 * c),
                        mc,
                        _mm512_mul_ps(*vc, sv),
                    );
                }
                i += 64;
            }
        }
    }
}

/// Portable stand-in (never reached: no tables exist off x86-64).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn scaled_to_f32(_t: &Fp8Tables, _src: &[u8], _s: f32, _out: &mut [f32]) {
    unreachable!("Fp8Tables are only built on x86-64 with VBMI")
}

/// Portable stand-in (never reached: no tables exist off x86-64).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) fn to_bf16(_t: &Fp8Tables, _src: &[u8], _out: &mut [u16]) {
    unreachable!("Fp8Tables are only built on x86-64 with VBMI")
}
