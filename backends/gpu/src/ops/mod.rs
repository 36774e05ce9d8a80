//! From an op to launches: each op picks its kernel variant (argument element types, switches), passes
//! device addresses, element counts and strides in its parameter block, and sizes the grid. Written once
//! for every runtime; what differs per device (warp width, FP8 matrix units) comes from the [`Ctx`].

mod attention;
mod cache;
mod elementwise;
mod gemm;
mod moe;
mod rows;
mod select;
mod vendor;

use crate::device::Ctx;
use crate::kernels::Variant;
use crate::launch::Launch;
use crate::runtime::Target;
use dsv3_core::{Error, Op, Result, Support, Tensor};

pub fn launch(l: &Launch, op: &Op) -> Result<()> {
    if let Support::Unsupported { reason } = supports(&l.stream.ctx, op) {
        return Err(Error::unsupported(l.backend(), op.name(), reason));
    }
    match op {
        Op::Gemm(o) => match vendor::gemm(l, o)? {
            true => Ok(()),
            false => gemm::gemm(l, o),
        },
        Op::GroupedGemm(o) => gemm::grouped_gemm(l, o),
        Op::BatchedGemm(o) => gemm::batched_gemm(l, o),
        Op::ActQuant(o) => gemm::act_quant(l, o),
        Op::Dequantize(o) => gemm::dequantize(l, o),
        Op::MoeRoute(o) => moe::route(l, o),
        Op::MoeDispatch(o) => moe::dispatch(l, o),
        Op::MoeCombine(o) => moe::combine(l, o),
        Op::MlaAttention(o) => attention::mla(l, o),
        Op::MhaAttention(o) => attention::mha(l, o),
        Op::CacheAppend(o) => cache::cache_append(l, o),
        Op::RmsNorm(o) => rows::rms_norm(l, o),
        Op::Softmax(o) => rows::softmax(l, o),
        Op::Rope(o) => rows::rope(l, o),
        Op::Embedding(o) => rows::embedding(l, o),
        Op::Add(o) => elementwise::add(l, o),
        Op::SiluMul(o) => elementwise::silu_mul(l, o),
        Op::Cast(o) => elementwise::cast(l, o),
        Op::Argmax(o) => select::argmax(l, o),
        Op::TopK(o) => select::topk(l, o),
        Op::Sample(o) => select::sample(l, o),
    }
}

/// Whether the kernels run `op` with these dtypes and shapes, asked of the module that launches it.
pub fn supports(ctx: &Ctx, op: &Op) -> Support {
    match op {
        Op::Gemm(o) => vendor::supports(ctx, o).unwrap_or_else(|| gemm::supports(ctx, op)),
        Op::GroupedGemm(_) | Op::BatchedGemm(_) | Op::ActQuant(_) | Op::Dequantize(_) => {
            gemm::supports(ctx, op)
        }
        Op::MoeRoute(_) | Op::MoeDispatch(_) | Op::MoeCombine(_) => moe::supports(ctx, op),
        Op::MlaAttention(_) | Op::MhaAttention(_) => attention::supports(ctx, op),
        Op::RmsNorm(_) | Op::Softmax(_) | Op::Rope(_) | Op::Embedding(_) => rows::supports(ctx, op),
        Op::Add(_) | Op::SiluMul(_) | Op::Cast(_) | Op::CacheAppend(_) => Support::Native,
        Op::Argmax(_) | Op::TopK(_) | Op::Sample(_) => select::supports(ctx, op),
    }
}

/// Every kernel variant the ops can launch that is worth compiling ahead of time for each architecture
/// (`check-kernels`, CI): each kernel file with each of its switches, at the dtypes DeepSeek-V3 runs with.
pub fn catalog() -> Vec<Variant> {
    [
        elementwise::catalog(),
        gemm::catalog(),
        moe::catalog(),
        attention::catalog(),
        cache::catalog(),
        rows::catalog(),
        select::catalog(),
    ]
    .concat()
}

/// The variants on the tile layer (mma.cuh) the emulator at warp 32 compiles: the layout probe, the
/// tensor-core GEMM and MLA attention, every tile kernel file; [`tile_catalog_for`] says which a target
/// compiles (AMD adds e4m3fnuz GEMMs).
pub fn tile_catalog() -> Vec<Variant> {
    tile_catalog_for(&Target::host(32))
}

/// The tile-layer variants `target` compiles: none without the layer
/// ([`Target::mma_bf16`](crate::runtime::Target::mma_bf16): NVIDIA from sm_80, AMD gfx90a / gfx94x, the
/// emulator); the probe, the GEMM (with e4m3fnuz operands where the layer takes them) and MLA attention
/// wherever it is.
pub fn tile_catalog_for(target: &Target) -> Vec<Variant> {
    if !target.mma_bf16() {
        return Vec::new();
    }
    [vec![Variant::new(crate::kernels::MMA_PROBE)], gemm::tile_catalog(target), attention::tile_catalog()]
        .concat()
}

/// Row stride (elements) of a row-major 2-D view; any value when it has one row.
pub fn row_stride(t: &Tensor) -> usize {
    if t.rank() == 2 {
        t.strides[0]
    } else {
        0
    }
}
