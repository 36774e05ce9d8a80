//! What the stub runs, and for everything else the aclnn operator that would serve it, so that the
//! support matrix reads as the plan for a full backend.
//!
//! Operator names were checked against CANN's published operator docs and headers (ops-nn,
//! ops-transformer) where marked; `[UNCONFIRMED]` marks a detail that could not be checked without the
//! toolkit at hand.

use crate::gemm;
use dsv3_core::{Op, Support};

/// Whether the SoC runs bf16 through aclnn (Atlas A2/A3-class parts and newer). The names of the older
/// parts (Ascend 310 family, first-generation Ascend910A / 910ProA / 910ProB / 910PremiumA) are the SoC
/// names CANN reports [UNCONFIRMED: the full list]; any other name, including the test fake's, is taken
/// to be bf16-capable and left for aclnnMatmul itself to refuse.
pub(crate) fn bf16_capable(soc: &str) -> bool {
    let newer = ["Ascend910B", "Ascend910_93", "Ascend950"];
    if newer.iter().any(|p| soc.starts_with(p)) {
        return true;
    }
    !(soc.starts_with("Ascend310") || soc.starts_with("Ascend910"))
}

fn plan(operators: &str) -> Support {
    Support::Unsupported { reason: format!("not in the Ascend stub; would use {operators}") }
}

pub(crate) fn supports(soc: &str, op: &Op) -> Support {
    match op {
        Op::Gemm(g) => gemm::supports(soc, g),
        Op::GroupedGemm(_) => plan(
            "aclnnGroupedMatmulV4 (rows grouped by expert, groupList = expert_offsets as a cumsum; block-FP8 \
             weights through its scale inputs on FP8-capable parts [UNCONFIRMED: 128x128 block scales])",
        ),
        Op::BatchedGemm(_) => plan(
            "aclnnBatchMatMul (a strided batch of bf16 products; the heads-interleaved views of absorbed MLA \
             as non-contiguous inputs [UNCONFIRMED: which strides aclnn accepts without a copy])",
        ),
        Op::ActQuant(_) => plan(
            "aclnnDynamicBlockQuant (1x128 blocks per token; FP8 output on Ascend 950-class parts only)",
        ),
        Op::Dequantize(_) => plan(
            "aclnnCast of the FP8 codes and aclnnMul by the broadcast block-scale grid, or no separate \
             dequantize at all: aclnnWeightQuantBatchMatmulV2 applies weight scales inside the product",
        ),
        Op::MoeRoute(_) => plan(
            "aclnnMoeGatingTopK (sigmoid scores + correction bias, group-limited top-k: V3's noaux_tc) or \
             aclnnMoeGatingTopKSoftmax (V2's softmax greedy top-k)",
        ),
        Op::MoeDispatch(_) => {
            plan("aclnnMoeInitRoutingV3 (stable sort of token slots by expert, expert token cumsum)")
        }
        Op::MoeCombine(_) => {
            plan("aclnnMoeFinalizeRoutingV2 (weighted sum of expert outputs back in token order)")
        }
        Op::MlaAttention(_) => plan(
            "aclnnFusedInferAttentionScoreV3 with its queryRope / keyRope inputs (absorbed MLA over the \
             latent cache, kv_lens as actualSeqLengthsKv; a paged cache through its blockTable and \
             blockSize [UNCONFIRMED: block sizes it accepts beside 128])",
        ),
        Op::MhaAttention(_) => {
            plan("aclnnFusedInferAttentionScoreV3 (decompressed K/V, kv_lens as actualSeqLengthsKv)")
        }
        Op::CacheAppend(_) => plan(
            "aclnnScatterPaKvCache for a paged cache (slot mapping from the block table and kv_lens) or \
             aclnnInplaceIndexCopy with positions from kv_lens [UNCONFIRMED: which takes per-sequence \
             positions on the device for a contiguous (non-paged) cache]",
        ),
        Op::RmsNorm(_) => plan("aclnnRmsNorm"),
        Op::Rope(_) => plan(
            "aclnnApplyRotaryPosEmbV2 or aclnnRotaryPositionEmbedding with cos/sin tables gathered by \
             position [UNCONFIRMED: the mode name for interleaved pairs]",
        ),
        Op::SiluMul(_) => {
            plan("aclnnSwiGlu (gate and up as the two halves of one tensor), else aclnnSilu + aclnnMul")
        }
        Op::Add(_) => plan("aclnnAdd"),
        Op::Embedding(_) => plan("aclnnEmbedding"),
        Op::Softmax(_) => plan("aclnnSoftmax"),
        Op::Cast(_) => plan("aclnnCast (FP8 dtypes on FP8-capable parts only)"),
        Op::Argmax(_) => plan("aclnnArgMax"),
        Op::TopK(_) => plan("aclnnTopk (largest, sorted)"),
        Op::Sample(_) => plan(
            "an Ascend C kernel for the keyed (seed, row, token) exponential race — no aclnn operator draws \
             that noise — reading each row's temperature, top_p and seed from `row_params` when given, then \
             aclnnArgMax",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::bf16_capable;

    #[test]
    fn bf16_parts_by_soc_name() {
        for soc in ["Ascend910B1", "Ascend910B4", "Ascend910_9391", "Ascend950PR_9599"] {
            assert!(bf16_capable(soc), "{soc}");
        }
        for soc in ["Ascend310P3", "Ascend910A", "Ascend910ProB", "Ascend910PremiumA"] {
            assert!(!bf16_capable(soc), "{soc}");
        }
    }
}
