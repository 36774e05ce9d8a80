//! Row-wise ops in f32, parallel over rows.

use super::io::{load, load_all, row, row_shape, rows_mut, store};
use super::scratch::Scratch;
use crate::bind::{Args, In};
use crate::checks;
use dsv3_core::ops::{RmsNorm, Rope};
use dsv3_core::Result;
use rayon::prelude::*;
use smallvec::SmallVec;

/// Runs `f(row index, inputs' rows as f32, output row)` for every row, in parallel, and stores the
/// output rows. Inputs are views with the output's row structure.
fn map_rows(
    op: &'static str,
    inputs: &[In],
    mut args: Args,
    f: impl Fn(usize, &[&[f32]], &mut [f32]) + Sync,
) -> Result<()> {
    let out = args.output("out")?;
    let dtype = out.t.dtype;
    let (_, n) = row_shape(out.t);
    rows_mut(op, "out", out)?.into_par_iter().enumerate().for_each(|(r, dst)| {
        // The inputs' rows, then the result, in one scratch vector.
        let mut buf = Scratch::zeroed((inputs.len() + 1) * n);
        let (loaded, result) = buf.split_at_mut(inputs.len() * n);
        for (x, v) in inputs.iter().zip(loaded.chunks_exact_mut(n.max(1))) {
            load(x.t.dtype, row(x, r), v);
        }
        let rows: SmallVec<[&[f32]; 2]> = loaded.chunks_exact(n.max(1)).take(inputs.len()).collect();
        f(r, &rows, result);
        store(dtype, result, dst);
    });
    Ok(())
}

pub fn rms_norm(op: &RmsNorm, args: Args) -> Result<()> {
    let x = args.input("x")?;
    let w = load_all(&args.input("weight")?);
    map_rows("rms_norm", &[x], args, |_, rows, out| {
        let x = rows[0];
        let mean_square = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let inv_rms = 1.0 / (mean_square + op.eps).sqrt();
        for ((o, v), g) in out.iter_mut().zip(x).zip(w.iter()) {
            *o = g * (v * inv_rms);
        }
    })
}

pub fn rope(op: &Rope, args: Args) -> Result<()> {
    let x = args.input("x")?;
    let positions = args.input("positions")?.i32s();
    let freqs = op.params.inv_freqs();
    let heads = op.x.shape[1];
    map_rows("rope", &[x], args, |r, rows, out| {
        let x = rows[0];
        let p = positions[r / heads] as f32;
        for (i, f) in freqs.iter().enumerate() {
            let (sin, cos) = (p * f).sin_cos();
            let (x0, x1) = (x[2 * i], x[2 * i + 1]);
            out[2 * i] = x0 * cos - x1 * sin;
            out[2 * i + 1] = x0 * sin + x1 * cos;
        }
    })
}

pub fn silu_mul(args: Args) -> Result<()> {
    let (gate, up) = (args.input("gate")?, args.input("up")?);
    map_rows("silu_mul", &[gate, up], args, |_, rows, out| {
        for ((o, g), u) in out.iter_mut().zip(rows[0]).zip(rows[1]) {
            *o = g / (1.0 + (-g).exp()) * u;
        }
    })
}

pub fn add(args: Args) -> Result<()> {
    let (a, b) = (args.input("a")?, args.input("b")?);
    map_rows("add", &[a, b], args, |_, rows, out| {
        for ((o, a), b) in out.iter_mut().zip(rows[0]).zip(rows[1]) {
            *o = a + b;
        }
    })
}

pub fn softmax(args: Args) -> Result<()> {
    let x = args.input("x")?;
    map_rows("softmax", &[x], args, |_, rows, out| softmax_into(rows[0], out))
}

/// `out = softmax(x)` in f32 with the max subtracted first. The denominator is accumulated in f64 and
/// rounded once: a running f32 sum drops every term below half an ulp of itself, a bias, not noise — on
/// a 129280-wide row of std-4 logits (PyTorch's case in `conformance/fixtures/torch-op-cases.safetensors`)
/// it lost 2e-4 of the mass, far outside the √N·u the tolerance table allows for the sum.
pub fn softmax_into(x: &[f32], out: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for (o, v) in out.iter_mut().zip(x) {
        *o = (v - max).exp();
        sum += *o as f64;
    }
    let sum = sum as f32;
    out.iter_mut().for_each(|o| *o /= sum);
}

pub fn cast(args: Args) -> Result<()> {
    let x = args.input("x")?;
    map_rows("cast", &[x], args, |_, rows, out| out.copy_from_slice(rows[0]))
}

pub fn embedding(mut args: Args) -> Result<()> {
    let table = args.input("table")?;
    let ids = checks::ids_in_range("embedding", "ids", &args.input("ids")?, table.t.shape[0])?;
    let out = args.output("out")?;
    let dtype = out.t.dtype;
    let n = table.t.shape[1];
    rows_mut("embedding", "out", out)?.into_par_iter().zip(ids).for_each(|(dst, id)| {
        if dtype == table.t.dtype {
            dst.copy_from_slice(row(&table, id));
        } else {
            let mut v = vec![0.0; n];
            load(table.t.dtype, row(&table, id), &mut v);
            store(dtype, &v, dst);
        }
    });
    Ok(())
}
