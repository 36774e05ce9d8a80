//! Device memory: one wgpu storage buffer per allocation.

use dsv3_core::{DeviceBuffer, DeviceId};
use std::any::Any;

pub struct WgpuBuffer {
    pub(crate) raw: wgpu::Buffer,
    /// The size the caller asked for; the wgpu buffer is rounded up to whole 4-byte words (bindings and
    /// copies work in words) and is at least one word long.
    len: usize,
    device: DeviceId,
}

impl WgpuBuffer {
    pub(crate) fn new(raw: wgpu::Buffer, len: usize, device: DeviceId) -> WgpuBuffer {
        WgpuBuffer { raw, len, device }
    }

    /// Bytes the wgpu buffer really has.
    pub(crate) fn capacity(&self) -> u64 {
        self.raw.size()
    }
}

/// The size of the wgpu buffer behind a `len`-byte allocation.
pub(crate) fn padded(len: usize) -> u64 {
    (len.max(4) as u64).div_ceil(4) * 4
}

impl std::fmt::Debug for WgpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuBuffer({} bytes on {})", self.len, self.device)
    }
}

impl DeviceBuffer for WgpuBuffer {
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
