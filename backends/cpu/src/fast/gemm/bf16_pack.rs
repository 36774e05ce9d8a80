//! AVX-512 packing of bf16 panels (the `vdpbf16ps` and AMX prefill kernels, which only run on CPUs with
//! AVX-512F/BW): B's pair interleave as 16×16 transposes of 32-bit pairs, and the subnormal check.
//!
//! A scalar interleave moved one pair per store and ran at ~3 GB/s: 15 % of a 512×2048×7168 prefill
//! GEMM on Zen 4, more than the kernel's distance from its peak.

/// Whether any of `src` is a bf16 subnormal: `vdpbf16ps` and AMX read those as zero (DAZ), which would
/// break the contract's exactly decoded operands, so a panel holding one is refused.
pub(crate) fn any_subnormal(src: &[u16]) -> bool {
    #[cfg(target_arch = "x86_64")]
    debug_assert!(super::avx512_ok());
    // SAFETY: bf16 panels are packed only on the AVX512-BF16 and AMX paths, whose CPUs have AVX-512F/BW
    // (checked when the path was chosen); the function reads only inside `src`.
    unsafe { x86::any_subnormal(src) }
}

/// Writes `rows` (each at least `kc` bf16 values; up to `width` of them, a multiple of 16) into a B
/// panel of `width` columns, `dst[kp * width + j] = rows[j][2kp] | rows[j][2kp + 1] << 16` for every
/// pair `kp < dst.len() / width` — K past `kc`, and columns past `rows.len()`, are zero. Returns whether
/// any value was a bf16 subnormal.
pub(crate) fn interleave_pairs(rows: &[&[u16]], kc: usize, width: usize, dst: &mut [u32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    debug_assert!(super::avx512_ok());
    assert!(width.is_multiple_of(16) && rows.len() <= width && dst.len().is_multiple_of(width));
    assert!(2 * (dst.len() / width) >= kc && rows.iter().all(|r| r.len() >= kc));
    // SAFETY: as in `any_subnormal`; the asserts above are the bounds `x86::interleave_pairs` relies on.
    unsafe { x86::interleave_pairs(rows, kc, width, dst) }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Mask of the 16-bit lanes of `v` holding bf16 subnormals (exponent zero, mantissa not).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    fn subnormal_lanes(v: __m512i) -> __mmask32 {
        _mm512_testn_epi16_mask(v, _mm512_set1_epi16(0x7F80))
            & _mm512_test_epi16_mask(v, _mm512_set1_epi16(0x7F))
    }

    /// # Safety
    /// AVX-512F/BW available.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn any_subnormal(src: &[u16]) -> bool {
        let mut found: __mmask32 = 0;
        for chunk in src.chunks(32) {
            let mask = if chunk.len() == 32 { u32::MAX } else { (1u32 << chunk.len()) - 1 };
            // SAFETY: the masked load reads only the chunk's `len` values.
            let v = unsafe { _mm512_maskz_loadu_epi16(mask, chunk.as_ptr().cast()) };
            found |= subnormal_lanes(v);
        }
        found != 0
    }

    /// Transposes the 16×16 matrix of 32-bit values `r` (row `j` = column `j` of the panel, lane `t` =
    /// pair `t`): returns `out[t]` lane `j` = `r[j]` lane `t`. Four stages of in-lane and cross-lane
    /// shuffles, 64 in all.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
        // a[2i], a[2i+1]: rows 2i, 2i+1 interleaved by 32 bits (lane L: columns 4L, 4L+1 / 4L+2, 4L+3).
        let a: [__m512i; 16] = std::array::from_fn(|x| {
            let (p, q) = (r[x & !1], r[x | 1]);
            if x % 2 == 0 {
                _mm512_unpacklo_epi32(p, q)
            } else {
                _mm512_unpackhi_epi32(p, q)
            }
        });
        // b[4g + e], lane L: rows 4g..4g+4 at column 4L + e.
        let b: [__m512i; 16] = std::array::from_fn(|x| {
            let (g, e) = (x / 4, x % 4);
            let (p, q) = (a[4 * g + e / 2], a[4 * g + 2 + e / 2]);
            if e % 2 == 0 {
                _mm512_unpacklo_epi64(p, q)
            } else {
                _mm512_unpackhi_epi64(p, q)
            }
        });
        // Column 4L + e = lane L of b[e], b[4 + e], b[8 + e], b[12 + e].
        std::array::from_fn(|col| {
            let (l, e) = (col / 4, col % 4);
            let (lo, hi) = if l < 2 {
                (
                    _mm512_shuffle_i32x4::<0x44>(b[e], b[4 + e]),
                    _mm512_shuffle_i32x4::<0x44>(b[8 + e], b[12 + e]),
                )
            } else {
                (
                    _mm512_shuffle_i32x4::<0xEE>(b[e], b[4 + e]),
                    _mm512_shuffle_i32x4::<0xEE>(b[8 + e], b[12 + e]),
                )
            };
            if l % 2 == 0 {
                _mm512_shuffle_i32x4::<0x88>(lo, hi)
            } else {
                _mm512_shuffle_i32x4::<0xDD>(lo, hi)
            }
        })
    }

    /// # Safety
    /// AVX-512F/BW available; `width % 16 == 0`, `rows.len() <= width`, every row at least `kc` long,
    /// `dst.len()` a multiple of `width` holding at least `kc / 2` pairs.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn interleave_pairs(rows: &[&[u16]], kc: usize, width: usize, dst: &mut [u32]) -> bool {
        let pairs = dst.len() / width;
        let mut found: __mmask32 = 0;
        for j0 in (0..width).step_by(16) {
            for kp0 in (0..pairs).step_by(16) {
                let k0 = 2 * kp0;
                // Values k0..k0 + 32 of each row: masked at the end of K, zero past the last row.
                let valid = kc.saturating_sub(k0).min(32);
                let mask = if valid == 32 { u32::MAX } else { (1u32 << valid) - 1 };
                let r: [__m512i; 16] = std::array::from_fn(|j| match rows.get(j0 + j) {
                    // SAFETY: the mask covers only values k0..k0 + valid ≤ kc of the row.
                    Some(row) if valid > 0 => unsafe {
                        _mm512_maskz_loadu_epi16(mask, row.as_ptr().add(k0).cast())
                    },
                    _ => _mm512_setzero_si512(),
                });
                for &v in &r {
                    found |= subnormal_lanes(v);
                }
                let cols = transpose16(r);
                for (t, &v) in cols.iter().enumerate().take(pairs - kp0) {
                    let at = (kp0 + t) * width + j0;
                    // SAFETY: kp0 + t < pairs and j0 + 16 ≤ width, so the 16 values lie inside `dst`.
                    unsafe { _mm512_storeu_si512(dst.as_mut_ptr().add(at).cast(), v) };
                }
            }
        }
        found != 0
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(super) unsafe fn any_subnormal(_src: &[u16]) -> bool {
        unreachable!("bf16 panels are packed only on x86-64 (AVX512-BF16 or AMX paths)")
    }
    pub(super) unsafe fn interleave_pairs(
        _rows: &[&[u16]],
        _kc: usize,
        _width: usize,
        _dst: &mut [u32],
    ) -> bool {
        unreachable!("bf16 panels are packed only on x86-64 (AVX512-BF16 or AMX paths)")
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Whether the CPU lacks AVX-512F/BW, reported as a test that did not run (bf16 panels are never
    /// packed on such a CPU).
    fn lacks_avx512(test: &str) -> bool {
        let lacks = !crate::fast::gemm::avx512_ok();
        if lacks {
            dsv3_core::testing::cpu_lacks(test, "no AVX-512F/BW: bf16 panels are never packed on this CPU");
        }
        lacks
    }

    /// Arbitrary 16-bit patterns from a fixed xorshift sequence, never subnormal bf16.
    fn normal_bits(n: usize, seed: &mut u64) -> Vec<u16> {
        (0..n)
            .map(|_| {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                let x = (*seed >> 20) as u16;
                if x & 0x7F80 == 0 {
                    x | 0x0080
                } else {
                    x
                }
            })
            .collect()
    }

    #[test]
    fn interleave_matches_the_layout_at_every_edge() {
        if lacks_avx512("interleave_matches_the_layout_at_every_edge") {
            return;
        }
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        // Full and partial row counts, K a multiple of 32, with a tail, shorter than one block.
        for (nrows, kc, width) in
            [(32, 64, 32), (17, 64, 32), (32, 50, 32), (5, 7, 16), (0, 32, 16), (16, 96, 16)]
        {
            let stride = kc + 3; // rows longer than kc: values past kc must not enter the panel
            let data = normal_bits(nrows * stride, &mut seed);
            let rows: Vec<&[u16]> = data.chunks_exact(stride).collect();
            let pairs = kc.next_multiple_of(32) / 2;
            let mut dst = vec![0xDEAD_BEEFu32; pairs * width];
            assert!(!interleave_pairs(&rows, kc, width, &mut dst), "no subnormal in normal values");
            for kp in 0..pairs {
                for j in 0..width {
                    let at = |k: usize| if j < nrows && k < kc { rows[j][k] as u32 } else { 0 };
                    let want = at(2 * kp) | at(2 * kp + 1) << 16;
                    assert_eq!(
                        dst[kp * width + j],
                        want,
                        "rows {nrows} kc {kc} width {width}: pair {kp} column {j}"
                    );
                }
            }
        }
    }

    #[test]
    fn subnormals_are_found_wherever_they_are() {
        if lacks_avx512("subnormals_are_found_wherever_they_are") {
            return;
        }
        let mut seed = 0x1234_5678_9ABC_DEF1;
        let (nrows, kc) = (20, 70);
        for plant in [0, 31, 32, 69, 13 * kc + 33, nrows * kc - 1] {
            for bits in [0x0001u16, 0x807F] {
                let mut data = normal_bits(nrows * kc, &mut seed);
                assert!(!any_subnormal(&data));
                data[plant] = bits;
                assert!(any_subnormal(&data), "any_subnormal missed {bits:#06x} at {plant}");
                let rows: Vec<&[u16]> = data.chunks_exact(kc).collect();
                let mut dst = vec![0u32; 48 * 32];
                assert!(
                    interleave_pairs(&rows, kc, 32, &mut dst),
                    "interleave missed {bits:#06x} at {plant}"
                );
            }
        }
        // Zero, and a value past kc, are not subnormals of the panel.
        let mut data = normal_bits(2 * 40, &mut seed);
        data[5] = 0x8000;
        data[39] = 0x0001;
        let rows: Vec<&[u16]> = data.chunks_exact(40).collect();
        assert!(!interleave_pairs(&rows, 39, 32, &mut [0u32; 32 * 32]));
    }
}
