//! The roofline beside each `bench model` figure: the rate the devices' peaks allow for the work of one
//! forward pass over `tokens` tokens (a prefill of one prompt, or one decode step of a batch).
//!
//! A pass reads the weights it uses once and does two FLOPs per weight per token (`plan::part_sizes`'
//! counts), except the head, which only the rows that get logits go through: the last position of a
//! prefilled prompt, every sequence of a decode step (the head of the built-in model is most of its FLOPs,
//! so counting it per prompt token would put the prefill roofline below what is reached). On each device it takes the longer of its weight bytes over the bandwidth and its FLOPs over
//! the matrix rate of the numeric path; devices run one after another (a layer's parts wait for the one
//! before). Attention's reads of the latent cache and its quadratic FLOPs are left out: the roofline is
//! the weights' bound, an upper bound that loosens at long contexts.

use dsv3_model::config::ModelConfig;
use dsv3_model::graph::NumericPath;
use dsv3_model::placement::Part;
use dsv3_model::plan::PartSize;

use super::results::Peak;

/// A device's share of the model and its rates.
pub struct Share<'a> {
    pub parts: &'a [Part],
    pub peak: Option<&'a Peak>,
}

/// A pass's bound and the work it is computed from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    /// Tokens per second.
    pub rate: f64,
    /// `memory` or `compute`: whichever takes longer over the devices.
    pub kind: &'static str,
    /// FLOPs and weight bytes of the pass, over every device (the roofline chart's intensity).
    pub flops: f64,
    pub bytes: f64,
}

/// The bound in tokens per second for a pass over `tokens` tokens of which `logit_rows` get logits, and
/// whichever of bandwidth and compute sets it; `None` when a device holding parts lacks a peak it needs.
pub fn rate(
    cfg: &ModelConfig,
    sizes: &[PartSize],
    shares: &[Share],
    path: NumericPath,
    tokens: usize,
    logit_rows: usize,
) -> Option<Bound> {
    let t = tokens as f64;
    // Under uniform routing a routed expert is read in a pass when any of its tokens chooses it.
    let expert_share = cfg
        .moe
        .as_ref()
        .map_or(1.0, |m| 1.0 - (1.0 - m.route.top_k as f64 / m.n_routed_experts.max(1) as f64).powf(t));
    let (mut memory_s, mut compute_s, mut total_s) = (0.0, 0.0, 0.0);
    let (mut all_flops, mut all_bytes) = (0.0, 0.0);
    for share in shares {
        let on: Vec<&PartSize> = sizes.iter().filter(|s| share.parts.contains(&s.part)).collect();
        if on.is_empty() {
            continue;
        }
        let bytes: f64 = on
            .iter()
            .map(|s| match s.part {
                Part::Expert(..) => s.weight_bytes as f64 * expert_share,
                // One embedding row per token.
                Part::Embed => (s.decode_read_bytes as f64 * t).min(s.weight_bytes as f64),
                _ => s.weight_bytes as f64,
            })
            .sum();
        let flops: f64 = on
            .iter()
            .map(|s| s.flops_per_token * if s.part == Part::Head { logit_rows as f64 } else { t })
            .sum();
        let peak = share.peak?;
        let flop_rate = match path {
            NumericPath::F32 => peak.f32_flops,
            NumericPath::Bf16 => peak.bf16_flops,
            NumericPath::W8A8 => peak.fp8_flops,
        };
        if peak.bytes_per_s <= 0.0 || flop_rate <= 0.0 {
            return None;
        }
        let (m, c) = (bytes / peak.bytes_per_s, flops / flop_rate);
        (all_flops, all_bytes) = (all_flops + flops, all_bytes + bytes);
        memory_s += m;
        compute_s += c;
        total_s += m.max(c);
    }
    (total_s > 0.0).then(|| Bound {
        rate: t / total_s,
        kind: if memory_s >= compute_s { "memory" } else { "compute" },
        flops: all_flops,
        bytes: all_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsv3_model::builtin::Builtin;
    use dsv3_model::plan;

    fn peak(bytes_per_s: f64, flops: f64) -> Peak {
        Peak { bytes_per_s, f32_flops: flops, bf16_flops: flops, fp8_flops: flops, source: "test".into() }
    }

    #[test]
    fn decode_is_bandwidth_bound_and_prefill_compute_bound() {
        let cfg = Builtin::new(1).unwrap().config;
        let sizes = plan::part_sizes(&cfg, None, None).unwrap();
        let parts: Vec<Part> = sizes.iter().map(|s| s.part).collect();
        let p = peak(100e9, 1e12);
        let shares = [Share { parts: &parts, peak: Some(&p) }];
        let one = rate(&cfg, &sizes, &shares, NumericPath::Bf16, 1, 1).unwrap();
        let decode = one.rate;
        assert_eq!(one.kind, "memory");
        // One token reads every non-expert weight, top_k / n of the experts and one embedding row.
        let moe = cfg.moe.as_ref().unwrap();
        let k = moe.route.top_k as f64 / moe.n_routed_experts as f64;
        let bytes: f64 = sizes
            .iter()
            .map(|s| match s.part {
                Part::Expert(..) => s.weight_bytes as f64 * k,
                Part::Embed => s.decode_read_bytes as f64,
                _ => s.weight_bytes as f64,
            })
            .sum();
        assert!((decode - 100e9 / bytes).abs() / decode < 1e-9, "{decode} vs {}", 100e9 / bytes);
        assert!((one.bytes - bytes).abs() < 1.0, "{one:?}");
        // A long prompt: every token through the layers, only the last through the head.
        let t = 1 << 16;
        let long = rate(&cfg, &sizes, &shares, NumericPath::Bf16, t, 1).unwrap();
        let prefill = long.rate;
        assert_eq!(long.kind, "compute");
        let head: f64 = sizes.iter().filter(|s| s.part == Part::Head).map(|s| s.flops_per_token).sum();
        let flops: f64 = sizes.iter().map(|s| s.flops_per_token).sum::<f64>() - head;
        assert!(head > 0.0 && flops > 0.0);
        let expected = t as f64 / ((t as f64 * flops + head) / 1e12);
        assert!((prefill - expected).abs() / prefill < 1e-9, "{prefill} vs {expected}");
        assert!((long.flops - (t as f64 * flops + head)).abs() / long.flops < 1e-12);
        // A device without a peak has no roofline; one without parts does not matter.
        let none = [Share { parts: &parts, peak: None }];
        assert!(rate(&cfg, &sizes, &none, NumericPath::Bf16, 1, 1).is_none());
        let idle = [Share { parts: &parts, peak: Some(&p) }, Share { parts: &[], peak: None }];
        assert_eq!(rate(&cfg, &sizes, &idle, NumericPath::Bf16, 1, 1).unwrap().rate, decode);
    }
}
