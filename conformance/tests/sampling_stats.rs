//! Sampling's distribution on both CPU modes: 20,000 draws at T = 0.7 / top-p 0.9 against the exact
//! nucleus distribution (chi-square p ≥ 1e-4), and never a token outside the nucleus.

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_conformance::sampling_stats::{check, judge, logits, nucleus, DRAWS, TEMPERATURE, TOP_P};
use dsv3_core::Backend;

fn sample_distribution(mode: Mode) {
    let device = CpuBackend::new(mode).open(0).unwrap();
    let stats = check(&device, DRAWS).expect("sampling runs");
    println!("{stats:?}");
    assert!(stats.passed(), "{mode:?}: {stats:?}");
}

#[test]
fn oracle_samples_the_nucleus_distribution() {
    sample_distribution(Mode::Reference);
}

#[test]
fn fast_cpu_samples_the_nucleus_distribution() {
    sample_distribution(Mode::Fast);
}

/// What 20,000 draws can see: a nucleus one token short (T = 0.65 instead of 0.7: χ² ≈ 550) fails the
/// chi-square test; one token long (T = 0.75, or top-p 0.95) puts draws outside it. (A temperature 3 % off
/// that keeps the same nucleus moves χ² by ~6, inside the noise of 10 degrees of freedom: the op-level
/// cases pin the probabilities themselves.)
#[test]
fn a_wrong_distribution_fails() {
    let l = logits();
    // Deterministic "draws" with exactly the counts a sampler of the wrong distribution expects.
    let exact_draws = |temperature: f32, top_p: f32| -> Vec<i32> {
        let (nucleus, _) = nucleus(&l, temperature, top_p);
        let mut ids = Vec::new();
        for &(token, p) in &nucleus {
            ids.extend(std::iter::repeat_n(token as i32, (p * DRAWS as f64).round() as usize));
        }
        ids
    };
    let right = judge(&exact_draws(TEMPERATURE, TOP_P), &l, TEMPERATURE, TOP_P);
    assert!(right.passed() && right.p_value > 0.99, "{right:?}");
    let colder = judge(&exact_draws(0.65, TOP_P), &l, TEMPERATURE, TOP_P);
    assert!(colder.outside == 0 && colder.p_value < 1e-50, "{colder:?}");
    for (t, p) in [(0.75, TOP_P), (TEMPERATURE, 0.95)] {
        let wrong = judge(&exact_draws(t, p), &l, TEMPERATURE, TOP_P);
        assert!(wrong.outside > 0 && !wrong.passed(), "T {t}, top-p {p}: {wrong:?}");
    }
}
