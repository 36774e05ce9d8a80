//! Checks of argument *contents* that only a device which can read its memory can make at launch (a GPU
//! reports the same faults at `sync`). Shared by both CPU modes.

use crate::bind::In;
use dsv3_core::ops::Access;
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

/// Inputs must be finite. Weight tensors (`b`, `table`) are exempt: they are validated once when a
/// checkpoint is loaded, and scanning them on every launch would double a decode GEMM's memory traffic.
/// Sampling ops accept −inf logits (a masked token) but not NaN or +inf.
pub fn finite_inputs(op: &Op, inputs: &[(&'static str, In)]) -> Result<()> {
    let allow_neg_inf = matches!(op, Op::Argmax(_) | Op::TopK(_) | Op::Sample(_));
    for (arg, input) in inputs {
        if !input.t.dtype.is_float() || matches!(*arg, "b" | "table") {
            continue;
        }
        let values = input.to_f64();
        if let Some((index, &value)) = values
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() || allow_neg_inf && **v == f64::NEG_INFINITY))
        {
            return Err(Error::NonFinite { op: op.name(), arg, index, value });
        }
    }
    Ok(())
}

/// Names of an op's read arguments.
pub fn input_names(op: &Op) -> Vec<&'static str> {
    op.tensors().into_iter().filter(|(_, _, a)| *a == Access::Read).map(|(n, _, _)| n).collect()
}
