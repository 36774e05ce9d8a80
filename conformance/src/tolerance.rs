//! The tolerance table: every bound a case is gated on, with its derivation next to it.
//!
//! How the bounds are built. The oracle (cpu-ref) computes in f64 from exactly decoded inputs and rounds
//! once; the device under test receives byte-identical inputs (FP8 codes included — quantization error
//! is *not* part of any comparison, both sides decode the same codes) and computes in f32 as each op's
//! numerics contract says. So the difference has two parts:
//!
//! 1. **f32 arithmetic before the final rounding.** An op that does the equivalent of `n` f32 roundings
//!    (or `n` ulps of f32 function approximations) in a chain has relative error about `n·u`,
//!    `u = 2^-24`. A sum of `K` terms accumulated in f32 has a typical relative error of `√K·u` (random
//!    rounding errors add in quadrature; `K·u` is the worst case, reached only without cancellation and
//!    with every rounding in the same direction). We take `NMSE_pre = (S·n·u)²` with a safety factor
//!    `S = 4` (16× on the variance) — well below any anchor, well above honest f32 arithmetic.
//! 2. **The output rounding.** Oracle and device both round their result to the output dtype. They give
//!    the same value unless their pre-rounding values straddle a rounding boundary: an element whose
//!    values differ by δ flips with probability ≤ |δ|/ulp and then differs by one ulp, so
//!    `E Σ diff² ≤ Σ |δ|·ulp ≤ ulp_rel · √(Σδ² Σb²)` (Cauchy–Schwarz), i.e. `NMSE_out ≤ ulp_rel·√NMSE_pre`
//!    with `ulp_rel` = 2^-23 (f32), 2^-7 (bf16), 2^-10 (f16). That is an expectation; small outputs get
//!    a small-sample allowance of `F = 12` (three elements off by one ulp at twice the rms size):
//!    `+ ulp_rel²·F/count`.
//!
//! The anchors (ggml test-backend-ops: NMSE 1e-7 f32 elementwise, 1e-6 softmax, 1e-3 rope, 5e-4
//! matmul / attention; DeepGEMM FP8 GEMM cosine distance 1e-3; FlashMLA 1e-5) compare against
//! references that also differ in *input* precision; ours do not, so every derived bound here is
//! tighter than its anchor, which the table notes. Cosine distance is reported but not gated: it never
//! exceeds NMSE (`Σ(a−b)²/Σ(a²+b²) ≤ Σ(a−b)²/Σb²`).
//!
//! Never loosen a bound to make a case pass: a failure is a kernel bug or a wrong derivation, and the
//! latter is fixed here with its reasoning.

use dsv3_core::DType;
use serde::Serialize;

/// f32 unit roundoff.
pub const U: f64 = 1.0 / 16_777_216.0;
/// Safety factor on the f32 error estimates (see the module docs).
pub const SAFETY: f64 = 4.0;
/// Small-sample allowance, in (one-ulp flips × (magnitude / rms)²).
pub const FLIP_ALLOWANCE: f64 = 12.0;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Tolerance {
    /// Key of the [`TABLE`] row this bound comes from.
    pub rule: &'static str,
    /// Compare bytes exactly (ids, offsets, copies, single correctly rounded conversions).
    pub exact: bool,
    /// Upper bound on NMSE = Σ(a−b)²/Σb² for float outputs.
    pub nmse: f64,
    /// Scores closer than this at a selection boundary are ties (top-k, routing, sampling); for
    /// `sample` it is relative.
    pub tie_gap: f64,
    /// Per-element gate for ops whose error is relative to each element (no sum of signed terms, so no
    /// cancellation): every element must satisfy |a − b| ≤ ulp(out at max(|a|,|b|)) + elem_rel·|b| (+ the
    /// dtype's smallest normal, for flushed subnormals); 0 when
    /// not gated. The total NMSE cannot see one wrong element among many; this can (see [`elementwise`]).
    pub elem_rel: f64,
}

/// One row of the table: what is bounded, the formula, and why.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rule {
    pub key: &'static str,
    pub bound: &'static str,
    pub reason: &'static str,
}

/// The tolerance table (the functions below implement these formulas).
pub const TABLE: &[Rule] = &[
    Rule {
        key: "exact",
        bound: "bit-identical",
        reason: "copies (embedding, moe_dispatch rows, topk values), integers (ids, offsets, slot_rows) and single \
                 correctly rounded conversions of identical inputs (cast, act_quant, dequantize) have one right answer",
    },
    Rule {
        key: "gemm",
        bound: "(4·√K·u)² + ulp_rel(C)·4·√K·u + ulp_rel(C)²·12/count",
        reason: "K products of exactly decoded operands (bf16×bf16 and fp8×fp8 products are exact in f32) summed in \
                 f32: typical relative error √K·u; block scales add O(u) per 128-block; one rounding of C on both \
                 sides. Anchors: ggml 5e-4, DeepGEMM cos 1e-3 (looser: they include input quantization)",
    },
    Rule {
        key: "gemm_tensor_core",
        bound: "n = 2^(25−p)·√k + √B + 2; (4·n·u)² + output terms. bf16: p = 24, k = K, B = 1; block FP8: p = 14, \
                k = 128, B = K/128",
        reason: "only where a vendor library (cuBLASLt) computes the gemm (`Support::Library`); dsv3's kernels keep the \
                 gemm rule. A tensor core adds products in its own order, keeping p significand bits of the running \
                 sum and truncating (not rounding) what falls below: up to one ulp, 2^(1−p), per addition — 2^(25−p) \
                 units u — in random directions over a cancelling sum, so √k·2^(25−p)·u over k additions. bf16 \
                 products accumulate in f32 (p = 24) over all of K. Hopper's FP8 adder keeps about 14 bits (DeepSeek-V3 \
                 report §3.3.2), which is why the 128×128 block scaling promotes each 128-long block to f32: p = 14 over \
                 k = 128, then B block sums scaled (2 roundings) and added in f32 (√B). K = 7168: bf16 n = 172 (gemm: 85); \
                 FP8 n ≈ 23180, NMSE ≈ 3e-5 + 4e-5 — inside ggml's 5e-4 and DeepGEMM's 1e-3, which include quantization",
    },
    Rule {
        key: "grouped_gemm",
        bound: "as gemm, per expert",
        reason: "each row is one gemm row against its expert's weights",
    },
    Rule {
        key: "batched_gemm",
        bound: "as gemm, per batch",
        reason: "each batch is one dense gemm; batches share nothing",
    },
    Rule {
        key: "attention",
        bound: "n = scale·D + √L + 8; (4·n·u)² + output terms",
        reason: "a score's absolute f32 error is ≈ u·√D·(score std) = u·scale·D for unit-variance q, k; that is the \
                 relative error of exp(score); the P·V sum adds √L·u; softmax and normalisation ≈ 8 roundings. \
                 Anchors: ggml 5e-4, FlashMLA cos 1e-5 (looser)",
    },
    Rule {
        key: "attention_tensor_core",
        bound: "n = 2^16 + 2·scale·D + 2·√L + 8; (4·n·u)² + output terms",
        reason: "only where dsv3's MLA kernel on tensor cores runs (`Support::TensorCore`, attention_mma.cu); the SIMT \
                 kernels keep the attention rule. The softmax weights enter the bf16 P·V mma rounded to bf16 (to \
                 nearest: relative error ≤ 2^-8 = 2^16·u each, independent across keys); the output is their mean \
                 of V with the rounded weights summing to one (l adds the rounded weights), so its error is the \
                 weights' errors against V's spread: ≈ 2^-8 relative in random directions, 2^16 units u. Scores and \
                 P·V sums are f32 mma, whose adder may truncate (gemm_tensor_core: 2 units per addition, p = 24): \
                 2·scale·D and 2·√L; the partial scores' adds (4 parts on NVIDIA, 2 on AMD), scale, exp, normalisation ≈ 8. V3 (D = 576, scale \
                 0.135, L = 4096, bf16 out): NMSE ≈ 2.5e-4 + 1.2e-4 — inside ggml's 5e-4, looser than FlashMLA's cos \
                 1e-5, which tests the same rounding without our safety factor",
    },
    Rule {
        key: "rms_norm",
        bound: "n = √D + 6; (4·n·u)² + output terms; each element within ulp + 4·n·u·|b|",
        reason: "sum of D squares in f32 (√D·u), rsqrt ≤ 2 ulp, two multiplies, mean and eps add",
    },
    Rule {
        key: "softmax",
        bound: "n = √N + 18; (4·n·u)² + output terms; each element within ulp + 4·n·u·|b|",
        reason: "x−max rounds (relative error of exp = |x−max|·u, and elements with |x−max| > 10 weigh < e^-10), exp \
                 ≤ 2 ulp, sum of N (√N·u), one divide. Anchor ggml 1e-6 (looser)",
    },
    Rule {
        key: "rope",
        bound: "n = 8; (4·n·u)² + output terms",
        reason: "the angle f32(f32(p)·f') is fixed by the contract, so only cos/sin of it (≤ 2 ulp each), two \
                 multiplies and one add remain. Anchor ggml 1e-3 (looser: it allows different angle rounding)",
    },
    Rule {
        key: "silu_mul",
        bound: "n = 8; (4·n·u)² + output terms; each element within ulp + 4·n·u·|b|",
        reason: "exp ≤ 2 ulp, 1+e, divide, multiply: ≤ 6 ulp, 2 spare",
    },
    Rule {
        key: "add",
        bound: "n = 1; (4·u)² + output terms; each element within ulp + 4·u·|b|",
        reason: "one f32 addition of exact inputs (bf16 → f32 is exact; double rounding f32 → bf16 of a sum is \
                 innocuous since 24 ≥ 2·8+2). Anchor ggml 1e-7 (looser)",
    },
    Rule {
        key: "moe_combine",
        bound: "n = k + 2; (4·n·u)² + output terms",
        reason: "k weighted terms summed in f32 in j order, one multiply each",
    },
    Rule {
        key: "moe_route",
        bound: "ids: sets equal or near-tie (gap 4·(16+√E)·u·2·(1+max|bias|)); weights: n = 16 + √E + k",
        reason: "scores are sigmoid/softmax in f32 (≤ (16+√E)·u relative, softmax sums E terms) plus the bias; \
                 group scores add two of them, hence the factor 2; selection differences within that gap are \
                 ties. Weights: score, sum of k, divide, scale",
    },
    Rule {
        key: "topk",
        bound: "values and ids exact, in order",
        reason: "top-k reads input values without arithmetic and the contract breaks ties to the lower index, so \
                 there is one right answer; a tie broken the other way is a contract violation",
    },
    Rule {
        key: "argmax",
        bound: "ids exact, or a different index holding an equal value",
        reason: "no arithmetic: only exactly equal values tie (the contract picks the lowest index)",
    },
    Rule {
        key: "sample",
        bound: "ids exact, or a relative near-tie of the race keys p/E (gap 4·(50+√V)·u)",
        reason: "p = softmax(l/T) in f32: exp arguments up to ~32 (|l|/T), exp ≤ 2 ulp, sum of V (√V·u); E = −ln u \
                 is exact integer arithmetic plus one ln; keys or nucleus masses closer than that are ties",
    },
];

/// Relative size of one ulp of `dtype` (upper bound over a binade).
pub fn ulp_rel(dtype: DType) -> f64 {
    match dtype {
        DType::BF16 => 2f64.powi(-7),
        DType::F16 => 2f64.powi(-10),
        _ => 2f64.powi(-23),
    }
}

/// NMSE bound for `n` f32 roundings before one rounding to `out`, over `count` output elements.
pub fn chain(rule: &'static str, n: f64, out: DType, count: usize) -> Tolerance {
    let pre = (SAFETY * n * U).powi(2);
    let ulp = ulp_rel(out);
    let nmse = pre + ulp * pre.sqrt() + ulp * ulp * FLIP_ALLOWANCE / count.max(1) as f64;
    Tolerance { rule, exact: false, nmse, tie_gap: 0.0, elem_rel: 0.0 }
}

/// A [`chain`] bound plus the per-element gate, for element-wise ops (rms_norm, silu_mul, add, softmax).
/// Derivation: the device's value before its final rounding is within `n` f32 roundings of the exact
/// one, relative to that element (the chain multiplies, divides and adds terms of one sign; softmax's and
/// rms_norm's row sums are of positive terms), so within `SAFETY·n·u·|b|`; each side's final rounding to
/// the output dtype moves it by at most half an ulp. So |a − b| ≤ ulp + SAFETY·n·u·|b|. One element off by
/// 2 ulps of a bf16 / f16 output, or by more than SAFETY·n·u relative, fails even when the NMSE over the
/// whole output stays far inside its bound. (A few-ulp error of an f32 output is inside the honest f32
/// arithmetic of a chain and cannot be told apart from it.) An absolute allowance of the output dtype's
/// smallest normal covers devices that flush subnormal results to zero (lavapipe does, in softmax's far
/// tail), which the NMSE gate judges.
pub fn elementwise(rule: &'static str, n: f64, out: DType, count: usize) -> Tolerance {
    Tolerance { elem_rel: SAFETY * n * U, ..chain(rule, n, out, count) }
}

/// Bit-identical outputs ("exact").
pub fn exact() -> Tolerance {
    Tolerance { rule: "exact", exact: true, nmse: 0.0, tie_gap: 0.0, elem_rel: 0.0 }
}

/// `gemm`: K-long f32 accumulation of exact products (see the "gemm" rule).
pub fn gemm(k: usize, out: DType, count: usize) -> Tolerance {
    chain("gemm", (k as f64).sqrt().max(1.0), out, count)
}

/// `gemm` computed by a vendor library's tensor cores (see the "gemm_tensor_core" rule): `block_fp8` for
/// FP8 activations × 128×128 block-FP8 weights (p = 14 within each 128-long block), else bf16 × bf16
/// (p = 24 over all of K).
pub fn gemm_tensor_core(k: usize, block_fp8: bool, out: DType, count: usize) -> Tolerance {
    let (bits, inner, blocks) = if block_fp8 { (14, k.min(128), k.div_ceil(128)) } else { (24, k, 1) };
    let n = 2f64.powi(25 - bits) * (inner as f64).sqrt() + (blocks as f64).sqrt() + 2.0;
    chain("gemm_tensor_core", n, out, count)
}

/// `batched_gemm`: as gemm.
pub fn batched_gemm(k: usize, out: DType, count: usize) -> Tolerance {
    Tolerance { rule: "batched_gemm", ..gemm(k, out, count) }
}

/// `grouped_gemm`: as gemm.
pub fn grouped_gemm(k: usize, out: DType, count: usize) -> Tolerance {
    Tolerance { rule: "grouped_gemm", ..gemm(k, out, count) }
}

/// `mla_attention` / `mha_attention` with score dimension `d`, at most `l` keys, logit scale `scale`,
/// for unit-variance q and k.
pub fn attention(d: usize, l: usize, scale: f64, out: DType, count: usize) -> Tolerance {
    chain("attention", scale * d as f64 + (l as f64).sqrt() + 8.0, out, count)
}

/// `mla_attention` on tensor cores (see the "attention_tensor_core" rule): [`attention`]'s terms with the
/// tensor core's truncating adder, plus the weights' rounding to bf16.
pub fn attention_tensor_core(d: usize, l: usize, scale: f64, out: DType, count: usize) -> Tolerance {
    let n = 2f64.powi(16) + 2.0 * scale * d as f64 + 2.0 * (l as f64).sqrt() + 8.0;
    chain("attention_tensor_core", n, out, count)
}

pub fn rms_norm(d: usize, out: DType, count: usize) -> Tolerance {
    elementwise("rms_norm", (d as f64).sqrt() + 6.0, out, count)
}

pub fn softmax(n: usize, out: DType, count: usize) -> Tolerance {
    elementwise("softmax", (n as f64).sqrt() + 18.0, out, count)
}

pub fn rope(out: DType, count: usize) -> Tolerance {
    chain("rope", 8.0, out, count)
}

pub fn silu_mul(out: DType, count: usize) -> Tolerance {
    elementwise("silu_mul", 8.0, out, count)
}

pub fn add(out: DType, count: usize) -> Tolerance {
    elementwise("add", 1.0, out, count)
}

pub fn moe_combine(k: usize, out: DType, count: usize) -> Tolerance {
    chain("moe_combine", k as f64 + 2.0, out, count)
}

/// Routing over `e` experts choosing `k`, with biases up to `max_bias` in magnitude.
pub fn moe_route(e: usize, k: usize, max_bias: f64, count: usize) -> Tolerance {
    let score_ulps = 16.0 + (e as f64).sqrt();
    let mut t = chain("moe_route", score_ulps + k as f64, DType::F32, count);
    t.tie_gap = SAFETY * score_ulps * U * 2.0 * (1.0 + max_bias);
    t
}

pub fn topk() -> Tolerance {
    Tolerance { rule: "topk", exact: true, nmse: 0.0, tie_gap: 0.0, elem_rel: 0.0 }
}

pub fn argmax() -> Tolerance {
    Tolerance { rule: "argmax", exact: true, nmse: 0.0, tie_gap: 0.0, elem_rel: 0.0 }
}

/// Sampling over a vocabulary of `v`; the tie gap is relative.
pub fn sample(v: usize) -> Tolerance {
    Tolerance {
        rule: "sample",
        exact: true,
        nmse: 0.0,
        tie_gap: SAFETY * (50.0 + (v as f64).sqrt()) * U,
        elem_rel: 0.0,
    }
}

pub fn rule(key: &str) -> Option<&'static Rule> {
    TABLE.iter().find(|r| r.key == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_used_is_in_the_table() {
        for t in [
            exact(),
            gemm(7168, DType::BF16, 100),
            gemm_tensor_core(7168, true, DType::BF16, 100),
            grouped_gemm(7168, DType::BF16, 100),
            batched_gemm(512, DType::BF16, 100),
            attention(576, 4096, 0.135, DType::BF16, 100),
            attention_tensor_core(576, 4096, 0.135, DType::BF16, 100),
            rms_norm(7168, DType::F32, 100),
            softmax(1000, DType::F32, 100),
            rope(DType::F32, 100),
            silu_mul(DType::F32, 100),
            add(DType::F32, 100),
            moe_combine(8, DType::F32, 100),
            moe_route(256, 8, 0.1, 100),
            topk(),
            argmax(),
            sample(1000),
        ] {
            assert!(rule(t.rule).is_some(), "{} missing from TABLE", t.rule);
        }
    }

    #[test]
    fn bounds_are_tighter_than_the_anchors() {
        // A real V3 shape: bf16 output GEMM with K = 7168 stays far below ggml's 5e-4.
        let g = gemm(7168, DType::BF16, 4 * 1536);
        assert!(g.nmse < 5e-6, "{}", g.nmse);
        // A library's tensor cores get their own, wider rule — still inside the anchors — and never make
        // the contract's rule wider.
        let bf16 = gemm_tensor_core(7168, false, DType::BF16, 4 * 1536);
        let fp8 = gemm_tensor_core(7168, true, DType::BF16, 4 * 1536);
        assert!(g.nmse < bf16.nmse && bf16.nmse < fp8.nmse && fp8.nmse < 5e-4, "{} {}", bf16.nmse, fp8.nmse);
        assert_eq!(gemm(7168, DType::BF16, 4 * 1536), g);
        // Attention on tensor cores (weights rounded to bf16): wider than the contract's rule, inside ggml's.
        let a = attention(576, 4096, 0.135, DType::BF16, 32 * 128 * 512);
        let tc = attention_tensor_core(576, 4096, 0.135, DType::BF16, 32 * 128 * 512);
        assert!(a.nmse < tc.nmse && tc.nmse < 5e-4, "{} {}", a.nmse, tc.nmse);
        assert!(add(DType::F32, 1000).nmse < 1e-7);
        assert!(softmax(129280, DType::F32, 1000).nmse < 1e-6);
    }
}
