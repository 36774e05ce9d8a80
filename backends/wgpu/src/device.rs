//! One wgpu adapter opened as a dsv3 device: limits, capabilities, `supports`, memory, streams.

use crate::buffer::{padded, WgpuBuffer};
use crate::kernels;
use crate::ops;
use crate::probe::VulkanDevice;
use crate::stream::WgpuStream;
use dsv3_core::{
    Buffer, Capabilities, DType, DTypeUsage, Device, DeviceId, DeviceInfo, Error, Op, Peak, Result, Stream,
    Support,
};
use std::sync::{Arc, Mutex, OnceLock};

pub const BACKEND: &str = "wgpu";

/// What every part of the backend needs of the device.
pub struct Ctx {
    pub id: DeviceId,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// Largest storage binding, bytes (the driver's limit, or a smaller one set for tests).
    pub binding_limit: u64,
    /// Storage binding offsets must be multiples of this.
    pub offset_align: u64,
    pub max_groups: u32,
    pub max_buffer: u64,
    pub workgroup_storage: u32,
    /// Subgroup operations are available (and enabled): kernels with a subgroup variant use it.
    pub subgroups: bool,
    /// A software rasterizer (lavapipe): fewer, larger workgroups pay off there.
    pub software: bool,
    pub kernels: kernels::Cache,
    /// Errors wgpu reports outside any error scope (device loss, internal errors): surfaced at `sync`.
    pub uncaptured: Arc<Mutex<Vec<String>>>,
}

impl Ctx {
    pub fn kernel(&self, op: &'static str, spec: &kernels::Spec) -> Result<Arc<kernels::Kernel>> {
        self.kernels.get(&self.device, op, spec)
    }

    pub fn driver_error(&self, call: &str, reason: impl std::fmt::Display) -> Error {
        Error::Driver { backend: BACKEND.into(), call: call.into(), reason: reason.to_string() }
    }
}

pub struct WgpuDevice {
    pub(crate) ctx: Arc<Ctx>,
    info: DeviceInfo,
    caps: Capabilities,
    stream: Arc<WgpuStream>,
    peak: OnceLock<Option<Peak>>,
}

/// Opens `adapter` as dsv3 device `ordinal`.
pub fn open(
    adapter: &wgpu::Adapter,
    ordinal: usize,
    vulkan: Option<&VulkanDevice>,
    options: crate::Options,
) -> Result<Arc<WgpuDevice>> {
    let binding_limit = options.binding_limit;
    let a = adapter.get_info();
    let limits = adapter.limits();
    let wanted = wgpu::Features::SHADER_INT64 | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP;
    let features = adapter.features() & wanted;
    let desc = wgpu::DeviceDescriptor {
        label: Some("dsv3"),
        required_features: features,
        // Everything the adapter offers: the defaults (8 storage buffers per stage, 128 MiB bindings,
        // 256 MiB buffers) are below what the kernels and real tensors need.
        required_limits: limits.clone(),
        ..Default::default()
    };
    let (device, queue) = pollster::block_on(adapter.request_device(&desc)).map_err(|e| Error::Driver {
        backend: BACKEND.into(),
        call: "request_device".into(),
        reason: e.to_string(),
    })?;
    let uncaptured = Arc::new(Mutex::new(Vec::new()));
    {
        let sink = uncaptured.clone();
        // Without a handler wgpu panics on an error no scope caught; record it for the next sync instead.
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            sink.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
        }));
    }
    let id = DeviceId::new(BACKEND, ordinal);
    let binding_limit = binding_limit
        .map_or(limits.max_storage_buffer_binding_size, |l| l.min(limits.max_storage_buffer_binding_size));
    let ctx = Arc::new(Ctx {
        id,
        device,
        queue,
        binding_limit: binding_limit / 4 * 4,
        offset_align: limits.min_storage_buffer_offset_alignment as u64,
        max_groups: limits.max_compute_workgroups_per_dimension,
        max_buffer: limits.max_buffer_size,
        workgroup_storage: limits.max_compute_workgroup_storage_size,
        subgroups: features.contains(wgpu::Features::SUBGROUP) && !options.no_subgroups,
        software: a.device_type == wgpu::DeviceType::Cpu,
        kernels: kernels::Cache::default(),
        uncaptured,
    });
    let info = describe(&a, ordinal, vulkan);
    let memory_bytes = info.memory_bytes;
    let kind = kind(a.device_type);
    let has = |f: wgpu::Features| features.contains(f);
    let usage = |arithmetic: bool| DTypeUsage { storage: true, conversion: true, arithmetic, matrix: false };
    let dtypes = DType::ALL
        .iter()
        .map(|&d| {
            let arithmetic = match d {
                DType::F32 | DType::I32 | DType::U8 => true,
                DType::F16 => has(wgpu::Features::SHADER_F16),
                DType::I64 => has(wgpu::Features::SHADER_INT64),
                _ => false,
            };
            (d, usage(arithmetic))
        })
        .collect();
    let mut feats = vec![format!("wgpu 30 {:?}", a.backend), format!("device type {kind}")];
    for (f, name) in [
        (wgpu::Features::SHADER_F16, "shader-f16"),
        (wgpu::Features::SUBGROUP, "subgroup"),
        (wgpu::Features::SHADER_INT64, "shader-int64"),
    ] {
        if has(f) {
            feats.push(name.to_string());
        }
    }
    feats.push(format!("binding limit {} MiB", ctx.binding_limit >> 20));
    feats.push(format!("workgroup memory {} KiB", ctx.workgroup_storage >> 10));
    match vulkan {
        Some(v) => feats.extend(v.features()),
        None if a.backend == wgpu::Backend::Vulkan => feats.push("vulkan probe: device not matched".into()),
        None => {}
    }
    let subgroup = vulkan.map_or(a.subgroup_min_size, |v| v.subgroup_size).max(1);
    let caps = Capabilities {
        dtypes,
        // WGSL has no FP8 type: every format is decoded to f32 in the shader.
        fp8_formats: Vec::new(),
        memory_bytes,
        subgroup_size: subgroup,
        graph_capture: false,
        host_memory: a.device_type == wgpu::DeviceType::Cpu,
        features: feats,
    };
    let stream = Arc::new(WgpuStream::new(ctx.clone())?);
    Ok(Arc::new(WgpuDevice { ctx, info, caps, stream, peak: OnceLock::new() }))
}

fn kind(t: wgpu::DeviceType) -> &'static str {
    match t {
        wgpu::DeviceType::Cpu => "software",
        wgpu::DeviceType::DiscreteGpu => "discrete-gpu",
        wgpu::DeviceType::IntegratedGpu => "integrated-gpu",
        wgpu::DeviceType::VirtualGpu => "virtual-gpu",
        wgpu::DeviceType::Other => "other",
    }
}

/// How `dsv3 devices` names an adapter. `arch` is `<api>:<kind>` (`vulkan:discrete-gpu`,
/// `vulkan:software` for Mesa's lavapipe), which [`crate::is_software`] reads.
pub fn describe(a: &wgpu::AdapterInfo, ordinal: usize, vulkan: Option<&VulkanDevice>) -> DeviceInfo {
    let driver = if a.driver.is_empty() { String::new() } else { format!(", {}", a.driver) };
    DeviceInfo {
        backend: BACKEND,
        ordinal,
        name: format!("{} ({:?}{driver})", a.name, a.backend),
        vendor: vendor_name(a.vendor),
        arch: format!("{}:{}", format!("{:?}", a.backend).to_lowercase(), kind(a.device_type)),
        memory_bytes: vulkan.map_or(0, |v| v.device_local_heaps.iter().sum()),
    }
}

fn vendor_name(id: u32) -> String {
    match id {
        0x10de => "NVIDIA".into(),
        0x1002 => "AMD".into(),
        0x8086 => "Intel".into(),
        0x13b5 => "ARM".into(),
        0x5143 => "Qualcomm".into(),
        0x106b => "Apple".into(),
        0x10005 => "Mesa".into(),
        other => format!("vendor {other:#x}"),
    }
}

impl Device for WgpuDevice {
    fn id(&self) -> DeviceId {
        self.ctx.id
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn supports(&self, op: &Op) -> Support {
        ops::supports(&self.ctx, op)
    }

    fn peak(&self) -> Option<Peak> {
        self.peak.get_or_init(|| crate::peak::measure(&self.ctx, &self.stream)).clone()
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let size = padded(bytes);
        if size > self.ctx.max_buffer {
            return Err(Error::Buffer {
                backend: BACKEND.into(),
                reason: format!(
                    "{bytes} bytes exceed the largest buffer this device creates ({} bytes)",
                    self.ctx.max_buffer
                ),
            });
        }
        let scope = self.ctx.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let raw = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if pollster::block_on(scope.pop()).is_some() {
            return Err(Error::OutOfMemory { backend: BACKEND.into(), bytes });
        }
        Ok(Arc::new(WgpuBuffer::new(raw, bytes, self.ctx.id)))
    }

    fn default_stream(&self) -> Arc<dyn Stream> {
        self.stream.clone()
    }

    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        Ok(Arc::new(WgpuStream::new(self.ctx.clone())?))
    }
}
