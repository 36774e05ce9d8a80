use super::dot;
use crate::bind::{Args, In};
use crate::checks;
use dsv3_core::fp8::{ue8m0, Overflow};
use dsv3_core::ops::gemm::{blocks, AMAX_FLOOR};
use dsv3_core::ops::{
    ActQuant, Activations, BatchedGemm, Gemm, GroupedGemm, ScaleFormat, Weights, QUANT_BLOCK,
};
use dsv3_core::Result;
use rayon::prelude::*;

/// Activations `[rows, K]` as exact f64 values (FP8 codes times their per-128-channel scale).
fn activations(a: &Activations, args: &Args) -> Result<Vec<f64>> {
    let values = args.input("a")?.to_f64();
    let Activations::Fp8 { .. } = a else { return Ok(values) };
    let scales = args.input("a_scales")?.to_f64();
    let k = a.values().shape[1];
    let kb = blocks(k);
    Ok(values.iter().enumerate().map(|(i, q)| q * scales[(i / k) * kb + (i % k) / QUANT_BLOCK]).collect())
}

/// Weights `[E.., N, K]` as exact f64 values (FP8 codes times their 128×128 block scale).
fn weights(b: &Weights, args: &Args) -> Result<Vec<f64>> {
    let values = args.input("b")?.to_f64();
    let Weights::BlockFp8 { codes, .. } = b else { return Ok(values) };
    let scales = args.input("b_scales")?.to_f64();
    Ok(block_dequant(&values, &scales, &codes.shape))
}

fn block_dequant(codes: &[f64], scales: &[f64], shape: &[usize]) -> Vec<f64> {
    let (n, k) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let (nb, kb) = (blocks(n), blocks(k));
    codes
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let (e, r, c) = (i / (n * k), (i / k) % n, i % k);
            q * scales[e * nb * kb + (r / QUANT_BLOCK) * kb + c / QUANT_BLOCK]
        })
        .collect()
}

/// C[rows, N] = A · Bᵀ for one weight matrix (K = 0 gives zeros).
fn matmul(a: &[f64], b: &[f64], rows: usize, k: usize, n: usize) -> Vec<f64> {
    let mut c = vec![0.0; rows * n];
    if k == 0 || n == 0 {
        return c;
    }
    c.par_chunks_mut(n).zip(a.par_chunks(k)).for_each(|(c_row, a_row)| {
        for (j, out) in c_row.iter_mut().enumerate() {
            *out = dot(a_row, &b[j * k..(j + 1) * k]);
        }
    });
    c
}

pub fn gemm(op: &Gemm, mut args: Args) -> Result<()> {
    let (m, n, k) = op.dims();
    let c = matmul(&activations(&op.a, &args)?, &weights(&op.b, &args)?, m, k, n);
    args.output("c")?.write_f64(&c);
    Ok(())
}

pub fn grouped_gemm(op: &GroupedGemm, mut args: Args) -> Result<()> {
    let (rows, n, k, experts) = op.dims();
    let offsets = checks::expert_offsets("grouped_gemm", &args.input("expert_offsets")?, rows)?;
    let a = activations(&op.a, &args)?;
    let b = weights(&op.b, &args)?;
    let mut c = vec![0.0; rows * n];
    for e in 0..experts {
        let (lo, hi) = (offsets[e], offsets[e + 1]);
        let part = matmul(&a[lo * k..hi * k], &b[e * n * k..(e + 1) * n * k], hi - lo, k, n);
        c[lo * n..hi * n].copy_from_slice(&part);
    }
    args.output("c")?.write_f64(&c);
    Ok(())
}

pub fn batched_gemm(op: &BatchedGemm, mut args: Args) -> Result<()> {
    let (batch, m, n, k) = op.dims();
    // Both operands in logical order: a `[B, M, K]`, b `[B, N, K]`, whatever their strides.
    let a = args.input("a")?.to_f64();
    let b = args.input("b")?.to_f64();
    let mut c = Vec::with_capacity(batch * m * n);
    for i in 0..batch {
        c.extend(matmul(&a[i * m * k..(i + 1) * m * k], &b[i * n * k..(i + 1) * n * k], m, k, n));
    }
    args.output("c")?.write_f64(&c);
    Ok(())
}

pub fn act_quant(op: &ActQuant, mut args: Args) -> Result<()> {
    let x = args.input("x")?.to_f64();
    let (m, k) = (op.x.shape[0], op.x.shape[1]);
    let format = op.codes.dtype.fp8_format().expect("validated: codes are FP8");
    let kb = blocks(k);
    let mut codes = vec![0.0; m * k];
    let mut scales = vec![0.0; m * kb];
    for row in 0..m {
        for g in 0..kb {
            let cols = g * QUANT_BLOCK..((g + 1) * QUANT_BLOCK).min(k);
            let amax = cols.clone().map(|c| x[row * k + c].abs()).fold(0.0f64, f64::max) as f32;
            let mut s = amax.max(AMAX_FLOOR) / format.max();
            if op.scale_format == ScaleFormat::Ue8m0 {
                s = ue8m0::ceil_pow2(s);
            }
            scales[row * kb + g] = s as f64;
            for c in cols {
                let quotient = x[row * k + c] as f32 / s;
                codes[row * k + c] = format.decode(format.encode(quotient, Overflow::Saturate)) as f64;
            }
        }
    }
    args.output("codes")?.write_f64(&codes);
    args.output("scales")?.write_f64(&scales);
    Ok(())
}

pub fn dequantize(mut args: Args) -> Result<()> {
    let codes: In = args.input("codes")?;
    let values = block_dequant(&codes.to_f64(), &args.input("scales")?.to_f64(), &codes.t.shape);
    // The exact product rounded to f32, then (for a bf16 output) rounded again when written: the contract's
    // two roundings, not one from the exact value.
    let values: Vec<f64> = values.into_iter().map(|v| v as f32 as f64).collect();
    args.output("out")?.write_f64(&values);
    Ok(())
}
