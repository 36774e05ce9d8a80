//! Device memory: an `aclrtMalloc` allocation owned by one value and freed when it drops.

use crate::device::Context;
use crate::ffi::Raw;
use dsv3_core::{DeviceBuffer, DeviceId, Result};
use std::any::Any;
use std::sync::Arc;

/// One allocation. Holds its context, so the context (and the device reference behind it) outlives the
/// memory, as CANN requires: memory first, then the context.
pub(crate) struct DeviceMem {
    ctx: Arc<Context>,
    ptr: Raw,
    len: usize,
}

impl DeviceMem {
    /// `len` bytes, uninitialised. Zero bytes allocates nothing (aclrtMalloc rejects a size of 0).
    pub(crate) fn alloc(ctx: &Arc<Context>, len: usize) -> Result<DeviceMem> {
        let ptr = if len == 0 { Raw::null() } else { ctx.enter()?.malloc(len)? };
        Ok(DeviceMem { ctx: ctx.clone(), ptr, len })
    }

    pub(crate) fn ptr(&self) -> Raw {
        self.ptr
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for DeviceMem {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        // A failure here cannot be reported (drop has no caller to tell) and leaves at worst a leak that the
        // runtime reclaims when the process exits; the free is attempted even if the context switch failed.
        let _ = self.ctx.enter();
        let _ = self.ctx.cann().free(self.ptr);
    }
}

/// A `DeviceBuffer` of this backend.
pub(crate) struct AscendBuffer {
    pub(crate) mem: DeviceMem,
    pub(crate) device: DeviceId,
}

impl std::fmt::Debug for AscendBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AscendBuffer({} bytes at {:?} on {})", self.mem.len(), self.mem.ptr().0, self.device)
    }
}

impl DeviceBuffer for AscendBuffer {
    fn len(&self) -> usize {
        self.mem.len()
    }

    fn device_id(&self) -> DeviceId {
        self.device
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
