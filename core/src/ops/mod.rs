//! The op set: what DeepSeek-V3 needs, each op one struct of tensors and parameters with its numerics
//! contract documented where it is defined. [`Op`] is the closed enum backends match on; adding an op is
//! a core change by design (every backend must then say whether it supports it), adding a backend is not.

pub mod attention;
pub mod check;
pub mod elementwise;
pub mod gemm;
pub mod moe;
pub mod sampling;

pub use attention::{MhaAttention, MlaAttention};
pub use elementwise::{Add, Cast, Embedding, RmsNorm, Rope, SiluMul, Softmax};
pub use gemm::{ActQuant, Activations, Dequantize, Gemm, GroupedGemm, ScaleFormat, Weights, QUANT_BLOCK};
pub use moe::{MoeCombine, MoeDispatch, MoeRoute, RouteConfig, Scoring, TopkMethod};
pub use sampling::{Argmax, Sample, TopK};

use crate::error::{Error, Result};
use crate::tensor::Tensor;

#[derive(Clone, Debug)]
pub enum Op {
    Gemm(Gemm),
    GroupedGemm(GroupedGemm),
    ActQuant(ActQuant),
    Dequantize(Dequantize),
    MoeRoute(MoeRoute),
    MoeDispatch(MoeDispatch),
    MoeCombine(MoeCombine),
    MlaAttention(MlaAttention),
    MhaAttention(MhaAttention),
    RmsNorm(RmsNorm),
    Rope(Rope),
    SiluMul(SiluMul),
    Add(Add),
    Embedding(Embedding),
    Softmax(Softmax),
    Cast(Cast),
    Argmax(Argmax),
    TopK(TopK),
    Sample(Sample),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// Work an op does, for GFLOP/s and GB/s figures: floating-point operations (a multiply-add is 2) and the
/// bytes it must move at least once (inputs read, outputs written).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
}

/// Every op name, in the order the support matrix lists them.
pub const OP_NAMES: &[&str] = &[
    "gemm",
    "grouped_gemm",
    "act_quant",
    "dequantize",
    "moe_route",
    "moe_dispatch",
    "moe_combine",
    "mla_attention",
    "mha_attention",
    "rms_norm",
    "rope",
    "silu_mul",
    "add",
    "embedding",
    "softmax",
    "cast",
    "argmax",
    "topk",
    "sample",
];

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Gemm(_) => "gemm",
            Op::GroupedGemm(_) => "grouped_gemm",
            Op::ActQuant(_) => "act_quant",
            Op::Dequantize(_) => "dequantize",
            Op::MoeRoute(_) => "moe_route",
            Op::MoeDispatch(_) => "moe_dispatch",
            Op::MoeCombine(_) => "moe_combine",
            Op::MlaAttention(_) => "mla_attention",
            Op::MhaAttention(_) => "mha_attention",
            Op::RmsNorm(_) => "rms_norm",
            Op::Rope(_) => "rope",
            Op::SiluMul(_) => "silu_mul",
            Op::Add(_) => "add",
            Op::Embedding(_) => "embedding",
            Op::Softmax(_) => "softmax",
            Op::Cast(_) => "cast",
            Op::Argmax(_) => "argmax",
            Op::TopK(_) => "topk",
            Op::Sample(_) => "sample",
        }
    }

    /// Every tensor the op touches, with its argument name and whether it is read or written.
    pub fn tensors(&self) -> Vec<(&'static str, &Tensor, Access)> {
        use Access::{Read, Write};
        fn reads<'t>(v: Vec<(&'static str, &'t Tensor)>) -> Vec<(&'static str, &'t Tensor, Access)> {
            v.into_iter().map(|(n, t)| (n, t, Access::Read)).collect()
        }
        match self {
            Op::Gemm(g) => [reads(g.a.tensors()), reads(g.b.tensors()), vec![("c", &g.c, Write)]].concat(),
            Op::GroupedGemm(g) => [
                reads(g.a.tensors()),
                reads(g.b.tensors()),
                vec![("expert_offsets", &g.expert_offsets, Read), ("c", &g.c, Write)],
            ]
            .concat(),
            Op::ActQuant(q) => {
                vec![("x", &q.x, Read), ("codes", &q.codes, Write), ("scales", &q.scales, Write)]
            }
            Op::Dequantize(d) => {
                vec![("codes", &d.codes, Read), ("scales", &d.scales, Read), ("out", &d.out, Write)]
            }
            Op::MoeRoute(r) => {
                let mut v = vec![("logits", &r.logits, Read)];
                if let Some(b) = &r.bias {
                    v.push(("bias", b, Read));
                }
                v.extend([("ids", &r.ids, Write), ("weights", &r.weights, Write)]);
                v
            }
            Op::MoeDispatch(d) => vec![
                ("x", &d.x, Read),
                ("ids", &d.ids, Read),
                ("rows", &d.rows, Write),
                ("expert_offsets", &d.expert_offsets, Write),
                ("slot_rows", &d.slot_rows, Write),
            ],
            Op::MoeCombine(c) => vec![
                ("expert_out", &c.expert_out, Read),
                ("slot_rows", &c.slot_rows, Read),
                ("weights", &c.weights, Read),
                ("out", &c.out, Write),
            ],
            Op::MlaAttention(a) => vec![
                ("q_latent", &a.q_latent, Read),
                ("q_pe", &a.q_pe, Read),
                ("kv_cache", &a.kv_cache, Read),
                ("kv_lens", &a.kv_lens, Read),
                ("out", &a.out, Write),
            ],
            Op::MhaAttention(a) => vec![
                ("q", &a.q, Read),
                ("k", &a.k, Read),
                ("v", &a.v, Read),
                ("kv_lens", &a.kv_lens, Read),
                ("out", &a.out, Write),
            ],
            Op::RmsNorm(n) => vec![("x", &n.x, Read), ("weight", &n.weight, Read), ("out", &n.out, Write)],
            Op::Rope(r) => vec![("x", &r.x, Read), ("positions", &r.positions, Read), ("out", &r.out, Write)],
            Op::SiluMul(s) => vec![("gate", &s.gate, Read), ("up", &s.up, Read), ("out", &s.out, Write)],
            Op::Add(a) => vec![("a", &a.a, Read), ("b", &a.b, Read), ("out", &a.out, Write)],
            Op::Embedding(e) => {
                vec![("table", &e.table, Read), ("ids", &e.ids, Read), ("out", &e.out, Write)]
            }
            Op::Softmax(s) => vec![("x", &s.x, Read), ("out", &s.out, Write)],
            Op::Cast(c) => vec![("x", &c.x, Read), ("out", &c.out, Write)],
            Op::Argmax(a) => vec![("x", &a.x, Read), ("out", &a.out, Write)],
            Op::TopK(t) => vec![("x", &t.x, Read), ("values", &t.values, Write), ("ids", &t.ids, Write)],
            Op::Sample(s) => vec![("logits", &s.logits, Read), ("out", &s.out, Write)],
        }
    }

    /// Shapes, dtypes and buffer bounds; outputs that overlap any other argument are rejected (in-place
    /// updates are not part of any op's contract, so no backend has to reason about aliasing).
    pub fn validate(&self) -> Result<()> {
        // Bounds first: after this every shape describes memory that exists, so the per-op checks can
        // multiply dimensions without overflow.
        let name = self.name();
        let tensors = self.tensors();
        let device = tensors[0].1.buffer.device_id();
        for (arg, t, _) in &tensors {
            check::in_bounds(name, arg, t)?;
            check::condition(name, arg, t.buffer.device_id() == device, || {
                format!("lives on {} but the op's first argument lives on {device}", t.buffer.device_id())
            })?;
        }
        match self {
            Op::Gemm(o) => o.validate(),
            Op::GroupedGemm(o) => o.validate(),
            Op::ActQuant(o) => o.validate(),
            Op::Dequantize(o) => o.validate(),
            Op::MoeRoute(o) => o.validate(),
            Op::MoeDispatch(o) => o.validate(),
            Op::MoeCombine(o) => o.validate(),
            Op::MlaAttention(o) => o.validate(),
            Op::MhaAttention(o) => o.validate(),
            Op::RmsNorm(o) => o.validate(),
            Op::Rope(o) => o.validate(),
            Op::SiluMul(o) => o.validate(),
            Op::Add(o) => o.validate(),
            Op::Embedding(o) => o.validate(),
            Op::Softmax(o) => o.validate(),
            Op::Cast(o) => o.validate(),
            Op::Argmax(o) => o.validate(),
            Op::TopK(o) => o.validate(),
            Op::Sample(o) => o.validate(),
        }?;
        for (i, (arg, out, access)) in tensors.iter().enumerate() {
            if *access != Access::Write {
                continue;
            }
            for (j, (other, t, _)) in tensors.iter().enumerate() {
                if i != j && overlaps(out, t) {
                    return Err(Error::invalid(
                        name,
                        arg,
                        format!("overlaps argument `{other}` ({out:?} and {t:?})"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn cost(&self) -> Cost {
        let bytes_of = |pred: &dyn Fn(Access) -> bool| -> f64 {
            self.tensors()
                .iter()
                .filter(|(_, _, a)| pred(*a))
                .map(|(_, t, _)| (t.numel() * t.dtype.size()) as f64)
                .sum()
        };
        let bytes = match self {
            // A lookup reads only the rows it gathers, not the whole table.
            Op::Embedding(e) => {
                let rows = e.out.numel() * e.table.dtype.size();
                (rows + e.ids.numel() * e.ids.dtype.size() + e.out.numel() * e.out.dtype.size()) as f64
            }
            _ => bytes_of(&|_| true),
        };
        let flops = match self {
            Op::Gemm(g) => {
                let (m, n, k) = g.dims();
                2.0 * (m * n * k) as f64
            }
            Op::GroupedGemm(g) => {
                let (rows, n, k, _) = g.dims();
                2.0 * (rows * n * k) as f64
            }
            Op::MlaAttention(a) => {
                let (b, t, h, dc, dr, l) = a.dims();
                // Upper bound: every query against the whole cache (causal masking does less).
                2.0 * (b * t * h * l * (dc + dr + dc)) as f64
            }
            Op::MhaAttention(a) => {
                let (b, t, h, dk, dv, l) = a.dims();
                2.0 * (b * t * h * l * (dk + dv)) as f64
            }
            _ => self
                .tensors()
                .iter()
                .filter(|(_, _, a)| *a == Access::Write)
                .map(|(_, t, _)| t.numel() as f64)
                .sum(),
        };
        Cost { flops, bytes }
    }
}

fn overlaps(a: &Tensor, b: &Tensor) -> bool {
    if a.buffer.device_id() != b.buffer.device_id()
        || !std::ptr::addr_eq(std::sync::Arc::as_ptr(&a.buffer), std::sync::Arc::as_ptr(&b.buffer))
    {
        return false;
    }
    let (ra, rb) = (a.byte_range(), b.byte_range());
    !ra.is_empty() && !rb.is_empty() && ra.start < rb.end && rb.start < ra.end
}
