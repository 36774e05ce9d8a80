//! dsv3's NVIDIA backend. The driver (libcuda) and NVRTC are loaded at run time through cudarc, so the same
//! binary runs on machines without either and says why the backend is unavailable. Kernels are the shared
//! CUDA C files (`kernels/cuda/`), compiled by NVRTC at first use for the device's architecture and cached
//! on disk (`nvrtc.rs`); ops are launched by the layer CUDA and HIP share (`dsv3-backend-gpu`), over the
//! runtime in `driver.rs`.

pub mod arch;
pub mod cublaslt;
pub mod driver;
pub mod nvrtc;

use cudarc::driver::{result, sys};
use driver::{driver_error, CudaRuntime, BACKEND};
use dsv3_backend_gpu::{GpuDevice, Profile};
use dsv3_core::{Backend, Capabilities, DType, DTypeUsage, Device, DeviceInfo, Error, Fp8Format, Result};
use std::sync::Arc;

/// Driver entry points this backend calls; a libcuda lacking one is reported, not called (cudarc would
/// panic on the missing symbol).
const REQUIRED_SYMBOLS: &[&str] = &[
    "cuInit",
    "cuGetErrorName",
    "cuGetErrorString",
    "cuDeviceGetCount",
    "cuDeviceGet",
    "cuDeviceGetName",
    "cuDeviceTotalMem_v2",
    "cuDeviceGetAttribute",
    "cuDevicePrimaryCtxRetain",
    "cuDevicePrimaryCtxRelease_v2",
    "cuCtxSetCurrent",
    "cuMemAlloc_v2",
    "cuMemFree_v2",
    "cuMemcpyHtoDAsync_v2",
    "cuMemcpyDtoHAsync_v2",
    "cuMemcpyDtoDAsync_v2",
    "cuModuleLoadData",
    "cuModuleGetFunction",
    "cuModuleUnload",
    "cuFuncGetAttribute",
    "cuFuncSetAttribute",
    "cuLaunchKernel",
    "cuStreamCreate",
    "cuStreamSynchronize",
    "cuStreamDestroy_v2",
    "cuStreamWaitEvent",
    "cuEventCreate",
    "cuEventRecord",
    "cuEventSynchronize",
    "cuEventDestroy_v2",
    "cuMemcpyPeerAsync",
];

/// Stream capture and graphs: optional. A libcuda without them still runs every op; its devices report
/// `graph_capture: false` and capture is `Unsupported`.
const GRAPH_SYMBOLS: &[&str] = &[
    "cuStreamBeginCapture_v2",
    "cuStreamEndCapture",
    "cuGraphInstantiateWithFlags",
    "cuGraphLaunch",
    "cuGraphExecDestroy",
    "cuGraphDestroy",
];

/// The names of `symbols` the loaded libcuda lacks. The driver must be present (`init_driver` succeeded
/// or is checking).
fn missing(symbols: &[&'static str]) -> Vec<&'static str> {
    // SAFETY: the library is present (checked by the callers), so `culib` does not panic; `get` only
    // looks up names.
    let lib = unsafe { sys::culib() };
    symbols.iter().copied().filter(|s| unsafe { lib.get::<*const ()>(s.as_bytes()) }.is_err()).collect()
}

/// Whether this libcuda can capture streams as graphs (checked once; the driver is loaded).
fn has_graphs() -> bool {
    use std::sync::OnceLock;
    static GRAPHS: OnceLock<bool> = OnceLock::new();
    *GRAPHS.get_or_init(|| missing(GRAPH_SYMBOLS).is_empty())
}

fn unavailable(reason: impl Into<String>) -> Error {
    Error::Unavailable { backend: BACKEND.into(), reason: reason.into() }
}

/// Loads and initialises the driver once per process; the reason when that is impossible.
fn init_driver() -> Result<()> {
    use std::sync::OnceLock;
    static INIT: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    INIT.get_or_init(|| {
        // SAFETY: only dlopens the candidate library names.
        if !unsafe { sys::is_culib_present() } {
            return Err(
                "libcuda.so not found: no NVIDIA driver on this machine (libcuda comes with the driver, \
                        not the CUDA toolkit)"
                    .into(),
            );
        }
        let missing = missing(REQUIRED_SYMBOLS);
        if !missing.is_empty() {
            return Err(format!("libcuda lacks {} (driver too old or not NVIDIA's)", missing.join(", ")));
        }
        result::init().map_err(|e| format!("cuInit failed: {}", driver_error("cuInit", e)))
    })
    .clone()
    .map_err(unavailable)
}

pub struct CudaBackend;

impl CudaBackend {
    pub fn new() -> CudaBackend {
        CudaBackend
    }
}

impl CudaBackend {
    /// Device `ordinal`'s runtime alone, for tools that launch kernels of their own (`dsv3 probe`, the tile
    /// layer's layout probe).
    pub fn runtime(&self, ordinal: usize) -> Result<CudaRuntime> {
        self.open_runtime(ordinal).map(|(runtime, _)| runtime)
    }

    fn open_runtime(&self, ordinal: usize) -> Result<(CudaRuntime, Described)> {
        let infos = self.devices()?;
        if ordinal >= infos.len() {
            return Err(unavailable(format!("no device {ordinal} ({} present)", infos.len())));
        }
        let d = describe(ordinal)?;
        Ok((CudaRuntime::open(ordinal, d.info.arch.clone(), d.cc, has_graphs())?, d))
    }
}

impl Default for CudaBackend {
    fn default() -> Self {
        CudaBackend::new()
    }
}

/// One device as the driver describes it.
struct Described {
    info: DeviceInfo,
    cc: (i32, i32),
    sms: i32,
}

fn describe(ordinal: usize) -> Result<Described> {
    let dev = result::device::get(ordinal as i32).map_err(|e| driver_error("cuDeviceGet", e))?;
    let name = result::device::get_name(dev).map_err(|e| driver_error("cuDeviceGetName", e))?;
    // SAFETY: `dev` is a valid device handle; attribute queries have no other preconditions.
    let (memory, major, minor, sms) = unsafe {
        use sys::CUdevice_attribute::*;
        let attr =
            |a| result::device::get_attribute(dev, a).map_err(|e| driver_error("cuDeviceGetAttribute", e));
        (
            result::device::total_mem(dev).map_err(|e| driver_error("cuDeviceTotalMem", e))?,
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?,
            attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?,
            attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?,
        )
    };
    let info = DeviceInfo {
        backend: BACKEND,
        ordinal,
        name,
        vendor: "NVIDIA".into(),
        arch: arch::arch_name(major, minor),
        memory_bytes: memory as u64,
    };
    Ok(Described { info, cc: (major, minor), sms })
}

fn profile(d: Described) -> Profile {
    let (major, minor) = d.cc;
    let fp8 = arch::has_fp8_tensor_cores(major, minor);
    // What the hardware offers (dsv3's kernels use its bf16 tensor cores for prefill GEMMs, through the tile
    // layer, and still decode FP8 to f32: `supports` says so per op).
    let usage = |dtype: DType| {
        let float16 = matches!(dtype, DType::F16 | DType::BF16);
        DTypeUsage {
            storage: true,
            conversion: true,
            arithmetic: matches!(dtype, DType::F32 | DType::I32) || float16,
            matrix: float16 || (fp8 && matches!(dtype, DType::F8E4M3Fn | DType::F8E5M2)),
        }
    };
    let mut features = vec![d.info.arch.clone(), format!("{} SMs", d.sms)];
    match nvrtc::version() {
        Ok((a, b)) => features.push(format!("nvrtc {a}.{b}")),
        Err(e) => features.push(format!("nvrtc: {e}")),
    }
    features.push(match nvrtc::include_dir() {
        Ok(dir) => format!("cuda headers: {}", dir.display()),
        Err(reason) => format!("cuda headers: {reason} (dsv3's kernels do not need them)"),
    });
    features.push(cublaslt::describe(d.cc));
    if !has_graphs() {
        features.push(format!("no graph capture: libcuda lacks {}", missing(GRAPH_SYMBOLS).join(", ")));
    }
    let peak = arch::datasheet_peak(&d.info.name);
    Profile {
        caps: Capabilities {
            dtypes: DType::ALL.iter().map(|&t| (t, usage(t))).collect(),
            fp8_formats: if fp8 { vec![Fp8Format::E4M3Fn, Fp8Format::E5M2] } else { Vec::new() },
            memory_bytes: d.info.memory_bytes,
            subgroup_size: 32,
            graph_capture: has_graphs(),
            host_memory: false,
            features,
        },
        info: d.info,
        peak,
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        init_driver()?;
        let count = result::device::get_count().map_err(|e| driver_error("cuDeviceGetCount", e))?;
        if count <= 0 {
            return Err(unavailable("the driver reports no CUDA device"));
        }
        let devices: Vec<DeviceInfo> =
            (0..count as usize).map(|i| describe(i).map(|d| d.info)).collect::<Result<_>>()?;
        if let Err(e) = nvrtc::ensure_loaded() {
            let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            return Err(unavailable(format!("found {} but cannot compile kernels: {e}", names.join(", "))));
        }
        Ok(devices)
    }

    fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>> {
        let (runtime, d) = self.open_runtime(ordinal)?;
        let device: Arc<dyn Device> = GpuDevice::new(Arc::new(runtime), profile(d))?;
        Ok(device)
    }
}
