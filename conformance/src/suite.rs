//! The op suite of `dsv3 bench ops`: every op one decode or prefill step of a DeepSeek-style layer
//! launches, at a model's real shapes, each paired with a *replica* — the same op, dtypes and row count at
//! reduced feature sizes — that is checked against the oracle, so a benchmark of a wrong kernel is caught.
//!
//! The replica keeps what selects a kernel path on every backend: the rows (M ≤ 16 takes the GPU decode
//! GEMM), the dtypes, the causal / decode form, and a vocabulary above the 8192 at which GPU row ops
//! spread a row over many blocks. It cuts the rest: feature sizes to at most 512 (multiples of 128 stay
//! multiples of 128, so FP8 block scales keep whole blocks), heads to 16, context to 256 positions.

use crate::case::{IdPattern, Operand};
use crate::cases::{
    add, batched_gemm, cache_append, combine, dispatch, embedding, gemm, grouped_gemm, mla, rms_norm, rope,
    route, sample, silu_mul,
};
use crate::gen::ScaleStore;
use crate::Case;
use dsv3_core::fp8::Fp8Format::E4M3Fn;
use dsv3_core::ops::RouteConfig;
use dsv3_core::rope::RopeParams;
use dsv3_core::DType::{BF16, F32};

/// The shapes of one layer of a DeepSeek-style model (what `dsv3 bench ops` reads from a config).
#[derive(Clone, Debug)]
pub struct LayerDims {
    pub hidden: usize,
    /// `None`: the query is one projection from the hidden state (DeepSeek-V2-Lite).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope: usize,
    pub qk_rope: usize,
    pub v_head: usize,
    pub heads: usize,
    /// The dense layers' FFN width.
    pub dense_inter: usize,
    pub moe: Option<MoeDims>,
    pub vocab: usize,
    pub rope: RopeParams,
    /// Linear layers' weights as 128×128 block-scaled e4m3 (FP8 checkpoints); bf16 otherwise. The router
    /// and the head stay bf16, as in DeepSeek-V3's checkpoint.
    pub fp8_weights: bool,
}

#[derive(Clone, Debug)]
pub struct MoeDims {
    pub experts: usize,
    pub shared: usize,
    pub inter: usize,
    pub route: RouteConfig,
}

/// Which step the suite times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `batch` sequences, one new token each, over a cache of `context` positions.
    Decode { batch: usize, context: usize },
    /// One sequence's first `tokens` tokens.
    Prefill { tokens: usize },
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Decode { .. } => "decode",
            Phase::Prefill { .. } => "prefill",
        }
    }
}

/// One op of the step: which part of the layer launches it, at full size and as its checked replica.
pub struct SuiteCase {
    pub part: &'static str,
    pub case: Case,
    pub replica: Case,
}

/// The ops of one step of one dense layer, one MoE layer (when the model has them), the embedding and
/// the head, in launch order.
pub fn layer_suite(dims: &LayerDims, phase: Phase) -> Vec<SuiteCase> {
    let full = cases(dims, phase);
    let replicas = cases(&dims.reduced(), phase.reduced());
    debug_assert_eq!(full.len(), replicas.len());
    full.into_iter()
        .zip(replicas)
        .map(|((part, case), (_, replica))| SuiteCase { part, case, replica })
        .collect()
}

impl LayerDims {
    /// The replica's shapes (see the module text).
    fn reduced(&self) -> LayerDims {
        let cut = |d: usize| {
            if d <= 512 {
                d
            } else if d.is_multiple_of(128) {
                512
            } else {
                512 + d % 128
            }
        };
        let heads = self.heads.min(16);
        let moe = self.moe.as_ref().map(|m| {
            let experts = m.experts.min(16);
            let groups = m.route.n_group.min(experts);
            let route = RouteConfig {
                n_group: groups,
                topk_group: m.route.topk_group.min(groups),
                top_k: m.route.top_k.min(experts),
                ..m.route
            };
            MoeDims { experts, shared: m.shared, inter: cut(m.inter), route }
        });
        // A group count that no longer divides the experts falls back to one group.
        let moe = moe.map(|mut m| {
            if !m.experts.is_multiple_of(m.route.n_group) {
                (m.route.n_group, m.route.topk_group) = (1, 1);
            }
            m
        });
        LayerDims {
            hidden: cut(self.hidden),
            q_lora_rank: self.q_lora_rank.map(cut),
            kv_lora_rank: cut(self.kv_lora_rank),
            heads,
            dense_inter: cut(self.dense_inter),
            moe,
            vocab: self.vocab.min(16384),
            ..self.clone()
        }
    }
}

impl Phase {
    fn reduced(self) -> Phase {
        match self {
            Phase::Decode { batch, context } => Phase::Decode { batch, context: context.min(256) },
            Phase::Prefill { tokens } => Phase::Prefill { tokens },
        }
    }
}

const ACT: Operand = Operand::Dense(BF16);

fn cases(d: &LayerDims, phase: Phase) -> Vec<(&'static str, Case)> {
    let weight = if d.fp8_weights { Operand::Fp8(E4M3Fn, ScaleStore::F32) } else { ACT };
    // (sequences, new tokens per sequence, cache positions, each sequence's length after the step)
    let (b, t, l) = match phase {
        Phase::Decode { batch, context } => (batch, 1, context),
        Phase::Prefill { tokens } => (1, tokens, tokens),
    };
    let rows = b * t;
    let lens = vec![l; b];
    let (dc, dr, dn, heads) = (d.kv_lora_rank, d.qk_rope, d.qk_nope, d.heads);
    let linear = |n: usize, k: usize| gemm(rows, n, k, ACT, weight, BF16);
    let rope_params = RopeParams { dim: dr, ..d.rope };
    let mut c = vec![
        // The embedding reads one row per token: the table's size costs memory, not time, so the case's
        // table is capped at 16384 rows.
        ("embed", embedding(d.vocab.min(16384), d.hidden, rows, BF16, BF16)),
        ("attn.norm", rms_norm(rows, d.hidden, BF16, BF16, BF16)),
    ];
    match d.q_lora_rank {
        Some(q) => {
            c.push(("attn.q_a", linear(q, d.hidden)));
            c.push(("attn.q_norm", rms_norm(rows, q, BF16, BF16, BF16)));
            c.push(("attn.q_b", linear(heads * (dn + dr), q)));
        }
        None => c.push(("attn.q", linear(heads * (dn + dr), d.hidden))),
    }
    c.extend([
        ("attn.kv_a", linear(dc + dr, d.hidden)),
        ("attn.kv_norm", rms_norm(rows, dc, BF16, BF16, BF16)),
        ("attn.q_rope", rope(rows, heads, rope_params, BF16, BF16, l, dn + dr)),
        ("attn.cache_append", cache_append(b, t, l, dc + dr, &lens, BF16)),
        ("attn.w_uk", batched_gemm(heads, rows, dc, dn, BF16, BF16, BF16, "heads")),
        ("attn.mla", mla(b, t, heads, dc, dr, l, &lens, true, BF16, BF16)),
        ("attn.w_uv", batched_gemm(heads, rows, d.v_head, dc, BF16, BF16, BF16, "heads")),
        ("attn.o", linear(d.hidden, heads * d.v_head)),
        ("attn.residual", add(rows, d.hidden, BF16, BF16, BF16)),
        ("mlp.gate", linear(d.dense_inter, d.hidden)),
        ("mlp.up", linear(d.dense_inter, d.hidden)),
        ("mlp.silu_mul", silu_mul(rows, d.dense_inter, BF16, BF16, 2.0)),
        ("mlp.down", linear(d.hidden, d.dense_inter)),
    ]);
    if let Some(m) = &d.moe {
        let top_k = m.route.top_k;
        // Each token's top-k experts spread evenly over the layer's experts; only the experts the step uses
        // are in the stack (unused ones cost no reads, and V3's whole stack is 3.8 GB per matrix).
        // A prefill step uses every expert; its stack is capped at 64 experts (the case's name says how
        // many), so it times the same rows and FLOPs over fewer weight bytes.
        let used = (rows * top_k).min(m.experts).min(64);
        let counts: Vec<usize> = (0..used).map(|e| (e..rows * top_k).step_by(used).count()).collect();
        let expert = |n: usize, k: usize| grouped_gemm(&counts, n, k, ACT, weight, BF16, "suite");
        let shared = m.inter * m.shared;
        c.extend([
            ("moe.router", gemm(rows, m.experts, d.hidden, ACT, ACT, F32)),
            ("moe.route", route("suite", rows, m.experts, m.route)),
            ("moe.dispatch", dispatch(rows, d.hidden, top_k, m.experts, BF16, IdPattern::Random)),
            ("moe.experts.gate", expert(m.inter, d.hidden)),
            ("moe.experts.up", expert(m.inter, d.hidden)),
            ("moe.experts.silu_mul", silu_mul(rows * top_k, m.inter, BF16, BF16, 2.0)),
            ("moe.experts.down", expert(d.hidden, m.inter)),
            ("moe.combine", combine(rows, top_k, d.hidden, BF16, BF16)),
            ("moe.shared.gate", linear(shared, d.hidden)),
            ("moe.shared.up", linear(shared, d.hidden)),
            ("moe.shared.down", linear(d.hidden, shared)),
        ]);
    }
    // The head runs on each sequence's last token only.
    c.extend([
        ("head.norm", rms_norm(b, d.hidden, BF16, BF16, BF16)),
        ("head.lm_head", gemm(b, d.vocab, d.hidden, ACT, ACT, F32)),
        ("head.sample", sample(b, d.vocab, F32, 0.6, 0.95, 1)),
    ]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::Spec;
    use dsv3_core::ops::{Scoring, TopkMethod};

    /// DeepSeek-V3's layer, by hand (the CLI reads it from the config).
    fn v3() -> LayerDims {
        let route = RouteConfig {
            scoring: Scoring::Sigmoid,
            method: TopkMethod::NoAuxTc,
            n_group: 8,
            topk_group: 4,
            top_k: 8,
            norm_topk_prob: true,
            routed_scaling_factor: 2.5,
        };
        LayerDims {
            hidden: 7168,
            q_lora_rank: Some(1536),
            kv_lora_rank: 512,
            qk_nope: 128,
            qk_rope: 64,
            v_head: 128,
            heads: 128,
            dense_inter: 18432,
            moe: Some(MoeDims { experts: 256, shared: 1, inter: 2048, route }),
            vocab: 129280,
            rope: crate::case::v3_rope(),
            fp8_weights: true,
        }
    }

    fn gemm_of(s: &SuiteCase) -> (&crate::case::GemmSpec, &crate::case::GemmSpec) {
        match (&s.case.spec, &s.replica.spec) {
            (Spec::Gemm(a), Spec::Gemm(b)) => (a, b),
            _ => panic!("{} is not a gemm", s.part),
        }
    }

    #[test]
    fn the_v3_decode_step_at_its_real_shapes_with_replicas_on_the_same_path() {
        let suite = layer_suite(&v3(), Phase::Decode { batch: 4, context: 4096 });
        let part = |name: &str| suite.iter().find(|s| s.part == name).unwrap_or_else(|| panic!("no {name}"));
        // The projections at V3's sizes; the replica keeps the rows (the decode GEMM path) and the dtypes,
        // with 16 heads of 128 + 64 and the LoRA rank cut to 512.
        let (full, replica) = gemm_of(part("attn.q_b"));
        assert_eq!((full.m, full.n, full.k), (4, 24576, 1536));
        assert_eq!((replica.m, replica.n, replica.k), (4, 16 * 192, 512));
        assert_eq!((replica.a, replica.b, replica.c), (full.a, full.b, full.c));
        let (full, replica) = gemm_of(part("attn.kv_a"));
        assert_eq!((full.n, full.k, replica.n, replica.k), (576, 7168, 576, 512));
        // The head over the vocabulary; the replica stays above the GPU row ops' split threshold.
        let (full, replica) = gemm_of(part("head.lm_head"));
        assert_eq!((full.m, full.n, replica.n), (4, 129280, 16384));
        // 4 tokens × top-8 over 32 experts, one row each.
        match &part("moe.experts.gate").case.spec {
            Spec::GroupedGemm(g) => assert_eq!((g.counts.clone(), g.n, g.k), (vec![1; 32], 2048, 7168)),
            _ => panic!("moe.experts.gate is not a grouped gemm"),
        }
        match (&part("attn.mla").case.spec, &part("attn.mla").replica.spec) {
            (Spec::MlaAttention(a), Spec::MlaAttention(r)) => {
                assert_eq!((a.b, a.t, a.h, a.d1, a.d2, a.l), (4, 1, 128, 512, 64, 4096));
                assert_eq!((r.b, r.t, r.h, r.l), (4, 1, 16, 256));
            }
            _ => panic!("attn.mla is not MLA"),
        }
        for s in &suite {
            assert_eq!(s.case.op, s.replica.op, "{}", s.part);
            assert_eq!(s.case.dtypes, s.replica.dtypes, "{}", s.part);
        }
    }

    #[test]
    fn a_prefill_step_uses_at_most_64_experts_and_every_row() {
        let suite = layer_suite(&v3(), Phase::Prefill { tokens: 512 });
        let gate = suite.iter().find(|s| s.part == "moe.experts.gate").unwrap();
        match &gate.case.spec {
            Spec::GroupedGemm(g) => {
                assert_eq!(g.counts.len(), 64);
                assert_eq!(g.counts.iter().sum::<usize>(), 512 * 8);
            }
            _ => panic!("not a grouped gemm"),
        }
    }
}
