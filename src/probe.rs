//! `dsv3 probe`: the tensor-core tile layer's layout probe (`dsv3_backend_gpu::probe`) on an NVIDIA or AMD
//! GPU or the emulator: every value each lane of one warp computes with mma.cuh's operations, compared bit
//! for bit with the PTX ISA's fragment tables (NVIDIA, warp 32) or AMD's MFMA tables (wave64). The first step of ci/device-check.sh, so that the first GPU lent
//! confirms the emulator's layouts before any timing.

use crate::out::outln;
use dsv3_backend_cuda::CudaBackend;
use dsv3_backend_gpu::emulator::Emulator;
use dsv3_backend_gpu::{probe, Runtime};
use dsv3_backend_hip::HipBackend;

/// Check the tensor-core tile layer against the vendors' fragment layouts
///
/// Runs mma.sync, ldmatrix and cp.async (NVIDIA) or MFMA (AMD), and the warp tile kernels use, on
/// small-integer matrices (every sum exact) in one warp and compares each lane's values with the PTX ISA's
/// or AMD's tables. Exit status 1 when any differs.
#[derive(clap::Args)]
pub struct Args {
    /// `cuda` (an NVIDIA GPU from sm_80), `hip` (an AMD gfx90a / gfx94x), or the host emulator standing
    /// for either: `cuda-emu` (warp 32), `hip-emu` (wave64, as gfx94x: FP8 MFMA on e4m3fnuz included)
    #[arg(long, default_value = "cuda", value_parser = ["cuda", "cuda-emu", "hip", "hip-emu"])]
    backend: String,
    /// The device's ordinal
    #[arg(long, default_value_t = 0)]
    device: usize,
}

pub fn run(args: Args) -> i32 {
    crate::finish("probe", try_run(&args))
}

fn try_run(args: &Args) -> Result<i32, String> {
    let runtime: Box<dyn Runtime> = match args.backend.as_str() {
        "cuda" => Box::new(CudaBackend::new().runtime(args.device).map_err(|e| e.to_string())?),
        "hip" => Box::new(HipBackend::new().runtime(args.device).map_err(|e| e.to_string())?),
        "hip-emu" => Box::new(Emulator::new(64).map_err(|e| e.to_string())?),
        _ => Box::new(Emulator::new(32).map_err(|e| e.to_string())?),
    };
    let report = probe::run(runtime.as_ref()).map_err(|e| e.to_string())?;
    outln!("{report}")?;
    Ok(if report.passed() { 0 } else { 1 })
}
