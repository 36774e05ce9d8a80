//! The oracle: every op as plain loops over exactly decoded values, accumulated in f64, rounded once
//! when written. Loops are parallel over independent outputs (rows) only, which never changes a result.
//! Nothing here is tuned; if a line is not obviously the math in `dsv3_core::ops`, it is a bug.

mod attention;
mod gemm;
mod moe;
mod rows;
mod sampling;

pub(crate) use rows::cache_append;

use crate::bind::Args;
use dsv3_core::{Op, Result};

pub fn run(op: &Op, args: Args<'_>) -> Result<()> {
    match op {
        Op::Gemm(o) => gemm::gemm(o, args),
        Op::GroupedGemm(o) => gemm::grouped_gemm(o, args),
        Op::BatchedGemm(o) => gemm::batched_gemm(o, args),
        Op::ActQuant(o) => gemm::act_quant(o, args),
        Op::Dequantize(_) => gemm::dequantize(args),
        Op::MoeRoute(o) => moe::route(o, args),
        Op::MoeDispatch(o) => moe::dispatch(o, args),
        Op::MoeCombine(_) => moe::combine(args),
        Op::MlaAttention(o) => attention::mla(o, args),
        Op::CacheAppend(o) => rows::cache_append(o, args),
        Op::MhaAttention(o) => attention::mha(o, args),
        Op::RmsNorm(o) => rows::rms_norm(o, args),
        Op::Rope(o) => rows::rope(o, args),
        Op::SiluMul(_) => rows::silu_mul(args),
        Op::Add(_) => rows::add(args),
        Op::Embedding(_) => rows::embedding(args),
        Op::Softmax(_) => rows::softmax(args),
        Op::Cast(_) => rows::cast(args),
        Op::Argmax(_) => sampling::argmax(args),
        Op::TopK(o) => sampling::topk(o, args),
        Op::Sample(o) => sampling::sample(o, args),
    }
}

/// Σ a·b in f64. Four partial sums let the compiler vectorise; in f64 the order is immaterial at the
/// tolerances anything is compared with.
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0f64; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for l in 0..4 {
            acc[l] += a[4 * i + l] * b[4 * i + l];
        }
    }
    let mut tail = 0.0;
    for i in 4 * chunks..a.len() {
        tail += a[i] * b[i];
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}
