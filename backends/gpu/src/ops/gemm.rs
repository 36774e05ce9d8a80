//! The GEMM family: gemm and grouped_gemm (a tiled kernel, or the decode kernel for few rows), act_quant
//! and dequantize.

use super::row_stride;
use crate::device::Ctx;
use crate::kernels::{self, Variant};
use crate::launch::{grid_2d, Launch, Params, BLOCK};
use crate::runtime::Target;
use dsv3_core::ops::gemm::{blocks, QUANT_BLOCK};
use dsv3_core::ops::{
    ActQuant, Activations, BatchedGemm, Dequantize, Gemm, GroupedGemm, ScaleFormat, Weights,
};
use dsv3_core::{DType, Error, Op, Result, Support, Tensor};

/// Rows (gemm) or rows in all (grouped_gemm) at or below which the decode kernel runs: it streams each
/// weight once for all of a block's rows (grouped: all of one expert's rows).
pub(crate) const DECODE_ROWS: usize = 16;
/// The decode kernel's row buckets (its ROWS switch): the smallest that holds the rows is compiled, so a
/// one-row product does not run sixteen rows' loops.
const DECODE_BUCKETS: [usize; 4] = [1, 4, 8, 16];
/// Columns of C per decode block (gemm_decode.cu: groups of 8 threads per column, BLOCK threads).
const DECODE_COLS: usize = BLOCK as usize / 8;
/// Decode gemms with fewer column blocks than this split K over the grid's y, so that every SM of an
/// H100 / H200 (132) streams weights: N = 576 splits 8 ways, N = 7168 (224 blocks) not at all. Chosen, not
/// measured yet.
const DECODE_MIN_BLOCKS: usize = 132;
/// Rows and columns of C per block of the tiled kernels (gemm.cu's and gemm_mma.cu's BM, BN), and their
/// threads (gemm_mma.cu: 4 warps, 128 threads on NVIDIA, 256 at wave64).
const TILE: usize = 64;
/// gemm_mma.cu's row tile for decode batches of grouped_gemm: one MMA M ([`mma_row_tile`]).
const MMA_M: usize = 16;
const TILE_THREADS: u32 = 256;
const MMA_WARPS: u32 = 4;
/// Column tiles go along the grid's y, so N is bounded by 65535 tiles.
const MAX_N: usize = 65535 * TILE;
/// Batches go along the grid's z.
const MAX_BATCH: usize = 65535;

/// Elements between consecutive batches of A, B and C (batched_gemm; one batch elsewhere).
#[derive(Clone, Copy)]
struct Batch {
    count: usize,
    strides: [usize; 3],
}

impl Batch {
    const ONE: Batch = Batch { count: 1, strides: [0; 3] };
}

pub fn supports(ctx: &Ctx, op: &Op) -> Support {
    let (a, b) = match op {
        Op::Gemm(o) => (&o.a, &o.b),
        Op::GroupedGemm(o) => (&o.a, &o.b),
        Op::BatchedGemm(o) => {
            let (batch, _, n, _) = o.dims();
            return if n > MAX_N {
                Support::Unsupported { reason: format!("N = {n}: more than 65535 column tiles of {TILE}") }
            } else if batch > MAX_BATCH {
                Support::Unsupported { reason: format!("{batch} batches: the grid's z holds {MAX_BATCH}") }
            } else {
                Support::Native
            };
        }
        // act_quant, dequantize: f32 arithmetic; FP8 codes are converted with integer operations, as in
        // every kernel (cast included).
        _ => return Support::Native,
    };
    let n = b.values().shape.iter().rev().nth(1).copied().unwrap_or(0);
    if n > MAX_N {
        return Support::Unsupported {
            reason: format!("N = {n} needs more than 65535 column tiles of {TILE} (N ≤ {MAX_N})"),
        };
    }
    let fp8 = matches!(a, Activations::Fp8 { .. }) || matches!(b, Weights::BlockFp8 { .. });
    // e4m3fn weights (under e4m3fn or bf16 activations) with 16-byte rows go to the tensor cores
    // (gemm_mma.cu, mma_fits) wherever the tile layer runs, gemm and grouped alike; decode rows (at most
    // 16) stream weights on the SIMT kernel.
    let (rows, k) = (a.values().shape[0], a.values().shape[1]);
    let tensor_cores = ctx.runtime.target().mma_bf16()
        && rows > DECODE_ROWS
        && mma_elements(a, b).is_some_and(|sizes| sizes.iter().all(|s| (k * s).is_multiple_of(16)));
    let w8a8 = matches!(a, Activations::Fp8 { .. });
    if !fp8 || (tensor_cores && w8a8 && ctx.runtime.target().mma_e4m3()) {
        Support::Native
    } else if tensor_cores {
        // bf16 × FP8 weights, and W8A8 below sm_89 and on AMD: the codes are decoded exactly to bf16
        // fragments.
        Support::Emulated { via: "FP8 codes decoded exactly to bf16 in the kernel, bf16 tensor cores".into() }
    } else {
        Support::Emulated {
            via: "FP8 codes decoded to f32 in the kernel, f32 FMA (tensor cores take e4m3fn weights under \
                  e4m3fn or bf16 activations, more than 16 rows, K a multiple of 16)"
                .into(),
        }
    }
}

/// The element sizes of A and B when gemm_mma.cu computes this pair at all: bf16 activations (2) or
/// e4m3fn codes (1, only with e4m3fn weights), times bf16 (2) or e4m3fn block-FP8 weights (1).
fn mma_elements(a: &Activations, b: &Weights) -> Option<[usize; 2]> {
    let a = match a {
        Activations::Dense(x) if x.dtype == DType::BF16 => 2,
        Activations::Fp8 { codes, .. } if codes.dtype == DType::F8E4M3Fn => 1,
        _ => return None,
    };
    let b = match b {
        Weights::Dense(y) if y.dtype == DType::BF16 => 2,
        Weights::BlockFp8 { codes, .. } if codes.dtype == DType::F8E4M3Fn => 1,
        _ => return None,
    };
    // FP8 activations come with FP8 weights only (the W8A8 path); bf16 × FP8 decodes B's codes.
    (a == 2 || b == 1).then_some([a, b])
}

/// An operand's element type and, when it is FP8, its scales' type.
type Operand = (DType, Option<DType>);

fn activations(a: &Activations) -> Operand {
    match a {
        Activations::Dense(t) => (t.dtype, None),
        Activations::Fp8 { codes, scales } => (codes.dtype, Some(scales.dtype)),
    }
}

fn weights(b: &Weights) -> Operand {
    match b {
        Weights::Dense(t) => (t.dtype, None),
        Weights::BlockFp8 { codes, scales } => (codes.dtype, Some(scales.dtype)),
    }
}

/// The GEMM kernels' variant. A dense operand has no scales: its scale type is fixed to f32 so that it
/// does not multiply the variants.
fn matmul_variant(kernel: kernels::Kernel, a: Operand, b: Operand, c: DType, grouped: bool) -> Variant {
    Variant::new(kernel)
        .ty("a", a.0)
        .ty("as", a.1.unwrap_or(DType::F32))
        .ty("b", b.0)
        .ty("bs", b.1.unwrap_or(DType::F32))
        .ty("c", c)
        .konst("A_FP8", a.1.is_some() as i64)
        .konst("B_FP8", b.1.is_some() as i64)
        .konst("GROUPED", grouped as i64)
}

pub fn gemm(l: &Launch, o: &Gemm) -> Result<()> {
    matmul(l, &o.a, &o.b, &o.c, None, Batch::ONE)
}

pub fn grouped_gemm(l: &Launch, o: &GroupedGemm) -> Result<()> {
    matmul(l, &o.a, &o.b, &o.c, Some(&o.expert_offsets), Batch::ONE)
}

/// gemm's kernels on batch 0's matrices, the grid's z walking the batches.
pub fn batched_gemm(l: &Launch, o: &BatchedGemm) -> Result<()> {
    let matrix =
        |t: &Tensor| Tensor { shape: t.shape[1..].to_vec(), strides: t.strides[1..].to_vec(), ..t.clone() };
    let batch = Batch { count: o.a.shape[0], strides: [o.a.strides[0], o.b.strides[0], o.c.strides[0]] };
    if batch.count == 0 {
        return Ok(());
    }
    let (a, b) = (Activations::Dense(matrix(&o.a)), Weights::Dense(matrix(&o.b)));
    matmul(l, &a, &b, &matrix(&o.c), None, batch)
}

fn matmul(
    l: &Launch,
    a: &Activations,
    b: &Weights,
    c: &Tensor,
    offsets: Option<&Tensor>,
    batch: Batch,
) -> Result<()> {
    let (av, bv) = (a.values(), b.values());
    let (rows, k) = (av.shape[0], av.shape[1]);
    let lead = bv.rank() - 2;
    let n = bv.shape[lead];
    let experts = if lead == 1 { bv.shape[0] } else { 1 };
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let grouped = offsets.is_some();
    if grouped && experts == 0 {
        // offsets[0] would have to be both 0 and `rows`: the contract is broken whatever the device holds.
        return Err(Error::invalid(l.op, "expert_offsets", format!("no experts for {rows} rows")));
    }
    // The decode kernel counts K in 32 bits.
    let decode = rows <= DECODE_ROWS && k < 1 << 31;
    let (a_addr, b_addr) = (l.addr("a", av)?, l.addr("b", bv)?);
    let mma = !decode && mma_fits(l.target(), a, b, row_stride(av), batch, [a_addr, b_addr]);
    let kernel = match (decode, mma) {
        (true, _) => kernels::GEMM_DECODE,
        (false, true) => kernels::GEMM_MMA,
        (false, false) => kernels::GEMM,
    };
    let mut variant = matmul_variant(kernel, activations(a), weights(b), c.dtype, grouped);
    // The tiled kernels' row tile: decode batches of grouped_gemm take one MMA M on the tensor cores.
    let bm = if mma && grouped { mma_row_tile(rows, experts) } else { TILE };
    if decode {
        let bucket = DECODE_BUCKETS.into_iter().find(|&r| r >= rows).unwrap_or(DECODE_ROWS);
        variant = variant.konst("ROWS", bucket as i64);
    } else if mma {
        variant = variant.konst("BM", bm as i64);
    }
    let f = l.kernel(&variant)?;
    let split = if decode && !grouped && batch.count == 1 { split_k(n, k) } else { None };
    let dims = if decode {
        // Column blocks along x; grouped: one block row per row of A (the expert's first row works), else
        // the K splits along y.
        let y = if grouped { rows } else { split.map_or(1, |s| s.count) };
        grid_2d(n.div_ceil(DECODE_COLS) as u64, y as u64, BLOCK)
    } else {
        // Row tiles along x (grouped: enough for every expert's last partial tile), column tiles along y.
        let tiles = rows.div_ceil(bm) + if grouped { experts } else { 0 };
        grid_2d(tiles as u64, n.div_ceil(TILE) as u64, if mma { MMA_WARPS * l.warp() } else { TILE_THREADS })
    };
    let mut dims = dims.ok_or_else(|| {
        Error::unsupported(l.backend(), l.op, format!("{rows} rows × {n} columns exceed one launch's grid"))
    })?;
    dims.grid[2] = batch.count as u32; // at most MAX_BATCH: `supports` said so before the launch
                                       // 16-byte runs of B's rows are aligned when its base, its row length and its batch stride are.
    let size = bv.dtype.size();
    let vec = [b_addr, (k * size) as u64, (batch.strides[1] * size) as u64].iter().all(|v| v % 16 == 0);
    let partial = match split {
        Some(s) => l.scratch(s.count * rows * n * 4)?,
        None => 0,
    };
    let a_scales = match a {
        Activations::Fp8 { scales, .. } => l.addr("a_scales", scales)?,
        Activations::Dense(_) => 0,
    };
    let b_scales = match b {
        Weights::BlockFp8 { scales, .. } => l.addr("b_scales", scales)?,
        Weights::Dense(_) => 0,
    };
    let (offsets, site) = match offsets {
        Some(t) => {
            (l.addr("expert_offsets", t)?, l.site("expert_offsets", format!("must rise from 0 to {rows}")))
        }
        None => (0, 0),
    };
    let params = Params::new()
        .u(rows)
        .u(n)
        .u(k)
        .addr(a_addr)
        .u(row_stride(av))
        .addr(a_scales)
        .addr(b_addr)
        .addr(b_scales)
        .addr(l.addr("c", c)?)
        .u(row_stride(c))
        .addr(offsets)
        .u(experts)
        .addr(l.err())
        .u(site as usize)
        .u(batch.strides[0])
        .u(batch.strides[1])
        .u(batch.strides[2])
        .u(split.map_or(0, |s| s.k))
        .addr(partial)
        .u(vec as usize);
    l.run(&f, dims, params)?;
    match split {
        Some(s) => split_sum(l, c, rows, n, s.count, partial),
        None => Ok(()),
    }
}

/// Whether the tensor-core kernel (gemm_mma.cu) computes a tiled product: the device has the tile layer
/// (mma.sync or MFMA; e4m3 products run natively from sm_89 on and as bf16 mma / MFMA elsewhere, see
/// mma.cuh), A and B are
/// bf16 × bf16, e4m3fn × e4m3fn block FP8 (W8A8) or bf16 × e4m3fn block FP8 ([`mma_elements`]), and every
/// 16-byte piece of A's and B's rows is an aligned 16-byte copy (K in either operand's bytes, A's row pitch and
/// the batch strides multiples of 16 bytes; both bases 16-byte aligned). Everything else runs on gemm.cu's
/// SIMT kernel: f32 or FP8 activations with bf16 weights, other FP8 formats, K not a multiple of 16 bytes
/// (a ragged K block is fine when it is).
fn mma_fits(
    target: &Target,
    a: &Activations,
    b: &Weights,
    lda: usize,
    batch: Batch,
    addrs: [u64; 2],
) -> bool {
    let Some([size_a, size_b]) = mma_elements(a, b) else { return false };
    let k = a.values().shape[1];
    let bytes = [k * size_a, k * size_b, lda * size_a, batch.strides[0] * size_a, batch.strides[1] * size_b];
    let aligned = bytes.iter().all(|v| v.is_multiple_of(16)) && addrs.iter().all(|v| v.is_multiple_of(16));
    target.mma_bf16() && aligned
}

/// gemm_mma.cu's row tile (its BM) for a grouped_gemm of `rows` over `experts`: 16, one MMA M, when the
/// experts hold at most 16 rows each on average (rows ≤ 16 · experts: a decode batch, B tokens × 8 of 256
/// experts up to B = 512), else 64. The host knows only these two numbers without a sync (the offsets live
/// on the device). Why: a block streams its expert's weight tile once per row tile. An expert with at most
/// 16 rows takes one row tile either way, and a 64-row tile would run at least 48 rows of MMAs on zeros; an
/// expert with more rows takes ceil(r / 16) tiles instead of ceil(r / 64), each reading the weight tile again
/// (adjacent blocks, so mostly from L2), which the 64-row tile spares once experts average more than 16.
/// A skewed batch (one expert holding many rows) costs up to 4× its weight reads under the 16-row tile.
fn mma_row_tile(rows: usize, experts: usize) -> usize {
    if rows <= MMA_M * experts {
        MMA_M
    } else {
        TILE
    }
}

/// A decode gemm's K split over the grid's y: `count` splits of `k` elements (a multiple of 128).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Split {
    count: usize,
    k: usize,
}

/// The split for N columns and K, when N has fewer column blocks than [`DECODE_MIN_BLOCKS`] and K more
/// than one 128-wide block.
fn split_k(n: usize, k: usize) -> Option<Split> {
    let (cols, k_blocks) = (n.div_ceil(DECODE_COLS), blocks(k));
    let want = DECODE_MIN_BLOCKS.div_ceil(cols).min(k_blocks);
    if want < 2 {
        return None;
    }
    let per = k_blocks.div_ceil(want) * QUANT_BLOCK;
    Some(Split { count: k.div_ceil(per), k: per })
}

/// c = the sum of the splits' f32 partials [count, rows, n], added in split order.
fn split_sum(l: &Launch, c: &Tensor, rows: usize, n: usize, count: usize, partial: u64) -> Result<()> {
    let f = l.kernel(&Variant::new(kernels::GEMM_SPLIT_SUM).ty("c", c.dtype))?;
    let params = Params::new().u(rows).u(n).u(count).addr(partial).addr(l.addr("c", c)?).u(row_stride(c));
    l.run(&f, l.grid((rows * n) as u64, BLOCK)?, params)
}

pub fn act_quant(l: &Launch, o: &ActQuant) -> Result<()> {
    let (m, k) = (o.x.shape[0], o.x.shape[1]);
    if m == 0 || k == 0 {
        return Ok(());
    }
    let ue8m0 = o.scale_format == ScaleFormat::Ue8m0;
    let v = Variant::new(kernels::ACT_QUANT)
        .ty("x", o.x.dtype)
        .ty("codes", o.codes.dtype)
        .ty("scales", o.scales.dtype)
        .konst("UE8M0", ue8m0 as i64);
    let f = l.kernel(&v)?;
    let params = Params::new()
        .u(m)
        .u(k)
        .addr(l.addr("x", &o.x)?)
        .u(row_stride(&o.x))
        .addr(l.addr("codes", &o.codes)?)
        .u(row_stride(&o.codes))
        .addr(l.addr("scales", &o.scales)?);
    // One warp per (row, 128-channel group).
    let groups = (m * blocks(k)) as u64;
    l.run(&f, l.grid(groups * l.warp() as u64, BLOCK)?, params)
}

pub fn dequantize(l: &Launch, o: &Dequantize) -> Result<()> {
    let shape = &o.codes.shape;
    let (n, k) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let count = o.codes.numel();
    if count == 0 {
        return Ok(());
    }
    let v = Variant::new(kernels::DEQUANTIZE)
        .ty("codes", o.codes.dtype)
        .ty("scales", o.scales.dtype)
        .ty("out", o.out.dtype);
    let f = l.kernel(&v)?;
    let params = Params::new()
        .u(count)
        .u(n)
        .u(k)
        .addr(l.addr("codes", &o.codes)?)
        .addr(l.addr("scales", &o.scales)?)
        .addr(l.addr("out", &o.out)?);
    l.run(&f, l.grid(count as u64, BLOCK)?, params)
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture: each GEMM kernel
/// (the decode kernel at each row bucket) with and without GROUPED for the bf16 path (bf16 × block-FP8)
/// and the W8A8 path (FP8 × block-FP8), gemm's dense bf16 products (absorbed attention heads; the router's
/// f32 logits); the split-K sum to bf16 and f32; act_quant with both scale roundings; dequantize to bf16.
pub fn catalog() -> Vec<Variant> {
    use dsv3_core::DType::{F8E4M3Fn, BF16, F32};
    let bf16 = (BF16, None);
    let fp8 = (F8E4M3Fn, Some(F32));
    let mut v = Vec::new();
    let mut matmuls = Vec::new();
    for grouped in [false, true] {
        matmuls.push((bf16, fp8, BF16, grouped));
        matmuls.push((fp8, fp8, BF16, grouped));
    }
    matmuls.push((bf16, bf16, BF16, false));
    matmuls.push((bf16, bf16, F32, false));
    for &(a, b, c, grouped) in &matmuls {
        v.push(matmul_variant(kernels::GEMM, a, b, c, grouped));
        for rows in DECODE_BUCKETS {
            v.push(matmul_variant(kernels::GEMM_DECODE, a, b, c, grouped).konst("ROWS", rows as i64));
        }
    }
    for c in [BF16, F32] {
        v.push(Variant::new(kernels::GEMM_SPLIT_SUM).ty("c", c));
    }
    for ue8m0 in [0, 1] {
        v.push(
            Variant::new(kernels::ACT_QUANT)
                .ty("x", BF16)
                .ty("codes", F8E4M3Fn)
                .ty("scales", F32)
                .konst("UE8M0", ue8m0),
        );
    }
    v.push(Variant::new(kernels::DEQUANTIZE).ty("codes", F8E4M3Fn).ty("scales", F32).ty("out", BF16));
    v
}

/// The tensor-core GEMM's variants, for the architectures with the tile layer: bf16 × bf16 to bf16 and to f32
/// (absorbed attention heads, the router's logits) and grouped to bf16; the bf16 path (bf16 × block-FP8)
/// and the W8A8 path (FP8 × block-FP8, f32 scales) to bf16, plain and grouped (the experts).
pub fn tile_catalog() -> Vec<Variant> {
    use dsv3_core::DType::{F8E4M3Fn, BF16, F32};
    let (bf16, fp8) = ((BF16, None), (F8E4M3Fn, Some(F32)));
    let mut v = vec![(bf16, bf16, BF16, false), (bf16, bf16, F32, false), (bf16, bf16, BF16, true)];
    for grouped in [false, true] {
        v.push((bf16, fp8, BF16, grouped));
        v.push((fp8, fp8, BF16, grouped));
    }
    // Every product at the 64-row tile; the grouped ones also at the decode batches' 16-row tile.
    let mut out = Vec::new();
    for (a, b, c, grouped) in v {
        let bms: &[usize] = if grouped { &[TILE, MMA_M] } else { &[TILE] };
        for &bm in bms {
            out.push(matmul_variant(kernels::GEMM_MMA, a, b, c, grouped).konst("BM", bm as i64));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 16-row tile up to 16 rows per expert on average, the 64-row tile above: V3's decode batch of
    /// 32 tokens × 8 of 256 experts (1 per expert) and 512 × 8 (16) take 16, a 4096-token prefill (128)
    /// and one expert holding 17 rows take 64.
    #[test]
    fn decode_batches_take_the_16_row_tile() {
        assert_eq!(mma_row_tile(32 * 8, 256), MMA_M);
        assert_eq!(mma_row_tile(512 * 8, 256), MMA_M);
        assert_eq!(mma_row_tile(512 * 8 + 1, 256), TILE);
        assert_eq!(mma_row_tile(4096 * 8, 256), TILE);
        assert_eq!(mma_row_tile(17, 1), TILE);
        assert_eq!(mma_row_tile(34, 4), MMA_M);
    }

    /// Splits start at multiples of 128 and cover K exactly, only when N has few column blocks, and
    /// never outnumber K's 128-wide blocks.
    #[test]
    fn k_splits_cover_k_in_whole_blocks() {
        assert_eq!(split_k(DECODE_MIN_BLOCKS * DECODE_COLS, 7168), None);
        assert_eq!(split_k(40, 128), None);
        for (n, k) in [(40, 1000), (576, 7168), (200, 384), (2112, 7168), (72, 3000), (1, 129)] {
            let Some(s) = split_k(n, k) else { panic!("{n} × {k}: no split") };
            assert!(s.count >= 2 && s.count <= blocks(k), "{n} × {k}: {s:?}");
            assert_eq!(s.k % QUANT_BLOCK, 0, "{n} × {k}: {s:?}");
            assert!((s.count - 1) * s.k < k && s.count * s.k >= k, "{n} × {k}: {s:?}");
        }
    }
}
