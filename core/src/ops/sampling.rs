//! Choosing tokens: argmax, top-k, and seeded sampling that every backend reproduces exactly.

use super::check::{self, ACTIVATIONS};
use super::Access::{Read, Write};
use super::{ArgList, OpDef};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use smallvec::smallvec;

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
    fn args(&self) -> ArgList<'_> {
        smallvec![("x", &self.x, Read), ("out", &self.out, Write)]
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
    fn args(&self) -> ArgList<'_> {
        smallvec![("x", &self.x, Read), ("values", &self.values, Write), ("ids", &self.ids, Write)]
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
/// `E_i = −ln(u(seed, key, i))` — an exponential race, which draws exactly from the renormalised nucleus
/// and needs no random state, so every backend picks the same token (see [`uniform`]).
///
/// Without `row_params` every row uses the op's `temperature`, `top_p` and `seed`, and row `r`'s uniforms
/// are keyed by `key = r`. With `row_params` (i32 `[R, 4]`, [`RowSampling::encode`]) each row has its own
/// three (the op's are then unused) and its uniforms are keyed by `key = 0`: row `r` draws exactly what a
/// one-row launch of its own parameters draws, whatever row of the batch it is in — a server batches
/// requests with different settings into one launch. Entries are checked where they are read (an entry
/// outside the rules of [`RowSampling::check`] is an error naming `row_params` and the row).
#[derive(Clone, Debug)]
pub struct Sample {
    pub logits: Tensor,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub row_params: Option<Tensor>,
    pub out: Tensor,
}

impl Sample {
    /// Row `r`'s parameters and the key of its uniforms, given the decoded `row_params` if the op has them.
    pub fn row(&self, r: usize, rows: Option<&[RowSampling]>) -> (RowSampling, u64) {
        match rows {
            Some(rows) => (rows[r], 0),
            None => {
                (RowSampling { temperature: self.temperature, top_p: self.top_p, seed: self.seed }, r as u64)
            }
        }
    }
}

impl OpDef for Sample {
    fn args(&self) -> ArgList<'_> {
        let mut args = smallvec![("logits", &self.logits, Read)];
        args.extend(self.row_params.as_ref().map(|t| ("row_params", t, Read)));
        args.push(("out", &self.out, Write));
        args
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "sample";
        check_rows(OP, &self.logits)?;
        let shared = RowSampling { temperature: self.temperature, top_p: self.top_p, seed: self.seed };
        shared.check(OP, "temperature", "top_p")?;
        if let Some(t) = &self.row_params {
            check::dtype(OP, "row_params", t, &[DType::I32])?;
            check::shape(OP, "row_params", t, &[self.logits.shape[0], RowSampling::WORDS])?;
            check::contiguous(OP, "row_params", t)?;
        }
        check::dtype(OP, "out", &self.out, &[DType::I32])?;
        check::shape(OP, "out", &self.out, &[self.logits.shape[0]])?;
        check::contiguous(OP, "out", &self.out)
    }
}

/// One row's sampling parameters. In [`Sample::row_params`] a row is four i32 words: the temperature's and
/// top_p's f32 bits, then the seed's low and high 32 bits (kernels read them as they are).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSampling {
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
}

impl RowSampling {
    /// i32 words per row of `row_params`.
    pub const WORDS: usize = 4;

    /// The rules every backend applies: temperature finite and ≥ 0 (0 is argmax), top_p in (0, 1].
    /// The first one broken: the field and why.
    fn fault(&self) -> Option<(&'static str, String)> {
        let (t, p) = (self.temperature, self.top_p);
        if !(t.is_finite() && t >= 0.0) {
            return Some(("temperature", format!("must be finite and ≥ 0, got {t}")));
        }
        (!(p > 0.0 && p <= 1.0)).then(|| ("top_p", format!("must be in (0, 1], got {p}")))
    }

    /// [`Self::fault`] as an error of `op`, naming the arguments `temperature` and `top_p`.
    pub fn check(&self, op: &'static str, temperature: &'static str, top_p: &'static str) -> Result<()> {
        match self.fault() {
            None => Ok(()),
            Some((field, why)) => {
                Err(Error::invalid(op, if field == "temperature" { temperature } else { top_p }, why))
            }
        }
    }

    /// The `row_params` words of `rows`, row after row.
    pub fn encode(rows: &[RowSampling]) -> Vec<i32> {
        let word = |bits: u32| bits as i32;
        rows.iter()
            .flat_map(|r| {
                [
                    word(r.temperature.to_bits()),
                    word(r.top_p.to_bits()),
                    word(r.seed as u32),
                    word((r.seed >> 32) as u32),
                ]
            })
            .collect()
    }

    /// The rows of `row_params` words, each checked: an entry outside the rules is an error of `op`'s
    /// `row_params` naming the row.
    pub fn decode(op: &'static str, words: &[i32]) -> Result<Vec<RowSampling>> {
        words
            .chunks_exact(Self::WORDS)
            .enumerate()
            .map(|(r, w)| {
                let bits = |i: usize| w[i] as u32;
                let row = RowSampling {
                    temperature: f32::from_bits(bits(0)),
                    top_p: f32::from_bits(bits(1)),
                    seed: bits(2) as u64 | (bits(3) as u64) << 32,
                };
                match row.fault() {
                    None => Ok(row),
                    Some((field, why)) => {
                        Err(Error::invalid(op, "row_params", format!("row {r}: {field} {why}")))
                    }
                }
            })
            .collect()
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
