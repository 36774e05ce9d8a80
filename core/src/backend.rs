//! The traits every backend implements. They are object-safe: backends are discovered and chosen at run
//! time, several live in one process, and adding one touches no enum in this crate.
//!
//! * [`Backend`] — one per implementation (cpu, cuda, hip, wgpu, ascend): enumerates devices and never
//!   panics; an absent driver is `Err(Error::Unavailable { reason })`.
//! * [`Device`] — one opened device: what it is, what it can do, whether it runs a given op, memory.
//! * [`Stream`] — ordered execution on a device. Work may run asynchronously; `sync` is where deferred
//!   errors surface. Downloads are ordered after earlier work on the same stream.
//! * [`Graph`] — a stream's work captured once (`begin_capture` / `end_capture`) and replayed as a whole,
//!   where the backend can (CUDA graphs, hipGraph, the GPU emulator).

use crate::dtype::DType;
use crate::error::Result;
use crate::fp8::Fp8Format;
use crate::ops::Op;
use std::any::Any;
use std::fmt;
use std::sync::Arc;

/// Which device a buffer belongs to: backend name, device ordinal, and a process-unique instance id
/// so that buffers of two opened copies of the same device are told apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeviceId {
    pub backend: &'static str,
    pub ordinal: usize,
    pub instance: u64,
}

impl DeviceId {
    pub fn new(backend: &'static str, ordinal: usize) -> DeviceId {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        DeviceId { backend, ordinal, instance: NEXT.fetch_add(1, Ordering::Relaxed) }
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.backend, self.ordinal)
    }
}

/// Device memory. Owned by the device that allocated it and released when the last handle drops.
/// Backends downcast through `as_any` to their own buffer type.
pub trait DeviceBuffer: Send + Sync + fmt::Debug {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn device_id(&self) -> DeviceId;
    fn as_any(&self) -> &dyn Any;
}

pub type Buffer = Arc<dyn DeviceBuffer>;

/// The concrete `T` behind `b`, checked to belong to `device` and to hold bytes `offset..offset + len`: what
/// every stream's upload, download and copy must know before touching memory. Errors are
/// `Error::Buffer { backend, .. }` prefixed with `what` ("upload", "copy source", ...).
pub fn own_buffer<'b, T: 'static>(
    backend: &str,
    device: DeviceId,
    b: &'b Buffer,
    offset: usize,
    len: usize,
    what: &str,
) -> crate::Result<&'b T> {
    let fail = |reason: String| crate::Error::Buffer { backend: backend.to_string(), reason };
    if b.device_id() != device {
        return Err(fail(format!("{what}: buffer belongs to {}, not {device}", b.device_id())));
    }
    if offset.checked_add(len).is_none_or(|end| end > b.len()) {
        let end = offset.saturating_add(len);
        return Err(fail(format!("{what}: bytes {offset}..{end} outside a {}-byte buffer", b.len())));
    }
    b.as_any().downcast_ref::<T>().ok_or_else(|| fail(format!("{what}: not a {backend} buffer")))
}

/// How a device answers "can you run this op (with these dtypes and shapes)?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Support {
    /// A kernel written for it.
    Native,
    /// A vendor library's kernel (cuBLASLt), not dsv3's: native arithmetic, but in the library's own
    /// accumulation order, which the conformance suite bounds by a rule of its own; `library` names it
    /// and its version.
    Library {
        library: String,
    },
    /// A dsv3 kernel on matrix units (tensor cores) that rounds one intermediate more than the op's
    /// contract (attention's softmax weights to bf16 for the P·V product): native arithmetic, bounded by
    /// the op's own tensor-core rule in the conformance suite; `rounding` says what is rounded.
    TensorCore {
        rounding: String,
    },
    /// Runs, but through something slower or wider than the op's natural form (e.g. FP8 decoded to f32
    /// in-shader, unabsorbed attention); `via` says what.
    Emulated {
        via: String,
    },
    Unsupported {
        reason: String,
    },
}

impl Support {
    pub fn is_runnable(&self) -> bool {
        !matches!(self, Support::Unsupported { .. })
    }

    /// Runs at the hardware's own width: a dsv3 kernel or a vendor library's.
    pub fn is_native(&self) -> bool {
        matches!(self, Support::Native | Support::Library { .. } | Support::TensorCore { .. })
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Native => f.write_str("native"),
            Support::Library { library } => write!(f, "native via {library}"),
            Support::TensorCore { rounding } => write!(f, "native on tensor cores ({rounding})"),
            Support::Emulated { via } => write!(f, "emulated via {via}"),
            Support::Unsupported { reason } => write!(f, "unsupported: {reason}"),
        }
    }
}

/// What a dtype can be used for on a device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DTypeUsage {
    /// Stored in buffers and moved.
    pub storage: bool,
    /// Converted to and from f32 in kernels.
    pub conversion: bool,
    /// Native arithmetic (not through a wider type).
    pub arithmetic: bool,
    /// Matrix units (tensor cores, AMX, cooperative matrices) take it as an input.
    pub matrix: bool,
}

/// Peak rates the performance reports divide by. Measured where the backend can (the CPU probes its FMA
/// throughput and memory bandwidth); datasheet values otherwise, which `source` says.
#[derive(Clone, Debug, PartialEq)]
pub struct Peak {
    pub f32_flops: f64,
    pub bf16_flops: f64,
    pub fp8_flops: f64,
    pub bytes_per_s: f64,
    pub source: String,
}

#[derive(Clone, Debug)]
pub struct Capabilities {
    pub dtypes: Vec<(DType, DTypeUsage)>,
    /// FP8 formats the device computes in natively, preferred first.
    pub fp8_formats: Vec<Fp8Format>,
    pub memory_bytes: u64,
    /// Threads that execute in lockstep (warp 32, wave 64, subgroup, SIMD lanes of f32 on a CPU).
    pub subgroup_size: u32,
    /// Whether a stream's work can be captured and replayed (`Stream::begin_capture`: CUDA graphs, hipGraph,
    /// the GPU emulator).
    pub graph_capture: bool,
    /// Whether its buffers are host RAM (the CPU backends, the emulators, a software Vulkan driver):
    /// devices with it draw on one pool, so a placement's memory check sums them.
    pub host_memory: bool,
    /// Free-form features worth showing (`avx512_bf16`, `VK_KHR_cooperative_matrix`, `sm_90a` …).
    pub features: Vec<String>,
}

impl Capabilities {
    pub fn usage(&self, dtype: DType) -> DTypeUsage {
        self.dtypes.iter().find(|(d, _)| *d == dtype).map(|(_, u)| *u).unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub backend: &'static str,
    pub ordinal: usize,
    pub name: String,
    pub vendor: String,
    /// Architecture as the vendor names it: `x86_64+avx512`, `sm_90a`, `gfx942`, `Ascend910B`.
    pub arch: String,
    pub memory_bytes: u64,
}

/// One implementation of the op set for one family of devices.
pub trait Backend: Send + Sync {
    /// Short lowercase name used on the command line (`cpu`, `cuda`, `hip`, `wgpu`, `ascend`).
    fn name(&self) -> &'static str;

    /// The devices present. Never panics: a missing driver or library is `Error::Unavailable` with the
    /// reason; a driver with zero devices is `Error::Unavailable` too ("no device").
    fn devices(&self) -> Result<Vec<DeviceInfo>>;

    fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>>;
}

pub trait Device: Send + Sync {
    fn id(&self) -> DeviceId;
    fn info(&self) -> &DeviceInfo;
    fn capabilities(&self) -> &Capabilities;

    /// Whether (and how) this device runs `op` with its dtypes and shapes. Validation of the op itself
    /// (shape agreement) is separate: `Op::validate`.
    fn supports(&self, op: &Op) -> Support;

    /// Peak rates for "% of peak" figures; `None` when unknown.
    fn peak(&self) -> Option<Peak>;

    /// Uninitialised device memory of `bytes` bytes.
    fn alloc(&self, bytes: usize) -> Result<Buffer>;

    /// The stream ops go to unless the caller makes another.
    fn default_stream(&self) -> Arc<dyn Stream>;

    fn new_stream(&self) -> Result<Arc<dyn Stream>>;
}

/// A point in one stream's work, made by [`Stream::record`]. Other streams order their later work after it
/// with [`Stream::wait`]; the host waits for it with [`Event::synchronize`]. Backends downcast through
/// `as_any` to their own event type, to wait for it on the device.
pub trait Event: Send + Sync {
    /// Blocks until the recorded work has finished. Errors the driver reports for that work surface here;
    /// errors a backend defers to its stream's `sync` (the GPU kernels' argument checks) surface at the
    /// recording stream's next `sync`, as they would without the event.
    fn synchronize(&self) -> Result<()>;
    fn as_any(&self) -> &dyn Any;
}

/// An event whose work has already finished: what a stream returns when its launches run to completion
/// (the CPU), or when it waited for its work while recording.
pub struct Finished;

impl Event for Finished {
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Work captured from a stream by [`Stream::begin_capture`] / [`Stream::end_capture`]: the same launches
/// and device-to-device copies, on the same buffers (which the graph keeps alive), run again by `replay`
/// on the stream it was captured on, after that stream's earlier work. Whatever those buffers hold when it
/// runs is what the work reads: new inputs are uploaded into the captured input buffers before a replay.
pub trait Graph: Send + Sync {
    /// Enqueues the captured work once more. Like a launch, its device-side errors surface at the
    /// stream's next `sync`.
    fn replay(&self) -> Result<()>;
}

/// The error of a capture call on a stream that cannot capture (the defaults of [`Stream::begin_capture`]
/// and [`Stream::end_capture`]): its device's `Capabilities::graph_capture` is false.
fn no_capture(call: &'static str) -> crate::Error {
    crate::Error::unsupported("stream", call, "this backend cannot capture work as a graph")
}

pub trait Stream: Send + Sync {
    /// Copy host bytes into `dst` at `offset`, ordered after earlier work on this stream.
    fn upload(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()>;

    /// Copy bytes out; returns once they are on the host (waits for earlier work on this stream).
    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()>;

    /// Device-to-device copy within this device.
    fn copy(
        &self,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()>;

    /// Enqueue one op. The op is validated first (`Op::validate`); errors the device only notices while
    /// running may be reported here or at the next `sync`.
    fn launch(&self, op: &Op) -> Result<()>;

    /// Wait for all enqueued work; surfaces errors deferred by asynchronous execution.
    fn sync(&self) -> Result<()>;

    /// Marks the work enqueued so far, for another stream (of this device or any other) to wait for.
    /// This default waits for that work on the host and returns a [`Finished`] event: correct on every
    /// backend, and it costs nothing where launches already run to completion (the CPU). A backend with
    /// device-side events (CUDA, HIP) overrides it so that recording does not block the host.
    fn record(&self) -> Result<Arc<dyn Event>> {
        self.sync()?;
        Ok(Arc::new(Finished))
    }

    /// Orders this stream's later work after `event`, recorded on any stream of any device. This default
    /// waits on the host; a backend overrides it for its own events to wait on the device instead.
    fn wait(&self, event: &dyn Event) -> Result<()> {
        event.synchronize()
    }

    /// Copies `bytes` bytes of `src` at `src_offset`, a buffer of another device whose work `src_stream`
    /// orders, into `dst` at `dst_offset`, a buffer of this stream's device, without staging them in host
    /// memory: after `src_stream`'s earlier work, and before the later work of both streams.
    /// `None` when this backend has no direct path from `src`'s device (nothing was done: the caller stages
    /// through the host, `transfer::move_tensor`). Only `move_tensor` calls it, so that one place decides
    /// how a tensor crosses devices.
    fn copy_from_peer(
        &self,
        _src_stream: &dyn Stream,
        _src: &Buffer,
        _src_offset: usize,
        _dst: &Buffer,
        _dst_offset: usize,
        _bytes: usize,
    ) -> Option<Result<()>> {
        None
    }

    /// Starts recording instead of running: launches and device-to-device copies enqueued until
    /// [`end_capture`](Stream::end_capture) are captured, not run. While capturing, anything that needs the
    /// host in the middle of the stream's work — `upload`, `download`, `sync`, events, peer copies — is an
    /// `InvalidArgument` error naming the call, and the capture is spoilt (`end_capture` then fails too).
    /// This default: `Unsupported` (devices whose `Capabilities::graph_capture` is false).
    fn begin_capture(&self) -> Result<()> {
        Err(no_capture("begin_capture"))
    }

    /// Ends the capture and returns its work as a graph; it has not run yet (replay it). The stream leaves
    /// capture mode whatever the result: an error (a call that failed while capturing, a driver that could
    /// not instantiate the graph) leaves no capture behind, and the stream runs work eagerly again.
    fn end_capture(&self) -> Result<Box<dyn Graph>> {
        Err(no_capture("end_capture"))
    }
}
