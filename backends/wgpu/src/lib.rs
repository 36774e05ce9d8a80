//! dsv3's Vulkan / wgpu backend: every op of the core set as a WGSL compute kernel (`kernels/wgsl/`), run
//! through wgpu on Vulkan (Metal and DX12 where wgpu offers them; GL with the `gles` feature).
//!
//! * BF16, F16 and the three FP8 formats have no WGSL type (or not everywhere): buffers are arrays of u32,
//!   elements are decoded and encoded with bit operations in the shader (round to nearest even, FP8
//!   saturating, exactly as core's codec), arithmetic is f32.
//! * Ops take views with any byte offset and strides: buffers are bound whole or in aligned windows, and
//!   each dispatch gets the element offsets and strides in a parameter block. Arguments sharing a buffer
//!   share nothing else (`Op::validate` rejects overlapping outputs), and every binding is read-write, so
//!   any mix of arguments may live in one buffer.
//! * A storage binding is limited (128 MiB on some drivers); ops whose tensors are larger run as several
//!   dispatches over windows of them (see `ops`).
//! * `ash` probes the Vulkan device for what wgpu does not expose (cooperative matrices, bf16 / fp8 shader
//!   extensions, subgroup size control, memory heaps), shown in `capabilities().features`.

mod buffer;
mod device;
mod kernels;
mod ops;
mod peak;
pub mod probe;
mod stream;

pub use device::WgpuDevice;

use dsv3_core::{Backend, Device, DeviceInfo, Error, Result};
use probe::Probe;
use std::sync::{Arc, Mutex, OnceLock};

/// Whether a wgpu device is a software rasterizer (Mesa's lavapipe, SwiftShader): it runs the kernels on
/// the CPU, far slower than the CPU backend, so automatic device choice passes it over.
pub fn is_software(info: &DeviceInfo) -> bool {
    info.backend == device::BACKEND && info.arch.ends_with(":software")
}

struct Discovery {
    adapters: Vec<wgpu::Adapter>,
    infos: Vec<DeviceInfo>,
    probe: Probe,
}

/// How devices of a [`WgpuBackend`] are opened (the defaults for real use; tests narrow them to reach
/// the paths a driver would take elsewhere).
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Caps every storage binding at this many bytes, below the driver's limit.
    pub binding_limit: Option<u64>,
    /// Ignore subgroup operations even where the device has them (the kernels' path without them).
    pub no_subgroups: bool,
}

pub struct WgpuBackend {
    options: Options,
    discovery: OnceLock<std::result::Result<Discovery, String>>,
    /// Opened devices by ordinal: wgpu opens an adapter once, so later `open`s share the device.
    opened: Mutex<Vec<Option<Arc<WgpuDevice>>>>,
}

impl Default for WgpuBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl WgpuBackend {
    pub fn new() -> WgpuBackend {
        Self::with_options(Options::default())
    }

    pub fn with_options(options: Options) -> WgpuBackend {
        WgpuBackend { options, discovery: OnceLock::new(), opened: Mutex::new(Vec::new()) }
    }

    /// Caps every storage binding at `bytes` (below the driver's limit), so that tests exercise the split
    /// bindings real tensors need on drivers with a 128 MiB limit, with small tensors.
    pub fn with_binding_limit(bytes: u64) -> WgpuBackend {
        Self::with_options(Options { binding_limit: Some(bytes), ..Options::default() })
    }

    fn discover(&self) -> std::result::Result<&Discovery, String> {
        self.discovery
            .get_or_init(|| {
                // wgpu and the drivers are foreign code: whatever happens in them, discovery reports a reason
                // instead of taking the process down.
                std::panic::catch_unwind(discover).unwrap_or_else(|p| {
                    let what = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "unknown panic".into());
                    Err(format!("adapter discovery panicked: {what}"))
                })
            })
            .as_ref()
            .map_err(|e| e.clone())
    }
}

fn rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn discover() -> std::result::Result<Discovery, String> {
    let probe = probe::probe();
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if std::env::var_os("WGPU_BACKEND").is_none() {
        desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
        if cfg!(feature = "gles") {
            desc.backends |= wgpu::Backends::GL;
        }
    }
    let backends = desc.backends;
    let instance = wgpu::Instance::new(desc);
    let mut adapters = pollster::block_on(instance.enumerate_adapters(backends));
    // Hardware first: ordinal 0 is the device a model should run on.
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    if adapters.is_empty() {
        return Err(match &probe {
            Probe::Absent(reason) => reason.clone(),
            Probe::Devices(d) => {
                let names: Vec<&str> = d.iter().map(|v| v.name.as_str()).collect();
                format!("Vulkan lists {} but wgpu found no usable adapter", names.join(", "))
            }
        });
    }
    let infos = adapters
        .iter()
        .enumerate()
        .map(|(ordinal, a)| {
            let i = a.get_info();
            device::describe(&i, ordinal, probe.find(i.vendor, i.device, &i.name))
        })
        .collect();
    Ok(Discovery { adapters, infos, probe })
}

impl Backend for WgpuBackend {
    fn name(&self) -> &'static str {
        device::BACKEND
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        self.discover()
            .map(|d| d.infos.clone())
            .map_err(|reason| Error::Unavailable { backend: device::BACKEND.into(), reason })
    }

    fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>> {
        let d = self
            .discover()
            .map_err(|reason| Error::Unavailable { backend: device::BACKEND.into(), reason })?;
        let Some(adapter) = d.adapters.get(ordinal) else {
            return Err(Error::Unavailable {
                backend: device::BACKEND.into(),
                reason: format!("no adapter {ordinal} (this machine has {})", d.adapters.len()),
            });
        };
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if opened.len() <= ordinal {
            opened.resize(ordinal + 1, None);
        }
        if let Some(dev) = &opened[ordinal] {
            return Ok(dev.clone());
        }
        let i = adapter.get_info();
        let dev = device::open(adapter, ordinal, d.probe.find(i.vendor, i.device, &i.name), self.options)?;
        opened[ordinal] = Some(dev.clone());
        Ok(dev)
    }
}
