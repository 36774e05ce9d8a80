//! Moving a tensor from one device to another: the one place activations cross a device boundary.
//!
//! Where the destination's backend has a direct path from the source device ([`Stream::copy_from_peer`]:
//! CUDA peer copies, the GPU emulator's and the CPU's host memory), the bytes go straight across; every other
//! pair goes through host memory (download on the source stream, which waits for the work that produced the
//! tensor, then upload on the destination stream). Callers do not change either way.

use crate::backend::{Buffer, Device, Stream};
use crate::error::Result;
use crate::tensor::Tensor;

/// `t` as a tensor on `dst_device`: `t` itself when it already lives there, else a copy of the bytes its
/// view spans in a new buffer, with the same shape and strides, ordered after `src`'s earlier work and
/// before `dst`'s later work.
pub fn move_tensor(
    t: &Tensor,
    src: &dyn Stream,
    dst_device: &dyn Device,
    dst: &dyn Stream,
) -> Result<Tensor> {
    if t.buffer.device_id() == dst_device.id() {
        return Ok(t.clone());
    }
    copy_to(t, src, dst_device.alloc(t.span_bytes().max(1))?, dst)
}

/// [`move_tensor`] into a buffer the caller provides (of `dst`'s device, holding at least the bytes `t`'s
/// view spans): a caller that reuses its buffers moves without allocating.
pub fn copy_to(t: &Tensor, src: &dyn Stream, buffer: Buffer, dst: &dyn Stream) -> Result<Tensor> {
    let bytes = t.span_bytes();
    match dst.copy_from_peer(src, &t.buffer, t.offset, &buffer, 0, bytes) {
        Some(copied) => copied?,
        None => {
            let mut host = vec![0u8; bytes];
            src.download(&t.buffer, t.offset, &mut host)?;
            dst.upload(&buffer, 0, &host)?;
        }
    }
    Ok(Tensor { buffer, offset: 0, shape: t.shape.clone(), strides: t.strides.clone(), dtype: t.dtype })
}
