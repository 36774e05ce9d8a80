//! The statistics of repeated measurements, by hand: a handful of samples per row needs only the mean, the
//! sample standard deviation, the median and Welch's t-test, not a statistics crate.

/// Summary of one row's samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator); 0 for a single sample.
    pub stddev: f64,
    pub median: f64,
}

/// `None` for no samples.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let n = samples.len();
    if n == 0 {
        return None;
    }
    let mean = samples.iter().sum::<f64>() / n as f64;
    let var =
        if n > 1 { samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    Some(Summary { mean, stddev: var.sqrt(), median })
}

/// How B's samples stand against A's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// B's mean is higher and the difference is outside the noise.
    Higher,
    Lower,
    WithinNoise,
    /// A side has a single sample: there is no estimate of its noise, so no claim is made.
    Unknown,
}

/// Welch's t-test at 95 % (two-sided) on the means of `a` and `b`.
///
/// Why Welch: two saved runs come from different machines, commits or loads, so their spreads differ and
/// their sample counts may too; Welch's test assumes neither equal variances nor equal counts (Student's
/// does), and with 3–10 repetitions it stays honest where a normal approximation would call noise a
/// change. Repetitions of a benchmark are not perfectly independent (caches, clocks warm up), so a
/// verdict is evidence, not proof; `--fail-on-regression` adds a size threshold on top of it.
pub fn welch(a: &[f64], b: &[f64]) -> Verdict {
    let (Some(sa), Some(sb)) = (summarize(a), summarize(b)) else { return Verdict::Unknown };
    if a.len() < 2 || b.len() < 2 {
        return Verdict::Unknown;
    }
    let (va, vb) = (sa.stddev.powi(2) / a.len() as f64, sb.stddev.powi(2) / b.len() as f64);
    let diff = sb.mean - sa.mean;
    let se2 = va + vb;
    // Both sides without any spread: any difference is real, none is none.
    if se2 == 0.0 {
        return match diff.partial_cmp(&0.0) {
            Some(std::cmp::Ordering::Greater) => Verdict::Higher,
            Some(std::cmp::Ordering::Less) => Verdict::Lower,
            _ => Verdict::WithinNoise,
        };
    }
    let t = diff / se2.sqrt();
    // Welch–Satterthwaite degrees of freedom.
    let df = se2.powi(2)
        / (va.powi(2) / (a.len() - 1) as f64 + vb.powi(2) / (b.len() - 1) as f64).max(f64::MIN_POSITIVE);
    if t.abs() <= t_critical_95(df) {
        Verdict::WithinNoise
    } else if t > 0.0 {
        Verdict::Higher
    } else {
        Verdict::Lower
    }
}

/// The two-sided 95 % critical value of Student's t with `df` degrees of freedom. Fractional `df` (from
/// Welch) is rounded down: the larger critical value, so the test errs towards "within noise".
fn t_critical_95(df: f64) -> f64 {
    // t_{0.975, df} for df = 1..=30, from the standard tables.
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042,
    ];
    match df.floor() {
        d if d.is_nan() || d < 1.0 => TABLE[0],
        d if d <= 30.0 => TABLE[d as usize - 1],
        d if d <= 60.0 => 2.000,
        d if d <= 120.0 => 1.980,
        _ => 1.960,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_known_samples() {
        let s = summarize(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.mean, 5.0);
        assert!((s.stddev - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.median, 4.5);
        assert_eq!(summarize(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        assert_eq!(summarize(&[3.0]).unwrap().stddev, 0.0);
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn welch_separates_shifts_from_noise() {
        let a = [100.0, 101.0, 99.0, 100.5, 99.5];
        assert_eq!(welch(&a, &[110.0, 111.0, 109.0, 110.5, 109.5]), Verdict::Higher);
        assert_eq!(welch(&a, &[90.0, 91.0, 89.0, 90.5, 89.5]), Verdict::Lower);
        // A 0.4 % shift inside a 1 % spread.
        assert_eq!(welch(&a, &[100.4, 101.4, 99.4, 100.9, 99.9]), Verdict::WithinNoise);
        // A large shift with a huge spread on one side is still noise.
        assert_eq!(welch(&a, &[60.0, 140.0, 80.0, 150.0, 90.0]), Verdict::WithinNoise);
        assert_eq!(welch(&a, &[50.0]), Verdict::Unknown);
        assert_eq!(welch(&[1.0, 1.0], &[2.0, 2.0]), Verdict::Higher);
        assert_eq!(welch(&[1.0, 1.0], &[1.0, 1.0]), Verdict::WithinNoise);
    }

    #[test]
    fn critical_values_fall_with_degrees_of_freedom() {
        assert_eq!(t_critical_95(0.3), 12.706);
        assert_eq!(t_critical_95(4.9), 2.776);
        assert_eq!(t_critical_95(1e6), 1.960);
    }
}
