//! Element-wise ops: add, silu_mul, cast.

use super::row_stride;
use crate::kernels::{self, Variant};
use crate::launch::{Launch, Params, BLOCK};
use dsv3_core::ops::{Add, Cast, SiluMul};
use dsv3_core::{Result, Tensor};

/// `out = f(a, b)` over `[R, N]` row views; `opk` selects f (see elementwise.cu).
fn binary(l: &Launch, opk: i64, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    let (rows, n) = (out.shape[0], out.shape[1]);
    if rows * n == 0 {
        return Ok(());
    }
    let v = Variant::new(kernels::ELEMENTWISE)
        .ty("a", a.dtype)
        .ty("b", b.dtype)
        .ty("out", out.dtype)
        .konst("OPK", opk);
    let f = l.kernel(&v)?;
    let params = Params::new()
        .u(rows)
        .u(n)
        .addr(l.addr("a", a)?)
        .u(row_stride(a))
        .addr(l.addr("b", b)?)
        .u(row_stride(b))
        .addr(l.addr("out", out)?)
        .u(row_stride(out));
    l.run(&f, l.grid((rows * n) as u64, BLOCK)?, params)
}

pub fn add(l: &Launch, o: &Add) -> Result<()> {
    binary(l, 0, &o.a, &o.b, &o.out)
}

pub fn silu_mul(l: &Launch, o: &SiluMul) -> Result<()> {
    binary(l, 1, &o.gate, &o.up, &o.out)
}

/// Contiguous, any rank: seen as one row.
pub fn cast(l: &Launch, o: &Cast) -> Result<()> {
    let numel = o.x.numel();
    if numel == 0 {
        return Ok(());
    }
    let x = o.x.reshape(&[1, numel])?;
    let out = o.out.reshape(&[1, numel])?;
    binary(l, 2, &x, &x, &out)
}

pub fn catalog() -> Vec<Variant> {
    use dsv3_core::DType::{F8E4M3Fn, BF16, F32};
    let v = |a, b, out, opk| {
        Variant::new(kernels::ELEMENTWISE).ty("a", a).ty("b", b).ty("out", out).konst("OPK", opk)
    };
    vec![
        v(BF16, BF16, BF16, 0),
        v(F32, BF16, F32, 0),
        v(BF16, BF16, BF16, 1),
        v(F32, F32, BF16, 2),
        v(BF16, BF16, F8E4M3Fn, 2),
    ]
}
