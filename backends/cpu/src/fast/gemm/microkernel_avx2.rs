//! AVX2+FMA 6×16 f32 microkernel: 12 ymm accumulators, two B vectors and one A broadcast per k.

use std::arch::x86_64::*;

use super::driver::{nothing, on_tile, Micro};

const MR: usize = 6;
const NR: usize = 16;

pub(crate) const MICRO: Micro<f32> = Micro { mr: MR, nr: NR, run, kc: 256, begin: nothing, end: nothing };

/// Safe wrapper; only reachable through `Isa::Avx2`, which is chosen only after
/// `is_x86_feature_detected!` confirmed avx2/fma.
/// `_scales` is always empty: f32 panels hold the scale-folded values.
#[allow(clippy::too_many_arguments)]
fn run(
    kc: usize,
    a: &[f32],
    b: &[f32],
    _scales: &[f32],
    c: &mut [&mut [f32]],
    col: usize,
    ncols: usize,
    acc: bool,
) {
    debug_assert!(super::avx2_ok());
    let a = &a[..kc * MR];
    let b = &b[..kc * NR];
    on_tile::<MR, NR>(c, col, ncols, acc, |rows, accumulate| {
        // SAFETY: the CPU supports AVX2+FMA (see above); `a` holds kc*MR and `b` kc*NR values (sliced
        // above); each of the MR pointers addresses NR writable f32 of a distinct row (`on_tile`).
        unsafe { kernel(kc, a.as_ptr(), b.as_ptr(), rows, accumulate) }
    });
}

/// # Safety
/// AVX2+FMA available; `a` readable for `kc*MR` f32, `b` for `kc*NR` f32, each `c[i]` read/writable for
/// NR f32.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel(kc: usize, a: *const f32, b: *const f32, c: &[*mut f32; MR], accumulate: bool) {
    // Start fetching the C tile now: it is read (or written) only after the k loop.
    for &p in c {
        // SAFETY: prefetches never fault; p and p + 15 lie in the caller's NR-wide row.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(p.cast());
            _mm_prefetch::<_MM_HINT_T0>(p.add(NR - 1).cast());
        }
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let mut a = a;
    let mut b = b;
    for _ in 0..kc {
        // SAFETY: k < kc, so b[0..NR] and a[0..MR] of this step are inside the panels.
        unsafe {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for (i, acc_i) in acc.iter_mut().enumerate() {
                let ai = _mm256_set1_ps(*a.add(i));
                acc_i[0] = _mm256_fmadd_ps(ai, b0, acc_i[0]);
                acc_i[1] = _mm256_fmadd_ps(ai, b1, acc_i[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        // SAFETY: c[i] addresses NR = 16 f32 (caller's contract).
        unsafe {
            let p = c[i];
            let (mut v0, mut v1) = (acc_i[0], acc_i[1]);
            if accumulate {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(p));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(p.add(8)));
            }
            _mm256_storeu_ps(p, v0);
            _mm256_storeu_ps(p.add(8), v1);
        }
    }
}
