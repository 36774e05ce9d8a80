//! Host memory as a device buffer. The bytes sit behind a mutex: every access (upload, download, copy,
//! an op's launch) locks the buffers it touches, so ops on different threads never race.

use dsv3_core::{DeviceBuffer, DeviceId};
use std::any::Any;
use std::sync::{Mutex, MutexGuard};

/// Backing store of u64 words so that every element type up to 8 bytes is aligned at any offset that
/// is a multiple of its size (which `Op::validate` checks).
pub struct CpuBuffer {
    words: Mutex<Vec<u64>>,
    len: usize,
    device: DeviceId,
}

impl CpuBuffer {
    pub fn new(device: DeviceId, len: usize) -> Option<CpuBuffer> {
        let mut words = Vec::new();
        words.try_reserve_exact(len.div_ceil(8)).ok()?;
        words.resize(len.div_ceil(8), 0);
        Some(CpuBuffer { words: Mutex::new(words), len, device })
    }

    /// Exclusive access to the bytes. A poisoned lock only means another thread panicked while holding
    /// it; the bytes are plain data and stay usable.
    pub fn lock(&self) -> MutexGuard<'_, Vec<u64>> {
        self.words.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

impl std::fmt::Debug for CpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBuffer({} bytes on {})", self.len, self.device)
    }
}

impl DeviceBuffer for CpuBuffer {
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

/// The bytes of a locked buffer (its logical length, not the padded word count).
pub fn bytes_mut(words: &mut [u64], len: usize) -> &mut [u8] {
    &mut bytemuck::cast_slice_mut(words)[..len]
}
