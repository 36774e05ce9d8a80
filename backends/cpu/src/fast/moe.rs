//! MoE routing, dispatch and combine in f32, parallel over tokens.

use super::io::{load_all, row, rows_mut, store};
use super::sampling::largest;
use super::scratch::Scratch;
use crate::bind::Args;
use crate::checks;
use dsv3_core::ops::{MoeDispatch, MoeRoute, Scoring, TopkMethod};
use dsv3_core::Result;
use rayon::prelude::*;

pub fn route(op: &MoeRoute, mut args: Args) -> Result<()> {
    let c = op.config;
    let logits = load_all(&args.input("logits")?);
    let bias = match op.bias {
        Some(_) => load_all(&args.input("bias")?),
        None => Scratch::zeroed(0),
    };
    let e = op.logits.shape[1];
    let per_group = e / c.n_group;
    let choose = |l: &[f32]| -> (Vec<i32>, Vec<f32>) {
        let scores: Vec<f32> = match c.scoring {
            Scoring::Sigmoid => l.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect(),
            Scoring::Softmax => {
                let mut p = vec![0.0; e];
                super::rows::softmax_into(l, &mut p);
                p
            }
        };
        let mut selection = scores.clone();
        selection.iter_mut().zip(bias.iter()).for_each(|(s, b)| *s += b);
        if c.method != TopkMethod::Greedy {
            let group_scores: Vec<f32> = selection
                .chunks(per_group)
                .map(|g| match c.method {
                    TopkMethod::NoAuxTc => largest(g, 2).iter().map(|&i| g[i]).sum(),
                    _ => g.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                })
                .collect();
            let kept = largest(&group_scores, c.topk_group);
            for (x, s) in selection.iter_mut().enumerate() {
                if !kept.contains(&(x / per_group)) {
                    *s = f32::NEG_INFINITY;
                }
            }
        }
        let ids = largest(&selection, c.top_k);
        let mut w: Vec<f32> = ids.iter().map(|&i| scores[i]).collect();
        let norm = if c.norm_topk_prob { w.iter().sum::<f32>() } else { 1.0 };
        w.iter_mut().for_each(|x| *x = *x / norm * c.routed_scaling_factor);
        (ids.into_iter().map(|i| i as i32).collect(), w)
    };
    let chosen: Vec<(Vec<i32>, Vec<f32>)> = logits.par_chunks(e).map(choose).collect();
    let ids: Vec<f32> = chosen.iter().flat_map(|(i, _)| i.iter().map(|&x| x as f32)).collect();
    let weights: Vec<f32> = chosen.into_iter().flat_map(|(_, w)| w).collect();
    let mut ids_out = args.output("ids")?;
    let ids_i32: Vec<f64> = ids.iter().map(|&x| x as f64).collect();
    ids_out.write_f64(&ids_i32);
    let w_out = args.output("weights")?;
    store(w_out.t.dtype, &weights, w_out.bytes);
    Ok(())
}

pub fn dispatch(op: &MoeDispatch, mut args: Args) -> Result<()> {
    let ids = checks::ids_in_range("moe_dispatch", "ids", &args.input("ids")?, op.n_experts)?;
    let x = args.input("x")?;
    let k = op.ids.shape[1];
    let mut offsets = vec![0usize; op.n_experts + 1];
    ids.iter().for_each(|&e| offsets[e + 1] += 1);
    for e in 0..op.n_experts {
        offsets[e + 1] += offsets[e];
    }
    let mut next = offsets.clone();
    let slot_rows: Vec<usize> = ids
        .iter()
        .map(|&e| {
            next[e] += 1;
            next[e] - 1
        })
        .collect();
    let mut source = vec![0usize; ids.len()];
    slot_rows.iter().enumerate().for_each(|(slot, &r)| source[r] = slot / k);
    rows_mut("moe_dispatch", "rows", args.output("rows")?)?
        .into_par_iter()
        .zip(source)
        .for_each(|(dst, token)| dst.copy_from_slice(row(&x, token)));
    let as_f64 = |v: &[usize]| v.iter().map(|&x| x as f64).collect::<Vec<_>>();
    args.output("expert_offsets")?.write_f64(&as_f64(&offsets));
    args.output("slot_rows")?.write_f64(&as_f64(&slot_rows));
    Ok(())
}

pub fn combine(mut args: Args) -> Result<()> {
    let expert_out = args.input("expert_out")?;
    let w = load_all(&args.input("weights")?);
    let k = args.input("weights")?.t.shape[1];
    let tokens = w.len() / k.max(1);
    let slot_rows = checks::ids_in_range("moe_combine", "slot_rows", &args.input("slot_rows")?, tokens * k)?;
    let n = expert_out.t.shape[1];
    let out = args.output("out")?;
    let dtype = out.t.dtype;
    rows_mut("moe_combine", "out", out)?.into_par_iter().enumerate().for_each(|(t, dst)| {
        let mut acc = vec![0f32; n];
        let mut y = vec![0f32; n];
        for j in 0..k {
            super::io::load(expert_out.t.dtype, row(&expert_out, slot_rows[t * k + j]), &mut y);
            let wj = w[t * k + j];
            acc.iter_mut().zip(&y).for_each(|(a, v)| *a += wj * v);
        }
        store(dtype, &acc, dst);
    });
    Ok(())
}
