//! Checks of argument *contents* that only a device which can read its memory can make at launch (a GPU
//! reports the same faults at `sync`). Shared by both CPU modes.

use crate::bind::{Args, In};
use dsv3_core::ops::{Access, CachePages, RowSampling, Sample};
use dsv3_core::{Error, Op, Result};

/// `expert_offsets` starts at 0, never decreases, and ends at `rows`; returned as usize.
pub fn expert_offsets(op: &'static str, offsets: &In, rows: usize) -> Result<Vec<usize>> {
    let v = offsets.i32s();
    let ok = v.first() == Some(&0) && v.windows(2).all(|w| w[0] <= w[1]) && v.last() == Some(&(rows as i32));
    if !ok {
        return Err(Error::invalid(op, "expert_offsets", format!("must rise from 0 to {rows}, got {v:?}")));
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// Every id in `0..bound`.
pub fn ids_in_range(op: &'static str, arg: &'static str, ids: &In, bound: usize) -> Result<Vec<usize>> {
    let v = ids.i32s();
    if let Some((i, bad)) = v.iter().enumerate().find(|(_, &x)| x < 0 || x as usize >= bound) {
        return Err(Error::invalid(op, arg, format!("element {i} is {bad}, outside 0..{bound}")));
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// Every `kv_lens[b]` in `t..=l` (the new tokens are part of the cache, which holds `l` rows).
pub fn kv_lens(op: &'static str, lens: &In, t: usize, l: usize) -> Result<Vec<usize>> {
    let v = lens.i32s();
    if let Some((b, bad)) = v.iter().enumerate().find(|(_, &x)| x < t as i32 || x as usize > l) {
        return Err(Error::invalid(
            op,
            "kv_lens",
            format!("sequence {b} has length {bad}, outside {t}..={l}"),
        ));
    }
    Ok(v.into_iter().map(|x| x as usize).collect())
}

/// The cache row (of the cache viewed as `[P · page, W]`) of each position in `positions[b]` of every
/// sequence `b`, from the op's `block_table` input where it has one: every entry read must name a page of
/// the pool.
pub fn cache_rows(
    op: &'static str,
    args: &Args,
    pages: CachePages,
    positions: &[std::ops::Range<usize>],
) -> Result<Vec<Vec<usize>>> {
    let table = args.input("block_table").ok().map(|t| t.i32s());
    positions
        .iter()
        .enumerate()
        .map(|(b, range)| {
            range
                .clone()
                .map(|u| {
                    pages.row(table.as_deref(), b, u).ok_or_else(|| {
                        let table = table.as_deref().unwrap_or(&[]);
                        let entry = table[b * pages.pages_per_seq + u / pages.page];
                        let why = format!(
                            "sequence {b}, page {}: {entry} is outside the pool's 0..{}",
                            u / pages.page,
                            pages.pool
                        );
                        Error::invalid(op, "block_table", why)
                    })
                })
                .collect()
        })
        .collect()
}

/// Inputs must be finite. Exempt: weight tensors (`b`, `table`), validated once when a checkpoint is
/// loaded (scanning them on every launch would double a decode GEMM's memory traffic), and attention
/// caches (`kv_cache`, `k`, `v`), whose rows past `kv_lens` are ignored by contract and may hold anything.
/// Sampling ops accept −inf logits (a masked token) but not NaN or +inf.
pub fn finite_inputs(op: &Op, args: &Args) -> Result<()> {
    let allow_neg_inf = matches!(op, Op::Argmax(_) | Op::TopK(_) | Op::Sample(_));
    let ok = |v: f64| v.is_finite() || allow_neg_inf && v == f64::NEG_INFINITY;
    // In argument order, so the error names the same argument whatever the map's order.
    for (arg, t, access) in op.tensors() {
        if access != Access::Read
            || !t.dtype.is_float()
            || matches!(arg, "b" | "table" | "kv_cache" | "k" | "v")
        {
            continue;
        }
        let input = args.input(arg)?;
        if let Some((index, value)) = first_failing(&input, ok) {
            return Err(Error::NonFinite { op: op.name(), arg, index, value });
        }
    }
    Ok(())
}

/// The first element (logical index) failing `ok`. Contiguous views are scanned as bytes, without
/// building a decoded copy.
fn first_failing(x: &In, ok: impl Fn(f64) -> bool) -> Option<(usize, f64)> {
    let dtype = x.t.dtype;
    if !x.t.is_contiguous() {
        return x.to_f64().into_iter().enumerate().find(|(_, v)| !ok(*v));
    }
    if let Some(format) = dtype.fp8_format() {
        // One byte per value: judge each of the 256 codes once rather than decoding every element.
        let fails: [bool; 256] = std::array::from_fn(|c| !ok(format.decode(c as u8) as f64));
        let bytes = &x.bytes[..x.t.numel()];
        return bytes.iter().position(|&c| fails[c as usize]).map(|i| (i, format.decode(bytes[i]) as f64));
    }
    (0..x.t.numel()).map(|i| (i, dtype.read_f64(x.bytes, i))).find(|(_, v)| !ok(*v))
}

/// Each row's sampling parameters and the key of its uniforms ([`Sample::row`]), from the op's
/// `row_params` input where it has one: every entry must follow [`RowSampling`]'s rules.
pub fn sample_rows(op: &Sample, args: &Args) -> Result<Vec<(RowSampling, u64)>> {
    let rows = match &op.row_params {
        Some(_) => Some(RowSampling::decode("sample", &args.input("row_params")?.i32s())?),
        None => None,
    };
    Ok((0..op.logits.shape[0]).map(|r| op.row(r, rows.as_deref())).collect())
}
