//! Placeholder: kernels for argmax, topk, sample arrive here.

use crate::device::Ctx;
use crate::kernels::Variant;
use crate::launch::Launch;
use dsv3_core::ops::{Argmax, Sample, TopK};
use dsv3_core::{Error, Op, Result, Support};

pub fn supports(_ctx: &Ctx, _op: &Op) -> Support {
    Support::Unsupported { reason: "no kernel yet".into() }
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture.
pub fn catalog() -> Vec<Variant> {
    Vec::new()
}

pub fn argmax(l: &Launch, _o: &Argmax) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn topk(l: &Launch, _o: &TopK) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn sample(l: &Launch, _o: &Sample) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}
