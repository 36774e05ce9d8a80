//! Choosing tokens: argmax and top-k (topk.cu) and seeded sampling (sample.cu), one block per row; long
//! rows spread over many blocks, their candidates merged by a second topk.cu launch, or sampled by
//! sample_split.cu with sample_cut.cu's radix select of the nucleus.

use super::row_stride;
use super::rows::{row_block, row_chunks, rows_fit, ROW_CHUNK};
use crate::device::Ctx;
use crate::kernels::{self, Variant};
use crate::launch::{Launch, Params, BLOCK};
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
    let chunks = match op {
        Op::Argmax(_) => select_chunks(n, 1),
        Op::TopK(o) => select_chunks(n, o.k),
        _ => row_chunks(n),
    };
    rows_fit(x.shape.first().copied().unwrap_or(0), chunks)
}

/// Largest k whose selection spreads a long row over blocks: each block then finds k candidates with k
/// block reductions, and the merge reads k per block, so for large k one block per row is the cheaper.
const SPLIT_MAX_K: usize = 64;

/// Blocks per row for selecting the `k` first of `n` elements (each block's range holds at least
/// `ROW_CHUNK ≥ k` elements, so every block has k candidates).
fn select_chunks(n: usize, k: usize) -> usize {
    if k <= SPLIT_MAX_K {
        row_chunks(n)
    } else {
        1
    }
}

fn select_variant(x: DType) -> Variant {
    Variant::new(kernels::TOPK).ty("x", x)
}

fn sample_variant(x: DType) -> Variant {
    Variant::new(kernels::SAMPLE).ty("x", x)
}

fn sample_split_variant(x: DType) -> Variant {
    Variant::new(kernels::SAMPLE_SPLIT).ty("x", x)
}

fn sample_cut_variant() -> Variant {
    Variant::new(kernels::SAMPLE_CUT)
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture.
pub fn catalog() -> Vec<Variant> {
    use DType::{BF16, F32};
    vec![
        select_variant(F32),
        select_variant(BF16),
        sample_variant(F32),
        sample_variant(BF16),
        sample_split_variant(F32),
        sample_split_variant(BF16),
        sample_cut_variant(),
    ]
}

/// The `k` first elements of each row of `x` in decreasing order: `ids`, and `values` for top-k. Long rows
/// take two launches: the k first of every chunk into scratch, then the k first of those per row. `names`
/// are the op's names for `x` and `ids`, for errors.
fn select(
    l: &Launch,
    names: [&'static str; 2],
    x: &Tensor,
    k: usize,
    values: Option<&Tensor>,
    ids: &Tensor,
) -> Result<()> {
    let (rows, n) = (x.shape[0], x.shape[1]);
    if rows == 0 {
        return Ok(());
    }
    let values = match values {
        Some(v) => l.addr("values", v)?,
        None => 0,
    };
    let (x_addr, ids) = (l.addr(names[0], x)?, l.addr(names[1], ids)?);
    let chunks = select_chunks(n, k);
    if chunks == 1 {
        let f = l.kernel(&select_variant(x.dtype))?;
        let block = row_block(n);
        let params = select_params(n, k, x_addr, row_stride(x), values, ids).u(n).u(1).addr(0);
        return l.run(&f, l.grid(rows as u64 * block as u64, block)?, params);
    }
    // Candidates: [rows, chunks, k] values (f32, so the merge runs the f32 variant) and their row indices.
    let candidates = chunks * k;
    let (cand_values, cand_ids) = (l.scratch(rows * candidates * 4)?, l.scratch(rows * candidates * 4)?);
    let f = l.kernel(&select_variant(x.dtype))?;
    let params =
        select_params(n, k, x_addr, row_stride(x), cand_values, cand_ids).u(ROW_CHUNK).u(chunks).addr(0);
    l.run(&f, l.grid((rows * chunks) as u64 * BLOCK as u64, BLOCK)?, params)?;
    let f = l.kernel(&select_variant(DType::F32))?;
    let block = row_block(candidates);
    let params =
        select_params(candidates, k, cand_values, candidates, values, ids).u(candidates).u(1).addr(cand_ids);
    l.run(&f, l.grid(rows as u64 * block as u64, block)?, params)
}

/// topk.cu's parameters up to `values` / `ids`; the caller adds `chunk`, `chunks` and `x_ids`.
fn select_params(n: usize, k: usize, x: u64, x_stride: usize, values: u64, ids: u64) -> Params {
    Params::new().u(n).u(k).addr(x).u(x_stride).addr(values).addr(ids)
}

pub fn argmax(l: &Launch, o: &Argmax) -> Result<()> {
    select(l, ["x", "out"], &o.x, 1, None, &o.out)
}

pub fn topk(l: &Launch, o: &TopK) -> Result<()> {
    select(l, ["x", "ids"], &o.x, o.k, Some(&o.values), &o.ids)
}

pub fn sample(l: &Launch, o: &Sample) -> Result<()> {
    let (rows, n) = (o.logits.shape[0], o.logits.shape[1]);
    if rows == 0 {
        return Ok(());
    }
    // Greedy sampling is argmax: the same order (value, then the lower id), the same split.
    let greedy = o.row_params.is_none() && o.temperature == 0.0;
    let chunks = row_chunks(n);
    if chunks > 1 {
        if greedy {
            return select(l, ["logits", "out"], &o.logits, 1, None, &o.out);
        }
        return sample_split(l, o, chunks);
    }
    let f = l.kernel(&sample_variant(o.logits.dtype))?;
    // p, computed once and read by every pass of the nucleus search (greedy needs none).
    let probs = if greedy { 0 } else { l.scratch(rows * n * 4)? };
    let (row_params, site) = row_params(l, o)?;
    let block = row_block(n);
    let params = Params::new()
        .u(n)
        .addr(l.addr("logits", &o.logits)?)
        .u(row_stride(&o.logits))
        .addr(l.addr("out", &o.out)?)
        .addr(probs)
        .addr(row_params)
        .addr(l.err())
        .u(site as usize)
        .f(o.temperature as f64)
        .f(o.top_p as f64)
        .i(o.seed as i64); // the seed's 64 bits, as they are
    l.run(&f, l.grid(rows as u64 * block as u64, block)?, params)
}

/// The address of the op's per-row parameters and the check site of their entries (0 and none without
/// them: the kernels then use the launch's own, which the op's validation checked).
fn row_params(l: &Launch, o: &Sample) -> Result<(u64, u32)> {
    match &o.row_params {
        Some(t) => {
            let site = l.site("row_params", "each row: temperature finite and ≥ 0, top_p in (0, 1]");
            Ok((l.addr("row_params", t)?, site))
        }
        None => Ok((0, 0)),
    }
}

/// Entries of sample_cut.cu's digit histograms (10-bit digits).
const HIST: usize = 1024;

/// Sampling over rows spread over `chunks` blocks each (sample_split.cu, whose header lists the launches).
fn sample_split(l: &Launch, o: &Sample, chunks: usize) -> Result<()> {
    let (rows, n) = (o.logits.shape[0], o.logits.shape[1]);
    let split = l.kernel(&sample_split_variant(o.logits.dtype))?;
    let cut = l.kernel(&sample_cut_variant())?;
    // The passes' scratch, carved out of one buffer: p, the blocks' maxes and sums, the digit histograms
    // (u64), the blocks' counts of level-2 digits, the cut's state (u64 [4] per row), the blocks' winners.
    let sizes = [
        rows * n * 4,
        rows * 2 * chunks * 4,
        rows * 3 * HIST * 8,
        rows * chunks * HIST * 4,
        rows * 32,
        rows * chunks * 8,
        rows * chunks * 8,
    ];
    let aligned = sizes.map(|s| s.div_ceil(256) * 256);
    let mut at = [l.scratch(aligned.iter().sum())?; 7];
    for i in 1..at.len() {
        at[i] = at[i - 1] + aligned[i - 1] as u64;
    }
    let [probs, part, hist, ties, state, win_key, win] = at;
    let (x, out) = (l.addr("logits", &o.logits)?, l.addr("out", &o.out)?);
    let (row_params, site) = row_params(l, o)?;
    let chunk_grid = l.grid((rows * chunks) as u64 * BLOCK as u64, BLOCK)?;
    let row_grid = l.grid(rows as u64 * BLOCK as u64, BLOCK)?;
    let cut_grid = l.grid((rows * HIST) as u64, HIST as u32)?;
    let pass = |p: usize, grid| {
        let params = Params::new()
            .u(n)
            .u(ROW_CHUNK)
            .u(chunks)
            .addr(x)
            .u(row_stride(&o.logits))
            .addr(out)
            .addr(probs)
            .addr(part)
            .addr(hist)
            .addr(ties)
            .addr(state)
            .addr(win_key)
            .addr(win)
            .addr(row_params)
            .addr(l.err())
            .u(site as usize)
            .f(o.temperature as f64)
            .f(o.top_p as f64)
            .i(o.seed as i64) // the seed's 64 bits, as they are
            .u(p);
        l.run(&split, grid, params)
    };
    let level = |level: usize| {
        let params = Params::new()
            .u(chunks)
            .addr(hist)
            .addr(ties)
            .addr(state)
            .addr(row_params)
            .f(o.temperature as f64)
            .f(o.top_p as f64)
            .u(level);
        l.run(&cut, cut_grid, params)
    };
    for p in 0..3 {
        pass(p, chunk_grid)?;
    }
    level(0)?;
    pass(3, chunk_grid)?;
    level(1)?;
    pass(4, chunk_grid)?;
    level(2)?;
    pass(5, chunk_grid)?;
    pass(6, row_grid)
}
