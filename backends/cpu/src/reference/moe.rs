use crate::bind::Args;
use crate::checks;
use dsv3_core::ops::{MoeDispatch, MoeRoute, Scoring, TopkMethod};
use dsv3_core::Result;

/// Indices of the `k` largest `values`, largest first, ties to the lower index.
pub(crate) fn top_indices(values: &[f64], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

pub fn route(op: &MoeRoute, mut args: Args) -> Result<()> {
    let c = op.config;
    let logits = args.input("logits")?.to_f64();
    let bias = match op.bias {
        Some(_) => Some(args.input("bias")?.to_f64()),
        None => None,
    };
    let (t, e) = (op.logits.shape[0], op.logits.shape[1]);
    let per_group = e / c.n_group;
    let mut ids = Vec::with_capacity(t * c.top_k);
    let mut weights = Vec::with_capacity(t * c.top_k);
    for row in logits.chunks(e) {
        let scores: Vec<f64> = match c.scoring {
            Scoring::Sigmoid => row.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect(),
            Scoring::Softmax => {
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let exps: Vec<f64> = row.iter().map(|l| (l - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                exps.iter().map(|x| x / sum).collect()
            }
        };
        let selection: Vec<f64> = match &bias {
            Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
            None => scores.clone(),
        };
        let group_score = |g: usize| -> f64 {
            let members = &selection[g * per_group..(g + 1) * per_group];
            match c.method {
                TopkMethod::NoAuxTc => top_indices(members, 2).iter().map(|&i| members[i]).sum(),
                _ => members.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            }
        };
        let allowed: Vec<bool> = match c.method {
            TopkMethod::Greedy => vec![true; e],
            _ => {
                let group_scores: Vec<f64> = (0..c.n_group).map(group_score).collect();
                let kept = top_indices(&group_scores, c.topk_group);
                (0..e).map(|x| kept.contains(&(x / per_group))).collect()
            }
        };
        let masked: Vec<f64> =
            selection.iter().zip(&allowed).map(|(&s, &ok)| if ok { s } else { f64::NEG_INFINITY }).collect();
        let chosen = top_indices(&masked, c.top_k);
        let mut w: Vec<f64> = chosen.iter().map(|&i| scores[i]).collect();
        if c.norm_topk_prob {
            let sum: f64 = w.iter().sum();
            w.iter_mut().for_each(|x| *x /= sum);
        }
        ids.extend(chosen.iter().map(|&i| i as f64));
        weights.extend(w.iter().map(|x| x * c.routed_scaling_factor as f64));
    }
    args.output("ids")?.write_f64(&ids);
    args.output("weights")?.write_f64(&weights);
    Ok(())
}

pub fn dispatch(op: &MoeDispatch, mut args: Args) -> Result<()> {
    let ids = checks::ids_in_range("moe_dispatch", "ids", &args.input("ids")?, op.n_experts)?;
    let x = args.input("x")?.to_f64();
    let d = op.x.shape[1];
    let k = op.ids.shape[1];
    let mut counts = vec![0usize; op.n_experts];
    ids.iter().for_each(|&e| counts[e] += 1);
    let mut offsets = vec![0usize; op.n_experts + 1];
    for e in 0..op.n_experts {
        offsets[e + 1] = offsets[e] + counts[e];
    }
    let mut next = offsets.clone();
    let mut slot_rows = vec![0usize; ids.len()];
    let mut rows = vec![0.0; ids.len() * d];
    for (slot, &e) in ids.iter().enumerate() {
        let r = next[e];
        next[e] += 1;
        slot_rows[slot] = r;
        let token = slot / k;
        rows[r * d..(r + 1) * d].copy_from_slice(&x[token * d..(token + 1) * d]);
    }
    args.output("rows")?.write_f64(&rows);
    args.output("expert_offsets")?.write_f64(&offsets.iter().map(|&v| v as f64).collect::<Vec<_>>());
    args.output("slot_rows")?.write_f64(&slot_rows.iter().map(|&v| v as f64).collect::<Vec<_>>());
    Ok(())
}

pub fn combine(mut args: Args) -> Result<()> {
    let expert_out = args.input("expert_out")?;
    let weights = args.input("weights")?;
    let (t, k) = (weights.t.shape[0], weights.t.shape[1]);
    let slot_rows = checks::ids_in_range("moe_combine", "slot_rows", &args.input("slot_rows")?, t * k)?;
    let y = expert_out.to_f64();
    let w = weights.to_f64();
    let n = expert_out.t.shape[1];
    let mut out = vec![0.0; t * n];
    for token in 0..t {
        for j in 0..k {
            let r = slot_rows[token * k + j];
            for col in 0..n {
                out[token * n + col] += w[token * k + j] * y[r * n + col];
            }
        }
    }
    args.output("out")?.write_f64(&out);
    Ok(())
}
