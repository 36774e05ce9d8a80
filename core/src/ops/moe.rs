//! Mixture-of-experts: routing, permutation of token rows into expert-contiguous order, and the weighted
//! combine. Everything stays on the device: no op here needs the host to read routing results.

use super::check::{self, ACTIVATIONS};
use super::Access::{Read, Write};
use super::{ArgList, OpDef};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;
use smallvec::smallvec;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scoring {
    /// V3: `s = sigmoid(logit)`.
    Sigmoid,
    /// V2: `s = softmax(logits)` over all experts.
    Softmax,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopkMethod {
    /// Top-k over all experts (V2-Lite).
    Greedy,
    /// Keep the `topk_group` groups with the largest per-group max score, then top-k among them (V2).
    GroupLimitedGreedy,
    /// V3 `noaux_tc`: selection scores `c = s + e_score_correction_bias`; group score = sum of the top-2
    /// `c` in the group; keep `topk_group` groups; top-k of `c` among them. Weights use the unbiased `s`.
    NoAuxTc,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteConfig {
    pub scoring: Scoring,
    pub method: TopkMethod,
    pub n_group: usize,
    pub topk_group: usize,
    pub top_k: usize,
    /// Divide the k weights by their sum (V3).
    pub norm_topk_prob: bool,
    pub routed_scaling_factor: f32,
}

/// Router: from logits `[T, E]` (f32, computed by a `gemm` with the router weight) to expert ids
/// i32 `[T, k]` and weights f32 `[T, k]`.
///
/// Contract: scores in f32 (reference: f64) from the f32 logits; experts outside the kept groups are
/// excluded outright (REF's −inf masking; transformers masks to 0.0, which differs only when a kept
/// expert's biased score is negative); ids are written in decreasing selection score, ties to the lower
/// expert id; `w = s[id]`, divided by `Σ s` over the k chosen if `norm_topk_prob`, then
/// × `routed_scaling_factor`. Near-ties (a gap below the scores' rounding) may legitimately select
/// differently across backends; conformance treats them as ties.
#[derive(Clone, Debug)]
pub struct MoeRoute {
    pub logits: Tensor,
    /// `e_score_correction_bias`, f32 `[E]`; required by `NoAuxTc`, rejected otherwise.
    pub bias: Option<Tensor>,
    pub config: RouteConfig,
    pub ids: Tensor,
    pub weights: Tensor,
}

impl OpDef for MoeRoute {
    fn args(&self) -> ArgList<'_> {
        {
            let mut v = smallvec![("logits", &self.logits, Read)];
            if let Some(b) = &self.bias {
                v.push(("bias", b, Read));
            }
            v.extend([("ids", &self.ids, Write), ("weights", &self.weights, Write)]);
            v
        }
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "moe_route";
        let c = &self.config;
        check::rank(OP, "logits", &self.logits, 2)?;
        check::dtype(OP, "logits", &self.logits, &[DType::F32])?;
        check::contiguous(OP, "logits", &self.logits)?;
        let (t, e) = (self.logits.shape[0], self.logits.shape[1]);
        check::condition(OP, "n_group", c.n_group >= 1 && e % c.n_group == 0, || {
            format!("{} experts do not split into {} groups", e, c.n_group)
        })?;
        check::condition(OP, "topk_group", c.topk_group >= 1 && c.topk_group <= c.n_group, || {
            format!("topk_group {} must be in 1..={}", c.topk_group, c.n_group)
        })?;
        let per_group = e / c.n_group.max(1);
        let reachable = if c.method == TopkMethod::Greedy { e } else { c.topk_group * per_group };
        check::condition(OP, "top_k", c.top_k >= 1 && c.top_k <= reachable, || {
            format!(
                "top_k {} must be in 1..={reachable} (experts reachable through the kept groups)",
                c.top_k
            )
        })?;
        if c.method == TopkMethod::NoAuxTc {
            check::condition(OP, "top_k", per_group >= 2, || {
                "noaux_tc sums the top-2 scores of each group".into()
            })?;
        }
        match (&self.bias, c.method) {
            (Some(b), TopkMethod::NoAuxTc) => {
                check::dtype(OP, "bias", b, &[DType::F32])?;
                check::shape(OP, "bias", b, &[e])?;
                check::contiguous(OP, "bias", b)?;
            }
            (None, TopkMethod::NoAuxTc) => {
                check::condition(OP, "bias", false, || "noaux_tc needs e_score_correction_bias".into())?
            }
            (Some(_), _) => {
                check::condition(OP, "bias", false, || "only noaux_tc uses a correction bias".into())?
            }
            (None, _) => {}
        }
        for (name, out, dtype) in [("ids", &self.ids, DType::I32), ("weights", &self.weights, DType::F32)] {
            check::dtype(OP, name, out, &[dtype])?;
            check::shape(OP, name, out, &[t, c.top_k])?;
            check::contiguous(OP, name, out)?;
        }
        Ok(())
    }
}

/// Permute token rows into expert-contiguous order. Slot `s = t·k + j` is token t's j-th choice
/// `ids[t, j]`. Output row order: experts ascending, and within an expert slots ascending (a stable
/// counting sort, so every backend produces the same permutation exactly).
/// Writes `rows [T·k, D]` (copies of `x` rows), `expert_offsets` i32 `[E + 1]` (row ranges per expert),
/// and `slot_rows` i32 `[T·k]` (the permuted row of each slot, which `moe_combine` reads).
/// An id outside `0..E` is an error the device reports (CPU: at launch).
#[derive(Clone, Debug)]
pub struct MoeDispatch {
    pub x: Tensor,
    pub ids: Tensor,
    pub n_experts: usize,
    pub rows: Tensor,
    pub expert_offsets: Tensor,
    pub slot_rows: Tensor,
}

impl OpDef for MoeDispatch {
    fn args(&self) -> ArgList<'_> {
        smallvec![
            ("x", &self.x, Read),
            ("ids", &self.ids, Read),
            ("rows", &self.rows, Write),
            ("expert_offsets", &self.expert_offsets, Write),
            ("slot_rows", &self.slot_rows, Write),
        ]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "moe_dispatch";
        check::rank(OP, "x", &self.x, 2)?;
        check::row_major(OP, "x", &self.x)?;
        check::dtype(OP, "x", &self.x, ACTIVATIONS)?;
        check::rank(OP, "ids", &self.ids, 2)?;
        check::dtype(OP, "ids", &self.ids, &[DType::I32])?;
        check::contiguous(OP, "ids", &self.ids)?;
        let (t, d, k) = (self.x.shape[0], self.x.shape[1], self.ids.shape[1]);
        check::condition(OP, "ids", self.ids.shape[0] == t, || {
            format!("ids has {} rows but x has {t}", self.ids.shape[0])
        })?;
        check::condition(OP, "n_experts", self.n_experts >= 1, || "needs at least one expert".into())?;
        check::dtype(OP, "rows", &self.rows, &[self.x.dtype])?;
        check::shape(OP, "rows", &self.rows, &[t * k, d])?;
        check::row_major(OP, "rows", &self.rows)?;
        check::dtype(OP, "expert_offsets", &self.expert_offsets, &[DType::I32])?;
        check::shape(OP, "expert_offsets", &self.expert_offsets, &[self.n_experts + 1])?;
        check::contiguous(OP, "expert_offsets", &self.expert_offsets)?;
        check::dtype(OP, "slot_rows", &self.slot_rows, &[DType::I32])?;
        check::shape(OP, "slot_rows", &self.slot_rows, &[t * k])?;
        check::contiguous(OP, "slot_rows", &self.slot_rows)
    }
}

/// `out[t] = Σ_j weights[t, j] · expert_out[slot_rows[t·k + j]]`, summed in f32 in j order (reference:
/// f64), rounded once to `out`'s dtype. `out` is overwritten; the shared expert is added by `add`.
#[derive(Clone, Debug)]
pub struct MoeCombine {
    pub expert_out: Tensor,
    pub slot_rows: Tensor,
    pub weights: Tensor,
    pub out: Tensor,
}

impl OpDef for MoeCombine {
    fn args(&self) -> ArgList<'_> {
        smallvec![
            ("expert_out", &self.expert_out, Read),
            ("slot_rows", &self.slot_rows, Read),
            ("weights", &self.weights, Read),
            ("out", &self.out, Write),
        ]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "moe_combine";
        check::rank(OP, "weights", &self.weights, 2)?;
        check::dtype(OP, "weights", &self.weights, &[DType::F32])?;
        check::contiguous(OP, "weights", &self.weights)?;
        let (t, k) = (self.weights.shape[0], self.weights.shape[1]);
        check::rank(OP, "expert_out", &self.expert_out, 2)?;
        check::row_major(OP, "expert_out", &self.expert_out)?;
        check::dtype(OP, "expert_out", &self.expert_out, ACTIVATIONS)?;
        let n = self.expert_out.shape[1];
        check::shape(OP, "expert_out", &self.expert_out, &[t * k, n])?;
        check::dtype(OP, "slot_rows", &self.slot_rows, &[DType::I32])?;
        check::shape(OP, "slot_rows", &self.slot_rows, &[t * k])?;
        check::contiguous(OP, "slot_rows", &self.slot_rows)?;
        check::dtype(OP, "out", &self.out, ACTIVATIONS)?;
        check::shape(OP, "out", &self.out, &[t, n])?;
        check::row_major(OP, "out", &self.out)
    }
}
