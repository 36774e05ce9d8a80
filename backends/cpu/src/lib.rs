//! dsv3's CPU backend: one implementation of the backend trait with two modes.
//!
//! * `cpu-ref` ([`Mode::Reference`]): plain loops, f64 accumulation, exact FP8 decode — the oracle every
//!   backend is compared with.
//! * `cpu` ([`Mode::Fast`]): multithreaded (rayon) and SIMD (AVX-512 / AVX2 chosen at run time) kernels
//!   with f32 accumulation, for real use.

mod bind;
mod buffer;
mod checks;
mod device;
pub mod fast;
mod huge_pages;
mod placement;
mod reference;
mod threads;
mod topology;

pub use device::{CpuDevice, Mode};

use dsv3_core::{Backend, Device, DeviceInfo, Error, Result};
use std::sync::Arc;

pub struct CpuBackend {
    mode: Mode,
}

impl CpuBackend {
    pub fn new(mode: Mode) -> CpuBackend {
        CpuBackend { mode }
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &'static str {
        self.mode.backend_name()
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        Ok(vec![CpuDevice::new(self.mode).info().clone()])
    }

    fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>> {
        if ordinal != 0 {
            return Err(Error::Unavailable {
                backend: self.name().into(),
                reason: format!("there is one CPU device (0), not {ordinal}"),
            });
        }
        Ok(CpuDevice::new(self.mode))
    }
}

/// SIMD features relevant to the kernels, as the OS reports them.
pub fn cpu_features() -> Vec<String> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut found = Vec::new();
        macro_rules! probe {
            ($($f:tt),*) => {$( if std::arch::is_x86_feature_detected!($f) { found.push($f.to_string()); } )*};
        }
        probe!(
            "avx2",
            "fma",
            "f16c",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512bf16",
            "avx512fp16",
            "avx512vnni"
        );
        // AMX is not in `is_x86_feature_detected!` on stable Rust, and is usable only once the OS lends
        // the tile state: listed when the GEMM's AMX path can run.
        if fast::gemm::amx_unavailable().is_none() {
            found.push("amx-bf16".to_string());
        }
        found
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        Vec::new()
    }
}
