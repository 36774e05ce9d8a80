//! Multi-head Latent Attention, in its absorbed (latent cache) and naive (decompressed K/V) forms.
//!
//! Both take a batch of B sequences, each with T new query tokens, and a per-sequence key length
//! `kv_lens[b]` (i32 on the device) that already counts the T new tokens. Query t of sequence b sits at
//! absolute position `kv_lens[b] − T + t`; with `causal` it attends to keys `u ≤` that position,
//! otherwise to every `u < kv_lens[b]`. `T = 1` is decode; `kv_lens[b] = T` is prefill from position 0;
//! anything between is chunked prefill over a cache.
//!
//! The latent cache is either one block of rows per sequence or a pool of pages with a block table per
//! sequence ([`CachePages`]): the paged form lets a server hand out cache memory 64 tokens at a time and
//! lets sequences with a common prefix share its pages.
//!
//! Numerics contract: scores = `softmax_scale · (q·k)` with dot products accumulated in f32 (reference:
//! f64) from the stored input values; softmax in f32 with the row max subtracted; the weighted sum of
//! values accumulated in f32; output rounded once. `softmax_scale` is the whole logit scale, YaRN's
//! mscale² included (see [`crate::rope::softmax_scale`]).

use super::check::{self, ACTIVATIONS};
use super::Access::{Read, Update, Write};
use super::{ArgList, OpDef};
use crate::dtype::DType;
use crate::error::Result;
use crate::tensor::Tensor;
use smallvec::smallvec;

/// How many keys query `t` (of `new_tokens` queries) of a sequence with `kv_len` keys may see: under
/// `causal`, keys up to its own absolute position `kv_len − new_tokens + t`, otherwise all of them.
pub fn visible_keys(kv_len: usize, new_tokens: usize, t: usize, causal: bool) -> usize {
    if causal {
        kv_len - new_tokens + t + 1
    } else {
        kv_len
    }
}

/// Where a cache tensor keeps each sequence's positions.
/// * Contiguous (no block table): the cache is `[B, L, W]` and position `u` of sequence `b` is row `(b, u)`.
/// * Paged: the cache is a pool of pages `[P, page, W]` and an i32 block table `[B, pages]` names each
///   sequence's pages in order: position `u` of sequence `b` is row `u % page` of page
///   `block_table[b, u / page]`. Sequences may share pages (a common prefix); only entries that cover a
///   sequence's first `kv_lens[b]` positions are read, and they must lie in `0..P` — checked where the
///   table is read (on the host by the CPU backends, in the kernel on a GPU, reported at `sync`).
///
/// Kernels treat the contiguous form as the paged one with `page = L`, one page per sequence and the
/// table `[[0], [1], …]`, so both share one addressing rule: [`CachePages::row`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CachePages {
    /// Positions per page.
    pub page: usize,
    /// Block table entries per sequence.
    pub pages_per_seq: usize,
    /// Pages in the cache tensor (its first dimension).
    pub pool: usize,
}

impl CachePages {
    /// The layout of a validated cache tensor and its optional block table.
    pub fn of(cache: &Tensor, block_table: Option<&Tensor>) -> CachePages {
        let (pool, page) = (cache.shape[0], cache.shape[1]);
        CachePages { page, pages_per_seq: block_table.map_or(1, |t| t.shape[1]), pool }
    }

    /// Positions a sequence can hold.
    pub fn capacity(&self) -> usize {
        self.page * self.pages_per_seq
    }

    /// (page, row within the page) of position `u` of sequence `b`, given the block table's entries
    /// (`None`: contiguous); `None` when the entry lies outside the pool.
    pub fn locate(&self, table: Option<&[i32]>, b: usize, u: usize) -> Option<(usize, usize)> {
        let page = match table {
            Some(t) => usize::try_from(t[b * self.pages_per_seq + u / self.page]).ok()?,
            None => b,
        };
        (page < self.pool).then_some((page, u % self.page))
    }

    /// The row (of the cache viewed as `[P · page, W]`) holding position `u` of sequence `b`.
    pub fn row(&self, table: Option<&[i32]>, b: usize, u: usize) -> Option<usize> {
        self.locate(table, b, u).map(|(page, r)| page * self.page + r)
    }
}

/// The shape rules of a cache (argument `name`) of rows `w` wide for `b` sequences, with an optional block
/// table; returns its layout.
fn check_cache(
    op: &'static str,
    name: &'static str,
    cache: &Tensor,
    block_table: Option<&Tensor>,
    b: usize,
    w: usize,
) -> Result<CachePages> {
    check::rank(op, name, cache, 3)?;
    match block_table {
        None => check::shape(op, name, cache, &[b, cache.shape[1], w])?,
        Some(table) => {
            check::shape(op, name, cache, &[cache.shape[0], cache.shape[1], w])?;
            check::rank(op, "block_table", table, 2)?;
            check::shape(op, "block_table", table, &[b, table.shape[1]])?;
            check::dtype(op, "block_table", table, &[DType::I32])?;
            check::contiguous(op, "block_table", table)?;
            check::condition(op, name, cache.shape[1] > 0, || "has pages of 0 positions".into())?;
        }
    }
    Ok(CachePages::of(cache, block_table))
}

/// Absorbed MLA over a latent cache.
/// * `q_latent` `[B, T, H, Dc]`: q̃_h = W_UK[h]ᵀ q_nope_h (Dc = kv_lora_rank, 512 in V3);
/// * `q_pe` `[B, T, H, Dr]`: rotated rope part of the query (Dr = qk_rope_head_dim, 64 in V3);
/// * `kv_cache` `[B, L, Dc + Dr]` (or a page pool `[P, page, Dc + Dr]` with `block_table`, see
///   [`CachePages`]): per token the normalised c_kv followed by the rotated k_pe; positions ≥ `kv_lens[b]`
///   are ignored;
/// * `out` `[B, T, H, Dc]`: õ_h = Σ_u P_h(u) c_kv(u) — V is the c_kv part of the same cache rows; the
///   caller applies W_UV and o_proj.
///
/// Score: `scale · (q̃_h · c_kv(u) + q_pe_h · k_pe(u))`.
#[derive(Clone, Debug)]
pub struct MlaAttention {
    pub q_latent: Tensor,
    pub q_pe: Tensor,
    pub kv_cache: Tensor,
    /// Paged cache: i32 `[B, pages]` (see [`CachePages`]); `None`: one block of rows per sequence.
    pub block_table: Option<Tensor>,
    pub kv_lens: Tensor,
    pub softmax_scale: f32,
    pub causal: bool,
    pub out: Tensor,
}

fn check_lens(op: &'static str, kv_lens: &Tensor, b: usize) -> Result<()> {
    check::dtype(op, "kv_lens", kv_lens, &[DType::I32])?;
    check::shape(op, "kv_lens", kv_lens, &[b])?;
    check::contiguous(op, "kv_lens", kv_lens)
}

fn check_scale(op: &'static str, scale: f32) -> Result<()> {
    check::condition(op, "softmax_scale", scale.is_finite() && scale > 0.0, || {
        format!("must be finite and positive, got {scale}")
    })
}

impl OpDef for MlaAttention {
    fn flops(&self) -> Option<f64> {
        let (b, t, h, dc, dr, l) = self.dims();
        // Upper bound: every query against the whole cache (causal masking does less).
        Some(2.0 * (b * t * h * l * (dc + dr + dc)) as f64)
    }

    fn args(&self) -> ArgList<'_> {
        let mut args = smallvec![
            ("q_latent", &self.q_latent, Read),
            ("q_pe", &self.q_pe, Read),
            ("kv_cache", &self.kv_cache, Read),
            ("kv_lens", &self.kv_lens, Read),
            ("out", &self.out, Write),
        ];
        args.extend(self.block_table.as_ref().map(|t| ("block_table", t, Read)));
        args
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "mla_attention";
        check::rank(OP, "q_latent", &self.q_latent, 4)?;
        let [b, t, h, dc] = self.q_latent.shape[..] else { unreachable!() };
        check::rank(OP, "q_pe", &self.q_pe, 4)?;
        let dr = self.q_pe.shape[3];
        check::shape(OP, "q_pe", &self.q_pe, &[b, t, h, dr])?;
        let l =
            check_cache(OP, "kv_cache", &self.kv_cache, self.block_table.as_ref(), b, dc + dr)?.capacity();
        check::condition(OP, "kv_cache", l >= t, || {
            format!("holds {l} positions per sequence, fewer than the {t} new tokens")
        })?;
        check::shape(OP, "out", &self.out, &[b, t, h, dc])?;
        for (name, x) in [
            ("q_latent", &self.q_latent),
            ("q_pe", &self.q_pe),
            ("kv_cache", &self.kv_cache),
            ("out", &self.out),
        ] {
            check::dtype(OP, name, x, ACTIVATIONS)?;
            check::contiguous(OP, name, x)?;
        }
        check_lens(OP, &self.kv_lens, b)?;
        check_scale(OP, self.softmax_scale)
    }
}

impl MlaAttention {
    /// (B, T, H, Dc, Dr, L), L the positions each sequence can hold.
    pub fn dims(&self) -> (usize, usize, usize, usize, usize, usize) {
        let q = &self.q_latent.shape;
        (q[0], q[1], q[2], q[3], self.q_pe.shape[3], self.pages().capacity())
    }

    pub fn pages(&self) -> CachePages {
        CachePages::of(&self.kv_cache, self.block_table.as_ref())
    }
}

/// Naive attention with decompressed keys and values (long prefill): `q` `[B, T, H, Dk]`, `k`
/// `[B, L, H, Dk]`, `v` `[B, L, H, Dv]`, `out` `[B, T, H, Dv]`. Score: `scale · q_h · k_h(u)`.
#[derive(Clone, Debug)]
pub struct MhaAttention {
    pub q: Tensor,
    pub k: Tensor,
    pub v: Tensor,
    pub kv_lens: Tensor,
    pub softmax_scale: f32,
    pub causal: bool,
    pub out: Tensor,
}

impl OpDef for MhaAttention {
    fn flops(&self) -> Option<f64> {
        let (b, t, h, dk, dv, l) = self.dims();
        Some(2.0 * (b * t * h * l * (dk + dv)) as f64)
    }

    fn args(&self) -> ArgList<'_> {
        smallvec![
            ("q", &self.q, Read),
            ("k", &self.k, Read),
            ("v", &self.v, Read),
            ("kv_lens", &self.kv_lens, Read),
            ("out", &self.out, Write),
        ]
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "mha_attention";
        check::rank(OP, "q", &self.q, 4)?;
        let [b, t, h, dk] = self.q.shape[..] else { unreachable!() };
        check::rank(OP, "k", &self.k, 4)?;
        let l = self.k.shape[1];
        check::shape(OP, "k", &self.k, &[b, l, h, dk])?;
        check::rank(OP, "v", &self.v, 4)?;
        let dv = self.v.shape[3];
        check::shape(OP, "v", &self.v, &[b, l, h, dv])?;
        check::condition(OP, "k", l >= t, || format!("holds {l} rows, fewer than the {t} new tokens"))?;
        check::shape(OP, "out", &self.out, &[b, t, h, dv])?;
        for (name, x) in [("q", &self.q), ("k", &self.k), ("v", &self.v), ("out", &self.out)] {
            check::dtype(OP, name, x, ACTIVATIONS)?;
            check::contiguous(OP, name, x)?;
        }
        check_lens(OP, &self.kv_lens, b)?;
        check_scale(OP, self.softmax_scale)
    }
}

impl MhaAttention {
    /// (B, T, H, Dk, Dv, L)
    pub fn dims(&self) -> (usize, usize, usize, usize, usize, usize) {
        let q = &self.q.shape;
        (q[0], q[1], q[2], q[3], self.v.shape[3], self.k.shape[1])
    }
}

/// Appends a step's rows to each sequence's cache: row `(b, t)` of `rows` `[B, T, W]` is written to
/// position `kv_lens[b] − T + t` of sequence `b` in `cache` (`[B, L, W]`, or paged) — the step's tokens are the last `T` of the
/// `kv_lens[b]` positions the attention after it reads. `kv_lens` (i32 `[B]`) is read on the device, so
/// one launch serves every sequence at any positions and a captured step replays at new ones. The cache
/// is updated in place: positions the op does not name keep their values. Each length must satisfy
/// `T ≤ kv_lens[b] ≤ L`; where the lengths are read (on the host by the CPU backends, in the kernel on a
/// GPU, reported at `sync`) a length that breaks it is an error and its sequence is left unwritten.
/// With `block_table` the cache is a page pool and positions are located as [`CachePages`] says (a page
/// outside the pool is the same kind of error). The rows one launch writes must be distinct: a page shared
/// by several sequences is read-only (a writer gets its own copy first); the CPU backends check it, a GPU
/// kernel does not.
/// Numerics: none; rows and cache share a dtype and values are copied exactly.
#[derive(Clone, Debug)]
pub struct CacheAppend {
    pub rows: Tensor,
    pub kv_lens: Tensor,
    pub cache: Tensor,
    /// Paged cache: i32 `[B, pages]`; `None`: `cache` is `[B, L, W]`.
    pub block_table: Option<Tensor>,
}

impl OpDef for CacheAppend {
    fn args(&self) -> ArgList<'_> {
        let mut args = smallvec![
            ("rows", &self.rows, Read),
            ("kv_lens", &self.kv_lens, Read),
            ("cache", &self.cache, Update),
        ];
        args.extend(self.block_table.as_ref().map(|t| ("block_table", t, Read)));
        args
    }

    fn validate(&self) -> Result<()> {
        const OP: &str = "cache_append";
        check::rank(OP, "rows", &self.rows, 3)?;
        let [b, _, w] = self.rows.shape[..] else { unreachable!("rank checked") };
        check_cache(OP, "cache", &self.cache, self.block_table.as_ref(), b, w)?;
        check::dtype(OP, "rows", &self.rows, ACTIVATIONS)?;
        check::dtype(OP, "cache", &self.cache, &[self.rows.dtype])?;
        check::unit_last_stride(OP, "rows", &self.rows)?;
        check::unit_last_stride(OP, "cache", &self.cache)?;
        check::non_overlapping(OP, "cache", &self.cache)?;
        check::dtype(OP, "kv_lens", &self.kv_lens, &[DType::I32])?;
        check::shape(OP, "kv_lens", &self.kv_lens, &[b])?;
        check::contiguous(OP, "kv_lens", &self.kv_lens)
    }

    /// A copy: each row read once and written once.
    fn flops(&self) -> Option<f64> {
        Some(0.0)
    }

    fn bytes(&self) -> Option<f64> {
        let rows = self.rows.numel() * self.rows.dtype.size();
        Some((2 * rows + self.kv_lens.numel() * 4) as f64)
    }
}

impl CacheAppend {
    pub fn pages(&self) -> CachePages {
        CachePages::of(&self.cache, self.block_table.as_ref())
    }
}
