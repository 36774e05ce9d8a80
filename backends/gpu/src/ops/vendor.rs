//! The hook through which a runtime's vendor GEMM library (cuBLASLt) takes a `gemm` before dsv3's
//! kernels: the runtime is asked first (`Runtime::vendor_gemm`), and whatever it declines, or gives back
//! after a failed call, runs on the kernels of `gemm.rs`, which this module leaves alone.

use super::row_stride;
use crate::device::Ctx;
use crate::launch::Launch;
use crate::runtime::{GemmArgs, GemmDesc, GemmOperand, VendorGemm};
use dsv3_core::ops::{Activations, Gemm, Weights};
use dsv3_core::{Result, Support, Tensor};

/// Rows from which a library may take the GEMM: at or below the decode kernel's rows, dsv3's decode kernel
/// keeps it (it reads each weight once for all rows; whether a library does better there is for a GPU
/// measurement to show, not assumed here).
const MIN_ROWS: usize = super::gemm::DECODE_ROWS + 1;

/// The descriptor of a gemm a library may be offered: 2-D weights, more than decode rows.
fn desc(o: &Gemm) -> Option<GemmDesc> {
    let (av, bv) = (o.a.values(), o.b.values());
    if av.rank() != 2 || bv.rank() != 2 || o.c.rank() != 2 || av.shape[0] < MIN_ROWS {
        return None;
    }
    let (a, a_scales) = match &o.a {
        Activations::Dense(t) => (t, None),
        Activations::Fp8 { codes, scales } => (codes, Some(scales)),
    };
    let (b, b_scales) = match &o.b {
        Weights::Dense(t) => (t, None),
        Weights::BlockFp8 { codes, scales } => (codes, Some(scales)),
    };
    let offsets = [Some(a), a_scales, Some(b), b_scales, Some(&o.c)].into_iter().flatten().map(|t| t.offset);
    let align = offsets.fold(256, |align, offset| align.min(1 << offset.trailing_zeros().min(8))) as u32;
    let operand = |t: &Tensor, s: Option<&Tensor>| GemmOperand { dtype: t.dtype, scales: s.map(|s| s.dtype) };
    Some(GemmDesc {
        m: av.shape[0],
        n: bv.shape[0],
        k: av.shape[1],
        a: operand(a, a_scales),
        b: operand(b, b_scales),
        c: o.c.dtype,
        a_pitch: row_stride(av),
        c_pitch: row_stride(&o.c),
        align,
    })
}

/// `Some` when the runtime's library answers for this gemm (it computes it, or it was required and
/// cannot); `None`: ask dsv3's kernels.
pub fn supports(ctx: &Ctx, o: &Gemm) -> Option<Support> {
    match ctx.runtime.vendor_gemm(&desc(o)?) {
        VendorGemm::Ours => None,
        VendorGemm::Library { library, .. } => Some(Support::Library { library }),
        VendorGemm::Refused(reason) => Some(Support::Unsupported { reason }),
    }
}

/// Enqueues the gemm through the runtime's library when it takes it; `false`: dsv3's kernels must.
pub fn gemm(l: &Launch, o: &Gemm) -> Result<bool> {
    let Some(desc) = desc(o) else { return Ok(false) };
    let VendorGemm::Library { scratch: scratch_bytes, .. } = l.stream.ctx.runtime.vendor_gemm(&desc) else {
        return Ok(false);
    };
    let scales = |t: Option<&Tensor>, arg| t.map_or(Ok(0), |t| l.addr(arg, t));
    let a_scales =
        scales(if let Activations::Fp8 { scales, .. } = &o.a { Some(scales) } else { None }, "a_scales")?;
    let b_scales =
        scales(if let Weights::BlockFp8 { scales, .. } = &o.b { Some(scales) } else { None }, "b_scales")?;
    let args = GemmArgs {
        desc,
        a: l.addr("a", o.a.values())?,
        a_scales,
        b: l.addr("b", o.b.values())?,
        b_scales,
        c: l.addr("c", &o.c)?,
        scratch: if scratch_bytes > 0 { l.scratch(scratch_bytes)? } else { 0 },
        scratch_bytes,
    };
    l.stream.queue.vendor_gemm(l.op, &args)
}
