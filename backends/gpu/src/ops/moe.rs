//! Placeholder: kernels for route, dispatch, combine arrive here.

use crate::device::Ctx;
use crate::kernels::Variant;
use crate::launch::Launch;
use dsv3_core::ops::{MoeCombine, MoeDispatch, MoeRoute};
use dsv3_core::{Error, Op, Result, Support};

pub fn supports(_ctx: &Ctx, _op: &Op) -> Support {
    Support::Unsupported { reason: "no kernel yet".into() }
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture.
pub fn catalog() -> Vec<Variant> {
    Vec::new()
}

pub fn route(l: &Launch, _o: &MoeRoute) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn dispatch(l: &Launch, _o: &MoeDispatch) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}

pub fn combine(l: &Launch, _o: &MoeCombine) -> Result<()> {
    Err(Error::unsupported(l.backend(), l.op, "no kernel yet"))
}
