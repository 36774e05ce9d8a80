//! Which arithmetic the graph uses, and whether a device can run it.

use std::sync::Arc;

use dsv3_core::ops::gemm::{ActQuant, Activations, Gemm, ScaleFormat, Weights};
use dsv3_core::{DType, Device, Op, Support, Tensor};

use crate::config::ModelConfig;

/// Which arithmetic the graph uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumericPath {
    /// f32 activations, cache and accumulation against exactly decoded weights: the path that must match
    /// the float32 reference logits.
    F32,
    /// bf16 activations and cache, weights as stored (FP8 decoded exactly inside the GEMM): DeepSeek's
    /// reference implementation's default (`gemm_impl = "bf16"`).
    Bf16,
    /// bf16 activations quantized per token per 128 channels to FP8 before every block-FP8 projection:
    /// the W8A8 arithmetic production engines (DeepGEMM, vLLM, SGLang) use.
    W8A8,
}

impl NumericPath {
    /// `f32`, `bf16`, `w8a8`; `fast` is resolved per model by [`NumericPath::fastest`].
    pub fn parse(s: &str) -> Option<NumericPath> {
        match s {
            "f32" => Some(NumericPath::F32),
            "bf16" => Some(NumericPath::Bf16),
            "w8a8" => Some(NumericPath::W8A8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NumericPath::F32 => "f32",
            NumericPath::Bf16 => "bf16",
            NumericPath::W8A8 => "w8a8",
        }
    }

    /// Activation and cache dtype.
    pub fn act(self) -> DType {
        if self == NumericPath::F32 {
            DType::F32
        } else {
            DType::BF16
        }
    }

    /// What real use takes: W8A8 for an FP8 checkpoint when every device the model runs on has FP8
    /// arithmetic, else bf16 activations (where FP8 is only emulated — the CPU decodes both operands —
    /// W8A8 is slower: measured 12.6 vs 20.4 tok/s on a full-width DeepSeek-V3 MoE layer,
    /// benches/results/2026-11-28-cpu-model.md).
    pub fn fastest(config: &ModelConfig, devices: &[Arc<dyn Device>]) -> NumericPath {
        let Some(q) = config.quantization else { return NumericPath::Bf16 };
        let native = |d: &Arc<dyn Device>| w8a8_support(d.as_ref(), q.activation_scales).is_native();
        if devices.iter().all(native) {
            NumericPath::W8A8
        } else {
            NumericPath::Bf16
        }
    }
}

/// How the device runs the W8A8 GEMM (FP8 activations × block-FP8 weights) and its activation
/// quantization, asked with minimal ops (described tensors: nothing is allocated): the weaker of the two
/// answers.
pub(crate) fn w8a8_support(device: &dyn Device, scales: ScaleFormat) -> Support {
    let k = 128;
    let t = |shape: &[usize], dtype: DType| Tensor::described(device.id(), shape, dtype);
    let codes = t(&[1, k], DType::F8E4M3Fn);
    let a_scales = t(&[1, 1], DType::F32);
    let quant = Op::ActQuant(ActQuant {
        x: t(&[1, k], DType::BF16),
        codes: codes.clone(),
        scales: a_scales.clone(),
        scale_format: scales,
    });
    let gemm = Op::Gemm(Gemm {
        a: Activations::Fp8 { codes, scales: a_scales },
        b: Weights::BlockFp8 { codes: t(&[k, k], DType::F8E4M3Fn), scales: t(&[1, 1], DType::F32) },
        c: t(&[1, k], DType::BF16),
    });
    let answers = [device.supports(&quant), device.supports(&gemm)];
    let weakest = answers.iter().find(|s| !s.is_runnable()).or(answers.iter().find(|s| !s.is_native()));
    weakest.unwrap_or(&answers[0]).clone()
}
