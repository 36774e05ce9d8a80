//! Attention in f32: scores, a max-subtracted softmax, and the weighted value sum. MLA runs through the
//! fast GEMM kernels; MHA (long prefill, head-interleaved K/V) goes one query row at a time.

use super::gemm::{self, Lhs, Out as GemmOut, Rhs};
use super::io::{load, load_all, rows_mut, store};
use super::rows::softmax_into;
use super::scratch::Scratch;
use crate::bind::{typed, Args};
use crate::checks;
use dsv3_core::ops::attention::visible_keys;
use dsv3_core::ops::{MhaAttention, MlaAttention};
use dsv3_core::{DType, Result};
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

/// Runs of consecutive cache rows in `rows` (one sequence's positions in order): (first position, first
/// row, length). A contiguous cache is one run; a paged one a run per page or per stretch of adjacent pages.
fn row_runs(rows: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut runs: Vec<(usize, usize, usize)> = Vec::new();
    for (u, &r) in rows.iter().enumerate() {
        match runs.last_mut() {
            Some((_, r0, n)) if *r0 + *n == r => *n += 1,
            _ => runs.push((u, r, 1)),
        }
    }
    runs
}

/// Absorbed MLA as two GEMMs per sequence, which is where the time goes: scores `[T·H, len]` =
/// `[q̃ ; q_pe] · cacheᵀ` (the cache rows are already the `[N, K]` operand, read in their stored dtype, one
/// GEMM per run of adjacent rows), a masked softmax per row, then `õ = P · c_kv` against the transposed
/// latent part of the cache.
pub fn mla(op: &MlaAttention, mut args: Args) -> Result<()> {
    let (b, t, h, dc, dr, l) = op.dims();
    let lens = checks::kv_lens("mla_attention", &args.input("kv_lens")?, t, l)?;
    let all: Vec<_> = lens.iter().map(|&len| 0..len).collect();
    let cache_rows = checks::cache_rows("mla_attention", &args, op.pages(), &all)?;
    let q = load_all(&args.input("q_latent")?);
    let q_pe = load_all(&args.input("q_pe")?);
    let cache = args.input("kv_cache")?;
    let out = args.output("out")?;
    let dtype = out.t.dtype;
    let mut out_rows = rows_mut("mla_attention", "out", out)?;
    let (row, queries) = (dc + dr, t * h);
    let row_bytes = row * cache.t.dtype.size();
    let key_bytes = |r: usize, n: usize| &cache.bytes[r * row_bytes..(r + n) * row_bytes];
    for seq in 0..b {
        let (len, rows) = (lens[seq], &cache_rows[seq]);
        // Queries of this sequence as [T·H, Dc + Dr] rows.
        let mut q_cat = Scratch::zeroed(queries * row);
        q_cat.par_chunks_mut(row).enumerate().for_each(|(i, dst)| {
            let i_all = seq * queries + i;
            dst[..dc].copy_from_slice(&q[i_all * dc..(i_all + 1) * dc]);
            dst[dc..].copy_from_slice(&q_pe[i_all * dr..(i_all + 1) * dr]);
        });
        let mut scores = Scratch::zeroed(queries * len);
        for (u0, r0, n) in row_runs(rows) {
            let lhs = Lhs::F32 { data: &q_cat, lda: row };
            let keys = stored_rows(cache.t.dtype, key_bytes(r0, n))?;
            gemm::gemm(queries, n, row, lhs, keys, GemmOut::F32 { data: &mut scores[u0..], ldc: len });
        }
        scores.par_chunks_mut(len.max(1)).enumerate().for_each(|(i, s)| {
            let visible = visible_keys(len, t, i / h, op.causal);
            let mut logits = Scratch::zeroed(visible);
            logits.iter_mut().zip(&s[..visible]).for_each(|(l, x)| *l = op.softmax_scale * x);
            softmax_into(&logits, &mut s[..visible]);
            s[visible..].iter_mut().for_each(|p| *p = 0.0);
        });
        // c_kv transposed to [Dc, len], the [N, K] operand of P · c_kv.
        let mut values_t = Scratch::zeroed(dc * len);
        const BAND: usize = 64;
        let size = cache.t.dtype.size();
        values_t.par_chunks_mut(BAND * len.max(1)).enumerate().for_each(|(band, dst)| {
            let d0 = band * BAND;
            let width = dst.len() / len.max(1);
            let mut tmp = Scratch::zeroed(width);
            for (u, &r) in rows.iter().enumerate() {
                load(cache.t.dtype, &key_bytes(r, 1)[d0 * size..(d0 + width) * size], &mut tmp);
                for (j, v) in tmp.iter().enumerate() {
                    dst[j * len + u] = *v;
                }
            }
        });
        let mut o = Scratch::zeroed(queries * dc);
        let p = Lhs::F32 { data: &scores, lda: len.max(1) };
        gemm::gemm(queries, dc, len, p, Rhs::F32(&values_t), GemmOut::F32 { data: &mut o, ldc: dc });
        let dsts = &mut out_rows[seq * queries..(seq + 1) * queries];
        dsts.par_iter_mut().zip(o.par_chunks(dc.max(1))).for_each(|(dst, o)| store(dtype, o, dst));
    }
    Ok(())
}

/// Rows stored as f32 or bf16 bytes, as a GEMM weight operand.
fn stored_rows(dtype: DType, bytes: &[u8]) -> Result<Rhs<'_>> {
    Ok(match dtype {
        DType::F32 => Rhs::F32(typed("mla_attention", "kv_cache", bytes)?),
        _ => Rhs::Bf16(typed("mla_attention", "kv_cache", bytes)?),
    })
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
