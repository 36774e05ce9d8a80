//! Choosing tokens: argmax and top-k (select.cu) and seeded sampling (sample.cu), one block per row.

use super::row_stride;
use super::rows::{row_block, rows_fit};
use crate::device::Ctx;
use crate::kernels::{self, Variant};
use crate::launch::{Launch, Params};
use dsv3_core::ops::{Argmax, Sample, TopK};
use dsv3_core::{DType, Op, Result, Support, Tensor};

pub fn supports(_ctx: &Ctx, op: &Op) -> Support {
    let x = match op {
        Op::Argmax(o) => &o.x,
        Op::TopK(o) => &o.x,
        Op::Sample(o) => &o.logits,
        _ => return Support::Native,
    };
    let n = x.shape.get(1).copied().unwrap_or(0);
    // The kernels hold indices in u32 and write them as i32.
    if n > i32::MAX as usize {
        return Support::Unsupported { reason: format!("rows of {n} elements: ids are i32") };
    }
    rows_fit(x.shape.first().copied().unwrap_or(0))
}

fn select_variant(x: DType) -> Variant {
    Variant::new(kernels::TOPK).ty("x", x)
}

fn sample_variant(x: DType) -> Variant {
    Variant::new(kernels::SAMPLE).ty("x", x)
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture.
pub fn catalog() -> Vec<Variant> {
    use DType::{BF16, F32};
    vec![select_variant(F32), select_variant(BF16), sample_variant(F32), sample_variant(BF16)]
}

/// The `k` first elements of each row of `x` in decreasing order: `ids`, and `values` for top-k.
fn select(l: &Launch, x: &Tensor, k: usize, values: Option<&Tensor>, ids: &Tensor) -> Result<()> {
    let (rows, n) = (x.shape[0], x.shape[1]);
    if rows == 0 {
        return Ok(());
    }
    let f = l.kernel(&select_variant(x.dtype))?;
    let values = match values {
        Some(v) => l.addr("values", v)?,
        None => 0,
    };
    let block = row_block(n);
    let params =
        Params::new().u(n).u(k).addr(l.addr("x", x)?).u(row_stride(x)).addr(values).addr(l.addr("ids", ids)?);
    l.run(&f, l.grid(rows as u64 * block as u64, block)?, params)
}

pub fn argmax(l: &Launch, o: &Argmax) -> Result<()> {
    select(l, &o.x, 1, None, &o.out)
}

pub fn topk(l: &Launch, o: &TopK) -> Result<()> {
    select(l, &o.x, o.k, Some(&o.values), &o.ids)
}

pub fn sample(l: &Launch, o: &Sample) -> Result<()> {
    let (rows, n) = (o.logits.shape[0], o.logits.shape[1]);
    if rows == 0 {
        return Ok(());
    }
    let f = l.kernel(&sample_variant(o.logits.dtype))?;
    // p, computed once and read by every pass of the nucleus search (greedy needs none).
    let probs = if o.temperature == 0.0 { 0 } else { l.scratch(rows * n * 4)? };
    let block = row_block(n);
    let params = Params::new()
        .u(n)
        .addr(l.addr("logits", &o.logits)?)
        .u(row_stride(&o.logits))
        .addr(l.addr("out", &o.out)?)
        .addr(probs)
        .f(o.temperature as f64)
        .f(o.top_p as f64)
        .i(o.seed as i64); // the seed's 64 bits, as they are
    l.run(&f, l.grid(rows as u64 * block as u64, block)?, params)
}
