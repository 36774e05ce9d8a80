//! Tensors are views: a device buffer, a byte offset, a shape, element strides and a dtype. They own
//! nothing but a reference count on the buffer, so slicing a weight or a cache row allocates nothing.

use crate::backend::{Buffer, DeviceBuffer, DeviceId};
use crate::dtype::DType;
use crate::error::{Error, Result};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

#[derive(Clone)]
pub struct Tensor {
    pub buffer: Buffer,
    /// Byte offset of element [0, 0, …] in the buffer.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// Element (not byte) strides, one per dimension.
    pub strides: Vec<usize>,
    pub dtype: DType,
}

pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    strides
}

/// A buffer with no memory behind it: what [`Tensor::described`] holds.
#[derive(Debug)]
struct NoMemory {
    device: DeviceId,
    len: usize,
}

impl DeviceBuffer for NoMemory {
    fn len(&self) -> usize {
        self.len
    }

    fn device_id(&self) -> DeviceId {
        self.device
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Tensor {
    /// A row-major tensor of `shape` on `device` with no memory behind it: for asking
    /// `Device::supports` about an op without allocating. A stream given one refuses it (it is no
    /// backend's buffer).
    pub fn described(device: DeviceId, shape: &[usize], dtype: DType) -> Tensor {
        let len = shape.iter().product::<usize>() * dtype.size();
        Tensor::contiguous(Arc::new(NoMemory { device, len }), 0, shape, dtype)
    }

    /// A row-major view of `shape` starting at `offset` bytes.
    pub fn contiguous(buffer: Buffer, offset: usize, shape: &[usize], dtype: DType) -> Tensor {
        Tensor { buffer, offset, strides: contiguous_strides(shape), shape: shape.to_vec(), dtype }
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major with no gaps: the strides [`contiguous_strides`] gives, compared without building them
    /// (every op's validation and every launch's input scan ask, several times per launch).
    pub fn is_contiguous(&self) -> bool {
        if self.numel() == 0 {
            return true;
        }
        let mut expected = 1usize;
        self.strides.len() == self.shape.len()
            && self.shape.iter().zip(&self.strides).rev().all(|(&n, &s)| {
                let ok = s == expected;
                expected = expected.wrapping_mul(n);
                ok
            })
    }

    /// `span_bytes` and the element count, or `None` if either overflows `usize` (a shape no buffer can
    /// hold; validation rejects it before anything else is computed from the shape).
    pub fn checked_span_bytes(&self) -> Option<usize> {
        let numel = self.shape.iter().try_fold(1usize, |acc, &n| acc.checked_mul(n))?;
        if numel == 0 {
            return Some(0);
        }
        let last = self
            .shape
            .iter()
            .zip(&self.strides)
            .try_fold(0usize, |acc, (&n, &s)| acc.checked_add((n - 1).checked_mul(s)?))?;
        last.checked_add(1)?.checked_mul(self.dtype.size())
    }

    /// Bytes from `offset` to one past the last element this view can touch.
    pub fn span_bytes(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        let last: usize = self.shape.iter().zip(&self.strides).map(|(n, s)| (n - 1) * s).sum();
        (last + 1) * self.dtype.size()
    }

    /// The byte range of the buffer this view can touch.
    pub fn byte_range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.span_bytes()
    }

    /// The same bytes seen with another shape (the view must be contiguous).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if !self.is_contiguous() || shape.iter().product::<usize>() != self.numel() {
            return Err(Error::invalid(
                "reshape",
                "shape",
                format!(
                    "cannot view {self:?} as {shape:?} (needs a contiguous view with the same element count)"
                ),
            ));
        }
        Ok(Tensor::contiguous(self.buffer.clone(), self.offset, shape, self.dtype))
    }

    /// Elements `start..start + len` of dimension `dim`.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Tensor> {
        if dim >= self.rank() || start + len > self.shape[dim] {
            return Err(Error::invalid(
                "narrow",
                "range",
                format!("{start}..{} of dim {dim} is outside {self:?}", start + len),
            ));
        }
        let mut view = self.clone();
        view.offset += start * self.strides[dim] * self.dtype.size();
        view.shape[dim] = len;
        Ok(view)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:?}", self.dtype, self.shape)?;
        if !self.is_contiguous() {
            write!(f, " strides {:?}", self.strides)?;
        }
        write!(f, " @{}+{}", self.buffer.device_id(), self.offset)
    }
}
