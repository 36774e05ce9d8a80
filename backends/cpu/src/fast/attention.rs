//! Attention in f32, parallel over (sequence, token, head): scores, a max-subtracted softmax, and the
//! weighted value sum, each query row at a time.

use super::io::{load_all, rows_mut, store};
use super::rows::softmax_into;
use crate::bind::Args;
use crate::checks;
use dsv3_core::ops::attention::visible_keys;
use dsv3_core::ops::{MhaAttention, MlaAttention};
use dsv3_core::Result;
use rayon::prelude::*;

fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums vectorise and shorten the dependency chain.
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[8 * i + l] * b[8 * i + l];
        }
    }
    let tail: f32 = (8 * chunks..a.len()).map(|i| a[i] * b[i]).sum();
    acc.iter().sum::<f32>() + tail
}

/// Σ_u p_u · value(u) into `out`.
fn weighted_sum<'v>(p: &[f32], value: impl Fn(usize) -> &'v [f32], out: &mut [f32]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for (u, &pu) in p.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(value(u)) {
            *o += pu * v;
        }
    }
}

pub fn mla(op: &MlaAttention, mut args: Args) -> Result<()> {
    let (_, t, h, dc, dr, l) = op.dims();
    let lens = checks::kv_lens("mla_attention", &args.input("kv_lens")?, t, l)?;
    let q = load_all(&args.input("q_latent")?);
    let q_pe = load_all(&args.input("q_pe")?);
    let cache = load_all(&args.input("kv_cache")?);
    let out = args.output("out")?;
    let dtype = out.t.dtype;
    let row = dc + dr;
    rows_mut("mla_attention", "out", out)?.into_par_iter().enumerate().for_each(|(i, dst)| {
        let (seq, tok) = (i / (t * h), (i / h) % t);
        let (q_i, q_pe_i) = (&q[i * dc..(i + 1) * dc], &q_pe[i * dr..(i + 1) * dr]);
        let key = |u: usize| &cache[(seq * l + u) * row..(seq * l + u + 1) * row];
        let n = visible_keys(lens[seq], t, tok, op.causal);
        let scores: Vec<f32> = (0..n)
            .map(|u| op.softmax_scale * (dot(q_i, &key(u)[..dc]) + dot(q_pe_i, &key(u)[dc..])))
            .collect();
        let mut p = vec![0.0; n];
        softmax_into(&scores, &mut p);
        let mut o = vec![0.0; dc];
        weighted_sum(&p, |u| &key(u)[..dc], &mut o);
        store(dtype, &o, dst);
    });
    Ok(())
}

pub fn mha(op: &MhaAttention, mut args: Args) -> Result<()> {
    let (_, t, h, dk, dv, l) = op.dims();
    let lens = checks::kv_lens("mha_attention", &args.input("kv_lens")?, t, l)?;
    let q = load_all(&args.input("q")?);
    let k = load_all(&args.input("k")?);
    let v = load_all(&args.input("v")?);
    let out = args.output("out")?;
    let dtype = out.t.dtype;
    rows_mut("mha_attention", "out", out)?.into_par_iter().enumerate().for_each(|(i, dst)| {
        let (seq, tok, head) = (i / (t * h), (i / h) % t, i % h);
        let q_i = &q[i * dk..(i + 1) * dk];
        let at = |u: usize| (seq * l + u) * h + head;
        let n = visible_keys(lens[seq], t, tok, op.causal);
        let scores: Vec<f32> =
            (0..n).map(|u| op.softmax_scale * dot(q_i, &k[at(u) * dk..(at(u) + 1) * dk])).collect();
        let mut p = vec![0.0; n];
        softmax_into(&scores, &mut p);
        let mut o = vec![0.0; dv];
        weighted_sum(&p, |u| &v[at(u) * dv..(at(u) + 1) * dv], &mut o);
        store(dtype, &o, dst);
    });
    Ok(())
}
