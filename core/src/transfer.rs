//! Moving a tensor from one device to another: the one place activations cross a device boundary.
//!
//! Today every pair goes through host memory (download on the source stream, which waits for the work that
//! produced the tensor, then upload on the destination stream). A backend pair with a direct path (CUDA
//! peer access) would short-cut here; callers do not change.

use crate::backend::{Device, Stream};
use crate::error::Result;
use crate::tensor::Tensor;

/// `t` as a tensor on `dst_device`: `t` itself when it already lives there, else a copy of the bytes its
/// view spans, with the same shape and strides, ordered after `src`'s earlier work and before `dst`'s later
/// work.
pub fn move_tensor(
    t: &Tensor,
    src: &dyn Stream,
    dst_device: &dyn Device,
    dst: &dyn Stream,
) -> Result<Tensor> {
    if t.buffer.device_id() == dst_device.id() {
        return Ok(t.clone());
    }
    let mut host = vec![0u8; t.span_bytes()];
    src.download(&t.buffer, t.offset, &mut host)?;
    let buffer = dst_device.alloc(host.len().max(1))?;
    dst.upload(&buffer, 0, &host)?;
    Ok(Tensor { buffer, offset: 0, shape: t.shape.clone(), strides: t.strides.clone(), dtype: t.dtype })
}
