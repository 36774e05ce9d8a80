//! `gemm` through aclnnMatmul: C[M,N] = A[M,K] · B[N,K]ᵀ for dense bf16 (or f16) operands.
//!
//! aclnnMatmul computes `out = self @ mat2` with `mat2` as [K, N]. B is stored [N, K] (an `nn.Linear`
//! weight), so it is described to aclnn as the [K, N] view with strides (1, K) of the same memory — a
//! transposed view, which aclnnMatmul accepts as a non-contiguous input, rather than a copy. A and C are
//! described with their own row strides, so strided rows need no copy either.
//!
//! Numerics: aclnnMatmul requires `out` in the operands' dtype (only f16 operands may also write f32), so
//! C is bf16 for bf16 operands: products accumulated in f32 by the cube unit and rounded once to bf16,
//! which is the gemm contract. An f32 C from bf16 operands is answered Unsupported rather than computed
//! as bf16 and widened (that would round twice).

use crate::buffer::{AscendBuffer, DeviceMem};
use crate::device::{Context, Pending};
use crate::ffi::{Cann, Raw, ACL_BF16, ACL_FLOAT16, BACKEND, CUBE_KEEP_DTYPE};
use crate::support::bf16_capable;
use dsv3_core::ops::{Activations, Gemm, Weights};
use dsv3_core::{DType, Error, Result, Support, Tensor};
use std::sync::Arc;

fn unsupported(reason: impl Into<String>) -> Support {
    Support::Unsupported { reason: reason.into() }
}

pub(crate) fn supports(soc: &str, g: &Gemm) -> Support {
    let (Activations::Dense(a), Weights::Dense(b)) = (&g.a, &g.b) else {
        return unsupported(
            "FP8 operands: would use aclnnQuantMatmulV4 (per-token activation scales, 128x128 block \
             weight scales) on FP8-capable parts (Ascend 950), or aclnnWeightQuantBatchMatmulV2 with the \
             weights' block scales as antiquant scales elsewhere [UNCONFIRMED: block-scale layouts]; the \
             stub runs dense bf16 / f16 only",
        );
    };
    let (_, _, k) = g.dims();
    if k == 0 {
        return unsupported(
            "K = 0: aclnnMatmul's result for an empty reduction is undocumented; would clear C with \
             aclrtMemset instead",
        );
    }
    let c = g.c.dtype;
    match (a.dtype, b.dtype, c) {
        (DType::BF16, DType::BF16, DType::BF16) if !bf16_capable(soc) => unsupported(format!(
            "bf16 aclnnMatmul needs an Atlas A2/A3-class part (Ascend910B, Ascend910_93 or newer); this \
             is {soc}"
        )),
        (x, y, z) if x == y && y == z && matches!(x, DType::BF16 | DType::F16) => Support::Native,
        (DType::BF16, DType::BF16, DType::F32) => unsupported(
            "c=f32 from bf16 operands: aclnnMatmul writes its output in the operands' dtype (only f16 \
             operands may write f32), so f32 C would be a bf16 result widened — a second rounding the gemm \
             contract does not allow",
        ),
        (DType::F32, DType::F32, DType::F32) => unsupported(
            "f32 operands: would use aclnnMatmul with FLOAT inputs (cubeMathType KEEP_DTYPE on Atlas A2/A3, \
             HF32 or f16 otherwise); not wired in the stub",
        ),
        (x, y, z) => unsupported(format!(
            "a={x}, b={y}, c={z}: aclnnMatmul takes one operand dtype; mixed dtypes would need aclnnCast \
             first; not wired in the stub"
        )),
    }
}

fn acl_dtype(d: DType) -> Result<i32> {
    match d {
        DType::BF16 => Ok(ACL_BF16),
        DType::F16 => Ok(ACL_FLOAT16),
        other => Err(Error::unsupported(BACKEND, "gemm", format!("no aclnnMatmul path for {other}"))),
    }
}

fn to_i64(v: usize) -> Result<i64> {
    i64::try_from(v).map_err(|_| Error::invalid("gemm", "shape", format!("{v} does not fit aclnn's int64")))
}

/// An aclTensor descriptor, destroyed when dropped.
pub(crate) struct TensorDesc {
    cann: Arc<Cann>,
    raw: Raw,
}

impl TensorDesc {
    /// Describes `t` as the view `dims` / `strides` (elements) of its whole buffer: the storage is the
    /// allocation and the view starts `t.offset` bytes into it (a multiple of the element size: checked by
    /// `Op::validate`).
    fn new(ctx: &Context, t: &Tensor, dims: [usize; 2], strides: [usize; 2]) -> Result<TensorDesc> {
        let buffer = t.buffer.as_any().downcast_ref::<AscendBuffer>().ok_or_else(|| Error::Buffer {
            backend: BACKEND.into(),
            reason: format!("{t:?} is not in an Ascend buffer"),
        })?;
        let size = t.dtype.size();
        let dims = [to_i64(dims[0])?, to_i64(dims[1])?];
        let strides = [to_i64(strides[0])?, to_i64(strides[1])?];
        let offset = to_i64(t.offset / size)?;
        let storage = to_i64(buffer.mem.len() / size)?;
        let dtype = acl_dtype(t.dtype)?;
        let raw = ctx.cann().create_tensor(&dims, &strides, offset, dtype, storage, buffer.mem.ptr())?;
        Ok(TensorDesc { cann: ctx.cann().clone(), raw })
    }
}

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // Nothing to report to; a failed destroy leaks a host-side descriptor only.
        let _ = self.cann.destroy_tensor(self.raw);
    }
}

fn kernel_error(kernel: &str, reason: String) -> Error {
    Error::Kernel { backend: BACKEND.into(), op: "gemm", kernel: kernel.into(), reason }
}

/// Enqueues `g` on `stream`: descriptors, aclnnMatmul's first phase, the workspace, the second phase.
/// Returns what must stay alive until the stream is waited for (`None`: nothing to do, M or N is 0).
/// Every early return releases what was made so far (the descriptors and workspace drop), except the
/// executor of a first phase whose workspace cannot be allocated: CANN has no call to release an executor
/// that is not run, so that one (host-side) object is left to the runtime.
pub(crate) fn launch(ctx: &Arc<Context>, stream: Raw, g: &Gemm) -> Result<Option<Pending>> {
    let (m, n, k) = g.dims();
    if m == 0 || n == 0 {
        return Ok(None);
    }
    let (Activations::Dense(a), Weights::Dense(b)) = (&g.a, &g.b) else {
        return Err(Error::unsupported(BACKEND, "gemm", "FP8 operands"));
    };
    let c = &g.c;
    let cann = ctx.enter()?;
    let ta = TensorDesc::new(ctx, a, [m, k], [a.strides[0], a.strides[1]])?;
    // Bᵀ as a view of B: element (kk, nn) of Bᵀ is b[nn, kk], at nn·stride0 + kk·stride1.
    let tb = TensorDesc::new(ctx, b, [k, n], [b.strides[1], b.strides[0]])?;
    let tc = TensorDesc::new(ctx, c, [m, n], [c.strides[0], c.strides[1]])?;
    let (workspace_size, executor) = cann
        .matmul_workspace(ta.raw, tb.raw, tc.raw, CUBE_KEEP_DTYPE)
        .map_err(|r| kernel_error("aclnnMatmulGetWorkspaceSize", r))?;
    let workspace_bytes = usize::try_from(workspace_size)
        .map_err(|_| Error::OutOfMemory { backend: BACKEND.into(), bytes: usize::MAX })?;
    let workspace = DeviceMem::alloc(ctx, workspace_bytes)?;
    cann.matmul(workspace.ptr(), workspace_size, executor, stream)
        .map_err(|r| kernel_error("aclnnMatmul", r))?;
    Ok(Some(Pending {
        op: "gemm",
        kernel: "aclnnMatmul",
        _tensors: vec![ta, tb, tc],
        _workspace: workspace,
        _buffers: vec![a.buffer.clone(), b.buffer.clone(), c.buffer.clone()],
    }))
}
