//! The backends compiled into this binary. Adding a backend is one line here and a crate under
//! `backends/`; nothing in `core` changes.

use dsv3_backend_ascend::AscendBackend;
use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_backend_cuda::CudaBackend;
use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_backend_hip::HipBackend;
use dsv3_backend_wgpu::WgpuBackend;
use dsv3_core::{Backend, DeviceInfo};

/// Every backend of this build, in order of preference for running a model.
pub fn backends() -> Vec<Box<dyn Backend>> {
    vec![
        Box::new(CudaBackend::new()),
        Box::new(HipBackend::new()),
        Box::new(WgpuBackend::new()),
        Box::new(CpuBackend::new(Mode::Fast)),
        Box::new(CpuBackend::new(Mode::Reference)),
        Box::new(AscendBackend::new()),
    ]
}

/// Whether `auto` should pass a device over: a software rasterizer behind a GPU API (Mesa's lavapipe runs
/// the wgpu kernels on the CPU, far slower than the CPU backend).
pub fn is_software(info: &DeviceInfo) -> bool {
    dsv3_backend_wgpu::is_software(info)
}

/// Backends the project plans but this build does not contain, with the reason, so that `dsv3 devices`
/// accounts for every kind of hardware.
pub const NOT_BUILT: &[(&str, &str)] = &[];

/// Backends chosen only by name, never by `all` or `auto`: the host emulator running the CUDA C kernels on
/// the CPU with NVIDIA's warp width (`cuda-emu`) or AMD's wave64 (`hip-emu`), for checking kernels where
/// no GPU is. Far slower than the CPU backend.
pub fn by_name_only() -> Vec<Box<dyn Backend>> {
    vec![Box::new(EmulatorBackend::new(32)), Box::new(EmulatorBackend::new(64))]
}

/// Backends selected by a `--backend` value: a name, a comma-separated list, or `all`.
pub fn select(spec: &str) -> Result<Vec<Box<dyn Backend>>, String> {
    if spec == "all" {
        return Ok(backends());
    }
    let all: Vec<Box<dyn Backend>> = backends().into_iter().chain(by_name_only()).collect();
    let wanted: Vec<&str> = spec.split(',').map(str::trim).collect();
    for w in &wanted {
        if !all.iter().any(|b| b.name() == *w) {
            let known: Vec<&str> = all.iter().map(|b| b.name()).collect();
            let why = NOT_BUILT
                .iter()
                .find(|(n, _)| n == w)
                .map_or("unknown backend".to_string(), |(_, r)| r.to_string());
            return Err(format!("--backend {w}: {why} (available: {}, all)", known.join(", ")));
        }
    }
    Ok(all.into_iter().filter(|b| wanted.contains(&b.name())).collect())
}

/// A backend asked for by name must be usable here: its absence is the command's failure, with the reason
/// (`all` asks for whatever is present, and reports the rest as unavailable).
pub fn require_present(spec: &str, backends: &[Box<dyn Backend>]) -> Result<(), String> {
    if spec == "all" {
        return Ok(());
    }
    for backend in backends {
        match backend.devices() {
            Ok(devices) if devices.is_empty() => {
                return Err(format!("--backend {}: no device", backend.name()))
            }
            Ok(_) => {}
            Err(e) => return Err(format!("--backend {}: {e}", backend.name())),
        }
    }
    Ok(())
}
