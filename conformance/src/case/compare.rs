//! Comparing a device's outputs with the oracle's: guard bytes, exact and float metrics, and the
//! tie-aware checks of the ops that choose (routing, top-k, argmax, sampling).

use super::{Case, Inputs, Output, Outputs, RouteSpec, SampleSpec, Spec, GUARD};
use crate::metrics::{self, Metrics};
use dsv3_core::ops::sampling::uniform;
use dsv3_core::ops::{RouteConfig, Scoring, TopkMethod};
use dsv3_core::DType;

impl Case {
    /// Compares the device's outputs with the oracle's.
    pub fn compare(&self, inputs: &Inputs, oracle: &Outputs, dut: &Outputs) -> Verdict {
        let mut v = Verdict::default();
        for (who, outs) in [("oracle", oracle), ("device", dut)] {
            for o in &outs.0 {
                if o.guard.corrupted > 0 {
                    let at = o.guard.first.unwrap() as isize - GUARD as isize;
                    v.fail(format!(
                        "{who} wrote {} guard byte(s) outside `{}` (first at byte {at} relative to the view)",
                        o.guard.corrupted, o.arg
                    ));
                }
            }
        }
        let t = &self.tolerance;
        match &self.spec {
            Spec::MoeRoute(r) => self.compare_route(r, inputs, oracle, dut, &mut v),
            Spec::TopK(_) => {
                // No arithmetic and a contract that breaks ties to the lower index: one right answer.
                exact_output(oracle.get("values"), dut.get("values"), &mut v);
                exact_output(oracle.get("ids"), dut.get("ids"), &mut v);
            }
            Spec::Argmax(a) => {
                let x = inputs.get("x").values();
                let c = metrics::compare_choices(
                    &dut.get("out").i32s(),
                    &oracle.get("out").i32s(),
                    1,
                    |r, ids| {
                        metrics::is_near_topk(ids, &x[r * a.n..(r + 1) * a.n], &vec![true; a.n], t.tie_gap)
                    },
                );
                v.choices(c);
            }
            Spec::Sample(sp) => {
                let logits = inputs.get("logits").values();
                let c = metrics::compare_choices(
                    &dut.get("out").i32s(),
                    &oracle.get("out").i32s(),
                    1,
                    |r, ids| sample_tie(sp, &logits[r * sp.v..(r + 1) * sp.v], r, ids[0], t.tie_gap),
                );
                v.choices(c);
            }
            _ if t.exact => {
                for o in &oracle.0 {
                    exact_output(o, dut.get(o.arg), &mut v);
                }
            }
            _ => {
                for o in &oracle.0 {
                    let d = dut.get(o.arg);
                    if !o.dtype.is_float() {
                        exact_output(o, d, &mut v);
                        continue;
                    }
                    let (actual, expected) = (d.values(), o.values());
                    if t.elem_rel > 0.0 {
                        // Mantissa bits and the smallest normal: subnormal results may be flushed to
                        // zero (GPUs' FTZ), which the NMSE gate already judges.
                        let (bits, min_normal) = match o.dtype {
                            DType::BF16 => (7, 2f64.powi(-126)),
                            DType::F16 => (10, 2f64.powi(-14)),
                            _ => (23, 2f64.powi(-126)),
                        };
                        if let Some((i, a, b)) =
                            metrics::elementwise_violation(&actual, &expected, bits, min_normal, t.elem_rel)
                        {
                            v.fail(format!(
                                "`{}`: element {i} is {a:e}, expected {b:e}: beyond one ulp + {:.1e} relative",
                                o.arg, t.elem_rel
                            ));
                        }
                    }
                    v.float_metrics(o.arg, metrics::compare(&actual, &expected), t.nmse);
                }
            }
        }
        v
    }

    fn compare_route(
        &self,
        r: &RouteSpec,
        inputs: &Inputs,
        oracle: &Outputs,
        dut: &Outputs,
        v: &mut Verdict,
    ) {
        let c = &r.config;
        let k = c.top_k;
        let logits = inputs.get("logits").values();
        let bias = (c.method == TopkMethod::NoAuxTc).then(|| inputs.get("bias").values());
        let (ids_d, ids_o) = (dut.get("ids").i32s(), oracle.get("ids").i32s());
        let choice = metrics::compare_choices(&ids_d, &ids_o, k, |row, ids| {
            let (_, selection) = route_scores(c, &logits[row * r.e..(row + 1) * r.e], bias.as_deref());
            let groups = match c.method {
                TopkMethod::Greedy => None,
                _ => Some(group_scores(c, &selection)),
            };
            metrics::route_near_topk(ids, &selection, groups.as_deref(), c.topk_group, self.tolerance.tie_gap)
        });
        // Weights of rows whose sets agree, matched by expert id.
        let (w_d, w_o) = (dut.get("weights").values(), oracle.get("weights").values());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for row in (0..r.t).filter(|&row| choice.agree[row]) {
            for j in 0..k {
                let id = ids_o[row * k + j];
                let jd = (0..k).find(|&x| ids_d[row * k + x] == id).unwrap();
                b.push(w_o[row * k + j]);
                a.push(w_d[row * k + jd]);
            }
        }
        v.choices(choice);
        if !a.is_empty() {
            v.float_metrics("weights", metrics::compare(&a, &b), self.tolerance.nmse);
        }
    }
}

/// (scores, selection scores) of one routing row, in f64 from the f32 inputs.
pub fn route_scores(c: &RouteConfig, logits: &[f64], bias: Option<&[f64]>) -> (Vec<f64>, Vec<f64>) {
    let scores: Vec<f64> = match c.scoring {
        Scoring::Sigmoid => logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect(),
        Scoring::Softmax => {
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.iter().map(|x| x / sum).collect()
        }
    };
    let selection = match bias {
        Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
        None => scores.clone(),
    };
    (scores, selection)
}

/// Per-group scores: sum of the top two (noaux_tc) or the max (group_limited_greedy).
pub fn group_scores(c: &RouteConfig, selection: &[f64]) -> Vec<f64> {
    let per = selection.len() / c.n_group;
    selection
        .chunks(per)
        .map(|g| {
            let mut s = g.to_vec();
            s.sort_by(|a, b| b.total_cmp(a));
            match c.method {
                TopkMethod::NoAuxTc => s[0] + s[1],
                _ => s[0],
            }
        })
        .collect()
}

/// Whether the device's sample `got` is a near-tie with the oracle's in row `r`: inside the nucleus up
/// to a relative mass gap, and its race key within a relative gap of the best key.
fn sample_tie(
    sp: &SampleSpec,
    logits: &[f64],
    r: usize,
    got: i32,
    gap: f64,
) -> std::result::Result<(), String> {
    let v = logits.len();
    if got < 0 || got as usize >= v {
        return Err(format!("id {got} outside 0..{v}"));
    }
    let got = got as usize;
    let (params, row_key) = sp.row(r);
    if params.temperature == 0.0 {
        let all = vec![true; v];
        return metrics::is_near_topk(&[got as i32], logits, &all, 0.0);
    }
    let t = params.temperature as f64;
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| ((l - max) / t).exp()).collect();
    let sum: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|x| x / sum).collect();
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    // Loose nucleus: tokens whose preceding mass is below top_p (1 + gap).
    let mut mass = 0.0;
    let mut nucleus = Vec::new();
    let mut strict_len = None;
    for &i in &order {
        if mass >= params.top_p as f64 * (1.0 + gap) {
            break;
        }
        nucleus.push(i);
        mass += p[i];
        if strict_len.is_none() && mass >= params.top_p as f64 {
            strict_len = Some(nucleus.len());
        }
    }
    if !nucleus.contains(&got) {
        return Err(format!("token {got} (p = {:.3e}) is outside the nucleus", p[got]));
    }
    let key = |i: usize| p[i] / -uniform(params.seed, row_key, i as u64).ln();
    let strict = &nucleus[..strict_len.unwrap_or(nucleus.len())];
    let best = strict.iter().map(|&i| key(i)).fold(0.0, f64::max);
    if key(got) < best * (1.0 - gap) {
        return Err(format!(
            "race key {:.9e} of token {got} is below the best {best:.9e} by more than {gap:.1e}",
            key(got)
        ));
    }
    Ok(())
}

fn exact_output(o: &Output, d: &Output, v: &mut Verdict) {
    let size = o.dtype.size();
    let e = metrics::exact(&d.elements, &o.elements, size);
    if e.mismatches > 0 {
        let i = e.first.unwrap();
        v.fail(format!(
            "`{}`: {} of {} elements differ (first at {i}: got {}, oracle {})",
            o.arg,
            e.mismatches,
            o.elements.len() / size,
            o.dtype.read_f64(&d.elements, i),
            o.dtype.read_f64(&o.elements, i)
        ));
    }
}

/// The outcome of comparing one case.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    /// The metrics of the float output with the largest NMSE relative to its bound.
    pub metrics: Option<Metrics>,
    worst: f64,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    fn fail(&mut self, why: String) {
        self.failures.push(why);
    }

    fn float_metrics(&mut self, arg: &str, m: Metrics, bound: f64) {
        if m.non_finite > 0 {
            self.fail(format!(
                "`{arg}`: {} non-finite element(s) where the oracle is finite (first at {})",
                m.non_finite,
                m.first_non_finite.unwrap()
            ));
        }
        if m.nmse.is_nan() || m.nmse > bound {
            self.fail(format!("`{arg}`: nmse {:.3e} > bound {bound:.3e}", m.nmse));
        }
        let ratio = if bound > 0.0 { m.nmse / bound } else { m.nmse };
        if self.metrics.is_none() || ratio > self.worst {
            self.metrics = Some(m);
            self.worst = ratio;
        }
    }

    fn choices(&mut self, c: metrics::Choice) {
        if !c.ties.is_empty() {
            self.notes.push(format!("{} near-tie row(s) {:?} chose differently", c.ties.len(), c.ties));
        }
        let total = c.mismatches.len();
        for (_, why) in c.mismatches.into_iter().take(3) {
            self.fail(why);
        }
        if total > 3 {
            self.fail(format!("{} more row(s) differ", total - 3));
        }
    }
}
