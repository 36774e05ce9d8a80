//! Row-wise ops: rms_norm and softmax (one block per row, rows.cu; softmax over long rows spread over many
//! blocks, softmax_split.cu), rope (one thread per rotated pair), embedding (one block per token, ids
//! checked on the device).

use super::row_stride;
use crate::device::Ctx;
use crate::kernels::{self, Variant};
use crate::launch::{Launch, Params, BLOCK, MAX_GRID_X};
use dsv3_core::ops::{Embedding, RmsNorm, Rope, Softmax};
use dsv3_core::{DType, Op, Result, Support, Tensor};

/// Rotary pairs a rope launch can carry: the frequencies travel in the parameter block (rope.cu's
/// `MAX_PAIRS` f64 fields, 512 bytes), so a launch needs no upload. V3 rotates 64 dims, 32 pairs.
const ROPE_MAX_PAIRS: usize = 64;

/// Threads per block of a one-block-per-row reduction over `n` elements: vocabulary-long rows get 1024 so
/// that the one block keeps more loads in flight. A power of two (sample.cu's tree needs it).
pub(super) fn row_block(n: usize) -> u32 {
    if n >= 16 * 1024 {
        1024
    } else {
        BLOCK
    }
}

/// Elements per block when a row is spread over several ([`row_chunks`]); a block of [`BLOCK`] threads
/// then loads 8 per thread per pass, and V3's vocabulary (129280) becomes 63 blocks per row.
pub(super) const ROW_CHUNK: usize = 2048;

/// Rows at least this long are spread over blocks of [`ROW_CHUNK`] elements: one block per row leaves a
/// GPU's other multiprocessors idle when rows are few (4 rows of the vocabulary were 4 blocks on 132 SMs).
/// Shorter rows stay one block each, where the extra launches would cost more than they save.
pub(super) const SPLIT_MIN: usize = 4 * ROW_CHUNK;

/// How many blocks a row of `n` elements is spread over: 1, or `n / ROW_CHUNK` (the last block of a row
/// also takes the remainder, so every block has at least [`ROW_CHUNK`] elements).
pub(super) fn row_chunks(n: usize) -> usize {
    if n >= SPLIT_MIN {
        n / ROW_CHUNK
    } else {
        1
    }
}

/// Whether `rows` rows of `chunks` blocks each fit the grid of one launch.
pub(super) fn rows_fit(rows: usize, chunks: usize) -> Support {
    if rows as u64 * chunks as u64 > MAX_GRID_X {
        return Support::Unsupported {
            reason: format!(
                "{rows} rows of {chunks} blocks each exceed the {MAX_GRID_X} blocks of one launch"
            ),
        };
    }
    Support::Native
}

pub fn supports(_ctx: &Ctx, op: &Op) -> Support {
    match op {
        Op::RmsNorm(o) => rows_fit(o.x.shape.first().copied().unwrap_or(0), 1),
        Op::Softmax(o) => {
            let n = o.x.shape.get(1).copied().unwrap_or(0);
            rows_fit(o.x.shape.first().copied().unwrap_or(0), row_chunks(n))
        }
        Op::Embedding(o) => rows_fit(o.ids.shape.first().copied().unwrap_or(0), 1),
        Op::Rope(o) if o.params.dim / 2 > ROPE_MAX_PAIRS => Support::Unsupported {
            reason: format!(
                "rotary dim {} exceeds the {} dims whose frequencies the kernel's parameter block carries",
                o.params.dim,
                2 * ROPE_MAX_PAIRS
            ),
        },
        _ => Support::Native,
    }
}

fn rows_variant(opk: i64, x: DType, w: Option<DType>, out: DType) -> Variant {
    let v = Variant::new(kernels::ROWS).ty("x", x);
    let v = match w {
        Some(w) => v.ty("w", w),
        None => v,
    };
    v.ty("out", out).konst("OPK", opk)
}

fn softmax_split_variant(x: DType, out: DType) -> Variant {
    Variant::new(kernels::SOFTMAX_SPLIT).ty("x", x).ty("out", out)
}

fn rope_variant(x: DType, out: DType) -> Variant {
    Variant::new(kernels::ROPE).ty("x", x).ty("out", out).konst("MAX_PAIRS", ROPE_MAX_PAIRS as i64)
}

fn embedding_variant(table: DType, out: DType) -> Variant {
    Variant::new(kernels::EMBEDDING).ty("table", table).ty("out", out)
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture.
pub fn catalog() -> Vec<Variant> {
    use DType::{BF16, F32};
    vec![
        rows_variant(0, BF16, Some(BF16), BF16),
        rows_variant(1, F32, None, F32),
        softmax_split_variant(F32, F32),
        rope_variant(BF16, BF16),
        embedding_variant(BF16, BF16),
    ]
}

/// One block per row of `x` `[R, N]`: `opk` 0 rms_norm (with `weight` and `eps`), 1 softmax.
fn rows(l: &Launch, opk: i64, x: &Tensor, weight: Option<&Tensor>, eps: f32, out: &Tensor) -> Result<()> {
    let (r, n) = (x.shape[0], x.shape[1]);
    if r * n == 0 {
        return Ok(());
    }
    let f = l.kernel(&rows_variant(opk, x.dtype, weight.map(|w| w.dtype), out.dtype))?;
    let w = match weight {
        Some(w) => l.addr("weight", w)?,
        None => 0,
    };
    let block = row_block(n);
    let params = Params::new()
        .u(n)
        .addr(l.addr("x", x)?)
        .u(row_stride(x))
        .addr(w)
        .addr(l.addr("out", out)?)
        .u(row_stride(out))
        .f(eps as f64);
    l.run(&f, l.grid(r as u64 * block as u64, block)?, params)
}

pub fn rms_norm(l: &Launch, o: &RmsNorm) -> Result<()> {
    rows(l, 0, &o.x, Some(&o.weight), o.eps, &o.out)
}

pub fn softmax(l: &Launch, o: &Softmax) -> Result<()> {
    let (r, n) = (o.x.shape[0], o.x.shape[1]);
    let chunks = row_chunks(n);
    if chunks == 1 || r == 0 {
        return rows(l, 1, &o.x, None, 0.0, &o.out);
    }
    let f = l.kernel(&softmax_split_variant(o.x.dtype, o.out.dtype))?;
    // Each block's max, then each block's sum: what a row's blocks need of each other between passes.
    let part = l.scratch(r * 2 * chunks * 4)?;
    let (x, out) = (l.addr("x", &o.x)?, l.addr("out", &o.out)?);
    let grid = l.grid((r * chunks) as u64 * BLOCK as u64, BLOCK)?;
    for pass in 0..3 {
        let params = Params::new()
            .u(n)
            .u(ROW_CHUNK)
            .u(chunks)
            .addr(x)
            .u(row_stride(&o.x))
            .addr(out)
            .u(row_stride(&o.out))
            .addr(part)
            .u(pass);
        l.run(&f, grid, params)?;
    }
    Ok(())
}

pub fn rope(l: &Launch, o: &Rope) -> Result<()> {
    let (t, h, d) = (o.x.shape[0], o.x.shape[1], o.x.shape[2]);
    let pairs = d / 2;
    let threads = t * h * pairs;
    if threads == 0 {
        return Ok(());
    }
    let f = l.kernel(&rope_variant(o.x.dtype, o.out.dtype))?;
    let mut params = Params::new()
        .u(t)
        .u(h)
        .u(pairs)
        .addr(l.addr("x", &o.x)?)
        .u(o.x.strides[0])
        .u(o.x.strides[1])
        .addr(l.addr("positions", &o.positions)?)
        .addr(l.addr("out", &o.out)?)
        .u(o.out.strides[0])
        .u(o.out.strides[1]);
    let freqs = o.params.inv_freqs();
    for i in 0..ROPE_MAX_PAIRS {
        params = params.f(freqs.get(i).map_or(0.0, |&f| f as f64));
    }
    l.run(&f, l.grid(threads as u64, BLOCK)?, params)
}

pub fn embedding(l: &Launch, o: &Embedding) -> Result<()> {
    let (v, d) = (o.table.shape[0], o.table.shape[1]);
    let t = o.ids.shape[0];
    if t == 0 {
        return Ok(());
    }
    let f = l.kernel(&embedding_variant(o.table.dtype, o.out.dtype))?;
    let site = l.site("ids", format!("ids must be in 0..{v}"));
    let params = Params::new()
        .u(d)
        .u(v)
        .addr(l.addr("table", &o.table)?)
        .addr(l.addr("ids", &o.ids)?)
        .addr(l.addr("out", &o.out)?)
        .u(row_stride(&o.out))
        .addr(l.err())
        .u(site as usize);
    l.run(&f, l.grid(t as u64 * BLOCK as u64, BLOCK)?, params)
}
