//! Portable 4×8 microkernel (plain Rust; the compiler vectorises it with the baseline ISA). Uses a
//! separate multiply and add (a fused `mul_add` is a slow library call on x86 without FMA).

use super::driver::Micro;

const MR: usize = 4;
const NR: usize = 8;

pub(crate) const MICRO: Micro = Micro { mr: MR, nr: NR, run, kc: 256 };

fn run(kc: usize, a: &[f32], b: &[f32], c: &mut [&mut [f32]], col: usize, ncols: usize, acc: bool) {
    let mut sum = [[0f32; NR]; MR];
    for (ak, bk) in a[..kc * MR].chunks_exact(MR).zip(b[..kc * NR].chunks_exact(NR)) {
        for (s, &ai) in sum.iter_mut().zip(ak) {
            for (sj, &bj) in s.iter_mut().zip(bk) {
                *sj += ai * bj;
            }
        }
    }
    for (row, s) in c.iter_mut().zip(&sum) {
        let dst = &mut row[col..col + ncols];
        if acc {
            for (d, v) in dst.iter_mut().zip(s) {
                *d += v;
            }
        } else {
            dst.copy_from_slice(&s[..ncols]);
        }
    }
}
