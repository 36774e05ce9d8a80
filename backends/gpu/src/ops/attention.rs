//! MLA (absorbed, over the latent cache) and MHA attention, flash-decoding style: a block takes one query
//! token of one sequence, a group of heads (sharing every read of a cache row) and one split of the keys;
//! with several splits each block leaves its partial softmax state in scratch memory and
//! attention_combine merges the splits in order. Decode (few query rows, long cache) gets splits until the
//! launch has enough blocks; short caches and prefill are one split, written directly.
//!
//! Two kernels, one launch (the same parameters and splits): MLA with V3's head dims and a bf16 cache runs
//! on the tile layer's matrix units where the target has them (attention_mma.cu, 32 heads per block,
//! [`mma_fits`]: NVIDIA from sm_80, AMD gfx90a / gfx94x, the emulator at warp 32 and 64); the rest, and
//! every target without the tile layer (sm_75, RDNA), on attention.cu's SIMT kernel (MLA: 8 heads per
//! block; MHA: one).

use crate::device::Ctx;
use crate::kernels::{self, Variant};
use crate::launch::{grid_2d, Launch, Params};
use crate::runtime::Target;
use dsv3_core::ops::{CachePages, MhaAttention, MlaAttention};
use dsv3_core::{DType, Error, Op, Result, Support, Tensor};

/// Threads per block of attention.cu (its BLOCK).
const BLOCK: usize = 256;
/// Keys per chunk of attention.cu (its CH): splits are whole chunks (and whole 16-key tiles of
/// attention_mma.cu).
const CHUNK: usize = 32;
/// Query values of a head group that attention.cu keeps in static shared memory (its QBUF).
const QBUF: usize = 6144;
/// Heads per block of the MLA form (attention.cu's HG when MLA is 1).
const MLA_HEADS: usize = 8;
/// Output dimensions per thread and head at most (OPT ∈ {1, 2, 4}): the value dimension is ≤ 4·BLOCK.
const OPT_MAX: usize = 4;
/// Caches up to this many keys are one split (no combine); longer ones get at most one split per this
/// many keys. The host does not know `kv_lens`, so splits follow the cache's capacity L: those past a
/// sequence's length only report that they are empty.
const MIN_SPLIT_KEYS: usize = 256;
/// Blocks a launch should reach before the keys are split no further (an H200 has 132 SMs, each holding
/// several of these blocks at once).
const TARGET_BLOCKS: usize = 1024;
/// Threads per block of attention_combine.cu.
const COMBINE_BLOCK: u32 = 128;
/// attention_mma.cu's threads per block (THREADS), heads per block (HM) and head dims (D1, D2).
const MMA_BLOCK: usize = 256;
const MMA_HEADS: usize = 32;
const MMA_DIMS: (usize, usize) = (512, 64);
/// What attention_mma.cu rounds beyond the op's contract (`Support::TensorCore`).
const MMA_ROUNDING: &str = "softmax weights rounded to bf16 for the P·V product";

/// What both forms launch with: queries (MHA: `qr` is `q` and D2 = 0), keys, values, lengths, output.
struct Form<'a> {
    mla: bool,
    /// MLA on attention_mma.cu ([`mma_fits`]).
    mma: bool,
    /// The op's names of q, qr, k, v (for errors).
    names: [&'static str; 4],
    q: &'a Tensor,
    qr: &'a Tensor,
    k: &'a Tensor,
    v: &'a Tensor,
    kv_lens: &'a Tensor,
    /// The cache's pages (contiguous caches: one page of L positions per sequence) and block table.
    pages: CachePages,
    block_table: Option<&'a Tensor>,
    out: &'a Tensor,
    /// (B, T, H, D1, D2, DV, L)
    dims: (usize, usize, usize, usize, usize, usize, usize),
    scale: f32,
    causal: bool,
}

/// (query dimension, value dimension) of an attention op.
fn head_dims(op: &Op) -> Option<(usize, usize)> {
    match op {
        Op::MlaAttention(a) => {
            let (_, _, _, dc, dr, _) = a.dims();
            Some((dc + dr, dc))
        }
        Op::MhaAttention(a) => {
            let (_, _, _, dk, dv, _) = a.dims();
            Some((dk, dv))
        }
        _ => None,
    }
}

/// Whether attention_mma.cu computes an MLA op on `target`: the tile layer runs there
/// ([`Target::mma_bf16`]), the head dims are V3's (the kernel's constants), queries and cache are bf16
/// (other caches stay on the SIMT kernel), and, when known (`addrs`: q_latent's, q_pe's and the cache's
/// device addresses), every row starts on 16 bytes for the tile layer's 16-byte staging copies (cp.async,
/// or AMD's 16-byte loads) — the rows' sizes (1024, 128 and 1152 bytes) are multiples of 16, so the bases
/// decide.
fn mma_fits(target: &Target, o: &MlaAttention, addrs: Option<[u64; 3]>) -> bool {
    let (_, _, _, dc, dr, _) = o.dims();
    let bf16 = [&o.q_latent, &o.q_pe, &o.kv_cache].iter().all(|t| t.dtype == DType::BF16);
    target.mma_bf16()
        && (dc, dr) == MMA_DIMS
        && bf16
        && addrs.is_none_or(|a| a.iter().all(|v| v.is_multiple_of(16)))
}

pub fn supports(ctx: &Ctx, op: &Op) -> Support {
    if let Op::MlaAttention(o) = op {
        if mma_fits(ctx.runtime.target(), o, None) {
            // (A base address off 16 bytes, known only at launch, falls back to the SIMT kernel, whose
            // arithmetic is inside the tensor-core rule too.)
            return Support::TensorCore { rounding: MMA_ROUNDING.into() };
        }
    }
    let Some((qd, dv)) = head_dims(op) else {
        return Support::Unsupported { reason: "not an attention op".into() };
    };
    if qd > QBUF {
        return Support::Unsupported {
            reason: format!(
                "query dimension {qd} is over the {QBUF} values the kernel keeps in shared memory"
            ),
        };
    }
    if dv > OPT_MAX * BLOCK {
        return Support::Unsupported {
            reason: format!("value dimension {dv} is over the kernel's {}", OPT_MAX * BLOCK),
        };
    }
    Support::Native
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture: both forms with
/// each accumulator width, bf16 throughout (the combine has no switch).
pub fn catalog() -> Vec<Variant> {
    use DType::BF16;
    let mut v = Vec::new();
    for mla in [1, 0] {
        for opt in [1, 2, 4] {
            v.push(
                Variant::new(kernels::ATTENTION)
                    .ty("q", BF16)
                    .ty("qr", BF16)
                    .ty("k", BF16)
                    .ty("v", BF16)
                    .ty("out", BF16)
                    .konst("MLA", mla)
                    .konst("OPT", opt),
            );
        }
    }
    v.push(Variant::new(kernels::ATTENTION_COMBINE).ty("out", BF16));
    v
}

/// The tile-layer variants (compiled where [`Target::mma_bf16`]): bf16 throughout, as the model runs it.
pub fn tile_catalog() -> Vec<Variant> {
    vec![mma_variant(DType::BF16)]
}

/// attention_mma.cu for an output type (queries and cache are bf16, [`mma_fits`]).
fn mma_variant(out: DType) -> Variant {
    use DType::BF16;
    Variant::new(kernels::ATTENTION_MMA)
        .ty("q", BF16)
        .ty("qr", BF16)
        .ty("k", BF16)
        .ty("v", BF16)
        .ty("out", out)
}

pub fn mla(l: &Launch, o: &MlaAttention) -> Result<()> {
    let (b, t, h, dc, dr, len) = o.dims();
    let addrs =
        [l.addr("q_latent", &o.q_latent)?, l.addr("q_pe", &o.q_pe)?, l.addr("kv_cache", &o.kv_cache)?];
    run(
        l,
        &Form {
            mla: true,
            mma: mma_fits(l.target(), o, Some(addrs)),
            names: ["q_latent", "q_pe", "kv_cache", "kv_cache"],
            q: &o.q_latent,
            qr: &o.q_pe,
            k: &o.kv_cache,
            v: &o.kv_cache,
            kv_lens: &o.kv_lens,
            pages: o.pages(),
            block_table: o.block_table.as_ref(),
            out: &o.out,
            dims: (b, t, h, dc, dr, dc, len),
            scale: o.softmax_scale,
            causal: o.causal,
        },
    )
}

pub fn mha(l: &Launch, o: &MhaAttention) -> Result<()> {
    let (b, t, h, dk, dv, len) = o.dims();
    run(
        l,
        &Form {
            mla: false,
            mma: false,
            names: ["q", "q", "k", "v"],
            q: &o.q,
            qr: &o.q,
            k: &o.k,
            v: &o.v,
            kv_lens: &o.kv_lens,
            pages: CachePages { page: len, pages_per_seq: 1, pool: b },
            block_table: None,
            out: &o.out,
            dims: (b, t, h, dk, 0, dv, len),
            scale: o.softmax_scale,
            causal: o.causal,
        },
    )
}

/// A block table's address and the check site of its entries; (0, 0) for a contiguous cache (the kernels
/// take a null table as one page of L positions per sequence).
pub(super) fn block_table(l: &Launch, table: Option<&Tensor>, pages: CachePages) -> Result<(u64, usize)> {
    let Some(t) = table else { return Ok((0, 0)) };
    let site = l.site("block_table", format!("each entry must be a page in 0..{}", pages.pool));
    Ok((l.addr("block_table", t)?, site as usize))
}

/// Splits of `len` keys when the other grid dimension has `row_blocks` blocks: (splits, keys per split).
/// Enough splits for the launch to reach TARGET_BLOCKS, but no more than `len / MIN_SPLIT_KEYS` rounded
/// up (so caches up to MIN_SPLIT_KEYS keys are one split), each a whole number of chunks.
fn key_splits(len: usize, row_blocks: usize) -> (usize, usize) {
    let wanted = TARGET_BLOCKS.div_ceil(row_blocks.max(1));
    let splits = wanted.clamp(1, len.div_ceil(MIN_SPLIT_KEYS).max(1));
    let split_len = len.div_ceil(splits).next_multiple_of(CHUNK).max(CHUNK);
    (len.div_ceil(split_len).max(1), split_len)
}

fn run(l: &Launch, f: &Form) -> Result<()> {
    let (b, t, h, d1, d2, dv, len) = f.dims;
    let rows = b * t * h;
    if rows * dv == 0 {
        return Ok(());
    }
    let qd = d1 + d2;
    let (heads, block) = match (f.mma, f.mla) {
        (true, _) => (MMA_HEADS, MMA_BLOCK),
        (false, true) => (MLA_HEADS.min(QBUF / qd.max(1)).min(h), BLOCK),
        (false, false) => (1, BLOCK),
    };
    let groups = h.div_ceil(heads);
    let row_blocks = b * t * groups;
    let (splits, split_len) = key_splits(len, row_blocks);
    let too_large =
        || Error::unsupported(l.backend(), l.op, format!("{row_blocks} × {splits} blocks exceed a grid"));
    let dims = grid_2d(row_blocks as u64, splits as u64, block as u32).ok_or_else(too_large)?;
    let opt: i64 = match dv.div_ceil(BLOCK) {
        0 | 1 => 1,
        2 => 2,
        _ => 4,
    };
    let variant = if f.mma {
        mma_variant(f.out.dtype)
    } else {
        Variant::new(kernels::ATTENTION)
            .ty("q", f.q.dtype)
            .ty("qr", f.qr.dtype)
            .ty("k", f.k.dtype)
            .ty("v", f.v.dtype)
            .ty("out", f.out.dtype)
            .konst("MLA", f.mla as i64)
            .konst("OPT", opt)
    };
    let kernel = l.kernel(&variant)?;
    let part = if splits > 1 { l.scratch(rows * splits * (dv + 2) * 4)? } else { 0 };
    let site = l.site("kv_lens", format!("cache lengths must be in {t}..={len}"));
    let (table, page_site) = block_table(l, f.block_table, f.pages)?;
    let out = l.addr("out", f.out)?;
    let params = Params::new()
        .addr(l.addr(f.names[0], f.q)?)
        .addr(l.addr(f.names[1], f.qr)?)
        .addr(l.addr(f.names[2], f.k)?)
        .addr(l.addr(f.names[3], f.v)?)
        .addr(l.addr("kv_lens", f.kv_lens)?)
        .addr(table)
        .addr(out)
        .addr(part)
        .addr(l.err())
        .u(t)
        .u(h)
        .u(d1)
        .u(d2)
        .u(dv)
        .u(len)
        .u(heads)
        .u(groups)
        .u(splits)
        .u(split_len)
        .u(f.causal as usize)
        .u(site as usize)
        .u(f.pages.page)
        .u(f.pages.pages_per_seq)
        .u(f.pages.pool)
        .u(page_site)
        .f(f.scale as f64);
    l.run(&kernel, dims, params)?;
    if splits > 1 {
        let combine = l.kernel(&Variant::new(kernels::ATTENTION_COMBINE).ty("out", f.out.dtype))?;
        let dims = grid_2d(rows as u64, 1, COMBINE_BLOCK).ok_or_else(|| {
            Error::unsupported(l.backend(), l.op, format!("{rows} query rows exceed a grid"))
        })?;
        l.run(&combine, dims, Params::new().addr(part).addr(out).u(splits).u(dv))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MLA's tile-layer kernel is compiled for every target with the layer, AMD's wave64 parts included, and
    /// for none without it.
    #[test]
    fn mla_on_the_tile_layer_is_compiled_for_both_vendors() {
        let has_mla = |t: &Target| {
            crate::ops::tile_catalog_for(t).iter().any(|v| v.kernel.name == kernels::ATTENTION_MMA.name)
        };
        let hip = |arch: &str, warp| Target::Hip { arch: arch.into(), warp };
        for t in [hip("gfx90a", 64), hip("gfx942:sramecc+:xnack-", 64), Target::Cuda { arch: "sm_80".into() }]
        {
            assert!(has_mla(&t), "{t:?}");
        }
        assert!(has_mla(&Target::host(32)) && has_mla(&Target::host(64)));
        for t in [hip("gfx1100", 32), hip("gfx908", 64), Target::Cuda { arch: "sm_75".into() }] {
            assert!(!has_mla(&t), "{t:?}");
        }
    }

    #[test]
    fn splits_cover_the_keys_in_whole_chunks() {
        // Short caches, and launches with enough rows, are one split.
        assert_eq!(key_splits(1, 1), (1, CHUNK));
        assert_eq!(key_splits(MIN_SPLIT_KEYS, 1).0, 1);
        assert_eq!(key_splits(100_000, TARGET_BLOCKS).0, 1);
        // Decode of V3 (one sequence, 16 head groups) over a long cache: splits up to the target.
        assert_eq!(key_splits(163_840, 16).0, TARGET_BLOCKS / 16);
        for len in [1, 31, 32, 33, 255, 256, 257, 600, 700, 4096, 163_840] {
            for rows in [1, 3, 16, 80, 5000] {
                let (splits, split_len) = key_splits(len, rows);
                assert!(split_len % CHUNK == 0 && splits * split_len >= len, "{len}/{rows}");
                assert!((splits - 1) * split_len < len, "{len}/{rows}: an empty split");
                assert!(splits <= len.div_ceil(MIN_SPLIT_KEYS).max(1) && splits <= TARGET_BLOCKS);
            }
        }
    }
}
