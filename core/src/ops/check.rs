//! Argument checks shared by every op's `validate`, so that every backend rejects bad input with the
//! same typed error naming the op and the argument.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use smallvec::SmallVec;

/// The tensor's view fits in its buffer and its offset is aligned to its element size.
pub fn in_bounds(op: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    if t.strides.len() != t.shape.len() {
        return Err(Error::invalid(
            op,
            arg,
            format!("{} strides for a rank-{} shape", t.strides.len(), t.rank()),
        ));
    }
    if !t.offset.is_multiple_of(t.dtype.size()) {
        return Err(Error::invalid(
            op,
            arg,
            format!("byte offset {} is not a multiple of {}", t.offset, t.dtype.size()),
        ));
    }
    let Some(end) = t.checked_span_bytes().and_then(|span| span.checked_add(t.offset)) else {
        return Err(Error::invalid(
            op,
            arg,
            format!("shape {:?} with strides {:?} overflows the address space", t.shape, t.strides),
        ));
    };
    if end > t.buffer.len() {
        return Err(Error::invalid(
            op,
            arg,
            format!("view {t:?} needs bytes up to {end} but its buffer holds {}", t.buffer.len()),
        ));
    }
    Ok(())
}

pub fn dtype(op: &'static str, arg: &'static str, t: &Tensor, allowed: &[DType]) -> Result<()> {
    if allowed.contains(&t.dtype) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
    Err(Error::invalid(op, arg, format!("dtype {} is not one of {}", t.dtype, names.join(", "))))
}

pub fn rank(op: &'static str, arg: &'static str, t: &Tensor, rank: usize) -> Result<()> {
    if t.rank() == rank {
        return Ok(());
    }
    Err(Error::invalid(op, arg, format!("expected rank {rank}, got shape {:?}", t.shape)))
}

pub fn shape(op: &'static str, arg: &'static str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.shape == expected {
        return Ok(());
    }
    Err(Error::invalid(op, arg, format!("expected shape {expected:?}, got {:?}", t.shape)))
}

pub fn contiguous(op: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    if t.is_contiguous() {
        return Ok(());
    }
    Err(Error::invalid(op, arg, format!("must be contiguous (row-major), got {t:?}")))
}

/// Elements along the last dimension are adjacent (any other stride is free).
pub fn unit_last_stride(op: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    if t.shape.last().is_none_or(|&n| n <= 1) || t.strides.last() == Some(&1) {
        return Ok(());
    }
    Err(Error::invalid(op, arg, format!("elements of the last dimension must be adjacent, got {t:?}")))
}

/// No two elements share memory: with the dimensions ordered by stride, each stride reaches past the
/// whole extent of the ones below it. (Sufficient, and what every strided view the model writes meets;
/// an output must be injective or the result would depend on the order of writes.)
pub fn non_overlapping(op: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    let mut dims: SmallVec<[(usize, usize); 8]> =
        t.strides.iter().copied().zip(t.shape.iter().copied()).filter(|&(_, n)| n > 1).collect();
    dims.sort_unstable();
    let mut reach = 1usize;
    for (stride, n) in dims {
        if stride < reach {
            return Err(Error::invalid(op, arg, format!("has elements that share memory, got {t:?}")));
        }
        reach = stride.saturating_mul(n);
    }
    Ok(())
}

/// Rows of a row-major matrix may be strided (a view into a wider matrix) but elements within a row
/// must be adjacent.
pub fn row_major(op: &'static str, arg: &'static str, t: &Tensor) -> Result<()> {
    if t.rank() == 2
        && (t.strides[1] == 1 || t.shape[1] <= 1)
        && (t.strides[0] >= t.shape[1] || t.shape[0] <= 1)
    {
        return Ok(());
    }
    Err(Error::invalid(op, arg, format!("must be a row-major matrix (unit column stride), got {t:?}")))
}

pub fn condition(
    op: &'static str,
    arg: &'static str,
    ok: bool,
    reason: impl FnOnce() -> String,
) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(op, arg, reason()))
    }
}

pub const FLOATS: &[DType] = &[DType::F32, DType::F16, DType::BF16];
pub const ACTIVATIONS: &[DType] = &[DType::F32, DType::BF16];
pub const FP8: &[DType] = &[DType::F8E4M3Fn, DType::F8E4M3Fnuz, DType::F8E5M2];
pub const SCALES: &[DType] = &[DType::F32, DType::Ue8m0];
