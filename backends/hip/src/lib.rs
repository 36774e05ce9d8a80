//! dsv3's AMD backend. The HIP runtime (libamdhip64) and hiprtc are opened at run time (`api.rs`), so the
//! same binary runs on machines without ROCm and says why the backend is unavailable. Kernels are the shared
//! CUDA C files (`kernels/cuda/`, made portable by `dsv3.cuh`), compiled by hiprtc at first use for the
//! device's architecture and wavefront width and cached on disk (`hiprtc.rs`); ops are launched by the
//! layer CUDA and HIP share (`dsv3-backend-gpu`), over the runtime in `runtime.rs`.
//!
//! Why not the `hip-sys` crate: its build script needs ROCm headers (so it does not build on machines
//! without ROCm), it links `amdhip64` at link time (so the binary does not start without it), and its
//! bindings carry HIP 5.4's struct layouts, which ROCm 6 changed.

pub mod api;
pub mod arch;
pub mod hiprtc;
pub mod runtime;

use api::{Hip, BACKEND, HIP_ERROR_NO_DEVICE, HIP_SUCCESS};
use dsv3_backend_gpu::runtime::Target;
use dsv3_backend_gpu::{GpuDevice, Profile};
use dsv3_core::{Backend, Capabilities, DType, DTypeUsage, Device, DeviceInfo, Error, Result};
use runtime::HipRuntime;
use std::ffi::{c_char, c_int, CStr};
use std::sync::{Arc, OnceLock};

fn unavailable(reason: impl Into<String>) -> Error {
    Error::Unavailable { backend: BACKEND.into(), reason: reason.into() }
}

/// Loads and initialises the runtime once per process: the library and the number of devices, or the
/// reason there are none.
fn init() -> Result<(&'static Hip, usize)> {
    static INIT: OnceLock<std::result::Result<usize, String>> = OnceLock::new();
    let hip = api::hip().map_err(unavailable)?;
    let count = INIT
        .get_or_init(|| {
            // SAFETY: hipInit takes flags 0; hipGetDeviceCount a valid out-pointer. Both only report errors.
            let (init, counted, count) = unsafe {
                let init = (hip.init)(0);
                let mut count: c_int = 0;
                let counted = (hip.get_device_count)(&mut count);
                (init, counted, count)
            };
            // Without a GPU, ROCm 5.2's hipInit says hipErrorInvalidDevice and hipGetDeviceCount says
            // hipErrorNoDevice: the count's answer is the one to show.
            let none = counted == HIP_ERROR_NO_DEVICE || init == HIP_ERROR_NO_DEVICE;
            if none || (counted == HIP_SUCCESS && count <= 0) {
                let mut why = if counted == HIP_SUCCESS {
                    "no AMD GPU: hipGetDeviceCount reports 0 devices".to_string()
                } else {
                    format!("no AMD GPU: hipGetDeviceCount: {}", hip.error_text(counted))
                };
                if init != HIP_SUCCESS {
                    why.push_str(&format!(" (hipInit: {})", hip.error_text(init)));
                }
                return Err(why);
            }
            if init != HIP_SUCCESS {
                return Err(format!("hipInit failed: {}", hip.error_text(init)));
            }
            if counted != HIP_SUCCESS {
                return Err(format!("hipGetDeviceCount failed: {}", hip.error_text(counted)));
            }
            Ok(count as usize)
        })
        .clone()
        .map_err(unavailable)?;
    Ok((hip, count))
}

pub struct HipBackend;

impl HipBackend {
    /// Device `ordinal`'s runtime alone, for tools that launch kernels of their own (`dsv3 probe`, the tile
    /// layer's layout probe).
    pub fn runtime(&self, ordinal: usize) -> Result<HipRuntime> {
        self.open_runtime(ordinal).map(|(runtime, _)| runtime)
    }

    fn open_runtime(&self, ordinal: usize) -> Result<(HipRuntime, Described)> {
        let infos = self.devices()?;
        if ordinal >= infos.len() {
            return Err(unavailable(format!("no device {ordinal} ({} present)", infos.len())));
        }
        let (hip, _) = init()?;
        let d = describe(hip, ordinal)?;
        let target = Target::Hip { arch: d.target_id.clone(), warp: d.wave };
        Ok((HipRuntime::open(ordinal, target)?, d))
    }

    pub fn new() -> HipBackend {
        HipBackend
    }
}

impl Default for HipBackend {
    fn default() -> Self {
        HipBackend::new()
    }
}

/// One device as the runtime describes it.
struct Described {
    info: DeviceInfo,
    /// The full target id, `gfx942:sramecc+:xnack-`: what hiprtc compiles for.
    target_id: String,
    compute_units: i32,
    wave: u32,
}

fn describe(hip: &Hip, ordinal: usize) -> Result<Described> {
    let o = ordinal as c_int;
    let mut dev: c_int = 0;
    // SAFETY: valid out-pointer; a bad ordinal is an error code.
    hip.check("hipDeviceGet", unsafe { (hip.device_get)(&mut dev, o) })?;
    let mut name = [0 as c_char; 256];
    // SAFETY: the buffer holds the length passed; the runtime NUL-terminates within it.
    hip.check("hipDeviceGetName", unsafe {
        (hip.device_get_name)(name.as_mut_ptr(), name.len() as c_int, dev)
    })?;
    name[name.len() - 1] = 0;
    // SAFETY: NUL-terminated above.
    let name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().trim().to_string();
    let mut memory = 0usize;
    // SAFETY: valid out-pointer.
    hip.check("hipDeviceTotalMem", unsafe { (hip.device_total_mem)(&mut memory, dev) })?;
    let attr = |a: c_int| -> Result<i32> {
        let mut v: c_int = 0;
        // SAFETY: valid out-pointer; an unknown attribute is an error code.
        hip.check("hipDeviceGetAttribute", unsafe { (hip.device_get_attribute)(&mut v, a, o) })?;
        Ok(v)
    };
    let compute_units = attr(api::ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let wave = attr(api::ATTRIBUTE_WARP_SIZE)?;
    if wave != 32 && wave != 64 {
        return Err(Error::Driver {
            backend: BACKEND.into(),
            call: "hipDeviceGetAttribute".into(),
            reason: format!("wavefront size {wave} (AMD GPUs have 32 or 64)"),
        });
    }
    // The architecture name has no attribute that works in every release: read it out of the properties
    // struct without relying on its layout (see `arch::find_arch_name`).
    let mut props = vec![0u8; arch::PROPERTIES_BUFFER];
    // SAFETY: the buffer is far larger than any release's hipDeviceProp_t (the runtime writes its own size).
    hip.check("hipGetDeviceProperties", unsafe {
        (hip.get_device_properties)(props.as_mut_ptr().cast(), o)
    })?;
    let target_id = arch::find_arch_name(&props).ok_or_else(|| Error::Driver {
        backend: BACKEND.into(),
        call: "hipGetDeviceProperties".into(),
        reason: "no gfx architecture name in the device properties".into(),
    })?;
    let base = arch::base(&target_id).to_string();
    let info = DeviceInfo {
        backend: BACKEND,
        ordinal,
        name: if name.is_empty() { format!("AMD GPU ({base})") } else { name },
        vendor: "AMD".into(),
        arch: base,
        memory_bytes: memory as u64,
    };
    Ok(Described { info, target_id, compute_units, wave: wave as u32 })
}

fn profile(d: Described) -> Profile {
    let fp8 = arch::fp8_formats(&d.target_id);
    let f16_matrix = arch::has_f16_matrix(&d.target_id);
    // What the hardware offers (dsv3's kernels do not use matrix cores yet: `supports` says so per op).
    let usage = |dtype: DType| {
        let float16 = matches!(dtype, DType::F16 | DType::BF16);
        DTypeUsage {
            storage: true,
            conversion: true,
            arithmetic: matches!(dtype, DType::F32 | DType::I32) || float16,
            matrix: (float16 && f16_matrix) || dtype.fp8_format().is_some_and(|f| fp8.contains(&f)),
        }
    };
    let mut features = vec![
        d.target_id.clone(),
        format!("{} CUs", d.compute_units),
        format!("wave{}", d.wave),
        arch::fp8_feature(&d.target_id),
    ];
    let mut graphs = false;
    if let Ok(hip) = api::hip() {
        let v = hip.version().map_or("of unknown version".to_string(), |v| v.to_string());
        features.push(format!("HIP runtime {v}"));
        graphs = hip.graphs.is_some();
        if !graphs {
            features.push(format!("no graph capture: libamdhip64 lacks {}", api::GRAPH_SYMBOLS.join(" / ")));
        }
    }
    features.push(hiprtc::describe().unwrap_or_else(|e| format!("hiprtc: {e}")));
    let peak = arch::datasheet_peak(&d.info.name);
    Profile {
        caps: Capabilities {
            dtypes: DType::ALL.iter().map(|&t| (t, usage(t))).collect(),
            fp8_formats: fp8,
            memory_bytes: d.info.memory_bytes,
            subgroup_size: d.wave,
            graph_capture: graphs,
            host_memory: false,
            features,
        },
        info: d.info,
        peak,
    }
}

impl Backend for HipBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let (hip, count) = init()?;
        let described: Vec<Described> = (0..count).map(|i| describe(hip, i)).collect::<Result<_>>()?;
        let name = |d: &Described| format!("{} ({})", d.info.name, d.target_id);
        // A device is only useful with a compiler that knows it (hiprtc would abort on one it does not).
        let rocm = match api::rtc() {
            Ok(rtc) => rtc.version(),
            Err(e) => {
                let names: Vec<String> = described.iter().map(name).collect();
                return Err(unavailable(format!(
                    "found {} but cannot compile kernels: {e}",
                    names.join(", ")
                )));
            }
        };
        for d in &described {
            if let Err(why) = arch::check_compiler(&d.target_id, rocm) {
                return Err(unavailable(format!(
                    "found {} but cannot compile kernels for it: {why}",
                    name(d)
                )));
            }
        }
        Ok(described.into_iter().map(|d| d.info).collect())
    }

    fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>> {
        let (runtime, d) = self.open_runtime(ordinal)?;
        let device: Arc<dyn Device> = GpuDevice::new(Arc::new(runtime), profile(d))?;
        Ok(device)
    }
}
