//! Comparing a device's output with the oracle's: error metrics for floats, exact comparison for ids and
//! copies, guard-region checks, and the tie-aware comparison of top-k / routing / sampling choices.

/// Error of `actual` against `expected` (the oracle). Elements where the oracle is not finite must match
/// it (NaN ↔ NaN, same-signed infinity) and are left out of the sums.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// Σ(a−b)² / Σb² (0 when both are 0, +inf when only the error is nonzero).
    pub nmse: f64,
    pub max_abs: f64,
    /// max |a−b| / |b| over elements with b ≠ 0.
    pub max_rel: f64,
    /// 1 − 2Σab / Σ(a² + b²).
    pub cos_dist: f64,
    /// Elements that are NaN / ±inf where the oracle's are finite, or disagree with a non-finite oracle.
    pub non_finite: usize,
    pub first_non_finite: Option<usize>,
    pub count: usize,
}

pub fn compare(actual: &[f64], expected: &[f64]) -> Metrics {
    assert_eq!(actual.len(), expected.len(), "compare: lengths differ");
    let mut m = Metrics { count: actual.len(), ..Metrics::default() };
    let (mut err2, mut ref2, mut dot, mut sq) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
        if !b.is_finite() {
            let same = (a.is_nan() && b.is_nan()) || a == b;
            if !same {
                m.non_finite += 1;
                m.first_non_finite.get_or_insert(i);
            }
            continue;
        }
        if !a.is_finite() {
            m.non_finite += 1;
            m.first_non_finite.get_or_insert(i);
            continue;
        }
        let d = a - b;
        err2 += d * d;
        ref2 += b * b;
        dot += a * b;
        sq += a * a + b * b;
        m.max_abs = m.max_abs.max(d.abs());
        if b != 0.0 {
            m.max_rel = m.max_rel.max(d.abs() / b.abs());
        }
    }
    m.nmse = if err2 == 0.0 {
        0.0
    } else if ref2 == 0.0 {
        f64::INFINITY
    } else {
        err2 / ref2
    };
    m.cos_dist = if sq == 0.0 { 0.0 } else { 1.0 - 2.0 * dot / sq };
    m
}

/// The first element outside the per-element gate |a − b| ≤ ulp(max(|a|, |b|)) + rel·|b| (see
/// `tolerance::elementwise`), as (index, actual, expected). `mantissa_bits` and `min_ulp` describe the
/// output dtype (f32: 23, 2^-149; bf16: 7, 2^-133; f16: 10, 2^-24). Non-finite elements are left to
/// [`compare`].
pub fn elementwise_violation(
    actual: &[f64],
    expected: &[f64],
    mantissa_bits: i32,
    min_ulp: f64,
    rel: f64,
) -> Option<(usize, f64, f64)> {
    actual.iter().zip(expected).enumerate().find_map(|(i, (&a, &b))| {
        let big = a.abs().max(b.abs());
        if !big.is_finite() {
            return None;
        }
        let ulp = if big == 0.0 {
            min_ulp
        } else {
            2f64.powi(big.log2().floor() as i32 - mantissa_bits).max(min_ulp)
        };
        ((a - b).abs() > ulp + rel * b.abs()).then_some((i, a, b))
    })
}

/// Element-by-element byte equality of two packed arrays of `size`-byte elements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Exact {
    pub mismatches: usize,
    pub first: Option<usize>,
}

pub fn exact(actual: &[u8], expected: &[u8], size: usize) -> Exact {
    assert_eq!(actual.len(), expected.len(), "exact: lengths differ");
    let mut e = Exact::default();
    for (i, (a, b)) in actual.chunks(size).zip(expected.chunks(size)).enumerate() {
        if a != b {
            e.mismatches += 1;
            e.first.get_or_insert(i);
        }
    }
    e
}

/// Bytes of a downloaded output buffer that lie outside the output's elements (the guard regions
/// before and after the view, and any gaps between strided rows) and no longer hold what was written
/// there before the launch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuardReport {
    pub corrupted: usize,
    pub first: Option<usize>,
}

/// `is_element[i]` marks the bytes the op may write; every other byte must equal `before`.
pub fn check_guards(after: &[u8], before: &[u8], is_element: &[bool]) -> GuardReport {
    let mut g = GuardReport::default();
    for (i, ((a, b), e)) in after.iter().zip(before).zip(is_element).enumerate() {
        if !e && a != b {
            g.corrupted += 1;
            g.first.get_or_insert(i);
        }
    }
    g
}

/// Result of comparing chosen id sets row by row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Choice {
    /// Rows whose chosen sets are equal.
    pub agree: Vec<bool>,
    /// Rows that differ, but only by swapping items whose oracle scores are within the tie gap.
    pub ties: Vec<usize>,
    /// Rows that differ beyond a tie: (row, explanation).
    pub mismatches: Vec<(usize, String)>,
}

impl Choice {
    pub fn new(rows: usize) -> Choice {
        Choice { agree: vec![false; rows], ties: Vec::new(), mismatches: Vec::new() }
    }
}

fn sorted(v: &[i32]) -> Vec<i32> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s
}

/// Whether `chosen` (ids into `scores`) is a top-k of `scores` restricted to `allowed` up to ties:
/// distinct, in range, allowed, and each at least the k-th largest allowed score minus `gap`.
pub fn is_near_topk(chosen: &[i32], scores: &[f64], allowed: &[bool], gap: f64) -> Result<(), String> {
    let k = chosen.len();
    let s = sorted(chosen);
    if s.windows(2).any(|w| w[0] == w[1]) {
        return Err(format!("ids {chosen:?} repeat an expert"));
    }
    for &id in chosen {
        if id < 0 || id as usize >= scores.len() {
            return Err(format!("id {id} outside 0..{}", scores.len()));
        }
        if !allowed[id as usize] {
            return Err(format!("id {id} is in a group the oracle would not keep (even up to ties)"));
        }
    }
    let mut ranked: Vec<f64> = scores.iter().zip(allowed).filter(|(_, &a)| a).map(|(&v, _)| v).collect();
    ranked.sort_by(|a, b| b.total_cmp(a));
    let Some(&kth) = ranked.get(k.saturating_sub(1)) else {
        return Err(format!("only {} candidates for k = {k}", ranked.len()));
    };
    for &id in chosen {
        let v = scores[id as usize];
        if v < kth - gap {
            return Err(format!(
                "id {id} scores {v:.9e}, below the k-th best {kth:.9e} by more than the tie gap {gap:.1e}"
            ));
        }
    }
    Ok(())
}

/// Compares per-row id sets (`k` per row) order-insensitively. Where they differ, `near_topk(row, ids)`
/// decides whether the device's set is a valid choice up to ties (`Ok`) or not (`Err(why)`).
pub fn compare_choices(
    actual: &[i32],
    expected: &[i32],
    k: usize,
    mut near_topk: impl FnMut(usize, &[i32]) -> Result<(), String>,
) -> Choice {
    let rows = expected.len().checked_div(k).unwrap_or(0);
    let mut c = Choice::new(rows);
    for r in 0..rows {
        let (a, e) = (&actual[r * k..(r + 1) * k], &expected[r * k..(r + 1) * k]);
        if sorted(a) == sorted(e) {
            c.agree[r] = true;
            continue;
        }
        match near_topk(r, a) {
            Ok(()) => c.ties.push(r),
            Err(why) => c.mismatches.push((r, format!("row {r}: got {a:?}, oracle {e:?}: {why}"))),
        }
    }
    c
}

/// Group-aware near-top-k for routing: `selection` are the oracle's f64 selection scores of one row,
/// `group_scores` its per-group scores (`None` for greedy routing without groups). The device's kept
/// groups are taken to be the groups it used plus the best of the oracle's other kept groups; any group
/// it used that the oracle did not keep must score within `gap` of the `topk_group`-th best group, and
/// every oracle group it thereby displaced within `gap` of those. Its experts are then checked with
/// [`is_near_topk`] over its kept groups.
pub fn route_near_topk(
    chosen: &[i32],
    selection: &[f64],
    group_scores: Option<&[f64]>,
    topk_group: usize,
    gap: f64,
) -> Result<(), String> {
    let e = selection.len();
    let Some(groups) = group_scores else {
        return is_near_topk(chosen, selection, &vec![true; e], gap);
    };
    let n_group = groups.len();
    let per_group = e / n_group;
    let mut ranked: Vec<usize> = (0..n_group).collect();
    ranked.sort_by(|&a, &b| groups[b].total_cmp(&groups[a]).then(a.cmp(&b)));
    let kept: Vec<usize> = ranked[..topk_group].to_vec();
    let threshold = groups[kept[topk_group - 1]];
    let mut used: Vec<usize> = Vec::new();
    for &id in chosen {
        if id < 0 || id as usize >= e {
            return Err(format!("id {id} outside 0..{e}"));
        }
        let g = id as usize / per_group;
        if !used.contains(&g) {
            used.push(g);
        }
    }
    if used.len() > topk_group {
        return Err(format!("uses {} groups, more than topk_group = {topk_group}", used.len()));
    }
    let new: Vec<usize> = used.iter().copied().filter(|g| !kept.contains(g)).collect();
    for &g in &new {
        if groups[g] < threshold - gap {
            return Err(format!(
                "group {g} scores {:.9e}, below the kept threshold {threshold:.9e} by more than {gap:.1e}",
                groups[g]
            ));
        }
    }
    // The oracle's other kept groups, best first, fill the device's kept set; the rest were displaced.
    let others: Vec<usize> = ranked[..topk_group].iter().copied().filter(|g| !used.contains(g)).collect();
    let (fill, dropped) = others.split_at(topk_group - used.len());
    let lowest_new = new.iter().map(|&g| groups[g]).fold(f64::INFINITY, f64::min);
    for &g in dropped {
        if groups[g] > lowest_new + gap {
            return Err(format!(
                "dropped group {g} scoring {:.9e}, above the groups used instead ({lowest_new:.9e}) by more than {gap:.1e}",
                groups[g]
            ));
        }
    }
    let allowed: Vec<bool> =
        (0..e).map(|x| used.contains(&(x / per_group)) || fill.contains(&(x / per_group))).collect();
    is_near_topk(chosen, selection, &allowed, gap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nmse_and_cosine_on_known_vectors() {
        let b = [1.0, 2.0, 3.0, 4.0];
        let m = compare(&b, &b);
        assert_eq!((m.nmse, m.max_abs, m.cos_dist, m.non_finite), (0.0, 0.0, 0.0, 0));
        let a = [1.1, 2.0, 3.0, 4.0];
        let m = compare(&a, &b);
        assert!((m.nmse - 0.01 / 30.0).abs() < 1e-15);
        assert!((m.max_abs - 0.1).abs() < 1e-12 && (m.max_rel - 0.1).abs() < 1e-12);
        // 1 − 2Σab/Σ(a²+b²) = Σ(a−b)²/Σ(a²+b²)
        assert!((m.cos_dist - 0.01 / (30.0 + 30.21)).abs() < 1e-15);
        // Opposite vectors: distance 2.
        assert!((compare(&[-1.0, -2.0], &[1.0, 2.0]).cos_dist - 2.0).abs() < 1e-15);
        // Error against an all-zero oracle.
        assert_eq!(compare(&[0.0, 1e-30], &[0.0, 0.0]).nmse, f64::INFINITY);
    }

    #[test]
    fn non_finite_outputs_are_counted() {
        let m = compare(&[1.0, f64::NAN, f64::INFINITY], &[1.0, 2.0, 3.0]);
        assert_eq!((m.non_finite, m.first_non_finite), (2, Some(1)));
        // Matching a non-finite oracle is fine; disagreeing with it is not.
        assert_eq!(compare(&[f64::NAN, f64::NEG_INFINITY], &[f64::NAN, f64::NEG_INFINITY]).non_finite, 0);
        assert_eq!(compare(&[f64::INFINITY], &[f64::NEG_INFINITY]).non_finite, 1);
    }

    #[test]
    fn the_elementwise_gate_sees_one_element_but_allows_one_ulp() {
        let b = [1.0, 0.75, -3.0, 100.0];
        // bf16 (7 mantissa bits): one ulp at 100 is 0.5; at 1.0 it is 2^-7.
        let one_ulp = [1.0 + 2f64.powi(-7), 0.75, -3.0, 100.5];
        assert_eq!(elementwise_violation(&one_ulp, &b, 7, 2f64.powi(-133), 0.0), None);
        let two_ulp = [1.0, 0.75, -3.0 - 2.0 * 2f64.powi(-6), 100.0];
        assert_eq!(elementwise_violation(&two_ulp, &b, 7, 2f64.powi(-133), 0.0).map(|v| v.0), Some(2));
        // The relative term absorbs it.
        assert_eq!(elementwise_violation(&two_ulp, &b, 7, 2f64.powi(-133), 0.02), None);
    }

    #[test]
    fn exact_counts_mismatching_elements() {
        let e = exact(&[1, 2, 3, 4, 5, 6], &[1, 2, 3, 0, 5, 6], 2);
        assert_eq!((e.mismatches, e.first), (1, Some(1)));
    }

    #[test]
    fn guard_checker_finds_writes_outside_the_view() {
        let before = vec![0xA5u8; 16];
        let is_element: Vec<bool> = (0..16).map(|i| (4..12).contains(&i)).collect();
        let mut after = before.clone();
        after[4..12].fill(0); // writes inside the view are fine
        assert_eq!(check_guards(&after, &before, &is_element), GuardReport::default());
        after[12] = 0; // one byte past the end
        after[2] = 1; // and one before the start
        let g = check_guards(&after, &before, &is_element);
        assert_eq!((g.corrupted, g.first), (2, Some(2)));
    }

    #[test]
    fn near_ties_are_ties_and_real_differences_are_not() {
        let scores = [0.9, 0.5, 0.5 - 1e-9, 0.1];
        let all = [true; 4];
        // Oracle {0, 1}; device {0, 2}: 2 trails 1 by 1e-9, within a 1e-6 gap.
        let c = compare_choices(&[2, 0], &[0, 1], 2, |_, ids| is_near_topk(ids, &scores, &all, 1e-6));
        assert_eq!((c.agree, c.ties.len(), c.mismatches.len()), (vec![false], 1, 0));
        // Same sets in another order agree.
        let c = compare_choices(&[1, 0], &[0, 1], 2, |_, ids| is_near_topk(ids, &scores, &all, 1e-6));
        assert_eq!(c.agree, vec![true]);
        // Device {0, 3}: 3 trails by 0.4, a real failure.
        let c = compare_choices(&[0, 3], &[0, 1], 2, |_, ids| is_near_topk(ids, &scores, &all, 1e-6));
        assert_eq!(c.mismatches.len(), 1);
        // Duplicates are never a tie.
        assert!(is_near_topk(&[0, 0], &scores, &all, 1.0).is_err());
    }

    #[test]
    fn routing_ties_respect_groups() {
        // Two groups of two experts; keep one group.
        let sel = [0.6, 0.4, 0.5 + 1e-9, 0.5];
        let groups = [1.0, 1.0 + 1e-9];
        // Oracle keeps group 1 (experts 2, 3); a device keeping group 0 made a near-tie group choice.
        assert!(route_near_topk(&[0, 1], &sel, Some(&groups), 1, 1e-6).is_ok());
        // With a clear group gap the same choice fails.
        assert!(route_near_topk(&[0, 1], &sel, Some(&[0.5, 1.0]), 1, 1e-6).is_err());
        // Mixing experts of two groups when only one may be kept fails.
        assert!(route_near_topk(&[0, 2], &sel, Some(&groups), 1, 1e-6).is_err());
    }
}
