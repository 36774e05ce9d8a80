//! The CUDA driver as a dsv3 runtime: a device's primary context, memory, NVRTC-compiled modules and
//! streams, through cudarc's thin `result` layer. Every `unsafe` block of the backend is in this file or
//! in `nvrtc.rs`; each states what it relies on.

use crate::cublaslt::DeviceLt;
use crate::nvrtc::{self, Image};
use cudarc::driver::result::{self, DriverError};
use cudarc::driver::sys;
use dsv3_backend_gpu::kernels::Variant;
use dsv3_backend_gpu::runtime::{Dims, Function, Queue, QueueEvent, QueueGraph, Runtime, Target};
use dsv3_backend_gpu::{FunctionShared, GemmArgs, GemmDesc, SharedLimits, VendorGemm};
use dsv3_core::{Error, Result};
use std::any::Any;
use std::ffi::{c_void, CString};
use std::sync::Arc;

pub const BACKEND: &str = "cuda";

pub fn driver_error(call: &str, e: DriverError) -> Error {
    let name =
        e.error_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|_| format!("{:?}", e.0));
    let text = e.error_string().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Error::Driver { backend: BACKEND.into(), call: call.into(), reason: format!("{name}: {text}") }
}

/// One device's primary context.
pub struct CudaRuntime {
    device: sys::CUdevice,
    ctx: sys::CUcontext,
    target: Target,
    /// Shared memory per block: 48 KiB, and the device's opt-in limit.
    limits: SharedLimits,
    /// Whether libcuda has the stream-capture and graph entry points (`crate::GRAPH_SYMBOLS`).
    graphs: bool,
    /// cuBLASLt on this device, when it is loaded and wanted (`crate::cublaslt`).
    lt: Option<Arc<DeviceLt>>,
}

// SAFETY: a CUDA context may be used from any thread once made current there, which every method does
// first (`bind`); the handles are plain identifiers.
unsafe impl Send for CudaRuntime {}
// SAFETY: as above; the driver API is thread-safe.
unsafe impl Sync for CudaRuntime {}

impl CudaRuntime {
    /// Retains device `ordinal`'s primary context and, where wanted, opens cuBLASLt on it. The driver
    /// must be initialised (`result::init`); `cc` is the device's compute capability.
    pub fn open(ordinal: usize, arch: String, cc: (i32, i32), graphs: bool) -> Result<CudaRuntime> {
        let device = result::device::get(ordinal as i32).map_err(|e| driver_error("cuDeviceGet", e))?;
        // SAFETY: `device` is a valid device handle from cuDeviceGet.
        let ctx = unsafe { result::primary_ctx::retain(device) }
            .map_err(|e| driver_error("cuDevicePrimaryCtxRetain", e))?;
        let limits = shared_limits(device)?;
        let mut runtime =
            CudaRuntime { device, ctx, target: Target::Cuda { arch }, limits, graphs, lt: None };
        runtime.bind()?;
        runtime.lt = DeviceLt::new(cc)?;
        Ok(runtime)
    }

    fn bind(&self) -> Result<()> {
        // SAFETY: `ctx` is the primary context retained in `open` and released only in Drop.
        unsafe { result::ctx::set_current(self.ctx) }.map_err(|e| driver_error("cuCtxSetCurrent", e))
    }

    fn kernel_error(&self, op: &'static str, v: &Variant, reason: String) -> Error {
        Error::Kernel { backend: BACKEND.into(), op, kernel: v.key(), reason }
    }
}

/// A device's shared memory per block: `CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK` (48 KiB) without
/// opting in, `..._OPTIN` with (sm_80: 163 KiB, sm_86 / sm_89: 99 KiB, sm_90: 227 KiB).
fn shared_limits(device: sys::CUdevice) -> Result<SharedLimits> {
    use sys::CUdevice_attribute::*;
    let attr = |a| {
        // SAFETY: `device` is a valid device handle; attribute queries have no other preconditions.
        unsafe { result::device::get_attribute(device, a) }
            .map_err(|e| driver_error("cuDeviceGetAttribute", e))
    };
    let default = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK)?.max(0) as u32;
    let opt_in = attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?.max(0) as u32;
    Ok(SharedLimits { default, opt_in: opt_in.max(default) })
}

impl Drop for CudaRuntime {
    fn drop(&mut self) {
        // cuBLASLt's handle goes while the context is alive (its queues, which share it, are gone).
        if self.bind().is_ok() {
            self.lt = None;
        }
        // SAFETY: balances the retain in `open`; every buffer, module and stream holds an Arc to this runtime,
        // so none outlives the context.
        let _ = unsafe { result::primary_ctx::release(self.device) };
    }
}

/// A loaded module and its one kernel.
struct CudaKernel {
    module: sys::CUmodule,
    function: sys::CUfunction,
    name: String,
    /// Its static shared memory and the dynamic bytes its launches may give (the opt-in attribute).
    shared: FunctionShared,
    /// Unloading needs the context current. The device drops its kernels before its runtime (field order of
    /// `dsv3_backend_gpu::device::Ctx`), so the context is still alive then.
    ctx: RuntimeHandle,
}

/// The context, for modules and queues to make current (they are dropped before it is released).
struct RuntimeHandle(sys::CUcontext);
// SAFETY: an opaque context handle, used only to make the context current.
unsafe impl Send for RuntimeHandle {}
// SAFETY: as above.
unsafe impl Sync for RuntimeHandle {}

// SAFETY: module and function handles are identifiers valid in their context on any thread.
unsafe impl Send for CudaKernel {}
// SAFETY: as above; launching the same function from several threads is allowed.
unsafe impl Sync for CudaKernel {}

impl Drop for CudaKernel {
    fn drop(&mut self) {
        // SAFETY: the module was loaded in this context and is unloaded once; queues holding the kernel keep
        // it (and the context) alive until their work is synchronised.
        unsafe {
            let _ = result::ctx::set_current(self.ctx.0);
            let _ = result::module::unload(self.module);
        }
    }
}

impl Runtime for CudaRuntime {
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
        // cuMemAlloc rejects zero bytes; every dsv3 buffer needs a distinct address, so take the minimum.
        // SAFETY: plain allocation in the current context.
        unsafe { result::malloc_sync(bytes.max(256)) }.map_err(|e| match e.0 {
            sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY => Error::OutOfMemory { backend: BACKEND.into(), bytes },
            _ => driver_error("cuMemAlloc", e),
        })
    }

    fn free(&self, addr: u64, _bytes: usize) {
        if self.bind().is_ok() {
            // SAFETY: `addr` came from `alloc` and is freed once (GpuBuffer's Drop); streams keep buffers
            // alive until their work is synchronised.
            let _ = unsafe { result::free_sync(addr) };
        }
    }

    fn compile(&self, op: &'static str, v: &Variant) -> Result<Function> {
        let Target::Cuda { arch } = &self.target else { unreachable!("a CUDA runtime has a CUDA target") };
        let source = v.assemble(&self.target);
        let compiled = nvrtc::compile(v.kernel.name, &source, arch, false)
            .map_err(|reason| self.kernel_error(op, v, format!("NVRTC for {arch}: {reason}")))?;
        let mut image = compiled.image.bytes().to_vec();
        if let Image::Ptx(_) = compiled.image {
            if image.last() != Some(&0) {
                image.push(0);
            }
        }
        self.bind()?;
        // SAFETY: `image` is a complete CUBIN or NUL-terminated PTX from NVRTC and outlives the call.
        let module = unsafe { result::module::load_data(image.as_ptr() as *const c_void) }
            .map_err(|e| self.kernel_error(op, v, format!("cuModuleLoadData: {}", driver_error("", e))))?;
        let name = CString::new(v.kernel.name)
            .map_err(|_| self.kernel_error(op, v, "kernel name with NUL".into()))?;
        // SAFETY: `module` was just loaded; the name is NUL-terminated.
        let function = match unsafe { result::module::get_function(module, name) } {
            Ok(f) => f,
            Err(e) => {
                // SAFETY: unloads the module loaded above, once.
                unsafe {
                    let _ = result::module::unload(module);
                }
                return Err(self.kernel_error(
                    op,
                    v,
                    format!("cuModuleGetFunction: {}", driver_error("", e)),
                ));
            }
        };
        // Made before the query, so that a failed query still unloads the module.
        let mut kernel = CudaKernel {
            module,
            function,
            name: v.key(),
            shared: FunctionShared::new(0, self.limits),
            ctx: RuntimeHandle(self.ctx),
        };
        // SAFETY: `function` belongs to the module just loaded in the current context.
        let static_bytes = unsafe {
            result::function::get_function_attribute(
                function,
                sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
            )
        }
        .map_err(|e| self.kernel_error(op, v, format!("cuFuncGetAttribute: {}", driver_error("", e))))?;
        kernel.shared = FunctionShared::new(static_bytes.max(0) as u32, self.limits);
        Ok(Arc::new(kernel))
    }

    fn new_queue(&self) -> Result<Box<dyn Queue>> {
        self.bind()?;
        let stream = result::stream::create(result::stream::StreamKind::NonBlocking)
            .map_err(|e| driver_error("cuStreamCreate", e))?;
        Ok(Box::new(CudaQueue {
            stream,
            ctx: RuntimeHandle(self.ctx),
            graphs: self.graphs,
            lt: self.lt.clone(),
        }))
    }

    /// Any CUDA device of this process: `cuMemcpyPeerAsync` copies between two contexts, directly over
    /// NVLink / PCIe where the devices have peer access and staged by the driver where they do not (peer
    /// access is not enabled here; the copy is correct either way).
    fn can_copy_from(&self, src: &dyn Runtime) -> bool {
        src.as_any().is::<CudaRuntime>()
    }

    fn vendor_gemm(&self, g: &GemmDesc) -> VendorGemm {
        match &self.lt {
            Some(lt) if self.bind().is_ok() => lt.answer(g),
            _ => VendorGemm::Ours,
        }
    }
}

struct CudaQueue {
    stream: sys::CUstream,
    ctx: RuntimeHandle,
    graphs: bool,
    lt: Option<Arc<DeviceLt>>,
}

// SAFETY: a stream handle may be used from any thread with its context current (`bind`).
unsafe impl Send for CudaQueue {}
// SAFETY: as above; the driver serialises work submitted to one stream.
unsafe impl Sync for CudaQueue {}

impl CudaQueue {
    fn bind(&self) -> Result<()> {
        // SAFETY: the context outlives every queue (the device holds the runtime).
        unsafe { result::ctx::set_current(self.ctx.0) }.map_err(|e| driver_error("cuCtxSetCurrent", e))
    }
}

impl Drop for CudaQueue {
    fn drop(&mut self) {
        // SAFETY: the stream was created in `new_queue` and is destroyed once, after its work finishes.
        unsafe {
            let _ = result::ctx::set_current(self.ctx.0);
            let _ = result::stream::synchronize(self.stream);
            let _ = result::stream::destroy(self.stream);
        }
    }
}

impl Queue for CudaQueue {
    fn upload(&self, dst: u64, src: &[u8]) -> Result<()> {
        if src.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: the stream layer checked dst..dst+len is inside a live allocation. From pageable memory the
        // driver stages `src` before returning, so the caller may reuse it at once.
        unsafe { result::memcpy_htod_async(dst, src, self.stream) }
            .map_err(|e| driver_error("cuMemcpyHtoDAsync", e))
    }

    fn download(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        if dst.is_empty() {
            return Ok(());
        }
        self.bind()?;
        // SAFETY: src..src+len is inside a live allocation (checked by the stream layer); the synchronisation
        // below completes the copy before `dst` is handed back.
        unsafe {
            result::memcpy_dtoh_async(dst, src, self.stream)
                .map_err(|e| driver_error("cuMemcpyDtoHAsync", e))?;
            result::stream::synchronize(self.stream).map_err(|e| driver_error("cuStreamSynchronize", e))
        }
    }

    fn copy(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        self.bind()?;
        // SAFETY: both ranges are inside live allocations of this device (checked by the stream layer).
        unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream) }
            .map_err(|e| driver_error("cuMemcpyDtoDAsync", e))
    }

    fn launch(&self, op: &'static str, f: &Function, dims: Dims, params: &[u64]) -> Result<()> {
        let k = f.downcast_ref::<CudaKernel>().ok_or_else(|| Error::Kernel {
            backend: BACKEND.into(),
            op,
            kernel: "?".into(),
            reason: "not a CUDA kernel".into(),
        })?;
        self.bind()?;
        // Above 48 KiB the function opts in to the dynamic shared memory the launch gives, once.
        let opt_in = |bytes: u32| {
            // SAFETY: a loaded function of the current context; the driver checks the value against the
            // device's opt-in limit (`prepare` has already).
            unsafe {
                result::function::set_function_attribute(
                    k.function,
                    sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    bytes as i32,
                )
            }
            .map_err(|e| driver_error("cuFuncSetAttribute", e))
        };
        k.shared.prepare(dims.shared, BACKEND, op, &k.name, Some(&opt_in))?;
        let mut args = [params.as_ptr() as *mut c_void];
        let [gx, gy, gz] = dims.grid;
        // SAFETY: the kernel takes one parameter, its `Params` struct of 8-byte fields, which `params` holds in
        // order (the launch code builds both from one list); cuLaunchKernel copies it before returning. Every
        // address inside was checked against a live allocation, kept alive until the stream's next sync. The
        // dynamic shared memory is within what the function may take (`prepare`).
        unsafe {
            result::launch_kernel(
                k.function,
                (gx, gy, gz),
                (dims.block, 1, 1),
                dims.shared,
                self.stream,
                &mut args,
            )
        }
        .map_err(|e| Error::Kernel {
            backend: BACKEND.into(),
            op,
            kernel: k.name.clone(),
            reason: format!(
                "cuLaunchKernel (grid {:?}, block {}, {} bytes of dynamic shared memory): {}",
                dims.grid,
                dims.block,
                dims.shared,
                driver_error("", e)
            ),
        })
    }

    fn sync(&self) -> Result<()> {
        self.bind()?;
        // SAFETY: a live stream of the current context.
        unsafe { result::stream::synchronize(self.stream) }
            .map_err(|e| driver_error("cuStreamSynchronize", e))
    }

    fn record_event(&self) -> Result<Box<dyn QueueEvent>> {
        self.bind()?;
        // Without timing an event is only a synchronisation point, the cheapest kind to record and wait on.
        let event = result::event::create(sys::CUevent_flags::CU_EVENT_DISABLE_TIMING)
            .map_err(|e| driver_error("cuEventCreate", e))?;
        // Made before recording, so that a failed record still destroys the event.
        let event = CudaEvent { event, ctx: RuntimeHandle(self.ctx.0) };
        // SAFETY: the event and the stream are live and of the current context (cuEventRecord requires
        // both in one context).
        unsafe { result::event::record(event.event, self.stream) }
            .map_err(|e| driver_error("cuEventRecord", e))?;
        Ok(Box::new(event))
    }

    fn wait_event(&self, event: &dyn QueueEvent) -> Result<()> {
        let Some(e) = event.as_any().downcast_ref::<CudaEvent>() else { return event.synchronize() };
        self.bind()?;
        // SAFETY: both handles are live (the caller holds the event). The driver API allows the event to
        // come from another context or device of this process ("hEvent may be from a different context or
        // device than hStream"); the wait is then a cross-device one, still on the devices. Events do not
        // cross processes without IPC handles, which dsv3 does not use.
        unsafe {
            result::stream::wait_event(self.stream, e.event, sys::CUevent_wait_flags::CU_EVENT_WAIT_DEFAULT)
        }
        .map_err(|e| driver_error("cuStreamWaitEvent", e))
    }

    fn copy_peer(&self, src_runtime: &dyn Runtime, src: u64, dst: u64, bytes: usize) -> Result<()> {
        let Some(peer) = src_runtime.as_any().downcast_ref::<CudaRuntime>() else {
            return Err(Error::Driver {
                backend: BACKEND.into(),
                call: "cuMemcpyPeerAsync".into(),
                reason: format!("the source is {} memory, not CUDA's", src_runtime.backend()),
            });
        };
        self.bind()?;
        // SAFETY: `dst` lies in a live allocation of this queue's context and `src` in one of `peer`'s (both
        // checked by the stream layer, which keeps both buffers alive until this stream's next sync); the
        // caller ordered the copy after the work that wrote `src`. Both contexts are retained primary contexts.
        unsafe { result::memcpy_peer_async(self.ctx.0, dst, peer.ctx, src, bytes, self.stream) }
            .map_err(|e| driver_error("cuMemcpyPeerAsync", e))
    }

    fn vendor_gemm(&self, op: &'static str, args: &GemmArgs) -> Result<bool> {
        let Some(lt) = &self.lt else {
            return Err(Error::unsupported(BACKEND, op, "cuBLASLt is not loaded on this device"));
        };
        self.bind()?;
        lt.run(self.stream as *mut c_void, op, args)
    }

    fn begin_capture(&self) -> Result<()> {
        if !self.graphs {
            let why =
                "libcuda lacks the stream-capture / graph entry points (driver too old or not NVIDIA's)";
            return Err(Error::unsupported(BACKEND, "begin_capture", why));
        }
        self.bind()?;
        // Relaxed: the model's workspace may allocate (cuMemAlloc) while a step is captured, which the
        // global and thread-local modes refuse; allocation is not stream work, so the graph is the same.
        // SAFETY: a live stream of the current context, checked present symbols (`graphs`).
        unsafe {
            result::stream::begin_capture(
                self.stream,
                sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED,
            )
        }
        .map_err(|e| driver_error("cuStreamBeginCapture", e))
    }

    fn end_capture(&self) -> Result<Box<dyn QueueGraph>> {
        self.bind()?;
        // SAFETY: the stream is capturing (the stream layer pairs the calls); the driver ends the capture
        // whether it succeeds or not (an invalidated capture returns an error and no graph).
        let graph = unsafe { result::stream::end_capture(self.stream) }
            .map_err(|e| driver_error("cuStreamEndCapture", e))?;
        // SAFETY: `graph` was just made by the capture.
        match unsafe { result::graph::instantiate(graph, sys::CUgraphInstantiate_flags(0)) } {
            Ok(exec) => {
                Ok(Box::new(CudaGraph { graph, exec, stream: self.stream, ctx: RuntimeHandle(self.ctx.0) }))
            }
            Err(e) => {
                // SAFETY: the graph is destroyed once, here, having no executable.
                unsafe {
                    let _ = result::graph::destroy(graph);
                }
                Err(driver_error("cuGraphInstantiateWithFlags", e))
            }
        }
    }
}

/// A captured graph, instantiated, and the stream it was captured on (where it is launched). The stream
/// layer drops it before the queue that owns the stream.
struct CudaGraph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
    stream: sys::CUstream,
    ctx: RuntimeHandle,
}

// SAFETY: graph, executable and stream handles may be used from any thread with their context current,
// which every call here makes first.
unsafe impl Send for CudaGraph {}
// SAFETY: as above; launching one executable graph from several threads is serialised by the driver.
unsafe impl Sync for CudaGraph {}

impl QueueGraph for CudaGraph {
    fn launch(&self) -> Result<()> {
        // SAFETY: the context outlives the graph (the stream layer's graph holds the stream and so the device).
        unsafe { result::ctx::set_current(self.ctx.0) }.map_err(|e| driver_error("cuCtxSetCurrent", e))?;
        // SAFETY: a live executable graph and its live stream; the buffers its nodes use are kept alive by
        // the stream layer's graph, and by the stream until its next sync.
        unsafe { result::graph::launch(self.exec, self.stream) }.map_err(|e| driver_error("cuGraphLaunch", e))
    }
}

impl Drop for CudaGraph {
    fn drop(&mut self) {
        // SAFETY: made in `end_capture` and destroyed once. A launched executable may be destroyed while
        // its work is pending: the driver completes that work first.
        unsafe {
            let _ = result::ctx::set_current(self.ctx.0);
            let _ = result::graph::exec_destroy(self.exec);
            let _ = result::graph::destroy(self.graph);
        }
    }
}

/// A recorded CUDA event (no timing), destroyed with its context current.
struct CudaEvent {
    event: sys::CUevent,
    ctx: RuntimeHandle,
}

// SAFETY: an event handle may be used from any thread; every call here makes its context current first.
unsafe impl Send for CudaEvent {}
// SAFETY: as above; recording, waiting and synchronising are thread-safe driver calls.
unsafe impl Sync for CudaEvent {}

impl QueueEvent for CudaEvent {
    fn synchronize(&self) -> Result<()> {
        // SAFETY: the context outlives the event (the stream layer's event holds the device context).
        unsafe { result::ctx::set_current(self.ctx.0) }.map_err(|e| driver_error("cuCtxSetCurrent", e))?;
        // SAFETY: a live event, recorded once.
        unsafe { result::event::synchronize(self.event) }.map_err(|e| driver_error("cuEventSynchronize", e))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Drop for CudaEvent {
    fn drop(&mut self) {
        // SAFETY: created in `record_event` and destroyed once. Destroying an event whose work is still
        // pending is allowed (the driver releases it when the work completes), and waits already enqueued on
        // it are unaffected.
        unsafe {
            let _ = result::ctx::set_current(self.ctx.0);
            let _ = result::event::destroy(self.event);
        }
    }
}
