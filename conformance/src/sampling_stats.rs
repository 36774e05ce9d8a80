//! Sampling judged by its distribution, which no outside reference can pin down bit for bit: many draws
//! from one fixed distribution at temperature 0.7 and top-p 0.9, counted per token and compared with the
//! exactly computed (f64) nucleus distribution by a chi-square test; a token outside the nucleus is never
//! allowed.
//!
//! Each row of one `sample` launch is an independent draw (the race's uniforms depend on the row), so
//! 20,000 draws are one op on a `[20000, V]` batch of identical rows.

use crate::case::{Case, Inputs, SampleSpec, Spec};
use crate::gen::HostTensor;
use crate::runner::execute;
use dsv3_core::{DType, Device};
use std::sync::Arc;

pub const DRAWS: usize = 20_000;
pub const TEMPERATURE: f32 = 0.7;
pub const TOP_P: f32 = 0.9;
/// The test fails below this p-value: with a correct sampler it fails once in 10,000 seeds. The seed is
/// fixed, so a correct sampler's result is reproducible, not a coin flip per run.
pub const MIN_P_VALUE: f64 = 1e-4;
const VOCAB: usize = 64;
const SEED: u64 = 0x005A_3D1E_2026;

/// The fixed logits: a geometric distribution at T = 0.7 (p_i ∝ e^(−0.15·i/0.7) by rank), ranks spread
/// over the ids by a permutation so that id order and probability order differ.
pub fn logits() -> Vec<f32> {
    let mut l = vec![0.0f32; VOCAB];
    for rank in 0..VOCAB {
        l[(rank * 37 + 11) % VOCAB] = -0.15 * rank as f32;
    }
    l
}

/// The exact nucleus distribution of `logits` at `temperature` / `top_p`, in f64: (token, probability
/// renormalised over the nucleus) by decreasing probability, and the margin between `top_p` and the
/// nucleus's mass without / with its last token (the smaller of the two), which must be far above f32
/// rounding for the nucleus to be unambiguous.
pub fn nucleus(logits: &[f32], temperature: f32, top_p: f32) -> (Vec<(usize, f64)>, f64) {
    let t = temperature as f64;
    let max = logits.iter().map(|&l| l as f64).fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / t).exp()).collect();
    let sum: f64 = e.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| e[b].total_cmp(&e[a]).then(a.cmp(&b)));
    let (mut mass, mut kept) = (0.0, Vec::new());
    for &i in &order {
        kept.push(i);
        let before = mass;
        mass += e[i] / sum;
        if mass >= top_p as f64 {
            let margin = (top_p as f64 - before).min(mass - top_p as f64);
            return (kept.iter().map(|&i| (i, e[i] / sum / mass)).collect(), margin);
        }
    }
    (kept.iter().map(|&i| (i, e[i] / sum / mass)).collect(), f64::INFINITY)
}

/// The outcome on one device.
#[derive(Clone, Debug)]
pub struct SamplingStats {
    pub chi_square: f64,
    pub degrees_of_freedom: usize,
    pub p_value: f64,
    /// Draws of tokens outside the nucleus (must be 0).
    pub outside: usize,
    pub counts: Vec<(usize, usize, f64)>,
}

impl SamplingStats {
    pub fn passed(&self) -> bool {
        self.outside == 0 && self.p_value >= MIN_P_VALUE
    }
}

/// Draws `draws` tokens ([`DRAWS`] unless a backend is too slow for it) on `device` and tests them
/// against the exact nucleus distribution.
pub fn check(device: &Arc<dyn Device>, draws: usize) -> dsv3_core::Result<SamplingStats> {
    let l = logits();
    let values: Vec<f64> = (0..draws).flat_map(|_| l.iter().map(|&v| v as f64)).collect();
    let spec = SampleSpec {
        r: draws,
        v: VOCAB,
        x: DType::F32,
        temperature: TEMPERATURE,
        top_p: TOP_P,
        sample_seed: SEED,
        per_row: None,
    };
    let case = Case {
        op: "sample",
        name: "sample(statistical)".into(),
        dtypes: "logits=f32".into(),
        seed: SEED,
        tolerance: Spec::Sample(spec.clone()).tolerance(),
        spec: Spec::Sample(spec),
    };
    let mut inputs = Inputs::default();
    inputs.push("logits", HostTensor::from_f64(DType::F32, &[draws, VOCAB], &values));
    let ids = execute(device, &case, &inputs)?.get("out").i32s();
    Ok(judge(&ids, &l, TEMPERATURE, TOP_P))
}

/// Tests drawn token ids against the exact nucleus distribution of `logits` at `temperature` / `top_p`.
pub fn judge(ids: &[i32], logits: &[f32], temperature: f32, top_p: f32) -> SamplingStats {
    let (nucleus, _) = nucleus(logits, temperature, top_p);
    let mut counts = vec![0usize; nucleus.len()];
    let mut outside = 0;
    for &id in ids {
        match nucleus.iter().position(|&(t, _)| t as i32 == id) {
            Some(k) => counts[k] += 1,
            None => outside += 1,
        }
    }
    let draws = ids.len() as f64;
    let chi_square: f64 =
        nucleus.iter().zip(&counts).map(|(&(_, p), &n)| (n as f64 - p * draws).powi(2) / (p * draws)).sum();
    let df = nucleus.len() - 1;
    let counts = nucleus.iter().zip(&counts).map(|(&(t, p), &n)| (t, n, p * draws)).collect();
    SamplingStats {
        chi_square,
        degrees_of_freedom: df,
        p_value: chi_square_survival(chi_square, df),
        outside,
        counts,
    }
}

/// P(X ≥ x) for X ~ χ²(df): the regularised upper incomplete gamma Q(df/2, x/2) = 1 − P(a, y), with P from
/// its power series P(a, y) = y^a e^(−y) / Γ(a+1) · Σₙ yⁿ / ((a+1)(a+2)…(a+n)), which converges for every
/// y (terms shrink once n > y − a; f64 keeps Q = 1e-4 to about 1e-12 relative). Γ(a+1) for the integer
/// or half-integer a = df/2 by its recursion from Γ(1) = 1 or Γ(1/2) = √π.
pub fn chi_square_survival(x: f64, df: usize) -> f64 {
    if x <= 0.0 {
        return 1.0;
    }
    let (a, y) = (df as f64 / 2.0, x / 2.0);
    let (mut ln_gamma, mut z) =
        if df.is_multiple_of(2) { (0.0, 1.0) } else { (std::f64::consts::PI.sqrt().ln(), 0.5) };
    while z < a + 1.0 - 1e-9 {
        ln_gamma += z.ln();
        z += 1.0;
    }
    let (mut term, mut sum, mut n) = (1.0f64, 1.0f64, 1.0f64);
    while term > sum * 1e-17 {
        term *= y / (a + n);
        sum += term;
        n += 1.0;
    }
    let p = (a * y.ln() - y - ln_gamma).exp() * sum;
    (1.0 - p).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chi_square_tail_matches_known_values() {
        // df = 2: Q = e^(−x/2) exactly.
        for x in [0.5, 3.0, 18.42] {
            assert!((chi_square_survival(x, 2) - (-x / 2.0f64).exp()).abs() < 1e-12);
        }
        // Tables: χ²(10) at p = 1e-4 is 35.564; χ²(1) at p = 0.05 is 3.8415.
        assert!((chi_square_survival(35.564, 10) - 1e-4).abs() < 1e-7);
        assert!((chi_square_survival(3.8415, 1) - 0.05).abs() < 1e-5);
    }

    #[test]
    fn the_fixed_nucleus_is_unambiguous_and_countable() {
        let (nucleus, margin) = nucleus(&logits(), TEMPERATURE, TOP_P);
        // f32 softmax errors are ~1e-6 of the mass; the boundary is 100× further away.
        assert!(margin > 1e-4, "{margin}");
        assert!(nucleus.len() > 5 && nucleus.len() < VOCAB);
        // Every bin expects at least 5 draws (the chi-square approximation's usual condition), also at the
        // emulator's 1,000 draws.
        assert!(nucleus.iter().all(|&(_, p)| p * 1000.0 >= 5.0));
        assert!((nucleus.iter().map(|&(_, p)| p).sum::<f64>() - 1.0).abs() < 1e-12);
    }
}
