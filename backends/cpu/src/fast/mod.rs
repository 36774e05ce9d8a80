//! Fast mode: multithreaded, SIMD where it pays (the GEMMs), f32 accumulation everywhere.

mod attention;
pub mod gemm;
mod io;
mod linear;
mod moe;
pub mod peak;
mod rows;
mod sampling;
mod scratch;

use crate::bind::Args;
use dsv3_core::{Op, Peak, Result, Support};
use std::time::Duration;

/// Every op runs. GEMMs with FP8 operands are reported as emulated: x86 has no FP8 arithmetic, so the
/// codes are decoded exactly (to f32, or to bf16 for the AVX512_BF16 dot product) before multiplying.
pub fn supports(op: &Op) -> Support {
    let fp8_operand = op.tensors().iter().any(|(_, t, _)| t.dtype.fp8_format().is_some());
    match op {
        Op::Gemm(_) | Op::GroupedGemm(_) if fp8_operand => Support::Emulated {
            via: "FP8 codes decoded exactly to f32/bf16 (no FP8 arithmetic on x86)".into(),
        },
        _ => Support::Native,
    }
}

pub fn kernel_name() -> &'static str {
    gemm::kernel_name()
}

pub fn run(op: &Op, args: Args<'_>) -> Result<()> {
    match op {
        Op::Gemm(o) => linear::gemm(o, args),
        Op::GroupedGemm(o) => linear::grouped_gemm(o, args),
        Op::BatchedGemm(o) => linear::batched_gemm(o, args),
        Op::ActQuant(o) => linear::act_quant(o, args),
        Op::Dequantize(_) => linear::dequantize(args),
        Op::MoeRoute(o) => moe::route(o, args),
        Op::MoeDispatch(o) => moe::dispatch(o, args),
        Op::MoeCombine(_) => moe::combine(args),
        Op::MlaAttention(o) => attention::mla(o, args),
        Op::CacheAppend(o) => crate::reference::cache_append(o, args),
        Op::MhaAttention(o) => attention::mha(o, args),
        Op::RmsNorm(o) => rows::rms_norm(o, args),
        Op::Rope(o) => rows::rope(o, args),
        Op::SiluMul(_) => rows::silu_mul(args),
        Op::Add(_) => rows::add(args),
        Op::Embedding(_) => rows::embedding(args),
        Op::Softmax(_) => rows::softmax(args),
        Op::Cast(_) => rows::cast(args),
        Op::Argmax(_) => sampling::argmax(args),
        Op::TopK(o) => sampling::topk(o, args),
        Op::Sample(o) => sampling::sample(o, args),
    }
}

/// This CPU's FMA (and, on the AVX512-BF16 path, `vdpbf16ps`) throughput and memory bandwidth, measured
/// (~0.5 s, 0.75 s with `vdpbf16ps`).
pub fn measure_peak() -> Peak {
    let flops = peak::measure_fma_peak_f32(Duration::from_millis(250));
    let bytes = peak::measure_memory_bandwidth(Duration::from_millis(250));
    // The bf16 and FP8 peaks are those of the fastest units their GEMMs run on: `vdpbf16ps` on the
    // AVX512-BF16 path (bf16 activations with bf16 or FP8 weights; FP8 activations still run on the f32
    // FMA units there, below this peak); AMX tiles are not measured (no AMX loop here), so 0, "unknown",
    // rather than a peak the kernels can exceed; elsewhere both are decoded to f32 for the FMA units.
    let low_precision = match gemm::isa() {
        gemm::Isa::Avx512Bf16 => peak::measure_dpbf16_peak(Duration::from_millis(250)).unwrap_or(0.0),
        gemm::Isa::Amx => 0.0,
        _ => flops,
    };
    Peak {
        f32_flops: flops,
        bf16_flops: low_precision,
        fp8_flops: low_precision,
        bytes_per_s: bytes,
        source: "measured on this CPU: FMA (and vdpbf16ps) loop on all threads, streaming read of a buffer \
                 larger than the caches"
            .into(),
    }
}
