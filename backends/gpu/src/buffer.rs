//! Device memory as a dsv3 buffer: an address from the runtime, released when the last handle drops.

use crate::runtime::Runtime;
use dsv3_core::{DeviceBuffer, DeviceId};
use std::any::Any;
use std::fmt;
use std::sync::Arc;

pub struct GpuBuffer {
    pub addr: u64,
    pub len: usize,
    pub device: DeviceId,
    runtime: Arc<dyn Runtime>,
}

impl GpuBuffer {
    pub fn new(runtime: Arc<dyn Runtime>, device: DeviceId, addr: u64, len: usize) -> GpuBuffer {
        GpuBuffer { addr, len, device, runtime }
    }

    /// The runtime whose memory this is (for a peer copy from it).
    pub fn runtime(&self) -> &dyn Runtime {
        self.runtime.as_ref()
    }
}

impl Drop for GpuBuffer {
    fn drop(&mut self) {
        // Streams keep every buffer an enqueued launch uses alive until their next sync (see
        // `stream::GpuStream`), so no queued work can still touch this memory.
        self.runtime.free(self.addr, self.len);
    }
}

impl fmt::Debug for GpuBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GpuBuffer({}, {:#x}, {} bytes)", self.device, self.addr, self.len)
    }
}

impl DeviceBuffer for GpuBuffer {
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
