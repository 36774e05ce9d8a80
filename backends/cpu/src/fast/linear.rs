//! The GEMM-family ops: adapters from op arguments to the slice kernels in [`super::gemm`], plus
//! activation quantization and weight dequantization.

use super::gemm::{self, Lhs, Out as GemmOut, Rhs};
use super::io::{load, row, rows_mut};
use crate::bind::{typed, typed_mut, Args, In};
use crate::checks;
use dsv3_core::fp8::ue8m0;
use dsv3_core::ops::gemm::{blocks, AMAX_FLOOR};
use dsv3_core::ops::{
    ActQuant, Activations, BatchedGemm, Gemm, GroupedGemm, ScaleFormat, Weights, QUANT_BLOCK,
};
use dsv3_core::{DType, Result};
use rayon::prelude::*;
use std::borrow::Cow;

/// Scales as f32 (ue8m0 codes expanded; f32 borrowed).
fn scales_f32<'a>(op: &'static str, arg: &'static str, s: &In<'a>) -> Result<Cow<'a, [f32]>> {
    Ok(match s.t.dtype {
        DType::Ue8m0 => Cow::Owned(s.bytes[..s.t.numel()].iter().map(|&c| ue8m0::decode(c)).collect()),
        _ => Cow::Borrowed(&typed::<f32>(op, arg, s.bytes)?[..s.t.numel()]),
    })
}

/// The left operand rows `rows` of `a`, and its scales, as a kernel argument.
fn lhs<'a: 's, 's>(
    op: &'static str,
    a: &Activations,
    args: &Args<'a>,
    scales: &'s Option<Cow<'a, [f32]>>,
) -> Result<Lhs<'s>> {
    let x = args.input("a")?;
    let lda = x.t.strides[0].max(x.t.shape[1]);
    Ok(match a {
        Activations::Dense(t) if t.dtype == DType::F32 => Lhs::F32 { data: typed(op, "a", x.bytes)?, lda },
        Activations::Dense(_) => Lhs::Bf16 { data: typed(op, "a", x.bytes)?, lda },
        Activations::Fp8 { codes, .. } => Lhs::Fp8 {
            codes: x.bytes,
            lda,
            scales: scales.as_deref().expect("fp8 activations carry scales"),
            format: codes.dtype.fp8_format().expect("validated FP8"),
        },
    })
}

fn rhs<'a>(op: &'static str, b: &Weights, bytes: &'a [u8], scales: Option<&'a [f32]>) -> Result<Rhs<'a>> {
    Ok(match b {
        Weights::Dense(t) if t.dtype == DType::F32 => Rhs::F32(typed(op, "b", bytes)?),
        Weights::Dense(_) => Rhs::Bf16(typed(op, "b", bytes)?),
        Weights::BlockFp8 { codes, .. } => Rhs::BlockFp8 {
            codes: bytes,
            scales: scales.expect("block FP8 weights carry scales"),
            format: codes.dtype.fp8_format().expect("validated FP8"),
        },
    })
}

/// Output rows (f32 or bf16 bytes) with row stride `ldc`, as a kernel argument.
fn out<'a>(op: &'static str, dtype: DType, bytes: &'a mut [u8], ldc: usize) -> Result<GemmOut<'a>> {
    Ok(match dtype {
        DType::F32 => GemmOut::F32 { data: typed_mut(op, "c", bytes)?, ldc },
        _ => GemmOut::Bf16 { data: typed_mut(op, "c", bytes)?, ldc },
    })
}

fn optional_scales<'a>(
    op: &'static str,
    args: &Args<'a>,
    name: &'static str,
    present: bool,
) -> Result<Option<Cow<'a, [f32]>>> {
    if !present {
        return Ok(None);
    }
    Ok(Some(scales_f32(op, name, &args.input(name)?)?))
}

pub fn gemm(op: &Gemm, mut args: Args) -> Result<()> {
    const OP: &str = "gemm";
    let (m, n, k) = op.dims();
    let a_scales = optional_scales(OP, &args, "a_scales", matches!(op.a, Activations::Fp8 { .. }))?;
    let b_scales = optional_scales(OP, &args, "b_scales", matches!(op.b, Weights::BlockFp8 { .. }))?;
    let a = lhs(OP, &op.a, &args, &a_scales)?;
    let b = rhs(OP, &op.b, args.input("b")?.bytes, b_scales.as_deref())?;
    let c = args.output("c")?;
    let ldc = c.t.strides[0].max(n);
    gemm::gemm(m, n, k, a, b, out(OP, c.t.dtype, c.bytes, ldc)?);
    Ok(())
}

/// Every expert of the launch through [`gemm::gemm_grouped`]: the decode-sized ones (at most 16 rows) in
/// one parallel pass, the others one parallel GEMM each (experts with no rows skipped).
pub fn grouped_gemm(op: &GroupedGemm, mut args: Args) -> Result<()> {
    const OP: &str = "grouped_gemm";
    let (rows, n, k, experts) = op.dims();
    let offsets = checks::expert_offsets(OP, &args.input("expert_offsets")?, rows)?;
    let a_scales = optional_scales(OP, &args, "a_scales", matches!(op.a, Activations::Fp8 { .. }))?;
    let b_scales = optional_scales(OP, &args, "b_scales", matches!(op.b, Weights::BlockFp8 { .. }))?;
    let a = lhs(OP, &op.a, &args, &a_scales)?;
    let b_all = args.input("b")?.bytes;
    let (b_bytes, grid) = (n * k * op.b.values().dtype.size(), blocks(n) * blocks(k));
    let groups = (0..experts)
        .filter(|&e| offsets[e] < offsets[e + 1])
        .map(|e| {
            let b_scales_e = b_scales.as_deref().map(|s| &s[e * grid..(e + 1) * grid]);
            let b = rhs(OP, &op.b, &b_all[e * b_bytes..(e + 1) * b_bytes], b_scales_e)?;
            Ok(gemm::Group { lo: offsets[e], hi: offsets[e + 1], b })
        })
        .collect::<Result<Vec<_>>>()?;
    let c = args.output("c")?;
    let ldc = c.t.strides[0].max(n);
    gemm::gemm_grouped(n, k, a, &groups, out(OP, c.t.dtype, c.bytes, ldc)?);
    Ok(())
}

/// One batch at a time, each a full parallel GEMM on its strided slices of a, b and c.
pub fn batched_gemm(op: &BatchedGemm, mut args: Args) -> Result<()> {
    const OP: &str = "batched_gemm";
    let (batch, m, n, k) = op.dims();
    let (a, b) = (args.input("a")?, args.input("b")?);
    let c = args.output("c")?;
    let (a_dtype, b_dtype, c_dtype) = (a.t.dtype, b.t.dtype, c.t.dtype);
    let [sa, lda, _] = a.t.strides[..] else { unreachable!("validated rank 3") };
    let sb = b.t.strides[0];
    let [sc, ldc, _] = c.t.strides[..] else { unreachable!("validated rank 3") };
    let (lda, ldc) = (lda.max(k), ldc.max(n));
    let c_size = c_dtype.size();
    for i in 0..batch {
        if m == 0 || n == 0 {
            break;
        }
        // With K = 0 the operands are empty views and C is zeros: `get` keeps those slices empty.
        let lhs = match a_dtype {
            DType::F32 => Lhs::F32 { data: typed(OP, "a", a.bytes)?.get(i * sa..).unwrap_or(&[]), lda },
            _ => Lhs::Bf16 { data: typed(OP, "a", a.bytes)?.get(i * sa..).unwrap_or(&[]), lda },
        };
        let (b_start, b_len) = (i * sb * b_dtype.size(), n * k * b_dtype.size());
        let b_bytes = b.bytes.get(b_start..b_start + b_len).unwrap_or(&[]);
        let rhs = match b_dtype {
            DType::F32 => Rhs::F32(typed(OP, "b", b_bytes)?),
            _ => Rhs::Bf16(typed(OP, "b", b_bytes)?),
        };
        let c_bytes = &mut c.bytes[i * sc * c_size..][..((m - 1) * ldc + n) * c_size];
        gemm::gemm(m, n, k, lhs, rhs, out(OP, c_dtype, c_bytes, ldc)?);
    }
    Ok(())
}

/// Same arithmetic as the contract states: amax exact, `s = amax / max` one f32 division, ue8m0 rounding
/// bit-exact, `q = fp8(x / s)` from the f32 quotient. Parallel over rows.
pub fn act_quant(op: &ActQuant, mut args: Args) -> Result<()> {
    let x = args.input("x")?;
    let format = op.codes.dtype.fp8_format().expect("validated FP8");
    let k = op.x.shape[1];
    let kb = blocks(k);
    let codes = rows_mut("act_quant", "codes", args.output("codes")?)?;
    let scales_out = args.output("scales")?;
    let scale_dtype = scales_out.t.dtype;
    let scale_rows = rows_mut("act_quant", "scales", scales_out)?;
    codes.into_par_iter().zip(scale_rows).enumerate().for_each(|(r, (q, s_out))| {
        let mut v = vec![0.0; k];
        load(x.t.dtype, row(&x, r), &mut v);
        let mut scales = vec![0.0f32; kb];
        for (g, chunk) in v.chunks(QUANT_BLOCK).enumerate() {
            let amax = chunk.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let mut s = amax.max(AMAX_FLOOR) / format.max();
            if op.scale_format == ScaleFormat::Ue8m0 {
                s = ue8m0::ceil_pow2(s);
            }
            scales[g] = s;
            for (c, x) in chunk.iter().enumerate() {
                q[g * QUANT_BLOCK + c] = format.encode_saturating(x / s);
            }
        }
        match scale_dtype {
            DType::Ue8m0 => s_out.iter_mut().zip(&scales).for_each(|(o, s)| *o = ue8m0::encode_ceil(*s)),
            _ => super::io::store(DType::F32, &scales, s_out),
        }
    });
    Ok(())
}

/// `out = decode(q) · scale` in f32 (one rounding), then to the output dtype.
pub fn dequantize(mut args: Args) -> Result<()> {
    let codes = args.input("codes")?;
    let scales = scales_f32("dequantize", "scales", &args.input("scales")?)?;
    let shape = codes.t.shape.clone();
    let (n, k) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let (grid_cols, grid) = (blocks(k), blocks(n) * blocks(k));
    let table = codes.t.dtype.fp8_format().expect("validated FP8").decode_table();
    let out = args.output("out")?;
    let dtype = out.t.dtype;
    rows_mut("dequantize", "out", out)?.into_par_iter().enumerate().for_each(|(r, dst)| {
        let (e, row_in_e) = (r / n, r % n);
        let s = &scales[e * grid + (row_in_e / QUANT_BLOCK) * grid_cols..];
        let values: Vec<f32> = codes.bytes[r * k..(r + 1) * k]
            .iter()
            .enumerate()
            .map(|(c, &q)| table[q as usize] * s[c / QUANT_BLOCK])
            .collect();
        super::io::store(dtype, &values, dst);
    });
    Ok(())
}
