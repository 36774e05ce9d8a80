//! Row-wise and element-wise ops. All compute in f32 (reference: f64) from exactly decoded inputs and
//! round once when writing the output.

use super::check::{self, ACTIVATIONS, FLOATS, FP8};
use super::Access::{Read, Write};
use super::{ArgList, OpDef};
use crate::dtype::DType;
use crate::error::Result;
use crate::rope::RopeParams;
use crate::tensor::Tensor;
use smallvec::smallvec;

fn same_shape_rows(op: &'static str, x: (&'static str, &Tensor), out: (&'static str, &Tensor)) -> Result<()> {
    check::rank(op, x.0, x.1, 2)?;
    check::row_major(op, x.0, x.1)?;
    check::shape(op, out.0, out.1, &x.1.shape)?;
    check::row_major(op, out.0, out.1)
}

/// `out = w ⊙ x / sqrt(mean(x²) + eps)` per row of `x` `[R, D]`; `w` `[D]`. The sum of squares
/// accumulates in f32 (reference f64); `w` multiplies the f32 normalised value; one rounding at `out`.
#[derive(Clone, Debug)]
pub struct RmsNorm {
    pub x: Tensor,
    pub weight: Tensor,
    pub eps: f32,
    pub out: Tensor,
}

impl OpDef for RmsNorm {
    fn args(&self) -> ArgList<'_> {
        smallvec![("x", &self.x, Read), ("weight", &self.weight, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "rms_norm";
        same_shape_rows(OP, ("x", &self.x), ("out", &self.out))?;
        check::dtype(OP, "x", &self.x, ACTIVATIONS)?;
        check::dtype(OP, "out", &self.out, ACTIVATIONS)?;
        check::dtype(OP, "weight", &self.weight, ACTIVATIONS)?;
        check::shape(OP, "weight", &self.weight, &[self.x.shape[1]])?;
        check::contiguous(OP, "weight", &self.weight)?;
        check::condition(OP, "eps", self.eps.is_finite() && self.eps > 0.0, || {
            format!("must be positive, got {}", self.eps)
        })
    }
}

/// Rotary embedding on interleaved pairs (DeepSeek's checkpoint layout): for x `[T, H, D]` (inner
/// stride 1; outer strides free, so q_pe can be a view into q) and `positions` i32 `[T]`:
/// `y[2i] = x[2i]·cos φ − x[2i+1]·sin φ`, `y[2i+1] = x[2i]·sin φ + x[2i+1]·cos φ`,
/// `φ = f32(f32(p) · f'_i)` with `f'` from [`RopeParams::inv_freqs`] (angle rounded to f32, as both
/// references compute it); rotation in f32; one rounding at `out` (same shape and layout rules as x).
#[derive(Clone, Debug)]
pub struct Rope {
    pub x: Tensor,
    pub positions: Tensor,
    pub params: RopeParams,
    pub out: Tensor,
}

impl OpDef for Rope {
    fn args(&self) -> ArgList<'_> {
        smallvec![("x", &self.x, Read), ("positions", &self.positions, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "rope";
        for (name, t) in [("x", &self.x), ("out", &self.out)] {
            check::rank(OP, name, t, 3)?;
            check::dtype(OP, name, t, ACTIVATIONS)?;
            check::condition(OP, name, t.strides[2] == 1, || format!("inner stride must be 1, got {t:?}"))?;
        }
        check::shape(OP, "out", &self.out, &self.x.shape)?;
        let d = self.x.shape[2];
        check::condition(OP, "params.dim", self.params.dim == d && d.is_multiple_of(2), || {
            format!("rotary dim {} must be even and equal x's last dim {d}", self.params.dim)
        })?;
        check::dtype(OP, "positions", &self.positions, &[DType::I32])?;
        check::shape(OP, "positions", &self.positions, &[self.x.shape[0]])?;
        check::contiguous(OP, "positions", &self.positions)
    }
}

/// SwiGLU: `out = silu(gate) ⊙ up`, `silu(z) = z / (1 + e^−z)`, all `[R, N]`.
#[derive(Clone, Debug)]
pub struct SiluMul {
    pub gate: Tensor,
    pub up: Tensor,
    pub out: Tensor,
}

impl OpDef for SiluMul {
    fn args(&self) -> ArgList<'_> {
        smallvec![("gate", &self.gate, Read), ("up", &self.up, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "silu_mul";
        same_shape_rows(OP, ("gate", &self.gate), ("out", &self.out))?;
        check::shape(OP, "up", &self.up, &self.gate.shape)?;
        check::row_major(OP, "up", &self.up)?;
        for (name, t) in [("gate", &self.gate), ("up", &self.up), ("out", &self.out)] {
            check::dtype(OP, name, t, ACTIVATIONS)?;
        }
        Ok(())
    }
}

/// `out = a + b`, all `[R, N]`, one rounding.
#[derive(Clone, Debug)]
pub struct Add {
    pub a: Tensor,
    pub b: Tensor,
    pub out: Tensor,
}

impl OpDef for Add {
    fn args(&self) -> ArgList<'_> {
        smallvec![("a", &self.a, Read), ("b", &self.b, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "add";
        same_shape_rows(OP, ("a", &self.a), ("out", &self.out))?;
        check::shape(OP, "b", &self.b, &self.a.shape)?;
        check::row_major(OP, "b", &self.b)?;
        for (name, t) in [("a", &self.a), ("b", &self.b), ("out", &self.out)] {
            check::dtype(OP, name, t, ACTIVATIONS)?;
        }
        Ok(())
    }
}

/// `out[t] = table[ids[t]]`: table `[V, D]`, ids i32 `[T]`, out `[T, D]`. An id outside `0..V` is an
/// error the device reports (CPU: at launch).
#[derive(Clone, Debug)]
pub struct Embedding {
    pub table: Tensor,
    pub ids: Tensor,
    pub out: Tensor,
}

impl OpDef for Embedding {
    /// A lookup reads only the rows it gathers, not the whole table.
    fn bytes(&self) -> Option<f64> {
        let rows = self.out.numel() * self.table.dtype.size();
        Some(
            (rows + self.ids.numel() * self.ids.dtype.size() + self.out.numel() * self.out.dtype.size())
                as f64,
        )
    }

    fn args(&self) -> ArgList<'_> {
        smallvec![("table", &self.table, Read), ("ids", &self.ids, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "embedding";
        check::rank(OP, "table", &self.table, 2)?;
        check::dtype(OP, "table", &self.table, ACTIVATIONS)?;
        check::contiguous(OP, "table", &self.table)?;
        check::rank(OP, "ids", &self.ids, 1)?;
        check::dtype(OP, "ids", &self.ids, &[DType::I32])?;
        check::contiguous(OP, "ids", &self.ids)?;
        check::dtype(OP, "out", &self.out, ACTIVATIONS)?;
        check::shape(OP, "out", &self.out, &[self.ids.shape[0], self.table.shape[1]])?;
        check::row_major(OP, "out", &self.out)
    }
}

/// Row softmax of `x` `[R, N]` in f32 (max subtracted first); one rounding at `out`.
#[derive(Clone, Debug)]
pub struct Softmax {
    pub x: Tensor,
    pub out: Tensor,
}

impl OpDef for Softmax {
    fn args(&self) -> ArgList<'_> {
        smallvec![("x", &self.x, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "softmax";
        same_shape_rows(OP, ("x", &self.x), ("out", &self.out))?;
        check::dtype(OP, "x", &self.x, ACTIVATIONS)?;
        check::dtype(OP, "out", &self.out, ACTIVATIONS)?;
        check::condition(OP, "x", self.x.shape[1] > 0, || "rows must not be empty".into())
    }
}

/// Convert between float dtypes, contiguous, same shape: one round-to-nearest-even step; FP8 outputs
/// saturate at the format's maximum (NaN stays NaN).
#[derive(Clone, Debug)]
pub struct Cast {
    pub x: Tensor,
    pub out: Tensor,
}

impl OpDef for Cast {
    fn args(&self) -> ArgList<'_> {
        smallvec![("x", &self.x, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "cast";
        let floats: Vec<DType> = FLOATS.iter().chain(FP8).copied().collect();
        check::dtype(OP, "x", &self.x, &floats)?;
        check::dtype(OP, "out", &self.out, &floats)?;
        check::contiguous(OP, "x", &self.x)?;
        check::contiguous(OP, "out", &self.out)?;
        check::shape(OP, "out", &self.out, &self.x.shape)
    }
}
