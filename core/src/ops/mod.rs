//! The op set: what DeepSeek-V3 needs, each op one struct of tensors and parameters with its numerics
//! contract documented where it is defined. [`Op`] is the closed enum backends match on; adding an op is
//! a core change by design (every backend must then say whether it supports it), adding a backend is not.

pub mod attention;
pub mod check;
pub mod elementwise;
pub mod gemm;
pub mod moe;
pub mod sampling;

pub use attention::{CacheAppend, CachePages, MhaAttention, MlaAttention};
pub use elementwise::{Add, Cast, Embedding, RmsNorm, Rope, SiluMul, Softmax};
pub use gemm::{
    ActQuant, Activations, BatchedGemm, Dequantize, Gemm, GroupedGemm, ScaleFormat, Weights, QUANT_BLOCK,
};
pub use moe::{MoeCombine, MoeDispatch, MoeRoute, RouteConfig, Scoring, TopkMethod};
pub use sampling::{Argmax, RowSampling, Sample, TopK};

use crate::error::{Error, Result};
use crate::tensor::Tensor;
use smallvec::SmallVec;

/// The op table: each op's variant (named as its struct) and the name reports, filters and case files use.
/// Adding an op is its struct in one of the modules (with its [`OpDef`]) and one line here; every backend
/// then has to say whether it supports it.
macro_rules! op_table {
    ($($variant:ident = $name:literal),* $(,)?) => {
        #[derive(Clone, Debug)]
        pub enum Op {
            $($variant($variant),)*
        }

        /// Every op name, in the order the support matrix lists them.
        pub const OP_NAMES: &[&str] = &[$($name),*];

        impl Op {
            pub fn name(&self) -> &'static str {
                match self {
                    $(Op::$variant(_) => $name,)*
                }
            }

            fn def(&self) -> &dyn OpDef {
                match self {
                    $(Op::$variant(o) => o,)*
                }
            }
        }
    };
}

op_table! {
    Gemm = "gemm",
    GroupedGemm = "grouped_gemm",
    BatchedGemm = "batched_gemm",
    ActQuant = "act_quant",
    Dequantize = "dequantize",
    MoeRoute = "moe_route",
    MoeDispatch = "moe_dispatch",
    MoeCombine = "moe_combine",
    MlaAttention = "mla_attention",
    CacheAppend = "cache_append",
    MhaAttention = "mha_attention",
    RmsNorm = "rms_norm",
    Rope = "rope",
    SiluMul = "silu_mul",
    Add = "add",
    Embedding = "embedding",
    Softmax = "softmax",
    Cast = "cast",
    Argmax = "argmax",
    TopK = "topk",
    Sample = "sample",
}

/// What each op's struct says about itself; [`Op`] forwards to it, so an op's facts live beside its
/// numerics contract.
pub trait OpDef {
    /// Every tensor the op touches, with its argument name and whether it is read or written.
    fn args(&self) -> ArgList<'_>;

    /// The op's own shape, dtype and parameter rules. Bounds, devices and overlapping outputs are checked
    /// for every op by [`Op::validate`], before and after this.
    fn validate(&self) -> Result<()>;

    /// Floating-point operations (a multiply-add is 2), where it is not one per output element.
    fn flops(&self) -> Option<f64> {
        None
    }

    /// Bytes the op must move at least once, where it is not every argument once.
    fn bytes(&self) -> Option<f64> {
        None
    }
}

/// An op's tensors, each with its argument name and access, as [`OpDef::args`] lists them. Held inline
/// (no allocation) up to 8, more than any op has: a backend lists an op's tensors on every launch, and a
/// decode step of a small model is hundreds of launches.
pub type ArgList<'t> = SmallVec<[(&'static str, &'t Tensor, Access); 8]>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    /// Every element is written; the prior contents do not matter.
    Write,
    /// Updated in place: the elements the op writes change, every other keeps its value (a cache).
    Update,
}

/// Work an op does, for GFLOP/s and GB/s figures: floating-point operations (a multiply-add is 2) and the
/// bytes it must move at least once (inputs read, outputs written).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub flops: f64,
    pub bytes: f64,
}

impl Op {
    /// Every tensor the op touches, with its argument name and whether it is read or written.
    pub fn tensors(&self) -> ArgList<'_> {
        self.def().args()
    }

    /// Shapes, dtypes and buffer bounds; outputs that overlap any other argument are rejected (in-place
    /// updates are not part of any op's contract, so no backend has to reason about aliasing).
    pub fn validate(&self) -> Result<()> {
        // Bounds first: after this every shape describes memory that exists, so the per-op checks can
        // multiply dimensions without overflow.
        let name = self.name();
        let tensors = self.tensors();
        let device = tensors[0].1.buffer.device_id();
        for (arg, t, _) in &tensors {
            check::in_bounds(name, arg, t)?;
            check::condition(name, arg, t.buffer.device_id() == device, || {
                format!("lives on {} but the op's first argument lives on {device}", t.buffer.device_id())
            })?;
        }
        self.def().validate()?;
        for (i, (arg, out, access)) in tensors.iter().enumerate() {
            if *access == Access::Read {
                continue;
            }
            for (j, (other, t, _)) in tensors.iter().enumerate() {
                if i != j && overlaps(out, t) {
                    return Err(Error::invalid(
                        name,
                        arg,
                        format!("overlaps argument `{other}` ({out:?} and {t:?})"),
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn cost(&self) -> Cost {
        let tensors = self.tensors();
        let bytes = self
            .def()
            .bytes()
            .unwrap_or_else(|| tensors.iter().map(|(_, t, _)| (t.numel() * t.dtype.size()) as f64).sum());
        let flops = self.def().flops().unwrap_or_else(|| {
            tensors.iter().filter(|(_, _, a)| *a != Access::Read).map(|(_, t, _)| t.numel() as f64).sum()
        });
        Cost { flops, bytes }
    }
}

fn overlaps(a: &Tensor, b: &Tensor) -> bool {
    if a.buffer.device_id() != b.buffer.device_id()
        || !std::ptr::addr_eq(std::sync::Arc::as_ptr(&a.buffer), std::sync::Arc::as_ptr(&b.buffer))
    {
        return false;
    }
    let (ra, rb) = (a.byte_range(), b.byte_range());
    !ra.is_empty() && !rb.is_empty() && ra.start < rb.end && rb.start < ra.end
}
