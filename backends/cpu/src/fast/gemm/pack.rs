//! Operand sources (decode + scale folding to f32) and panel packing.
//!
//! Packed layouts, by panel element ([`Panel`]):
//! * f32: an A panel holds `MR` rows of A for `kc` values of k as `dst[k*MR + i]`; a B panel holds `NR`
//!   rows of B (columns of C) as `dst[k*NR + j]`; values decoded and block scales folded in.
//! * bf16 (bits as `u16`), for the `vdpbf16ps` and AMX kernels, K padded to `kcp`, a multiple of
//!   [`BF16_K_STEP`]: an A panel holds its rows as they are in A, `dst[i*kcp + k]` (an AMX A tile is 16
//!   such rows of 32 values; `vdpbf16ps` broadcasts one pair `(k, k+1)` of a row); a B panel holds pairs
//!   of consecutive k per column, `dst[(k/2)*2*NR + 2*j + k%2]` (AMX's B tile layout, and the two bf16
//!   per f32 lane `vdpbf16ps` multiplies). FP8 weights are decoded exactly, without their scales: the
//!   kernels apply those per 128-wide K block ([`Panel::SCALED`]).
//!
//! Rows past the edge of the matrix, and K past its end, are zero.

use half::bf16;

use super::bf16_pack;
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
    /// Block-FP8 weights: the scales of B's rows `n0..` (within one 128-row block) for the K slice
    /// `pc..pc + kc` (`pc` a multiple of 128), one per 128 values of K; empty for other weights.
    pub(crate) fn block_scales(&self, n0: usize, pc: usize, kc: usize) -> &[f32] {
        match self {
            RhsSrc::BlockFp8 { scales, kb, .. } => {
                debug_assert_eq!(pc % SCALE_BLOCK, 0);
                &scales[(n0 / SCALE_BLOCK) * kb + pc / SCALE_BLOCK..][..kc.div_ceil(SCALE_BLOCK)]
            }
            _ => &[],
        }
    }

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

/// A zeroed buffer whose usable part starts on a 64-byte boundary.
pub(crate) struct AlignedBuf<E> {
    buf: Vec<E>,
    off: usize,
    len: usize,
}

impl<E: Copy + Default> AlignedBuf<E> {
    pub(crate) fn new(len: usize) -> Self {
        let slack = 64 / size_of::<E>();
        let buf = vec![E::default(); len + slack];
        let off = buf.as_ptr().align_offset(64).min(slack);
        AlignedBuf { buf, off, len }
    }
    pub(crate) fn as_slice(&self) -> &[E] {
        &self.buf[self.off..self.off + self.len]
    }
    pub(crate) fn as_mut_slice(&mut self) -> &mut [E] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

/// The element of packed panels, and how the operands are packed into them (layouts in the module
/// documentation).
pub(crate) trait Panel: Copy + Default + Send + Sync {
    /// Block-FP8 weights enter the panels without their scales, which the microkernel applies per
    /// 128-wide K block (`Micro::run`'s `b_scales`); otherwise the scales are folded into the values.
    const SCALED: bool;
    /// Elements of a panel of `width` rows over `kc` values of K.
    fn panel_len(width: usize, kc: usize) -> usize;
    /// Packs rows `r0..r0 + rows` of A (`rows ≤ width`) over K `pc..pc + kc` into `dst`. Returns false
    /// when a value cannot enter the panel exactly (then the product must run on f32 panels).
    fn pack_a(
        a: &LhsSrc,
        dst: &mut [Self],
        width: usize,
        r0: usize,
        rows: usize,
        pc: usize,
        kc: usize,
    ) -> bool;
    /// As [`Panel::pack_a`], for rows `n0..n0 + rows` of B, whose rows are `k` long.
    #[allow(clippy::too_many_arguments)]
    fn pack_b(
        b: &RhsSrc,
        dst: &mut [Self],
        width: usize,
        n0: usize,
        rows: usize,
        k: usize,
        pc: usize,
        kc: usize,
    ) -> bool;
}

impl Panel for f32 {
    const SCALED: bool = false;
    fn panel_len(width: usize, kc: usize) -> usize {
        width * kc
    }
    fn pack_a(
        a: &LhsSrc,
        dst: &mut [f32],
        width: usize,
        r0: usize,
        rows: usize,
        pc: usize,
        kc: usize,
    ) -> bool {
        pack_panel(dst, width, rows, kc, |r, k0, out| a.load_row(r0 + r, pc + k0, out));
        true
    }
    fn pack_b(
        b: &RhsSrc,
        dst: &mut [f32],
        width: usize,
        n0: usize,
        rows: usize,
        k: usize,
        pc: usize,
        kc: usize,
    ) -> bool {
        pack_panel(dst, width, rows, kc, |r, k0, out| b.load_row(n0 + r, k, pc + k0, out));
        true
    }
}

/// K granularity of bf16 panels: one AMX tile row holds 32 bf16.
pub(crate) const BF16_K_STEP: usize = 32;

/// The bf16 bits of an FP8 value (exact: FP8 values have at most 4 significant bits and exponents
/// inside bf16's range; `table` is the format's exact f32 decode, whose low 16 bits are zero).
fn fp8_bf16(table: &[f32; 256], q: u8) -> u16 {
    let v = table[q as usize];
    if v.is_nan() {
        0x7FC0
    } else {
        (v.to_bits() >> 16) as u16
    }
}

impl Panel for u16 {
    const SCALED: bool = true;
    fn panel_len(width: usize, kc: usize) -> usize {
        width * kc.next_multiple_of(BF16_K_STEP)
    }
    fn pack_a(
        a: &LhsSrc,
        dst: &mut [u16],
        width: usize,
        r0: usize,
        rows: usize,
        pc: usize,
        kc: usize,
    ) -> bool {
        let LhsSrc::Bf16 { data, lda } = a else {
            unreachable!("bf16 panels are packed from bf16 activations only (gemm::bf16_path)")
        };
        let kcp = kc.next_multiple_of(BF16_K_STEP);
        let mut subnormal = false;
        for (r, out) in dst[..width * kcp].chunks_exact_mut(kcp).enumerate() {
            if r < rows {
                let src: &[u16] = bytemuck::cast_slice(&data[(r0 + r) * lda + pc..][..kc]);
                out[..kc].copy_from_slice(src);
                subnormal |= bf16_pack::any_subnormal(src);
                out[kc..].fill(0);
            } else {
                out.fill(0);
            }
        }
        !subnormal
    }
    fn pack_b(
        b: &RhsSrc,
        dst: &mut [u16],
        width: usize,
        n0: usize,
        rows: usize,
        k: usize,
        pc: usize,
        kc: usize,
    ) -> bool {
        let kcp = kc.next_multiple_of(BF16_K_STEP);
        let dst: &mut [u32] = bytemuck::cast_slice_mut(&mut dst[..width * kcp]);
        match b {
            RhsSrc::Bf16(d) => {
                let src: Vec<&[u16]> =
                    (n0..n0 + rows).map(|n| bytemuck::cast_slice(&d[n * k + pc..][..kc])).collect();
                !bf16_pack::interleave_pairs(&src, kc, width, dst)
            }
            RhsSrc::BlockFp8 { codes, table, simd, .. } => {
                let mut decoded = vec![0u16; rows * kc];
                for (n, out) in (n0..).zip(decoded.chunks_exact_mut(kc)) {
                    let src = &codes[n * k + pc..][..kc];
                    match simd {
                        Some(t) => fp8_simd::to_bf16(t, src, out),
                        None => out.iter_mut().zip(src).for_each(|(o, &q)| *o = fp8_bf16(table, q)),
                    }
                }
                let src: Vec<&[u16]> = decoded.chunks_exact(kc).collect();
                // FP8 values are never bf16 subnormals (their exponents are far inside bf16's range).
                let subnormal = bf16_pack::interleave_pairs(&src, kc, width, dst);
                debug_assert!(!subnormal);
                true
            }
            RhsSrc::F32(_) => unreachable!("f32 weights are never packed into bf16 panels"),
        }
    }
}
