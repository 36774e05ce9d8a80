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
/// gemm_mma.cu's row tile for large prefills ([`mma_row_tile`]).
const MMA_BIG: usize = 128;
/// Room left beside gemm_mma.cu's ring for its static shared memory (gemm_common.cuh's row tile and
/// expert scan: at most 140 bytes) when choosing the 128-row tile against a device's limit.
const MMA_STATIC_ROOM: u32 = 1024;
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
    // e4m3fn weights (and e4m3fnuz ones on AMD) under FP8 activations of the same format or bf16 ones, with
    // 16-byte rows, go to the tensor cores (gemm_mma.cu, mma_fits) wherever the tile layer runs, gemm and
    // grouped alike; decode rows (at most 16) stream weights on the SIMT kernel.
    let target = ctx.runtime.target();
    let (rows, k) = (a.values().shape[0], a.values().shape[1]);
    let tensor_cores = target.mma_bf16()
        && rows > DECODE_ROWS
        && mma_elements(target, a, b).is_some_and(|sizes| sizes.iter().all(|s| (k * s).is_multiple_of(16)));
    // W8A8 on an FP8 instruction: e4m3 mma.sync (sm_89+), gfx94x's FP8 MFMA on e4m3fnuz.
    let fp8_instruction = match a {
        Activations::Fp8 { codes, .. } => match codes.dtype {
            DType::F8E4M3Fn => target.mma_e4m3(),
            DType::F8E4M3Fnuz => target.mfma_fp8_fnuz(),
            _ => false,
        },
        Activations::Dense(_) => false,
    };
    if !fp8 || (tensor_cores && fp8_instruction) {
        Support::Native
    } else if tensor_cores {
        // bf16 × FP8 weights, and W8A8 where the chip has no instruction for the format (below sm_89;
        // e4m3fn on AMD, e4m3fnuz on gfx90a): the codes are decoded exactly to bf16 fragments.
        Support::Emulated { via: "FP8 codes decoded exactly to bf16 in the kernel, bf16 tensor cores".into() }
    } else {
        Support::Emulated {
            via: "FP8 codes decoded to f32 in the kernel, f32 FMA (tensor cores take e4m3fn weights, or \
                  e4m3fnuz ones on AMD, under FP8 activations of the same format or bf16 ones, more than 16 \
                  rows, K a multiple of 16)"
                .into(),
        }
    }
}

/// The element sizes of A and B when gemm_mma.cu computes this pair on `target` at all: bf16 activations
/// (2) or FP8 codes (1, only with FP8 weights of the same format: one MMA takes both), times bf16 (2) or
/// block-FP8 weights (1). FP8 is e4m3fn, or e4m3fnuz where the tile layer takes it (AMD:
/// [`Target::mma_fnuz`]).
fn mma_elements(target: &Target, a: &Activations, b: &Weights) -> Option<[usize; 2]> {
    let fp8 = |d: DType| d == DType::F8E4M3Fn || (d == DType::F8E4M3Fnuz && target.mma_fnuz());
    let (a_size, a_fp8) = match a {
        Activations::Dense(x) if x.dtype == DType::BF16 => (2, None),
        Activations::Fp8 { codes, .. } if fp8(codes.dtype) => (1, Some(codes.dtype)),
        _ => return None,
    };
    let (b_size, b_fp8) = match b {
        Weights::Dense(y) if y.dtype == DType::BF16 => (2, None),
        Weights::BlockFp8 { codes, .. } if fp8(codes.dtype) => (1, Some(codes.dtype)),
        _ => return None,
    };
    // FP8 activations come with FP8 weights of their format only (the W8A8 path); bf16 × FP8 decodes B's
    // codes.
    match (a_fp8, b_fp8) {
        (Some(_), None) => None,
        (Some(x), Some(y)) if x != y => None,
        _ => Some([a_size, b_size]),
    }
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
    // The tiled kernels' row tile: on the tensor cores, one MMA M for decode batches of grouped_gemm, 128
    // rows for large prefills where the device holds that tile's ring.
    let mut bm = TILE;
    if decode {
        let bucket = DECODE_BUCKETS.into_iter().find(|&r| r >= rows).unwrap_or(DECODE_ROWS);
        variant = variant.konst("ROWS", bucket as i64);
    } else if let Some(sizes) = mma.then(|| mma_elements(l.target(), a, b)).flatten() {
        let big_fits =
            mma_big_form(sizes) && mma_ring(MMA_BIG, sizes).1 + MMA_STATIC_ROOM <= l.shared_limits().opt_in;
        bm = mma_row_tile(rows, experts, big_fits);
        variant = mma_variant(variant, bm, sizes);
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
    // At most MAX_BATCH: `supports` said so before the launch.
    dims.grid[2] = batch.count as u32;
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
/// (mma.sync or MFMA; e4m3fn products run natively from sm_89 on and as bf16 mma / MFMA elsewhere,
/// e4m3fnuz ones on gfx94x's FP8 MFMA and as bf16 MFMA on gfx90a, see mma.cuh), A and B are bf16 × bf16,
/// e4m3fn × e4m3fn block FP8 (W8A8; e4m3fnuz × e4m3fnuz on AMD) or bf16 × block FP8 of those formats
/// ([`mma_elements`]), and every 16-byte piece of A's and B's rows is an aligned 16-byte copy (K in either
/// operand's bytes, A's row pitch and the batch strides multiples of 16 bytes; both bases 16-byte aligned).
/// Everything else runs on gemm.cu's SIMT kernel: f32 or FP8 activations with bf16 weights, mixed or other
/// FP8 formats (e5m2; e4m3fnuz on NVIDIA), K not a multiple of 16 bytes (a ragged K block is fine when it
/// is).
fn mma_fits(
    target: &Target,
    a: &Activations,
    b: &Weights,
    lda: usize,
    batch: Batch,
    addrs: [u64; 2],
) -> bool {
    let Some([size_a, size_b]) = mma_elements(target, a, b) else { return false };
    let k = a.values().shape[1];
    let bytes = [k * size_a, k * size_b, lda * size_a, batch.strides[0] * size_a, batch.strides[1] * size_b];
    let aligned = bytes.iter().all(|v| v.is_multiple_of(16)) && addrs.iter().all(|v| v.is_multiple_of(16));
    target.mma_bf16() && aligned
}

/// gemm_mma.cu's row tile (its BM) for `rows` over `experts` (1 for gemm and batched_gemm): 16, one MMA M,
/// when the experts hold at most 16 rows each on average (rows ≤ 16 · experts: a decode batch, B tokens × 8
/// of 256 experts up to B = 512); 128 when they hold at least 128 each on average (a prefill of 128 tokens
/// or more; V3's 4096-token prefill over its experts: 128 each) and the device holds that tile's ring
/// (`big_fits`: 4 stages, 52 to 60 KB of dynamic shared memory, NVIDIA after opting in; bf16 activations
/// only, [`mma_big_form`]); else 64. The host
/// knows only these numbers without a sync (the offsets live on the device). Why: a block streams its
/// expert's weight tile once per row tile. An expert with at most 16 rows takes one row tile either way, and
/// a 64-row tile would run at least 48 rows of MMAs on zeros; an expert with more rows takes ceil(r / 16)
/// tiles instead of ceil(r / 64), each reading the weight tile again (adjacent blocks, so mostly from L2),
/// which the 64-row tile spares once experts average more than 16. A skewed batch (one expert holding many
/// rows) costs up to 4× its weight reads under the 16-row tile. At 128 rows the weight tile is read half as
/// often again and each B fragment a warp loads serves four A fragments instead of two (fewer shared-memory
/// reads per MMA), and the fourth stage keeps three slices in flight for a tile that takes twice as long to
/// compute. The cost: half the blocks — 128 rows × 2112 columns is 33 blocks for an H100's 132 SMs — so the
/// threshold is one to revisit with GPU measurements (none yet).
fn mma_row_tile(rows: usize, experts: usize, big_fits: bool) -> usize {
    if rows <= MMA_M * experts {
        MMA_M
    } else if big_fits && rows >= MMA_BIG * experts {
        MMA_BIG
    } else {
        TILE
    }
}

/// Whether the 128-row tile serves a form (element sizes of A and B): bf16 activations, under bf16 or
/// block-FP8 weights (122 to 187 registers on sm_80 / 89 / 90a, no spill). W8A8 keeps the 64-row tile: at
/// 128 rows its two sets of f32 accumulators (the running sums and the current 128-wide K block's) with
/// e4m3 fragments take 255 registers on sm_90a, where ptxas lowers e4m3 mma.sync to conversions and f16
/// HMMA, and spill 36 to 96 bytes per thread (dsv3-check-kernels, NVRTC 13.0); Hopper's FP8 rate needs wgmma
/// anyway.
fn mma_big_form([size_a, _]: [usize; 2]) -> bool {
    size_a == 2
}

/// gemm_mma.cu's ring for a row tile `bm` and element sizes of A and B: its stages (the variant's STAGES)
/// and its bytes of dynamic shared memory, STAGES · (BM · PITCH_A + BN · PITCH_B) as the kernel lays it out:
/// rows of a 64-byte slice of A plus 16 bytes of padding, B's 64 rows of the same K (64 bytes, or 32 for
/// e4m3 weights under bf16 A) plus 16. Three stages at 16 and 64 rows (19 and 30 KB); four at 128 (52 KB for
/// bf16 × e4m3 weights, 60 KB otherwise).
fn mma_ring(bm: usize, [size_a, size_b]: [usize; 2]) -> (usize, u32) {
    const SLICE: usize = 64;
    let stages = if bm == MMA_BIG { 4 } else { 3 };
    let (pitch_a, pitch_b) = (SLICE + 16, SLICE / size_a * size_b + 16);
    (stages, (stages * (bm * pitch_a + TILE * pitch_b)) as u32)
}

/// A gemm_mma.cu variant at row tile `bm`: its BM and STAGES, and the ring's bytes as its dynamic shared
/// memory.
fn mma_variant(v: Variant, bm: usize, sizes: [usize; 2]) -> Variant {
    let (stages, bytes) = mma_ring(bm, sizes);
    v.konst("BM", bm as i64).konst("STAGES", stages as i64).dynamic_shared(bytes)
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

/// The tensor-core GEMM's variants for `target` (one with the tile layer): bf16 × bf16 to bf16 and to f32
/// (absorbed attention heads, the router's logits) and grouped to bf16; the bf16 path (bf16 × block-FP8)
/// and the W8A8 path (FP8 × block-FP8, f32 scales) to bf16, plain and grouped (the experts), in e4m3fn and,
/// where the layer takes it (AMD, [`Target::mma_fnuz`]), e4m3fnuz: MI300's format, which the loader
/// converts weights to there.
pub fn tile_catalog(target: &Target) -> Vec<Variant> {
    use dsv3_core::DType::{F8E4M3Fn, F8E4M3Fnuz, BF16, F32};
    let bf16 = (BF16, None);
    let formats: &[DType] = if target.mma_fnuz() { &[F8E4M3Fn, F8E4M3Fnuz] } else { &[F8E4M3Fn] };
    let mut v = vec![(bf16, bf16, BF16, false), (bf16, bf16, F32, false), (bf16, bf16, BF16, true)];
    for &format in formats {
        let fp8 = (format, Some(F32));
        for grouped in [false, true] {
            v.push((bf16, fp8, BF16, grouped));
            v.push((fp8, fp8, BF16, grouped));
        }
    }
    // Every product at the 64-row tile, those with bf16 activations also at the 128-row tile, the grouped
    // ones also at the decode batches' 16-row tile.
    let size = |o: Operand| if o.1.is_some() { 1 } else { 2 };
    let mut out = Vec::new();
    for (a, b, c, grouped) in v {
        let sizes = [size(a), size(b)];
        let big = mma_big_form(sizes).then_some(MMA_BIG);
        let small = grouped.then_some(MMA_M);
        for bm in [Some(TILE), big, small].into_iter().flatten() {
            let v = matmul_variant(kernels::GEMM_MMA, a, b, c, grouped);
            out.push(mma_variant(v, bm, sizes));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shared_memory::SharedLimits;

    /// The 16-row tile up to 16 rows per expert on average, the 128-row tile from 128 where the device
    /// holds its ring, the 64-row tile between: V3's decode batch of 32 tokens × 8 of 256 experts (1 per
    /// expert) and 512 × 8 (16) take 16, one expert holding 17 rows 64, a 4096-token prefill (128 per
    /// expert) and a 128-row gemm 128, or 64 where the ring does not fit.
    #[test]
    fn row_tiles_follow_the_rows_per_expert() {
        for fits in [false, true] {
            assert_eq!(mma_row_tile(32 * 8, 256, fits), MMA_M);
            assert_eq!(mma_row_tile(512 * 8, 256, fits), MMA_M);
            assert_eq!(mma_row_tile(512 * 8 + 1, 256, fits), TILE);
            assert_eq!(mma_row_tile(17, 1, fits), TILE);
            assert_eq!(mma_row_tile(34, 4, fits), MMA_M);
            assert_eq!(mma_row_tile(127, 1, fits), TILE);
            assert_eq!(mma_row_tile(128 * 256 - 1, 256, fits), TILE);
        }
        assert_eq!(mma_row_tile(4096 * 8, 256, true), MMA_BIG);
        assert_eq!(mma_row_tile(128, 1, true), MMA_BIG);
        assert_eq!(mma_row_tile(4096 * 8, 256, false), TILE);
        assert_eq!(mma_row_tile(128, 1, false), TILE);
    }

    /// The ring's bytes as gemm_mma.cu lays them out (80-byte rows of A and of B, 48-byte rows of e4m3 B
    /// under bf16 A), at the documented sizes: within NVIDIA's 48 KiB at 16 and 64 rows, above it and
    /// within a CDNA workgroup's 64 KiB (beside the static room) at 128, which bf16 activations take.
    #[test]
    fn ring_bytes_per_row_tile() {
        let (bf16, w8a8, bf16_fp8) = ([2, 2], [1, 1], [2, 1]);
        assert_eq!(mma_ring(MMA_M, bf16), (3, 3 * (16 * 80 + 64 * 80)));
        assert_eq!(mma_ring(TILE, bf16), (3, 30720));
        assert_eq!(mma_ring(TILE, w8a8), (3, 30720));
        assert_eq!(mma_ring(TILE, bf16_fp8), (3, 3 * (64 * 80 + 64 * 48)));
        assert_eq!(mma_ring(MMA_BIG, bf16), (4, 61440));
        assert_eq!(mma_ring(MMA_BIG, bf16_fp8), (4, 53248));
        for sizes in [bf16, w8a8, bf16_fp8] {
            for bm in [MMA_M, TILE] {
                assert!(mma_ring(bm, sizes).1 <= SharedLimits::NVIDIA_DEFAULT, "{bm} {sizes:?}");
            }
        }
        assert!(!mma_big_form(w8a8), "W8A8 keeps the 64-row tile");
        for sizes in [bf16, bf16_fp8] {
            assert!(mma_big_form(sizes));
            let big = mma_ring(MMA_BIG, sizes).1;
            assert!(big > SharedLimits::NVIDIA_DEFAULT && big + MMA_STATIC_ROOM <= SharedLimits::CDNA_LDS);
        }
    }

    /// e4m3fnuz GEMM variants are compiled where the tile layer takes them, AMD (gfx90a decodes the codes,
    /// gfx94x runs the FP8 MFMA; the emulator at wave64 either way): W8A8 and bf16 × FP8, plain and grouped,
    /// the grouped ones also at the 16-row tile and bf16 × FP8 also at the 128-row one (W8A8: 2 + 1, bf16 ×
    /// FP8: 2 + 1 + 2); never for NVIDIA, which has no such format.
    #[test]
    fn fnuz_variants_are_amds() {
        let fnuz = |t: &Target| {
            let has = |v: &Variant| v.types.iter().any(|&(_, d)| d == DType::F8E4M3Fnuz);
            tile_catalog(t).iter().filter(|v| has(v)).count()
        };
        let hip = |arch: &str| Target::Hip { arch: arch.into(), warp: 64 };
        for t in [hip("gfx90a"), hip("gfx940"), hip("gfx942:sramecc+:xnack-"), Target::host(64)] {
            assert_eq!(fnuz(&t), 8, "{t:?}");
        }
        assert_eq!(fnuz(&Target::Host { warp: 64, mfma_fp8: false }), 8);
        for t in
            [Target::Cuda { arch: "sm_90a".into() }, Target::Cuda { arch: "sm_80".into() }, Target::host(32)]
        {
            assert_eq!(fnuz(&t), 0, "{t:?}");
        }
        // The same list for every AMD chip: ci/check-hip-kernels.sh compiles one source for gfx90a and gfx940.
        let keys = |t: &Target| tile_catalog(t).iter().map(Variant::key).collect::<Vec<_>>();
        assert_eq!(keys(&hip("gfx90a")), keys(&hip("gfx940")));
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
