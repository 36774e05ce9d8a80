//! A device's activation buffers, reused from step to step: a decode step asks for the same sizes every
//! time, so after the first step of a shape it allocates nothing.
//!
//! Sizes are rounded up to a power of two (at least 256 bytes), so that shapes that differ a little from
//! step to step (the rows routed to each device's experts) share buffers. A buffer is free when nothing but
//! the workspace holds it: every tensor viewing it has been dropped. So a caller that keeps a step's output
//! (the logits) keeps its buffer out of reuse, and nothing is ever handed out twice at once.
//!
//! One workspace serves one stream. Dropping the last tensor of a buffer does not mean the work that uses
//! it has run: a stream may still hold it queued (wgpu records dispatches and submits them in batches).
//! Work given later to the same stream runs after it, so reuse within a stream is safe; reuse by another
//! stream is not (it could overwrite the buffer before the first stream's queued work reads it), which is
//! why a device's side stream has a workspace of its own.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use dsv3_core::{Buffer, Device, Result};

/// How many busy buffers of a size are looked past before a new one is allocated.
const PROBES: usize = 4;

pub(crate) struct Workspace {
    device: Arc<dyn Device>,
    /// Per rounded size, its buffers, least recently handed out first.
    rings: Mutex<HashMap<usize, VecDeque<Buffer>>>,
}

impl Workspace {
    pub fn new(device: Arc<dyn Device>) -> Workspace {
        Workspace { device, rings: Mutex::new(HashMap::new()) }
    }

    /// A buffer of at least `bytes` that nothing else uses: a free one of its size class, else a new one.
    pub fn take(&self, bytes: usize) -> Result<Buffer> {
        let class = bytes.max(256).next_power_of_two();
        let mut rings = self.rings.lock().unwrap_or_else(|e| e.into_inner());
        let ring = rings.entry(class).or_default();
        // The least recently handed out buffers are the likeliest to be free; a busy one moves to the back.
        for _ in 0..PROBES.min(ring.len()) {
            let Some(b) = ring.pop_front() else { break };
            let free = Arc::strong_count(&b) == 1;
            ring.push_back(b.clone());
            if free {
                return Ok(b);
            }
        }
        let b = self.device.alloc(class)?;
        ring.push_back(b.clone());
        Ok(b)
    }
}
