//! What dsv3's CUDA and HIP backends share. Their kernels are one set of CUDA C files (`kernels/cuda/`,
//! portable through `dsv3.cuh`); everything between an [`Op`](dsv3_core::Op) and a kernel launch — which
//! variant, which parameters, which grid — is written once here against a small [`Runtime`] trait that
//! each vendor backend implements over its driver (cudarc + NVRTC, libamdhip64 + hiprtc).
//!
//! A third runtime, [`emulator`], compiles the same kernel files with the host C++ compiler and runs them
//! on the CPU (one fiber per GPU thread, strict about barriers and warp operations). It is how the kernels
//! and their launches are tested on machines without a GPU: the conformance suite runs against it.

pub mod buffer;
pub mod device;
pub mod disk_cache;
pub mod emulator;
pub mod kernels;
pub mod launch;
pub mod ops;
pub mod probe;
pub mod runtime;
pub mod shared_memory;
pub mod stream;

pub use device::{GpuDevice, Profile};
pub use runtime::{
    GemmArgs, GemmDesc, GemmOperand, Queue, QueueEvent, QueueGraph, Runtime, Target, VendorGemm,
};
pub use shared_memory::{FunctionShared, SharedLimits};
