//! Operand sources (decode + scale folding to f32) and panel packing.
//!
//! Packed layouts: an A panel holds `MR` rows of A for `kc` values of k as `dst[k*MR + i]`; a B panel holds
//! `NR` rows of B (columns of C) as `dst[k*NR + j]`. Rows past the edge of the matrix are zero.

use half::bf16;

use super::fp8_simd::{self, Fp8Tables};
use super::{Fp8Format, Lhs, Rhs, SCALE_BLOCK};

/// Left operand with its FP8 decode table, ready to produce f32 rows.
pub(crate) enum LhsSrc<'a> {
    F32 {
        data: &'a [f32],
        lda: usize,
    },
    Bf16 {
        data: &'a [bf16],
        lda: usize,
    },
    Fp8 {
        codes: &'a [u8],
        lda: usize,
        scales: &'a [f32],
        kb: usize,
        table: Box<[f32; 256]>,
        simd: Option<Box<Fp8Tables>>,
    },
}

/// Right operand with its FP8 decode table, ready to produce f32 rows (scale folded in).
pub(crate) enum RhsSrc<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    BlockFp8 {
        codes: &'a [u8],
        scales: &'a [f32],
        kb: usize,
        format: Fp8Format,
        table: Box<[f32; 256]>,
        /// VBMI decode tables (x86-64 with AVX-512 VBMI only).
        simd: Option<Box<Fp8Tables>>,
    },
}

impl<'a> LhsSrc<'a> {
    pub(crate) fn new(a: &Lhs<'a>, k: usize) -> Self {
        match *a {
            Lhs::F32 { data, lda } => LhsSrc::F32 { data, lda },
            Lhs::Bf16 { data, lda } => LhsSrc::Bf16 { data, lda },
            Lhs::Fp8 { codes, lda, scales, format } => LhsSrc::Fp8 {
                codes,
                lda,
                scales,
                kb: k.div_ceil(SCALE_BLOCK),
                table: Box::new(*format.decode_table()),
                simd: Fp8Tables::new(format),
            },
        }
    }

    /// `out[i] = A[row, k0 + i]` as f32 (FP8: `decode(q)·scale` rounded once).
    pub(crate) fn load_row(&self, row: usize, k0: usize, out: &mut [f32]) {
        let len = out.len();
        match self {
            LhsSrc::F32 { data, lda } => out.copy_from_slice(&data[row * lda + k0..][..len]),
            LhsSrc::Bf16 { data, lda } => bf16_to_f32(&data[row * lda + k0..][..len], out),
            LhsSrc::Fp8 { codes, lda, scales, kb, table, simd } => {
                let src = &codes[row * lda + k0..][..len];
                fp8_scaled_to_f32(src, k0, &scales[row * kb..][..*kb], table, simd.as_deref(), out);
            }
        }
    }
}

impl<'a> RhsSrc<'a> {
    pub(crate) fn new(b: &Rhs<'a>, k: usize) -> Self {
        match *b {
            Rhs::F32(d) => RhsSrc::F32(d),
            Rhs::Bf16(d) => RhsSrc::Bf16(d),
            Rhs::BlockFp8 { codes, scales, format } => RhsSrc::BlockFp8 {
                codes,
                scales,
                kb: k.div_ceil(SCALE_BLOCK),
                format,
                table: Box::new(*format.decode_table()),
                simd: Fp8Tables::new(format),
            },
        }
    }

    /// `out[i] = B[n, k0 + i]` as f32 (block FP8: `decode(q)·scale` rounded once); `k` is B's row length.
    pub(crate) fn load_row(&self, n: usize, k: usize, k0: usize, out: &mut [f32]) {
        let len = out.len();
        match self {
            RhsSrc::F32(d) => out.copy_from_slice(&d[n * k + k0..][..len]),
            RhsSrc::Bf16(d) => bf16_to_f32(&d[n * k + k0..][..len], out),
            RhsSrc::BlockFp8 { codes, scales, kb, table, simd, .. } => {
                let src = &codes[n * k + k0..][..len];
                let srow = &scales[(n / SCALE_BLOCK) * kb..][..*kb];
                fp8_scaled_to_f32(src, k0, srow, table, simd.as_deref(), out);
            }
        }
    }
}

fn bf16_to_f32(src: &[bf16], out: &mut [f32]) {
    for (o, x) in out.iter_mut().zip(src) {
        *o = f32::from_bits((x.to_bits() as u32) << 16);
    }
}

/// `out[i] = table[src[i]] * scales[(k0 + i) / 128]`, one rounding per value (VBMI decode when `simd`
/// is given: the same values, see [`fp8_simd`]).
fn fp8_scaled_to_f32(
    src: &[u8],
    k0: usize,
    scales: &[f32],
    table: &[f32; 256],
    simd: Option<&Fp8Tables>,
    out: &mut [f32],
) {
    let mut i = 0;
    while i < out.len() {
        let kk = k0 + i;
        let end = (kk / SCALE_BLOCK + 1) * SCALE_BLOCK - k0;
        let end = end.min(out.len());
        let s = scales[kk / SCALE_BLOCK];
        if let Some(t) = simd {
            fp8_simd::scaled_to_f32(t, &src[i..end], s, &mut out[i..end]);
        } else {
            for (o, &q) in out[i..end].iter_mut().zip(&src[i..end]) {
                *o = table[q as usize] * s;
            }
        }
        i = end;
    }
}

/// Packs `rows` (≤ `width`) rows into `dst[k*width + r]` for `k < kc`; rows `rows..width` are zero.
/// `load(r, k0, out)` must fill `out` with row `r`'s values at panel offsets `k0..k0 + out.len()`.
pub(crate) fn pack_panel(
    dst: &mut [f32],
    width: usize,
    rows: usize,
    kc: usize,
    mut load: impl FnMut(usize, usize, &mut [f32]),
) {
    const KB: usize = 64;
    debug_assert!(rows <= width);
    let dst = &mut dst[..kc * width];
    let mut tmp = [[0f32; KB]; 8];
    for r0 in (0..width).step_by(8) {
        let g = (width - r0).min(8);
        for k0 in (0..kc).step_by(KB) {
            let kl = (kc - k0).min(KB);
            for (j, t) in tmp[..g].iter_mut().enumerate() {
                if r0 + j < rows {
                    load(r0 + j, k0, &mut t[..kl]);
                } else {
                    t[..kl].fill(0.0);
                }
            }
            let block = dst[k0 * width..(k0 + kl) * width].chunks_exact_mut(width);
            if g == 8 {
                for (kk, d) in block.enumerate() {
                    let d: &mut [f32; 8] = (&mut d[r0..r0 + 8]).try_into().unwrap();
                    for (j, v) in d.iter_mut().enumerate() {
                        *v = tmp[j][kk];
                    }
                }
            } else {
                for (kk, d) in block.enumerate() {
                    for (j, v) in d[r0..r0 + g].iter_mut().enumerate() {
                        *v = tmp[j][kk];
                    }
                }
            }
        }
    }
}

/// A zeroed f32 buffer whose usable part starts on a 64-byte boundary.
pub(crate) struct AlignedBuf {
    buf: Vec<f32>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> Self {
        let buf = vec![0f32; len + 16];
        let off = buf.as_ptr().align_offset(64).min(16);
        AlignedBuf { buf, off, len }
    }
    pub(crate) fn as_slice(&self) -> &[f32] {
        &self.buf[self.off..self.off + self.len]
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.buf[self.off..self.off + self.len]
    }
}
