//! The little a vendor runtime must provide: device memory, compiled kernels, ordered queues.
//! Addresses are device virtual addresses as `u64` (what kernels receive in their parameter blocks).

use crate::kernels::Variant;
use dsv3_core::Result;
use std::any::Any;
use std::sync::Arc;

/// What kernels are compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// NVIDIA, compiled by NVRTC for `arch` (`sm_80`, `sm_90a`, ...).
    Cuda { arch: String },
    /// AMD, compiled by hiprtc / hipcc for `arch` (`gfx90a`, `gfx942`, ...) with its wavefront width.
    Hip { arch: String, warp: u32 },
    /// The CPU, through the host C++ compiler (the emulator), with the warp width it emulates.
    Host { warp: u32 },
}

impl Target {
    /// Threads per warp / wavefront: a compile-time constant of every kernel variant.
    pub fn warp(&self) -> u32 {
        match self {
            Target::Cuda { .. } => 32,
            Target::Hip { warp, .. } | Target::Host { warp } => *warp,
        }
    }

    /// The macro `dsv3.cuh` selects its compiler branch by.
    pub fn define(&self) -> &'static str {
        match self {
            Target::Cuda { .. } => "DSV3_CUDA",
            Target::Hip { .. } => "DSV3_HIP",
            Target::Host { .. } => "DSV3_HOST",
        }
    }

    pub fn arch(&self) -> &str {
        match self {
            Target::Cuda { arch } | Target::Hip { arch, .. } => arch,
            Target::Host { .. } => "host",
        }
    }
}

/// A compiled kernel, opaque to everything but the runtime that made it.
pub type Function = Arc<dyn Any + Send + Sync>;

/// Grid and block of a launch (blocks are one-dimensional in every dsv3 kernel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub grid: [u32; 3],
    pub block: u32,
}

pub trait Runtime: Send + Sync {
    /// Backend name for errors (`cuda`, `hip`, `cuda-emu`).
    fn backend(&self) -> &'static str;
    /// For a queue to recognise a runtime of its own kind (the source of a peer copy).
    fn as_any(&self) -> &dyn Any;
    fn target(&self) -> &Target;

    /// `bytes` of device memory, 256-byte aligned. Zero bytes gives a valid, unique address.
    fn alloc(&self, bytes: usize) -> Result<u64>;

    /// Releases memory from `alloc`. Callers guarantee no queued work still uses it.
    fn free(&self, addr: u64, bytes: usize);

    /// Scratch memory from `alloc` is handed out again, the work that used it finished. GPUs keep what
    /// that work wrote (so this does nothing by default); the emulator overwrites it with garbage, so that
    /// a kernel reading scratch it did not write fails its tests instead of reading the last step's values.
    fn scratch_reused(&self, _addr: u64, _bytes: usize) {}

    /// Compiles (or loads from the disk cache) one kernel variant; `op` names the op for errors.
    fn compile(&self, op: &'static str, variant: &Variant) -> Result<Function>;

    fn new_queue(&self) -> Result<Box<dyn Queue>>;

    /// Whether this runtime's queues copy directly from `src`'s memory ([`Queue::copy_peer`]); where not,
    /// tensors cross through host memory.
    fn can_copy_from(&self, src: &dyn Runtime) -> bool;
}

/// In-order work on one device.
pub trait Queue: Send + Sync {
    /// Copies host bytes to `dst`; `src` may be reused when this returns.
    fn upload(&self, dst: u64, src: &[u8]) -> Result<()>;
    /// Copies device bytes to the host once earlier work on this queue has finished.
    fn download(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    fn copy(&self, src: u64, dst: u64, bytes: usize) -> Result<()>;
    /// Launches `f` with its parameter block (8-byte fields, see `launch::Params`).
    fn launch(&self, op: &'static str, f: &Function, dims: Dims, params: &[u64]) -> Result<()>;
    /// Waits for everything queued; errors of asynchronous work surface here.
    fn sync(&self) -> Result<()>;

    /// Marks the work queued so far, without waiting for it.
    fn record_event(&self) -> Result<Box<dyn QueueEvent>>;
    /// Orders later work on this queue after `event`: on the device when the runtime can (an event of its
    /// own kind), else by waiting for it on the host.
    fn wait_event(&self, event: &dyn QueueEvent) -> Result<()>;

    /// Copies `bytes` from `src`, memory of `src_runtime` (another device, one this runtime
    /// [`can_copy_from`](Runtime::can_copy_from)), to `dst` on this queue's device, ordered after this
    /// queue's earlier work (the caller orders it after the source's).
    fn copy_peer(&self, src_runtime: &dyn Runtime, src: u64, dst: u64, bytes: usize) -> Result<()>;

    /// Starts capturing: launches and copies enqueued from now on are recorded, not run, until
    /// [`end_capture`](Queue::end_capture). The stream layer calls nothing else on a capturing queue.
    fn begin_capture(&self) -> Result<()>;
    /// Stops capturing and makes the recorded work replayable; the queue runs work eagerly again whether
    /// or not this succeeds.
    fn end_capture(&self) -> Result<Box<dyn QueueGraph>>;
}

/// Work captured on a queue, replayable on that queue (the stream layer keeps the queue, and every buffer
/// the work uses, alive as long as the graph).
pub trait QueueGraph: Send + Sync {
    /// Enqueues the captured work on its queue, after the queue's earlier work.
    fn launch(&self) -> Result<()>;
}

/// A point in one queue's work (see [`Queue::record_event`]).
pub trait QueueEvent: Send + Sync {
    /// Blocks until the recorded work has finished.
    fn synchronize(&self) -> Result<()>;
    /// For a queue to recognise an event of its own runtime.
    fn as_any(&self) -> &dyn Any;
}
