//! Placeholder: kernels for mla, mha arrive here.

use crate::device::Ctx;
use crate::kernels::Variant;
use crate::launch::Launch;
use dsv3_core::ops::{MhaAttention, MlaAttention};
use dsv3_core::{Error, Op, Result, Support};

pub fn supports(_ctx: &Ctx, _op: &Op) -> Support {
    Support::Unsupported { reason: "no kernel yet".into() }
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture.
pub fn catalog() -> Vec<Variant> {
    Vec::new()
}

pub fn mla(l: &Launch, _o: &MlaAttention) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn mha(l: &Launch, _o: &MhaAttention) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}
