//! From an op to dispatches: each op picks its kernel variant (argument element types, switches), binds
//! its tensors as windows of their buffers, and passes element offsets, sizes and strides. Ops whose
//! tensors exceed the storage binding limit are split along a dimension (rows, columns, experts, tables,
//! cache rows) into dispatches that each bind only what they touch.

mod attention;
mod cache;
mod elementwise;
mod gemm;
mod moe;
mod select;

use crate::device::{Ctx, BACKEND};
use crate::stream::Recorder;
use dsv3_core::{Error, Op, Result, Support, Tensor};

pub fn record(rec: &mut Recorder, op: &Op) -> Result<()> {
    if let Support::Unsupported { reason } = supports(rec.ctx, op) {
        return Err(Error::unsupported(BACKEND, op.name(), reason));
    }
    match op {
        Op::Add(o) => elementwise::add(rec, o),
        Op::SiluMul(o) => elementwise::silu_mul(rec, o),
        Op::Cast(o) => elementwise::cast(rec, o),
        Op::RmsNorm(o) => elementwise::rms_norm(rec, o),
        Op::Softmax(o) => elementwise::softmax(rec, o),
        Op::Rope(o) => elementwise::rope(rec, o),
        Op::Embedding(o) => elementwise::embedding(rec, o),
        Op::Gemm(o) => gemm::gemm(rec, o),
        Op::GroupedGemm(o) => gemm::grouped_gemm(rec, o),
        Op::BatchedGemm(o) => gemm::batched_gemm(rec, o),
        Op::ActQuant(o) => gemm::act_quant(rec, o),
        Op::Dequantize(o) => gemm::dequantize(rec, o),
        Op::MoeRoute(o) => moe::route(rec, o),
        Op::MoeDispatch(o) => moe::dispatch(rec, o),
        Op::MoeCombine(o) => moe::combine(rec, o),
        Op::MlaAttention(o) => attention::mla(rec, o),
        Op::MhaAttention(o) => attention::mha(rec, o),
        Op::CacheAppend(o) => cache::cache_append(rec, o),
        Op::Argmax(o) => select::argmax(rec, o),
        Op::TopK(o) => select::topk(rec, o),
        Op::Sample(o) => select::sample(rec, o),
    }
}

/// Native, except that FP8 operands are decoded to f32 in the shader (WGSL has no 8-bit float); the
/// limits a kernel's workgroup memory sets are reported as unsupported with the number.
pub fn supports(ctx: &Ctx, op: &Op) -> Support {
    if let Some(reason) = limit(ctx, op) {
        return Support::Unsupported { reason };
    }
    let fp8 = op.tensors().iter().any(|(_, t, _)| t.dtype.fp8_format().is_some());
    match op {
        Op::Gemm(_) | Op::GroupedGemm(_) | Op::Dequantize(_) | Op::ActQuant(_) | Op::Cast(_) if fp8 => {
            Support::Emulated {
                via: "FP8 codes decoded / encoded with bit operations in WGSL, f32 arithmetic".into(),
            }
        }
        _ => Support::Native,
    }
}

fn limit(ctx: &Ctx, op: &Op) -> Option<String> {
    match op {
        Op::MoeRoute(r) => moe::route_limit(r),
        Op::MoeDispatch(d) => moe::dispatch_limit(ctx, d),
        Op::MlaAttention(_) | Op::MhaAttention(_) => attention::limit(ctx, op),
        Op::CacheAppend(a) if a.block_table.is_some() => attention::pool_limit(ctx, &a.cache),
        _ => None,
    }
}

/// Element count of a view as u32, or the error naming the argument (kernels index with u32).
pub fn count32(op: &'static str, arg: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| {
        Error::unsupported(
            BACKEND,
            op,
            format!("argument `{arg}` has {n} elements, more than a u32 index reaches"),
        )
    })
}

/// Row stride of a row-major 2-D view (any value when it has one row).
pub fn row_stride(t: &Tensor) -> usize {
    if t.shape[0] <= 1 {
        t.shape[1]
    } else {
        t.strides[0]
    }
}

/// Splits `rows` rows into runs whose windows fit one binding: `args` are (row stride, row length, element
/// size) of every argument indexed by row.
pub fn row_chunks(
    rec: &Recorder,
    rows: usize,
    args: &[(usize, usize, usize)],
) -> Result<Vec<(usize, usize)>> {
    let cap = rec.window_capacity() as usize;
    let mut per = rows.max(1);
    for &(stride, len, size) in args {
        let row = len * size;
        if row > cap {
            return Err(Error::unsupported(
                BACKEND,
                rec.op,
                format!("one row is {row} bytes, over the {cap}-byte storage binding limit"),
            ));
        }
        if let Some(rows_fit) = (cap - row).checked_div(stride * size) {
            per = per.min(rows_fit + 1);
        }
    }
    let per = per.max(1);
    Ok((0..rows).step_by(per).map(|r0| (r0, (r0 + per).min(rows))).collect())
}

/// Bytes of rows `r0..r1` of a 2-D row view: (first byte, end byte) in its buffer.
pub fn rows_range(t: &Tensor, stride: usize, r0: usize, r1: usize) -> (usize, usize) {
    let size = t.dtype.size();
    let first = t.offset + r0 * stride * size;
    if r1 <= r0 {
        return (first, first);
    }
    (first, first + ((r1 - 1 - r0) * stride + t.shape[t.rank() - 1]) * size)
}
