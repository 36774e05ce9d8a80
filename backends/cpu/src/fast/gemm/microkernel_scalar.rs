//! Portable 4×8 microkernel (plain Rust; the compiler vectorises it with the baseline ISA). Uses a
//! separate multiply and add (a fused `mul_add` is a slow library call on x86 without FMA).

use super::driver::{nothing, write_tile, Micro};

const MR: usize = 4;
const NR: usize = 8;

pub(crate) const MICRO: Micro<f32> = Micro { mr: MR, nr: NR, run, kc: 256, begin: nothing, end: nothing };

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
    let mut sum = [[0f32; NR]; MR];
    for (ak, bk) in a[..kc * MR].chunks_exact(MR).zip(b[..kc * NR].chunks_exact(NR)) {
        for (s, &ai) in sum.iter_mut().zip(ak) {
            for (sj, &bj) in s.iter_mut().zip(bk) {
                *sj += ai * bj;
            }
        }
    }
    write_tile(sum.as_flattened(), NR, c, col, ncols, acc);
}
