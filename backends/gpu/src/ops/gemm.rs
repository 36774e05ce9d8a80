//! Placeholder: kernels for gemm, grouped_gemm, act_quant, dequantize arrive here.

use crate::device::Ctx;
use crate::kernels::Variant;
use crate::launch::Launch;
use dsv3_core::ops::{ActQuant, Dequantize, Gemm, GroupedGemm};
use dsv3_core::{Error, Op, Result, Support};

pub fn supports(_ctx: &Ctx, _op: &Op) -> Support {
    Support::Unsupported { reason: "no kernel yet".into() }
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture.
pub fn catalog() -> Vec<Variant> {
    Vec::new()
}

pub fn gemm(l: &Launch, _o: &Gemm) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn grouped_gemm(l: &Launch, _o: &GroupedGemm) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn act_quant(l: &Launch, _o: &ActQuant) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn dequantize(l: &Launch, _o: &Dequantize) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}
