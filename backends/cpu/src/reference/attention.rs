use super::dot;
use crate::bind::Args;
use crate::checks;
use dsv3_core::ops::attention::visible_keys;
use dsv3_core::ops::{MhaAttention, MlaAttention};
use dsv3_core::Result;
use rayon::prelude::*;

/// softmax over `logits` then Σ p_u · values[u], in f64.
fn weighted_sum(logits: &[f64], values: impl Fn(usize) -> Vec<f64>, dv: usize) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    let mut out = vec![0.0; dv];
    for (u, e) in exps.iter().enumerate() {
        let p = e / sum;
        for (o, v) in out.iter_mut().zip(values(u)) {
            *o += p * v;
        }
    }
    out
}

pub fn mla(op: &MlaAttention, mut args: Args) -> Result<()> {
    let (b, t, h, dc, dr, l) = op.dims();
    let lens = checks::kv_lens("mla_attention", &args.input("kv_lens")?, t, l)?;
    let all: Vec<_> = lens.iter().map(|&len| 0..len).collect();
    let rows = checks::cache_rows("mla_attention", &args, op.pages(), &all)?;
    let q = args.input("q_latent")?.to_f64();
    let q_pe = args.input("q_pe")?.to_f64();
    let cache = args.input("kv_cache")?.to_f64();
    let row = dc + dr;
    let scale = op.softmax_scale as f64;
    let mut out = vec![0.0; b * t * h * dc];
    out.par_chunks_mut(dc).enumerate().for_each(|(i, o)| {
        let (seq, tok) = (i / (t * h), (i / h) % t);
        let q_i = &q[i * dc..(i + 1) * dc];
        let q_pe_i = &q_pe[i * dr..(i + 1) * dr];
        let key = |u: usize| &cache[rows[seq][u] * row..(rows[seq][u] + 1) * row];
        let visible = visible_keys(lens[seq], t, tok, op.causal);
        let logits: Vec<f64> =
            (0..visible).map(|u| scale * (dot(q_i, &key(u)[..dc]) + dot(q_pe_i, &key(u)[dc..]))).collect();
        o.copy_from_slice(&weighted_sum(&logits, |u| key(u)[..dc].to_vec(), dc));
    });
    args.output("out")?.write_f64(&out);
    Ok(())
}

pub fn mha(op: &MhaAttention, mut args: Args) -> Result<()> {
    let (b, t, h, dk, dv, l) = op.dims();
    let lens = checks::kv_lens("mha_attention", &args.input("kv_lens")?, t, l)?;
    let q = args.input("q")?.to_f64();
    let k = args.input("k")?.to_f64();
    let v = args.input("v")?.to_f64();
    let scale = op.softmax_scale as f64;
    let mut out = vec![0.0; b * t * h * dv];
    out.par_chunks_mut(dv).enumerate().for_each(|(i, o)| {
        let (seq, tok, head) = (i / (t * h), (i / h) % t, i % h);
        let q_i = &q[i * dk..(i + 1) * dk];
        let k_at = |u: usize| &k[((seq * l + u) * h + head) * dk..((seq * l + u) * h + head + 1) * dk];
        let v_at =
            |u: usize| v[((seq * l + u) * h + head) * dv..((seq * l + u) * h + head + 1) * dv].to_vec();
        let visible = visible_keys(lens[seq], t, tok, op.causal);
        let logits: Vec<f64> = (0..visible).map(|u| scale * dot(q_i, k_at(u))).collect();
        o.copy_from_slice(&weighted_sum(&logits, v_at, dv));
    });
    args.output("out")?.write_f64(&out);
    Ok(())
}
