//! Choosing tokens: argmax, top-k, and seeded sampling that every backend reproduces exactly.

use super::check::{self, ACTIVATIONS};
use super::Access::{Read, Write};
use super::{Access, OpDef};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;

fn check_rows(op: &'static str, x: &Tensor) -> Result<()> {
    check::rank(op, "x", x, 2)?;
    check::row_major(op, "x", x)?;
    check::dtype(op, "x", x, ACTIVATIONS)?;
    check::condition(op, "x", x.shape[1] > 0, || "rows must not be empty".into())
}

/// Index of the largest value of each row of `x` `[R, N]` → i32 `[R]`; ties to the lowest index.
#[derive(Clone, Debug)]
pub struct Argmax {
    pub x: Tensor,
    pub out: Tensor,
}

impl OpDef for Argmax {
    fn args(&self) -> Vec<(&'static str, &Tensor, Access)> {
        vec![("x", &self.x, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "argmax";
        check_rows(OP, &self.x)?;
        check::dtype(OP, "out", &self.out, &[DType::I32])?;
        check::shape(OP, "out", &self.out, &[self.x.shape[0]])?;
        check::contiguous(OP, "out", &self.out)
    }
}

/// The k largest values of each row, in decreasing order (ties to the lower index): `values` f32
/// `[R, k]`, `ids` i32 `[R, k]`.
#[derive(Clone, Debug)]
pub struct TopK {
    pub x: Tensor,
    pub k: usize,
    pub values: Tensor,
    pub ids: Tensor,
}

impl OpDef for TopK {
    fn args(&self) -> Vec<(&'static str, &Tensor, Access)> {
        vec![("x", &self.x, Read), ("values", &self.values, Write), ("ids", &self.ids, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "topk";
        check_rows(OP, &self.x)?;
        let (r, n) = (self.x.shape[0], self.x.shape[1]);
        check::condition(OP, "k", self.k >= 1 && self.k <= n, || {
            format!("k = {} must be in 1..={n}", self.k)
        })?;
        check::dtype(OP, "values", &self.values, &[DType::F32])?;
        check::dtype(OP, "ids", &self.ids, &[DType::I32])?;
        for (name, t) in [("values", &self.values), ("ids", &self.ids)] {
            check::shape(OP, name, t, &[r, self.k])?;
            check::contiguous(OP, name, t)?;
        }
        Ok(())
    }
}

/// Seeded sampling, one token per row of `logits` `[R, V]` → i32 `[R]`.
///
/// `temperature == 0`: argmax. Otherwise `p = softmax(logits / temperature)` (f32), the nucleus is the
/// shortest prefix of tokens by decreasing p (ties to the lower id) whose mass reaches `top_p` (always at
/// least one token), and the winner is the nucleus token maximising `p_i / E_i` where
/// `E_i = −ln(u(seed, row, i))` — an exponential race, which draws exactly from the renormalised nucleus
/// and needs no random state, so every backend picks the same token (see [`uniform`]).
#[derive(Clone, Debug)]
pub struct Sample {
    pub logits: Tensor,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub out: Tensor,
}

impl OpDef for Sample {
    fn args(&self) -> Vec<(&'static str, &Tensor, Access)> {
        vec![("logits", &self.logits, Read), ("out", &self.out, Write)]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "sample";
        check_rows(OP, &self.logits)?;
        check::condition(OP, "temperature", self.temperature.is_finite() && self.temperature >= 0.0, || {
            format!("must be finite and ≥ 0, got {}", self.temperature)
        })?;
        check::condition(OP, "top_p", self.top_p > 0.0 && self.top_p <= 1.0, || {
            format!("must be in (0, 1], got {}", self.top_p)
        })?;
        check::dtype(OP, "out", &self.out, &[DType::I32])?;
        check::shape(OP, "out", &self.out, &[self.logits.shape[0]])?;
        check::contiguous(OP, "out", &self.out)
    }
}

/// A uniform number in (0, 1) from (seed, row, column): SplitMix64's finaliser over a mix of the three,
/// top 53 bits, offset by half a step so that it is never 0 or 1. Pure integer arithmetic that every
/// kernel language can reproduce bit for bit.
pub fn uniform(seed: u64, row: u64, column: u64) -> f64 {
    let mut z = seed ^ row.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ column.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}
