//! The little a vendor runtime must provide: device memory, compiled kernels, ordered queues.
//! Addresses are device virtual addresses as `u64` (what kernels receive in their parameter blocks).

use crate::kernels::Variant;
use crate::shared_memory::SharedLimits;
use dsv3_core::{DType, Error, Result};
use std::any::Any;
use std::sync::Arc;

/// What kernels are compiled for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// NVIDIA, compiled by NVRTC for `arch` (`sm_80`, `sm_90a`, ...).
    Cuda { arch: String },
    /// AMD, compiled by hiprtc / hipcc for `arch` (`gfx90a`, `gfx942`, ...) with its wavefront width.
    Hip { arch: String, warp: u32 },
    /// The CPU, through the host C++ compiler (the emulator), with the warp width it emulates and, at warp
    /// 64, whether it executes gfx94x's FP8 MFMA (v_mfma_f32_16x16x32_fp8_fp8 on e4m3fnuz, mma.cuh): with
    /// it the emulator stands for MI300 (gfx94x), without it for gfx90a (MI200). Always false at warp 32.
    Host { warp: u32, mfma_fp8: bool },
}

impl Target {
    /// The emulator's target at `warp` lanes: 32 stands for NVIDIA, 64 for AMD gfx94x (MI300, the AMD chip
    /// dsv3's FP8 path is for: e4m3fnuz on the FP8 MFMA); gfx90a is `Host { warp: 64, mfma_fp8: false }`.
    pub fn host(warp: u32) -> Target {
        Target::Host { warp, mfma_fp8: warp == 64 }
    }

    /// Threads per warp / wavefront: a compile-time constant of every kernel variant.
    pub fn warp(&self) -> u32 {
        match self {
            Target::Cuda { .. } => 32,
            Target::Hip { warp, .. } | Target::Host { warp, .. } => *warp,
        }
    }

    /// The macro `dsv3.cuh` selects its compiler branch by.
    pub fn define(&self) -> &'static str {
        match self {
            Target::Cuda { .. } => "DSV3_CUDA",
            Target::Hip { .. } => "DSV3_HIP",
            Target::Host { .. } => "DSV3_HOST",
        }
    }

    pub fn arch(&self) -> &str {
        match self {
            Target::Cuda { arch } | Target::Hip { arch, .. } => arch,
            Target::Host { .. } => "host",
        }
    }

    /// The NVIDIA compute capability as a number (`sm_90a` → 90), for CUDA targets.
    fn sm(&self) -> Option<u32> {
        let Target::Cuda { arch } = self else { return None };
        arch.strip_prefix("sm_")?.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse().ok()
    }

    /// Whether kernels on the tile layer (mma.cuh) run here: bf16 mma.sync from sm_80 on; bf16 MFMA
    /// (v_mfma_f32_16x16x16bf16_1k) on AMD CDNA2 / CDNA3 (gfx90a, gfx94x) at wave64; and the emulator at
    /// either warp width, which executes mma.sync at 32 and MFMA at 64. RDNA (gfx1100 ...: wave32, WMMA),
    /// older CDNA (gfx908: no bf16_1k) and anything else keep the SIMT kernels.
    pub fn mma_bf16(&self) -> bool {
        match self {
            Target::Host { warp, .. } => *warp == 32 || *warp == 64,
            Target::Hip { warp: 64, .. } => {
                let chip = self.chip();
                chip == "gfx90a" || self.gfx94x()
            }
            Target::Hip { .. } => false,
            Target::Cuda { .. } => self.sm().is_some_and(|sm| sm >= 80),
        }
    }

    /// An AMD target's chip without its feature suffixes (`gfx942:sramecc+:xnack-` → `gfx942`).
    fn chip(&self) -> &str {
        self.arch().split(':').next().unwrap_or("")
    }

    /// MI300's ISA (gfx940, gfx941, gfx942), the chips whose FP8 is e4m3fnuz.
    fn gfx94x(&self) -> bool {
        let chip = self.chip();
        matches!(self, Target::Hip { .. }) && chip.len() == 6 && chip.starts_with("gfx94")
    }

    /// Whether the e4m3 mma.sync instruction (m16n8k32) runs here: sm_89 on, and the emulator at warp 32
    /// (the probe checks its layout). Below sm_89 mma.cuh's `mma_e4m3` is two bf16 mma instead; on AMD
    /// e4m3fn products are two bf16 MFMA (gfx94x's FP8 MFMA takes e4m3fnuz: see mma.cuh).
    pub fn mma_e4m3(&self) -> bool {
        matches!(self, Target::Host { warp: 32, .. }) || self.sm().is_some_and(|sm| sm >= 89)
    }

    /// Whether the tile layer takes e4m3fnuz codes (W8A8 in that format, and bf16 × e4m3fnuz weights): on
    /// AMD, wherever the layer runs — natively on gfx94x ([`Target::mfma_fp8_fnuz`]), as exactly decoded
    /// bf16 on gfx90a. NVIDIA has no such format: its e4m3fnuz products stay on the SIMT kernel.
    pub fn mma_fnuz(&self) -> bool {
        self.mma_bf16() && self.warp() == 64
    }

    /// Whether gfx94x's FP8 MFMA (v_mfma_f32_16x16x32_fp8_fp8, e4m3fnuz codes) runs here: gfx940 / 941 /
    /// 942 at wave64 (what mma.cuh's DSV3_MFMA_FP8 selects from the compiler's architecture macro, and the
    /// probe checks), and the emulator built for it (`Host { mfma_fp8: true }`, hip-emu).
    pub fn mfma_fp8_fnuz(&self) -> bool {
        match self {
            Target::Host { warp, mfma_fp8 } => *warp == 64 && *mfma_fp8,
            Target::Hip { warp, .. } => *warp == 64 && self.gfx94x(),
            Target::Cuda { .. } => false,
        }
    }
}

/// A compiled kernel, opaque to everything but the runtime that made it.
pub type Function = Arc<dyn Any + Send + Sync>;

/// Grid and block of a launch (blocks are one-dimensional in every dsv3 kernel), and the dynamic shared
/// memory each block is given (bytes; 0 for kernels with static shared memory only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    pub grid: [u32; 3],
    pub block: u32,
    pub shared: u32,
}

/// One operand of a [`GemmDesc`]: its element type and, for FP8, its scales' type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmOperand {
    pub dtype: DType,
    pub scales: Option<DType>,
}

/// A `gemm` a vendor library may compute instead of dsv3's kernels, as core's `Gemm` has it:
/// `C[M,N] = A[M,K]·B[N,K]ᵀ`, row-major; FP8 A has scales `[M, ceil(K/128)]` (per token per 128
/// channels), FP8 B `[ceil(N/128), ceil(K/128)]` (per 128×128 block), both row-major and contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemmDesc {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: GemmOperand,
    pub b: GemmOperand,
    pub c: DType,
    /// Row pitches of A and C in elements (B is contiguous).
    pub a_pitch: usize,
    pub c_pitch: usize,
    /// The largest power of two, at most 256, that every operand's (scales included) byte offset is a
    /// multiple of (allocations are 256-byte aligned).
    pub align: u32,
}

/// A runtime's answer for a [`GemmDesc`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VendorGemm {
    /// dsv3's kernels compute it.
    Ours,
    /// `library` (name and version) computes it with `scratch` bytes of device memory (workspace,
    /// converted scales) from the stream's scratch pool.
    Library { library: String, scratch: usize },
    /// The library was required (forced by the user) and cannot compute it: why.
    Refused(String),
}

/// The device addresses of a [`VendorGemm::Library`] GEMM (scale addresses 0 for dense operands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmArgs {
    pub desc: GemmDesc,
    pub a: u64,
    pub a_scales: u64,
    pub b: u64,
    pub b_scales: u64,
    pub c: u64,
    /// The scratch the plan asked for, `scratch_bytes` long.
    pub scratch: u64,
    pub scratch_bytes: usize,
}

pub trait Runtime: Send + Sync {
    /// Backend name for errors (`cuda`, `hip`, `cuda-emu`).
    fn backend(&self) -> &'static str;
    /// For a queue to recognise a runtime of its own kind (the source of a peer copy).
    fn as_any(&self) -> &dyn Any;
    fn target(&self) -> &Target;

    /// The shared memory one block may use on this device, without and with opting in; launches over it
    /// are refused before the driver is called ([`crate::shared_memory`]).
    fn shared_limits(&self) -> SharedLimits;

    /// `bytes` of device memory, 256-byte aligned. Zero bytes gives a valid, unique address.
    fn alloc(&self, bytes: usize) -> Result<u64>;

    /// Releases memory from `alloc`. Callers guarantee no queued work still uses it.
    fn free(&self, addr: u64, bytes: usize);

    /// Scratch memory from `alloc` is handed out again, the work that used it finished. GPUs keep what
    /// that work wrote (so this does nothing by default); the emulator overwrites it with garbage, so that
    /// a kernel reading scratch it did not write fails its tests instead of reading the last step's values.
    fn scratch_reused(&self, _addr: u64, _bytes: usize) {}

    /// Compiles (or loads from the disk cache) one kernel variant; `op` names the op for errors.
    fn compile(&self, op: &'static str, variant: &Variant) -> Result<Function>;

    fn new_queue(&self) -> Result<Box<dyn Queue>>;

    /// Whether this runtime's queues copy directly from `src`'s memory ([`Queue::copy_peer`]); where not,
    /// tensors cross through host memory.
    fn can_copy_from(&self, src: &dyn Runtime) -> bool;

    /// Whether a vendor GEMM library (cuBLASLt) computes `g` rather than dsv3's kernels. Asked by
    /// `supports` and again at launch, so it must be cheap after the first answer for a descriptor.
    fn vendor_gemm(&self, _g: &GemmDesc) -> VendorGemm {
        VendorGemm::Ours
    }
}

/// In-order work on one device.
pub trait Queue: Send + Sync {
    /// Copies host bytes to `dst`; `src` may be reused when this returns.
    fn upload(&self, dst: u64, src: &[u8]) -> Result<()>;
    /// Copies device bytes to the host once earlier work on this queue has finished.
    fn download(&self, src: u64, dst: &mut [u8]) -> Result<()>;
    fn copy(&self, src: u64, dst: u64, bytes: usize) -> Result<()>;
    /// Launches `f` with its parameter block (8-byte fields, see `launch::Params`) and `dims.shared` bytes
    /// of dynamic shared memory, opting the function in first where that needs it
    /// ([`FunctionShared::prepare`](crate::shared_memory::FunctionShared::prepare)).
    fn launch(&self, op: &'static str, f: &Function, dims: Dims, params: &[u64]) -> Result<()>;
    /// Waits for everything queued; errors of asynchronous work surface here.
    fn sync(&self) -> Result<()>;

    /// Marks the work queued so far, without waiting for it.
    fn record_event(&self) -> Result<Box<dyn QueueEvent>>;
    /// Orders later work on this queue after `event`: on the device when the runtime can (an event of its
    /// own kind), else by waiting for it on the host.
    fn wait_event(&self, event: &dyn QueueEvent) -> Result<()>;

    /// Copies `bytes` from `src`, memory of `src_runtime` (another device, one this runtime
    /// [`can_copy_from`](Runtime::can_copy_from)), to `dst` on this queue's device, ordered after this
    /// queue's earlier work (the caller orders it after the source's).
    fn copy_peer(&self, src_runtime: &dyn Runtime, src: u64, dst: u64, bytes: usize) -> Result<()>;

    /// Starts capturing: launches and copies enqueued from now on are recorded, not run, until
    /// [`end_capture`](Queue::end_capture). The stream layer calls nothing else on a capturing queue.
    fn begin_capture(&self) -> Result<()>;
    /// Stops capturing and makes the recorded work replayable; the queue runs work eagerly again whether
    /// or not this succeeds.
    fn end_capture(&self) -> Result<Box<dyn QueueGraph>>;

    /// Enqueues a GEMM its runtime answered [`VendorGemm::Library`] for. `Ok(false)`: the library failed
    /// before enqueueing anything and the runtime has stopped offering it for this descriptor (and said
    /// why in the log), so the caller computes it with dsv3's kernels; an error when the library was
    /// required.
    fn vendor_gemm(&self, op: &'static str, _args: &GemmArgs) -> Result<bool> {
        Err(Error::unsupported("gpu", op, "this runtime offers no vendor GEMM library"))
    }
}

/// Work captured on a queue, replayable on that queue (the stream layer keeps the queue, and every buffer
/// the work uses, alive as long as the graph).
pub trait QueueGraph: Send + Sync {
    /// Enqueues the captured work on its queue, after the queue's earlier work.
    fn launch(&self) -> Result<()>;
}

/// A point in one queue's work (see [`Queue::record_event`]).
pub trait QueueEvent: Send + Sync {
    /// Blocks until the recorded work has finished.
    fn synchronize(&self) -> Result<()>;
    /// For a queue to recognise an event of its own runtime.
    fn as_any(&self) -> &dyn Any;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mma.sync from sm_80 (bf16) and sm_89 (e4m3), on every later architecture and the emulator at warp 32;
    /// bf16 MFMA on gfx90a and gfx94x at wave64 and the emulator at warp 64, with e4m3fn as decoded bf16
    /// there, e4m3fnuz taken by the layer on all of them and by the FP8 MFMA on gfx940 / 941 / 942 and the
    /// gfx94x emulator only; nothing on RDNA, gfx908, gfx950 or wave32.
    #[test]
    fn the_tile_layer_runs_where_mma_sync_or_mfma_exists() {
        let cuda = |arch: &str| Target::Cuda { arch: arch.into() };
        let all = |t: &Target| (t.mma_bf16(), t.mma_e4m3(), t.mma_fnuz(), t.mfma_fp8_fnuz());
        assert_eq!(all(&cuda("sm_75")), (false, false, false, false));
        assert_eq!(all(&cuda("sm_80")), (true, false, false, false));
        assert_eq!(all(&cuda("sm_86")), (true, false, false, false));
        for arch in ["sm_89", "sm_90a", "sm_100a", "sm_120a"] {
            assert_eq!(all(&cuda(arch)), (true, true, false, false), "{arch}");
        }
        assert_eq!(all(&cuda("compute_90")), (false, false, false, false));
        assert_eq!(all(&Target::host(32)), (true, true, false, false));
        assert_eq!(all(&Target::Host { warp: 32, mfma_fp8: true }), (true, true, false, false));
        assert_eq!(all(&Target::host(64)), (true, false, true, true));
        assert_eq!(all(&Target::Host { warp: 64, mfma_fp8: false }), (true, false, true, false));
        let hip = |arch: &str, warp: u32| Target::Hip { arch: arch.into(), warp };
        for arch in ["gfx90a", "gfx90a:sramecc+:xnack-"] {
            assert_eq!(all(&hip(arch, 64)), (true, false, true, false), "{arch}");
        }
        for arch in ["gfx940", "gfx941", "gfx942", "gfx942:sramecc+:xnack-"] {
            assert_eq!(all(&hip(arch, 64)), (true, false, true, true), "{arch}");
        }
        for (arch, warp) in [
            ("gfx942", 32),
            ("gfx908", 64),
            ("gfx950", 64),
            ("gfx1100", 32),
            ("gfx1100", 64),
            ("gfx9400", 64),
        ] {
            assert_eq!(all(&hip(arch, warp)), (false, false, false, false), "{arch} wave{warp}");
        }
    }
}
