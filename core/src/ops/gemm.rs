//! Matrix products and FP8 (de)quantization.
//!
//! Layout: C[M,N] = A[M,K] · B[N,K]ᵀ — B is a PyTorch `nn.Linear` weight, `[out_features, in_features]`.
//!
//! Block FP8 (DeepSeek-V3): weights carry one scale per 128×128 block, a grid of
//! `[ceil(N/128), ceil(K/128)]`; `w[n,k] = decode(q[n,k]) · scale[n/128, k/128]` (the checkpoint's
//! `weight_scale_inv` is this multiplier). Partial last blocks are allowed (kv_a_proj_with_mqa has N = 576).
//! Activations are quantized per token per 128 channels by [`ActQuant`]: scales `[M, ceil(K/128)]`.
//!
//! Numerics contract (every backend): products of exactly decoded operand values, accumulated in f32
//! (the reference accumulates in f64); block scales applied in f32 either folded into the operand value
//! or per 128-wide K block, as the backend documents; C rounded once, to nearest even, at the end.

use super::check::{self, ACTIVATIONS, FP8, SCALES};
use super::Access::{Read, Write};
use super::{ArgList, OpDef};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;
use smallvec::{smallvec, SmallVec};

/// Width of a quantization block along K (and height along N for weights).
pub const QUANT_BLOCK: usize = 128;

pub fn blocks(n: usize) -> usize {
    n.div_ceil(QUANT_BLOCK)
}

/// The left operand of a GEMM: activations.
#[derive(Clone, Debug)]
pub enum Activations {
    /// f32 or bf16, `[M, K]` (or `[R, K]` rows for grouped GEMM); rows may be strided.
    Dense(Tensor),
    /// FP8 codes `[M, K]` with per-token, per-128-channel scales `[M, ceil(K/128)]` (f32 or ue8m0), as
    /// produced by [`ActQuant`].
    Fp8 { codes: Tensor, scales: Tensor },
}

/// The right operand: weights `[N, K]`, or `[E, N, K]` stacked experts for grouped GEMM.
#[derive(Clone, Debug)]
pub enum Weights {
    /// f32 or bf16, contiguous.
    Dense(Tensor),
    /// FP8 codes with a 128×128 block scale grid `[.., ceil(N/128), ceil(K/128)]` (f32 or ue8m0).
    BlockFp8 { codes: Tensor, scales: Tensor },
}

impl Activations {
    pub fn values(&self) -> &Tensor {
        match self {
            Activations::Dense(t) => t,
            Activations::Fp8 { codes, .. } => codes,
        }
    }

    /// Appends the operand's tensors (read) to an op's argument list.
    fn list<'t>(&'t self, args: &mut ArgList<'t>) {
        match self {
            Activations::Dense(t) => args.push(("a", t, Read)),
            Activations::Fp8 { codes, scales } => {
                args.extend([("a", codes, Read), ("a_scales", scales, Read)])
            }
        }
    }

    /// Checks dtypes and the scale grid; returns (rows, K).
    fn validate(&self, op: &'static str) -> Result<(usize, usize)> {
        let a = self.values();
        check::rank(op, "a", a, 2)?;
        check::row_major(op, "a", a)?;
        let (rows, k) = (a.shape[0], a.shape[1]);
        match self {
            Activations::Dense(t) => check::dtype(op, "a", t, ACTIVATIONS)?,
            Activations::Fp8 { codes, scales } => {
                check::dtype(op, "a", codes, FP8)?;
                check::dtype(op, "a_scales", scales, SCALES)?;
                check::shape(op, "a_scales", scales, &[rows, blocks(k)])?;
                check::contiguous(op, "a_scales", scales)?;
            }
        }
        Ok((rows, k))
    }
}

impl Weights {
    pub fn values(&self) -> &Tensor {
        match self {
            Weights::Dense(t) => t,
            Weights::BlockFp8 { codes, .. } => codes,
        }
    }

    pub fn dtype_label(&self) -> String {
        match self {
            Weights::Dense(t) => t.dtype.to_string(),
            Weights::BlockFp8 { codes, scales } => format!("{}x128x128/{}", codes.dtype, scales.dtype),
        }
    }

    /// Appends the operand's tensors (read) to an op's argument list.
    fn list<'t>(&'t self, args: &mut ArgList<'t>) {
        match self {
            Weights::Dense(t) => args.push(("b", t, Read)),
            Weights::BlockFp8 { codes, scales } => {
                args.extend([("b", codes, Read), ("b_scales", scales, Read)])
            }
        }
    }

    /// Checks a `[lead.., N, K]` weight; returns (lead dims, N, K).
    fn validate(&self, op: &'static str, lead: usize) -> Result<(&[usize], usize, usize)> {
        match self {
            Weights::Dense(t) => check_weights(op, t, None, lead),
            Weights::BlockFp8 { codes, scales } => check_weights(op, codes, Some(scales), lead),
        }
    }
}

/// The rules of [`Weights::validate`] on the values (dense, or FP8 codes with their `scales` grid),
/// without building a [`Weights`] (which would clone the tensors).
fn check_weights<'t>(
    op: &'static str,
    b: &'t Tensor,
    scales: Option<&Tensor>,
    lead: usize,
) -> Result<(&'t [usize], usize, usize)> {
    check::rank(op, "b", b, lead + 2)?;
    check::contiguous(op, "b", b)?;
    let (n, k) = (b.shape[lead], b.shape[lead + 1]);
    let lead_dims = &b.shape[..lead];
    match scales {
        None => check::dtype(op, "b", b, ACTIVATIONS)?,
        Some(scales) => {
            check::dtype(op, "b", b, FP8)?;
            check::dtype(op, "b_scales", scales, SCALES)?;
            let grid: SmallVec<[usize; 4]> =
                lead_dims.iter().copied().chain([blocks(n), blocks(k)]).collect();
            check::shape(op, "b_scales", scales, &grid)?;
            check::contiguous(op, "b_scales", scales)?;
        }
    }
    Ok((lead_dims, n, k))
}

fn check_fp8_pairing(op: &'static str, a: &Activations, b: &Weights) -> Result<()> {
    if let (Activations::Fp8 { codes: qa, .. }, Weights::BlockFp8 { codes: qb, .. }) = (a, b) {
        check::condition(op, "a", qa.dtype == qb.dtype, || {
            format!("FP8 activations ({}) and weights ({}) must share a format", qa.dtype, qb.dtype)
        })?;
    }
    Ok(())
}

/// `c = a · bᵀ`. A: f32 / bf16 or FP8 per-token-block; B: f32 / bf16 or block FP8; C: f32 or bf16 `[M, N]`.
#[derive(Clone, Debug)]
pub struct Gemm {
    pub a: Activations,
    pub b: Weights,
    pub c: Tensor,
}

impl OpDef for Gemm {
    fn flops(&self) -> Option<f64> {
        let (m, n, k) = self.dims();
        Some(2.0 * (m * n * k) as f64)
    }

    fn args(&self) -> ArgList<'_> {
        let mut args = ArgList::new();
        self.a.list(&mut args);
        self.b.list(&mut args);
        args.push(("c", &self.c, Write));
        args
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "gemm";
        let (m, k) = self.a.validate(OP)?;
        let (_, n, kb) = self.b.validate(OP, 0)?;
        check::condition(OP, "b", kb == k, || format!("K of b is {kb} but K of a is {k}"))?;
        check_fp8_pairing(OP, &self.a, &self.b)?;
        check::dtype(OP, "c", &self.c, ACTIVATIONS)?;
        check::shape(OP, "c", &self.c, &[m, n])?;
        check::row_major(OP, "c", &self.c)
    }
}

impl Gemm {
    /// (M, N, K)
    pub fn dims(&self) -> (usize, usize, usize) {
        let a = self.a.values();
        (a.shape[0], self.b.values().shape[0], a.shape[1])
    }
}

/// Rows of activations grouped by expert, times that expert's weights: for expert e, rows
/// `offsets[e] .. offsets[e+1]` of `a` and `c` use `b[e]`. `offsets` is i32 `[E + 1]` on the device
/// (written by `moe_dispatch`), with `offsets[0] = 0`, non-decreasing, `offsets[E] = rows`. Empty experts
/// are allowed. Numerics: as [`Gemm`].
#[derive(Clone, Debug)]
pub struct GroupedGemm {
    pub a: Activations,
    pub b: Weights,
    pub expert_offsets: Tensor,
    pub c: Tensor,
}

impl OpDef for GroupedGemm {
    fn flops(&self) -> Option<f64> {
        let (rows, n, k, _) = self.dims();
        Some(2.0 * (rows * n * k) as f64)
    }

    fn args(&self) -> ArgList<'_> {
        let mut args = ArgList::new();
        self.a.list(&mut args);
        self.b.list(&mut args);
        args.extend([("expert_offsets", &self.expert_offsets, Read), ("c", &self.c, Write)]);
        args
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "grouped_gemm";
        let (rows, k) = self.a.validate(OP)?;
        let (lead, n, kb) = self.b.validate(OP, 1)?;
        check::condition(OP, "b", kb == k, || format!("K of b is {kb} but K of a is {k}"))?;
        check_fp8_pairing(OP, &self.a, &self.b)?;
        check::dtype(OP, "expert_offsets", &self.expert_offsets, &[DType::I32])?;
        check::shape(OP, "expert_offsets", &self.expert_offsets, &[lead[0] + 1])?;
        check::dtype(OP, "c", &self.c, ACTIVATIONS)?;
        check::shape(OP, "c", &self.c, &[rows, n])?;
        check::row_major(OP, "c", &self.c)
    }
}

impl GroupedGemm {
    /// (rows, N, K, experts)
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        let a = self.a.values();
        let b = self.b.values();
        (a.shape[0], b.shape[1], a.shape[1], b.shape[0])
    }
}

/// A strided batch of independent dense products, `c[i] = a[i] · b[i]ᵀ` for each `i < B`: the per-head
/// products of absorbed MLA (q̃_h = q_nope_h · W_UK[h], o_h = õ_h · W_UV[h]ᵀ) in one launch. a `[B, M, K]`,
/// b `[B, N, K]`, c `[B, M, N]`, each f32 or bf16. Elements within a row are adjacent in every operand;
/// a's and c's batch and row strides are free (a head's operand is a slice of a wider row), each batch of
/// b is a contiguous `[N, K]` matrix at any batch stride (0: one matrix for all), and no two elements of c
/// may share memory. Numerics: as [`Gemm`], per batch.
#[derive(Clone, Debug)]
pub struct BatchedGemm {
    pub a: Tensor,
    pub b: Tensor,
    pub c: Tensor,
}

impl OpDef for BatchedGemm {
    fn args(&self) -> ArgList<'_> {
        smallvec![("a", &self.a, Read), ("b", &self.b, Read), ("c", &self.c, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "batched_gemm";
        for (arg, t) in [("a", &self.a), ("b", &self.b), ("c", &self.c)] {
            check::rank(OP, arg, t, 3)?;
            check::dtype(OP, arg, t, ACTIVATIONS)?;
            check::unit_last_stride(OP, arg, t)?;
        }
        let [batch, m, k] = self.a.shape[..] else { unreachable!("rank checked") };
        check::condition(OP, "a", self.a.strides[1] >= k || m <= 1, || {
            format!("rows must not overlap (row stride ≥ K = {k}), got {:?}", self.a)
        })?;
        let n = self.b.shape[1];
        check::shape(OP, "b", &self.b, &[batch, n, k])?;
        check::condition(OP, "b", self.b.strides[1] == k || n <= 1, || {
            format!("each batch must be a contiguous [N, K] matrix (row stride {k}), got {:?}", self.b)
        })?;
        check::shape(OP, "c", &self.c, &[batch, m, n])?;
        check::non_overlapping(OP, "c", &self.c)
    }

    fn flops(&self) -> Option<f64> {
        let (batch, m, n, k) = self.dims();
        Some(2.0 * (batch * m * n * k) as f64)
    }
}

impl BatchedGemm {
    /// (B, M, N, K)
    pub fn dims(&self) -> (usize, usize, usize, usize) {
        (self.a.shape[0], self.a.shape[1], self.b.shape[1], self.a.shape[2])
    }
}

/// How activation scales are rounded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleFormat {
    /// `s = amax / fp8_max` exactly in f32 (DeepSeek-V3).
    F32,
    /// `s` rounded up to a power of two (DeepSeek-V3.1 `scale_fmt: ue8m0`), bit-exact ceil.
    Ue8m0,
}

/// DeepSeek's `act_quant`: for each row and each group g of 128 consecutive channels (the last may be
/// partial), `amax = max(max|x_g|, 1e-4)`, `s = amax / fp8_max` in f32 (448 for e4m3fn, 240 for fnuz,
/// 57344 for e5m2), rounded up to a power of two for ue8m0, `q = fp8(x / s)` rounded to nearest even
/// and saturated. The quotient is one correctly rounded f32 division (REF divides; multiplying by 1/s
/// can differ by one FP8 ulp on ties). `scales` may be stored as f32 or ue8m0 codes; ue8m0 storage
/// requires `ScaleFormat::Ue8m0`.
#[derive(Clone, Debug)]
pub struct ActQuant {
    pub x: Tensor,
    pub codes: Tensor,
    pub scales: Tensor,
    pub scale_format: ScaleFormat,
}

/// The floor on a group's amax, so that an all-zero group gets a finite scale.
pub const AMAX_FLOOR: f32 = 1e-4;

impl OpDef for ActQuant {
    fn args(&self) -> ArgList<'_> {
        smallvec![("x", &self.x, Read), ("codes", &self.codes, Write), ("scales", &self.scales, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "act_quant";
        check::rank(OP, "x", &self.x, 2)?;
        check::row_major(OP, "x", &self.x)?;
        check::dtype(OP, "x", &self.x, ACTIVATIONS)?;
        let (m, k) = (self.x.shape[0], self.x.shape[1]);
        check::dtype(OP, "codes", &self.codes, FP8)?;
        check::shape(OP, "codes", &self.codes, &[m, k])?;
        check::row_major(OP, "codes", &self.codes)?;
        check::dtype(OP, "scales", &self.scales, SCALES)?;
        check::shape(OP, "scales", &self.scales, &[m, blocks(k)])?;
        check::contiguous(OP, "scales", &self.scales)?;
        check::condition(
            OP,
            "scales",
            !(self.scales.dtype == DType::Ue8m0 && self.scale_format == ScaleFormat::F32),
            || "ue8m0 storage needs ScaleFormat::Ue8m0 (an f32 scale is not a power of two)".into(),
        )
    }
}

/// Expand block-FP8 weights `[.., N, K]` to f32 or bf16: `out = decode(q) · scale`, the product rounded
/// once (f32 exact products round to f32; bf16 output rounds that f32 once more, as REF's
/// `weight_dequant` does).
#[derive(Clone, Debug)]
pub struct Dequantize {
    pub codes: Tensor,
    pub scales: Tensor,
    pub out: Tensor,
}

impl OpDef for Dequantize {
    fn args(&self) -> ArgList<'_> {
        smallvec![("codes", &self.codes, Read), ("scales", &self.scales, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "dequantize";
        let lead = self.codes.rank().saturating_sub(2);
        check_weights(OP, &self.codes, Some(&self.scales), lead)?;
        check::dtype(OP, "out", &self.out, ACTIVATIONS)?;
        check::shape(OP, "out", &self.out, &self.codes.shape)?;
        check::contiguous(OP, "out", &self.out)
    }
}
