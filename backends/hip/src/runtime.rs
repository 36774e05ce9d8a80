//! The HIP runtime as a dsv3 runtime: one device's memory, hiprtc-compiled modules and streams. Every call
//! first makes the device current on the calling thread (`hipSetDevice`, a per-thread setting in HIP).
//! Every `unsafe` block states what it relies on.

use crate::api::{
    self, Handle, Hip, BACKEND, EVENT_DISABLE_TIMING, HIP_ERROR_OUT_OF_MEMORY, STREAM_CAPTURE_MODE_RELAXED,
    STREAM_NON_BLOCKING,
};
use crate::hiprtc::{self, RtcError};
use dsv3_backend_gpu::kernels::Variant;
use dsv3_backend_gpu::runtime::{Dims, Function, Queue, QueueEvent, QueueGraph, Runtime, Target};
use dsv3_backend_gpu::{FunctionShared, SharedLimits};
use dsv3_core::{Error, Result};
use std::any::Any;
use std::ffi::{c_int, c_void, CString};
use std::sync::Arc;

/// One device.
pub struct HipRuntime {
    hip: &'static Hip,
    ordinal: c_int,
    target: Target,
    /// Shared memory per block: the workgroup's LDS (`hipDeviceAttributeMaxSharedMemoryPerBlock`: 64 KiB on
    /// CDNA), with nothing to opt in to.
    limits: SharedLimits,
}

impl HipRuntime {
    /// The runtime of device `ordinal`, compiling for `target` (a `Target::Hip`). libamdhip64 must load.
    pub fn open(ordinal: usize, target: Target) -> Result<HipRuntime> {
        let hip = api::hip().map_err(|reason| Error::Unavailable { backend: BACKEND.into(), reason })?;
        if !matches!(target, Target::Hip { .. }) {
            return Err(Error::Unavailable {
                backend: BACKEND.into(),
                reason: format!("a HIP runtime compiles for AMD targets, not {target:?}"),
            });
        }
        let ordinal = ordinal as c_int;
        bind(hip, ordinal)?;
        let mut lds: c_int = 0;
        // SAFETY: a valid out-pointer; an unknown attribute or device is an error code.
        let r = unsafe {
            (hip.device_get_attribute)(&mut lds, api::ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, ordinal)
        };
        hip.check("hipDeviceGetAttribute", r)?;
        let lds = lds.max(0) as u32;
        Ok(HipRuntime { hip, ordinal, target, limits: SharedLimits { default: lds, opt_in: lds } })
    }

    fn bind(&self) -> Result<()> {
        bind(self.hip, self.ordinal)
    }

    fn kernel_error(&self, op: &'static str, v: &Variant, reason: String) -> Error {
        Error::Kernel { backend: BACKEND.into(), op, kernel: v.key(), reason }
    }
}

fn bind(hip: &Hip, ordinal: c_int) -> Result<()> {
    // SAFETY: any ordinal is accepted (a bad one is an error code).
    hip.check("hipSetDevice", unsafe { (hip.set_device)(ordinal) })
}

/// A loaded module and its one kernel.
struct HipKernel {
    hip: &'static Hip,
    ordinal: c_int,
    module: Handle,
    function: Handle,
    name: String,
    /// Its static shared memory and the LDS its launches may take.
    shared: FunctionShared,
}

// SAFETY: module and function handles are identifiers valid on any thread with their device current.
unsafe impl Send for HipKernel {}
// SAFETY: as above; launching the same function from several threads is allowed.
unsafe impl Sync for HipKernel {}

impl Drop for HipKernel {
    fn drop(&mut self) {
        // SAFETY: the module was loaded on this device and is unloaded once; queues holding the kernel keep
        // it alive until their work is synchronised.
        unsafe {
            let _ = (self.hip.set_device)(self.ordinal);
            let _ = (self.hip.module_unload)(self.module);
        }
    }
}

impl Runtime for HipRuntime {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn target(&self) -> &Target {
        &self.target
    }

    fn shared_limits(&self) -> SharedLimits {
        self.limits
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        self.bind()?;
        let mut p: Handle = std::ptr::null_mut();
        // Every dsv3 buffer needs a distinct address, zero bytes included: take at least 256 (hipMalloc's
        // alignment is at least that).
        // SAFETY: a valid out-pointer.
        let r = unsafe { (self.hip.malloc)(&mut p, bytes.max(256)) };
        if r == HIP_ERROR_OUT_OF_MEMORY {
            return Err(Error::OutOfMemory { backend: BACKEND.into(), bytes });
        }
        self.hip.check("hipMalloc", r)?;
        Ok(p as u64)
    }

    fn free(&self, addr: u64, _bytes: usize) {
        if self.bind().is_ok() {
            // SAFETY: `addr` came from `alloc` and is freed once (GpuBuffer's Drop); streams keep buffers
            // alive until their work is synchronised.
            let _ = unsafe { (self.hip.free)(addr as Handle) };
        }
    }

    fn compile(&self, op: &'static str, v: &Variant) -> Result<Function> {
        let Target::Hip { arch, .. } = &self.target else { unreachable!("checked in `open`") };
        let source = v.assemble(&self.target);
        let code = hiprtc::compile(v.kernel.name, &source, arch).map_err(|e| match e {
            RtcError::Unavailable(reason) => Error::Unavailable { backend: BACKEND.into(), reason },
            RtcError::Unsupported(reason) => Error::Unsupported { backend: BACKEND.into(), op, reason },
            RtcError::Failed(reason) => self.kernel_error(op, v, format!("hiprtc for {arch}: {reason}")),
        })?;
        self.bind()?;
        let mut module: Handle = std::ptr::null_mut();
        // SAFETY: `code` is a complete code object from hiprtc (or the cache written from one) and outlives
        // the call.
        let r = unsafe { (self.hip.module_load_data)(&mut module, code.as_ptr() as *const c_void) };
        if r != api::HIP_SUCCESS {
            return Err(self.kernel_error(op, v, format!("hipModuleLoadData: {}", self.hip.error_text(r))));
        }
        let name = CString::new(v.kernel.name)
            .map_err(|_| self.kernel_error(op, v, "kernel name with NUL".into()))?;
        let mut function: Handle = std::ptr::null_mut();
        // SAFETY: `module` was just loaded; the name is NUL-terminated.
        let r = unsafe { (self.hip.module_get_function)(&mut function, module, name.as_ptr()) };
        if r != api::HIP_SUCCESS {
            // SAFETY: unloads the module loaded above, once.
            unsafe {
                let _ = (self.hip.module_unload)(module);
            }
            return Err(self.kernel_error(
                op,
                v,
                format!("hipModuleGetFunction: {}", self.hip.error_text(r)),
            ));
        }
        // Made before the query, so that a failed query still unloads the module.
        let mut kernel = HipKernel {
            hip: self.hip,
            ordinal: self.ordinal,
            module,
            function,
            name: v.key(),
            shared: FunctionShared::new(0, self.limits),
        };
        let mut static_bytes: c_int = 0;
        // SAFETY: a valid out-pointer and the function just loaded.
        let r = unsafe {
            (self.hip.func_get_attribute)(&mut static_bytes, api::FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, function)
        };
        if r != api::HIP_SUCCESS {
            return Err(self.kernel_error(op, v, format!("hipFuncGetAttribute: {}", self.hip.error_text(r))));
        }
        kernel.shared = FunctionShared::new(static_bytes.max(0) as u32, self.limits);
        Ok(Arc::new(kernel))
    }

    fn new_queue(&self) -> Result<Box<dyn Queue>> {
        self.bind()?;
        let mut stream: Handle = std::ptr::null_mut();
        // SAFETY: a valid out-pointer and a documented flag.
        let r = unsafe { (self.hip.stream_create_with_flags)(&mut stream, STREAM_NON_BLOCKING) };
        self.hip.check("hipStreamCreateWithFlags", r)?;
        Ok(Box::new(HipQueue { hip: self.hip, ordinal: self.ordinal, stream }))
    }

    /// Any HIP device of this process: `hipMemcpyPeerAsync` copies between two devices (directly where they
    /// have peer access, staged by the runtime where not; peer access is not enabled here).
    fn can_copy_from(&self, src: &dyn Runtime) -> bool {
        src.as_any().is::<HipRuntime>()
    }
}

struct HipQueue {
    hip: &'static Hip,
    ordinal: c_int,
    stream: Handle,
}

// SAFETY: a stream handle may be used from any thread with its device current (`bind`).
unsafe impl Send for HipQueue {}
// SAFETY: as above; the runtime serialises work submitted to one stream.
unsafe impl Sync for HipQueue {}

impl HipQueue {
    fn sync_stream(&self) -> Result<()> {
        // SAFETY: a live stream of this device.
        self.hip.check("hipStreamSynchronize", unsafe { (self.hip.stream_synchronize)(self.stream) })
    }
}

impl Drop for HipQueue {
    fn drop(&mut self) {
        // SAFETY: the stream was created in `new_queue` and is destroyed once, after its work finishes.
        unsafe {
            let _ = (self.hip.set_device)(self.ordinal);
            let _ = (self.hip.stream_synchronize)(self.stream);
            let _ = (self.hip.stream_destroy)(self.stream);
        }
    }
}

impl Queue for HipQueue {
    fn upload(&self, dst: u64, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        bind(self.hip, self.ordinal)?;
        // SAFETY: the stream layer checked dst..dst+len is inside a live allocation; `src` is valid for the
        // call.
        let r = unsafe {
            (self.hip.memcpy_htod_async)(dst as Handle, src.as_ptr() as *const c_void, src.len(), self.stream)
        };
        self.hip.check("hipMemcpyHtoDAsync", r)?;
        // The caller may reuse `src` once this returns. HIP documents copies from unpinned memory as performed
        // synchronously, but not (as CUDA does) that the source is no longer read on return, in every release;
        // a late read would corrupt silently. So wait: uploads are few (weights once, token ids per step).
        self.sync_stream()
    }

    fn download(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        bind(self.hip, self.ordinal)?;
        // SAFETY: src..src+len is inside a live allocation (checked by the stream layer); the synchronisation
        // below completes the copy before `dst` is handed back.
        let r = unsafe {
            (self.hip.memcpy_dtoh_async)(
                dst.as_mut_ptr() as *mut c_void,
                src as Handle,
                dst.len(),
                self.stream,
            )
        };
        self.hip.check("hipMemcpyDtoHAsync", r)?;
        self.sync_stream()
    }

    fn copy(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        if bytes == 0 {
            return Ok(());
        }
        bind(self.hip, self.ordinal)?;
        // SAFETY: both ranges are inside live allocations of this device (checked by the stream layer).
        let r = unsafe { (self.hip.memcpy_dtod_async)(dst as Handle, src as Handle, bytes, self.stream) };
        self.hip.check("hipMemcpyDtoDAsync", r)
    }

    fn launch(&self, op: &'static str, f: &Function, dims: Dims, params: &[u64]) -> Result<()> {
        let k = f.downcast_ref::<HipKernel>().ok_or_else(|| Error::Kernel {
            backend: BACKEND.into(),
            op,
            kernel: "?".into(),
            reason: "not a HIP kernel".into(),
        })?;
        // AMD has nothing to opt in to: every launch may use the workgroup's LDS (see `shared_memory`).
        k.shared.prepare(dims.shared, BACKEND, op, &k.name, None)?;
        bind(self.hip, self.ordinal)?;
        let mut args = [params.as_ptr() as *mut c_void];
        let [gx, gy, gz] = dims.grid;
        // SAFETY: the kernel takes one parameter, its `Params` struct of 8-byte fields, which `params` holds in
        // order (the launch code builds both from one list); hipModuleLaunchKernel copies it before returning,
        // as cuLaunchKernel does. Every address inside was checked against a live allocation, kept alive
        // until the stream's next sync. The dynamic shared memory fits the LDS beside the static (`prepare`).
        let r = unsafe {
            (self.hip.module_launch_kernel)(
                k.function,
                gx,
                gy,
                gz,
                dims.block,
                1,
                1,
                dims.shared,
                self.stream,
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        };
        if r == api::HIP_SUCCESS {
            return Ok(());
        }
        Err(Error::Kernel {
            backend: BACKEND.into(),
            op,
            kernel: k.name.clone(),
            reason: format!(
                "hipModuleLaunchKernel (grid {:?}, block {}, {} bytes of dynamic shared memory): {}",
                dims.grid,
                dims.block,
                dims.shared,
                self.hip.error_text(r)
            ),
        })
    }

    fn sync(&self) -> Result<()> {
        bind(self.hip, self.ordinal)?;
        self.sync_stream()
    }

    fn record_event(&self) -> Result<Box<dyn QueueEvent>> {
        bind(self.hip, self.ordinal)?;
        let mut handle: Handle = std::ptr::null_mut();
        // SAFETY: a valid out-pointer and a documented flag.
        let r = unsafe { (self.hip.event_create_with_flags)(&mut handle, EVENT_DISABLE_TIMING) };
        self.hip.check("hipEventCreateWithFlags", r)?;
        // Made before recording, so that a failed record still destroys the event.
        let event = HipEvent { hip: self.hip, ordinal: self.ordinal, event: handle };
        // SAFETY: a live event and a live stream, both of the current device.
        self.hip.check("hipEventRecord", unsafe { (self.hip.event_record)(event.event, self.stream) })?;
        Ok(Box::new(event))
    }

    /// On the device for an event of this device. HIP's documentation, unlike CUDA's, does not say that
    /// `hipStreamWaitEvent` accepts an event of another device, so such an event is waited for on the host.
    fn wait_event(&self, event: &dyn QueueEvent) -> Result<()> {
        match event.as_any().downcast_ref::<HipEvent>() {
            Some(e) if e.ordinal == self.ordinal => {
                bind(self.hip, self.ordinal)?;
                // SAFETY: a live stream and a live event of the current device; flags 0 is the default.
                let r = unsafe { (self.hip.stream_wait_event)(self.stream, e.event, 0) };
                self.hip.check("hipStreamWaitEvent", r)
            }
            _ => event.synchronize(),
        }
    }

    fn copy_peer(&self, src_runtime: &dyn Runtime, src: u64, dst: u64, bytes: usize) -> Result<()> {
        let Some(peer) = src_runtime.as_any().downcast_ref::<HipRuntime>() else {
            return Err(Error::Driver {
                backend: BACKEND.into(),
                call: "hipMemcpyPeerAsync".into(),
                reason: format!("the source is {} memory, not HIP's", src_runtime.backend()),
            });
        };
        bind(self.hip, self.ordinal)?;
        // SAFETY: `dst` lies in a live allocation of this device and `src` in one of `peer`'s (both checked by
        // the stream layer, which keeps both buffers alive until this stream's next sync); the caller ordered
        // the copy after the work that wrote `src`.
        let r = unsafe {
            (self.hip.memcpy_peer_async)(
                dst as Handle,
                self.ordinal,
                src as Handle,
                peer.ordinal,
                bytes,
                self.stream,
            )
        };
        self.hip.check("hipMemcpyPeerAsync", r)
    }

    fn begin_capture(&self) -> Result<()> {
        let Some(g) = &self.hip.graphs else {
            let why = format!("libamdhip64 lacks {} (ROCm too old)", api::GRAPH_SYMBOLS.join(" / "));
            return Err(Error::unsupported(BACKEND, "begin_capture", why));
        };
        bind(self.hip, self.ordinal)?;
        // Relaxed: the model's workspace may allocate (hipMalloc) while a step is captured; allocation is not
        // stream work, so the graph is the same.
        // SAFETY: a live stream of the current device; the entry point exists (`graphs`).
        let r = unsafe { (g.stream_begin_capture)(self.stream, STREAM_CAPTURE_MODE_RELAXED) };
        self.hip.check("hipStreamBeginCapture", r)
    }

    fn end_capture(&self) -> Result<Box<dyn QueueGraph>> {
        let Some(g) = self.hip.graphs.as_ref() else {
            return Err(Error::unsupported(
                BACKEND,
                "end_capture",
                "libamdhip64 lacks the graph entry points",
            ));
        };
        bind(self.hip, self.ordinal)?;
        let mut graph: Handle = std::ptr::null_mut();
        // SAFETY: a valid out-pointer; the stream is capturing (the stream layer pairs the calls), and leaves
        // capture mode whatever the result.
        self.hip.check("hipStreamEndCapture", unsafe { (g.stream_end_capture)(self.stream, &mut graph) })?;
        let mut exec: Handle = std::ptr::null_mut();
        // SAFETY: `graph` was just made by the capture; no error node or log is asked for (null, 0).
        let r =
            unsafe { (g.graph_instantiate)(&mut exec, graph, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
        if let Err(e) = self.hip.check("hipGraphInstantiate", r) {
            // SAFETY: destroyed once, here: no executable was made from it.
            unsafe { (g.graph_destroy)(graph) };
            return Err(e);
        }
        Ok(Box::new(HipGraph { hip: self.hip, g, ordinal: self.ordinal, graph, exec, stream: self.stream }))
    }
}

/// A captured graph, instantiated, and the stream it was captured on (where it is launched). The stream
/// layer drops it before the queue that owns the stream.
struct HipGraph {
    hip: &'static Hip,
    g: &'static api::Graphs,
    ordinal: c_int,
    graph: Handle,
    exec: Handle,
    stream: Handle,
}

// SAFETY: graph, executable and stream handles may be used from any thread with their device current.
unsafe impl Send for HipGraph {}
// SAFETY: as above; launches of one executable are serialised on its stream by the runtime.
unsafe impl Sync for HipGraph {}

impl QueueGraph for HipGraph {
    fn launch(&self) -> Result<()> {
        let g = self.g;
        bind(self.hip, self.ordinal)?;
        // SAFETY: a live executable graph and its live stream; the buffers its nodes use are kept alive by the
        // stream layer's graph, and by the stream until its next sync.
        self.hip.check("hipGraphLaunch", unsafe { (g.graph_launch)(self.exec, self.stream) })
    }
}

impl Drop for HipGraph {
    fn drop(&mut self) {
        // SAFETY: made in `end_capture` and destroyed once; the runtime completes launched work first.
        unsafe {
            let _ = (self.hip.set_device)(self.ordinal);
            let _ = (self.g.graph_exec_destroy)(self.exec);
            let _ = (self.g.graph_destroy)(self.graph);
        }
    }
}

/// A recorded HIP event (no timing) and the device it was recorded on.
struct HipEvent {
    hip: &'static Hip,
    ordinal: c_int,
    event: Handle,
}

// SAFETY: an event handle may be used from any thread; the calls here are thread-safe runtime calls.
unsafe impl Send for HipEvent {}
// SAFETY: as above.
unsafe impl Sync for HipEvent {}

impl QueueEvent for HipEvent {
    fn synchronize(&self) -> Result<()> {
        // SAFETY: a live event, recorded once.
        self.hip.check("hipEventSynchronize", unsafe { (self.hip.event_synchronize)(self.event) })
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for HipEvent {
    fn drop(&mut self) {
        // SAFETY: created in `record_event` and destroyed once; like CUDA, HIP releases an event whose work
        // is still pending once it completes, and waits already enqueued on it are unaffected.
        unsafe {
            let _ = (self.hip.set_device)(self.ordinal);
            let _ = (self.hip.event_destroy)(self.event);
        }
    }
}
