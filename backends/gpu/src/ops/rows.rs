//! Placeholder: kernels for rms_norm, softmax, rope, embedding arrive here.

use crate::device::Ctx;
use crate::kernels::Variant;
use crate::launch::Launch;
use dsv3_core::ops::{Embedding, RmsNorm, Rope, Softmax};
use dsv3_core::{Error, Op, Result, Support};

pub fn supports(_ctx: &Ctx, _op: &Op) -> Support {
    Support::Unsupported { reason: "no kernel yet".into() }
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture.
pub fn catalog() -> Vec<Variant> {
    Vec::new()
}

pub fn rms_norm(l: &Launch, _o: &RmsNorm) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn softmax(l: &Launch, _o: &Softmax) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn rope(l: &Launch, _o: &Rope) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn embedding(l: &Launch, _o: &Embedding) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}
