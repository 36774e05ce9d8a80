//! Mixture-of-experts on the device, with no host read of routing results: the router (one block per
//! token), the dispatch as a stable counting sort over blocks of slots (per-block counts and ranks, a scan
//! into expert offsets, then one block per slot that places it and copies its token's row), and the
//! weighted combine (one thread per output element, blocks along a token's row).

use super::row_stride;
use crate::device::Ctx;
use crate::kernels::{self, Variant};
use crate::launch::{grid_2d, Launch, Params, MAX_GRID_X};
use crate::runtime::Dims;
use dsv3_core::ops::{MoeCombine, MoeDispatch, MoeRoute, Scoring, TopkMethod};
use dsv3_core::{DType, Error, Op, Result, Support};

/// Experts the router's shared memory holds (`MAX_EXPERTS` in moe_route.cu).
pub const ROUTE_MAX_EXPERTS: usize = 1024;
/// Experts the dispatch's shared histograms hold (`MAX_EXPERTS` in moe_index.cu and moe_offsets.cu).
pub const DISPATCH_MAX_EXPERTS: usize = 4096;

const ROUTE_THREADS: u32 = 256;
/// Slots per block of the index pass (its threads).
const INDEX_THREADS: u32 = 256;
const OFFSETS_THREADS: u32 = 1024;
/// Most threads per gather block (one per word of a row).
const GATHER_THREADS: u32 = 256;
/// Output columns per combine block.
const COMBINE_THREADS: u32 = 256;

pub fn supports(_ctx: &Ctx, op: &Op) -> Support {
    let limit = match op {
        Op::MoeRoute(o) => route_limit(o),
        Op::MoeDispatch(o) => dispatch_limit(o),
        Op::MoeCombine(o) => combine_limit(o),
        _ => Some(format!("{} is not a MoE op", op.name())),
    };
    match limit {
        Some(reason) => Support::Unsupported { reason },
        None => Support::Native,
    }
}

fn dim(shape: &[usize], i: usize) -> usize {
    shape.get(i).copied().unwrap_or(0)
}

fn route_limit(o: &MoeRoute) -> Option<String> {
    let (t, e) = (dim(&o.logits.shape, 0), dim(&o.logits.shape, 1));
    if e > ROUTE_MAX_EXPERTS {
        return Some(format!(
            "{e} experts: the router kernel's shared memory holds at most {ROUTE_MAX_EXPERTS}"
        ));
    }
    (t as u64 > MAX_GRID_X)
        .then(|| format!("{t} tokens: the router runs one block per token, at most {MAX_GRID_X}"))
}

fn dispatch_limit(o: &MoeDispatch) -> Option<String> {
    if o.n_experts > DISPATCH_MAX_EXPERTS {
        return Some(format!(
            "{} experts: the dispatch kernels' shared memory counts at most {DISPATCH_MAX_EXPERTS}",
            o.n_experts
        ));
    }
    // One gather block per slot; rows are i32 in slot_rows.
    let slots = o.ids.numel();
    (slots as u64 > MAX_GRID_X)
        .then(|| format!("{slots} slots: the dispatch runs one block per slot, at most {MAX_GRID_X}"))
}

fn combine_limit(o: &MoeCombine) -> Option<String> {
    let (t, n) = (dim(&o.out.shape, 0), dim(&o.out.shape, 1));
    let chunks = n.div_ceil(COMBINE_THREADS as usize);
    grid_2d(t as u64, chunks as u64, COMBINE_THREADS).is_none().then(|| {
        format!("{t} tokens × {chunks} column blocks exceed the combine's grid ({MAX_GRID_X} × 65535)")
    })
}

fn route_variant(scoring: Scoring, method: TopkMethod) -> Variant {
    let scoring = match scoring {
        Scoring::Sigmoid => 0,
        Scoring::Softmax => 1,
    };
    let method = match method {
        TopkMethod::Greedy => 0,
        TopkMethod::GroupLimitedGreedy => 1,
        TopkMethod::NoAuxTc => 2,
    };
    Variant::new(kernels::MOE_ROUTE).konst("SCORING", scoring).konst("METHOD", method)
}

fn combine_variant(eo: DType, out: DType) -> Variant {
    Variant::new(kernels::MOE_COMBINE).ty("eo", eo).ty("out", out)
}

/// Every kernel variant these ops can launch that CI compiles for each GPU architecture: the router for
/// V3 (sigmoid, noaux_tc) and V2 (softmax, greedy and group-limited), the three dispatch passes (integer
/// and byte kernels, no element types), the combine from bf16 expert outputs to bf16 or f32.
pub fn catalog() -> Vec<Variant> {
    vec![
        route_variant(Scoring::Sigmoid, TopkMethod::NoAuxTc),
        route_variant(Scoring::Softmax, TopkMethod::Greedy),
        route_variant(Scoring::Softmax, TopkMethod::GroupLimitedGreedy),
        Variant::new(kernels::MOE_INDEX),
        Variant::new(kernels::MOE_OFFSETS),
        Variant::new(kernels::MOE_GATHER),
        combine_variant(DType::BF16, DType::BF16),
        combine_variant(DType::BF16, DType::F32),
    ]
}

fn one_block_each(l: &Launch, blocks: usize, threads: u32) -> Result<Dims> {
    if blocks as u64 > MAX_GRID_X {
        return Err(Error::unsupported(
            l.backend(),
            l.op,
            format!("{blocks} blocks exceed one launch's grid"),
        ));
    }
    Ok(Dims { grid: [blocks as u32, 1, 1], block: threads, shared: 0 })
}

pub fn route(l: &Launch, o: &MoeRoute) -> Result<()> {
    let (t, e) = (o.logits.shape[0], o.logits.shape[1]);
    if t == 0 {
        return Ok(());
    }
    let c = &o.config;
    let f = l.kernel(&route_variant(c.scoring, c.method))?;
    let bias = match &o.bias {
        Some(b) => l.addr("bias", b)?,
        None => 0,
    };
    let params = Params::new()
        .addr(l.addr("logits", &o.logits)?)
        .addr(bias)
        .addr(l.addr("ids", &o.ids)?)
        .addr(l.addr("weights", &o.weights)?)
        .u(e)
        .u(c.n_group)
        .u(c.topk_group)
        .u(c.top_k)
        .u(c.norm_topk_prob as usize)
        .f(c.routed_scaling_factor as f64);
    l.run(&f, one_block_each(l, t, ROUTE_THREADS)?, params)
}

pub fn dispatch(l: &Launch, o: &MoeDispatch) -> Result<()> {
    let (d, k) = (o.x.shape[1], o.ids.shape[1]);
    let slots = o.ids.numel();
    let e = o.n_experts;
    let blocks = slots.div_ceil(INDEX_THREADS as usize);
    // Per index block and expert: its count, then the count of the expert's slots in earlier blocks.
    let counts = l.scratch(blocks * e * 4)?;
    let rank = l.scratch(slots * 4)?;
    let ids = l.addr("ids", &o.ids)?;
    let offsets = l.addr("expert_offsets", &o.expert_offsets)?;
    if slots > 0 {
        let site = l.site("ids", format!("expert ids must be in 0..{e}"));
        let params =
            Params::new().addr(ids).addr(counts).addr(rank).u(slots).u(e).addr(l.err()).u(site as usize);
        l.run(
            &l.kernel(&Variant::new(kernels::MOE_INDEX))?,
            one_block_each(l, blocks, INDEX_THREADS)?,
            params,
        )?;
    }
    // Also with no slots: expert_offsets are then all zero.
    let params = Params::new().addr(counts).addr(offsets).u(blocks).u(e);
    l.run(&l.kernel(&Variant::new(kernels::MOE_OFFSETS))?, one_block_each(l, 1, OFFSETS_THREADS)?, params)?;
    if slots == 0 {
        return Ok(());
    }
    let size = o.x.dtype.size();
    let (x, rows) = (l.addr("x", &o.x)?, l.addr("rows", &o.rows)?);
    let (x_stride, rows_stride, row_bytes) = (row_stride(&o.x) * size, row_stride(&o.rows) * size, d * size);
    let aligned =
        |w: u64| [x, rows, x_stride as u64, rows_stride as u64, row_bytes as u64].iter().all(|v| v % w == 0);
    let width = [16u64, 8, 4, 2].into_iter().find(|&w| aligned(w)).unwrap_or(1);
    // One thread per word of the row, in whole warps.
    let warp = l.warp();
    let words = (row_bytes as u64 / width).min(GATHER_THREADS as u64) as u32;
    let threads = words.div_ceil(warp).max(1) * warp;
    let params = Params::new()
        .addr(ids)
        .addr(offsets)
        .addr(counts)
        .addr(rank)
        .addr(l.addr("slot_rows", &o.slot_rows)?)
        .addr(x)
        .u(x_stride)
        .addr(rows)
        .u(rows_stride)
        .u(row_bytes)
        .u(k)
        .u(e)
        .u(INDEX_THREADS as usize)
        .u(width as usize);
    l.run(&l.kernel(&Variant::new(kernels::MOE_GATHER))?, one_block_each(l, slots, threads)?, params)
}

pub fn combine(l: &Launch, o: &MoeCombine) -> Result<()> {
    let (t, k) = (o.weights.shape[0], o.weights.shape[1]);
    let n = o.out.shape[1];
    if t == 0 || n == 0 {
        return Ok(());
    }
    let f = l.kernel(&combine_variant(o.expert_out.dtype, o.out.dtype))?;
    let site = l.site("slot_rows", format!("slot rows must be in 0..{}", t * k));
    let params = Params::new()
        .addr(l.addr("expert_out", &o.expert_out)?)
        .u(row_stride(&o.expert_out))
        .addr(l.addr("slot_rows", &o.slot_rows)?)
        .addr(l.addr("weights", &o.weights)?)
        .addr(l.addr("out", &o.out)?)
        .u(row_stride(&o.out))
        .u(k)
        .u(n)
        .u(t * k)
        .addr(l.err())
        .u(site as usize);
    let chunks = n.div_ceil(COMBINE_THREADS as usize) as u64;
    let dims = grid_2d(t as u64, chunks, COMBINE_THREADS)
        .ok_or_else(|| Error::unsupported(l.backend(), l.op, combine_limit(o).unwrap_or_default()))?;
    l.run(&f, dims, params)
}
