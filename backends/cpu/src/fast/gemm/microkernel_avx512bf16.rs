//! AVX512-BF16 12×32 microkernel over bf16 panels: `vdpbf16ps` multiplies a broadcast pair of A's
//! values by 16 columns' pairs of B and adds both products to each f32 lane, 24 zmm accumulators.
//!
//! Arithmetic (Intel SDM, checked bit for bit on this instruction in the tests): each product of two
//! bf16 values is exact in f32 (8 × 8 significant bits), and the two are added to the lane one after the
//! other, each addition rounded to nearest even in f32 — the f32 accumulation of exact products the
//! GEMM contract asks for. The unit reads subnormal bf16 as zero and flushes subnormal results; the
//! packing refuses subnormal operands (`pack.rs`), and results below 2⁻¹²⁶ are underflow, outside every
//! path's error bound. Block-FP8 weights: each 128-wide K block is summed alone, then added as
//! `C += partial · scale` with one f32 FMA (the contract's per-block form), block after block.

use std::arch::x86_64::*;

use super::driver::{nothing, on_tile, Micro};
use super::pack::BF16_K_STEP;
use super::SCALE_BLOCK;

const MR: usize = 12;
const NR: usize = 32;

/// KC 1024 (as AMX): half the K slices of 512, so half the epilogues that read, add and write C, and half
/// the packing barriers. 512×2048×7168 on Zen 4: faster in 24 of 31 alternated rounds, medians 6–10 % lower
/// (FP8 weights, which add into C once per 128-wide block anyway: no change; the f32 kernel at KC 1024:
/// no clear change, kept at 384), benches/results/2026-12-07-cpu-zen4-prefill-kc.md. A multiple of 128,
/// as the block scales need.
pub(crate) const MICRO: Micro<u16> = Micro { mr: MR, nr: NR, run, kc: 1024, begin: nothing, end: nothing };

/// Safe wrapper; only reachable through `Isa::Avx512Bf16`, which is chosen only after
/// `is_x86_feature_detected!` confirmed avx512f/bw/vl and avx512bf16.
#[allow(clippy::too_many_arguments)]
fn run(
    kc: usize,
    a: &[u16],
    b: &[u16],
    scales: &[f32],
    c: &mut [&mut [f32]],
    col: usize,
    ncols: usize,
    acc: bool,
) {
    debug_assert!(super::avx512bf16_ok());
    let kcp = kc.next_multiple_of(BF16_K_STEP);
    let (a, b) = (&a[..MR * kcp], &b[..NR * kcp]);
    on_tile::<MR, NR>(c, col, ncols, acc, |rows, accumulate| blocks(kc, kcp, a, b, scales, rows, accumulate));
}

/// Runs the kernel over the whole K slice, or (block-scaled weights) once per 128-wide K block, each
/// block's sum scaled and added to the tile the previous blocks wrote. Every `c[i]` must address NR
/// writable f32 of a distinct row (as [`on_tile`] hands them).
fn blocks(kc: usize, kcp: usize, a: &[u16], b: &[u16], scales: &[f32], c: &[*mut f32; MR], acc: bool) {
    if scales.is_empty() {
        // SAFETY: the CPU has the features (see `run`); `a` holds MR rows of kcp values and `b` kcp/2
        // pair rows of 2·NR values (sliced in `run`); `c` as this function's contract says.
        unsafe { kernel(kcp / 2, a.as_ptr(), kcp, b.as_ptr(), None, c, acc) };
    } else {
        debug_assert_eq!(scales.len(), kc.div_ceil(SCALE_BLOCK));
        for (blk, &s) in scales.iter().enumerate() {
            let k0 = blk * SCALE_BLOCK;
            let len = SCALE_BLOCK.min(kcp - k0);
            // SAFETY: as above; k0 + len ≤ kcp, so the block's pairs lie inside both panels.
            unsafe {
                kernel(len / 2, a[k0..].as_ptr(), kcp, b[k0 * NR..].as_ptr(), Some(s), c, acc || blk > 0)
            };
        }
    }
}

/// `c[i] = (Σ_{kp < pairs} a-pair · b-pair) [· scale] (+ c[i] when accumulate)`: row `i`'s pair `kp` is
/// at `a + i·lda + 2kp`, column pairs at `b + kp·2·NR`.
///
/// # Safety
/// AVX-512F and AVX512-BF16 available; `a` readable for MR rows of `lda` ≥ 2·pairs values, `b` for
/// `pairs · 2·NR` values; each `c[i]` read/writable for NR f32.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn kernel(
    pairs: usize,
    a: *const u16,
    lda: usize,
    b: *const u16,
    scale: Option<f32>,
    c: &[*mut f32; MR],
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    for kp in 0..pairs {
        // SAFETY: kp < pairs, so the two B vectors and every A pair below are inside the panels.
        unsafe {
            let bp = b.add(kp * 2 * NR);
            // The 64-byte vectors are 32 bf16 each; `__m512bh` is their type for `vdpbf16ps`.
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bp.add(2 * 16).cast())); // columns 16..32
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let pair = a.add(i * lda + 2 * kp).cast::<i32>().read_unaligned();
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                acc_i[0] = _mm512_dpbf16_ps(acc_i[0], ai, b0);
                acc_i[1] = _mm512_dpbf16_ps(acc_i[1], ai, b1);
            }
        }
    }
    for (&p, acc_i) in c.iter().zip(&acc) {
        for (h, &v) in acc_i.iter().enumerate() {
            // SAFETY: p addresses NR = 32 f32 (the caller's contract), h < 2.
            unsafe {
                let p = p.add(16 * h);
                let t = if accumulate { _mm512_loadu_ps(p) } else { _mm512_setzero_ps() };
                let sum = match scale {
                    Some(s) => _mm512_fmadd_ps(v, _mm512_set1_ps(s), t),
                    None => _mm512_add_ps(v, t),
                };
                _mm512_storeu_ps(p, sum);
            }
        }
    }
}
