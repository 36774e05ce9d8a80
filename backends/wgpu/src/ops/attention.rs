//! MLA (absorbed, over the latent cache) and MHA attention: the keys of each query row are split into
//! ranges processed by separate workgroups (flash-decoding: decode has few rows and a long cache), and a
//! combine kernel merges them. Caches larger than a storage binding are bound per sequence, or per range
//! of keys of one sequence; queries and outputs are processed in row chunks.

use super::count32;
use crate::device::{Ctx, BACKEND};
use crate::kernels::{self, input, output, Elem};
use crate::stream::{Recorder, Win};
use dsv3_core::ops::{CachePages, MhaAttention, MlaAttention};
use dsv3_core::{Error, Op, Result, Tensor};

const WG: u32 = 128;
/// Query dimensions the kernel keeps in workgroup memory.
const QMAX: usize = 2048;
/// Output dimensions per thread at most (acc registers), so DV ≤ WG · OPT_MAX.
const OPT_MAX: usize = 8;
/// Workgroups a dispatch should have before the keys are not split further.
const TARGET_GROUPS: usize = 1024;
/// Keys one workgroup walks at most: longer caches get more splits. Besides bounding a workgroup's time,
/// this keeps every invocation under lavapipe's limit of 65535 loop iterations per shader run (a split
/// costs ~1100 iterations per 128 keys at V3's head dims).
const MAX_SPLIT_KEYS: usize = 2048;

pub fn limit(ctx: &Ctx, op: &Op) -> Option<String> {
    if let Op::MlaAttention(a) = op {
        if a.block_table.is_some() {
            return pool_limit(ctx, &a.kv_cache);
        }
    }
    let (dq, dv) = match op {
        Op::MlaAttention(a) => {
            let (_, _, _, dc, dr, _) = a.dims();
            (dc + dr, dc)
        }
        Op::MhaAttention(a) => {
            let (_, _, _, dk, dv, _) = a.dims();
            (dk, dv)
        }
        _ => return None,
    };
    if dq > QMAX {
        return Some(format!("query dimension {dq} is over the kernel's {QMAX}"));
    }
    if dv > WG as usize * OPT_MAX {
        return Some(format!("value dimension {dv} is over the kernel's {}", WG as usize * OPT_MAX));
    }
    None
}

/// A page pool is bound whole (the pages a dispatch reads are known only on the device): it must fit one
/// storage binding.
pub fn pool_limit(ctx: &Ctx, pool: &Tensor) -> Option<String> {
    let bytes = pool.span_bytes() as u64;
    let cap = ctx.binding_limit.saturating_sub(ctx.offset_align + 4);
    (bytes > cap)
        .then(|| format!("a {bytes}-byte page pool is bound whole, over this device's {cap}-byte binding"))
}

/// One source of key or value elements: the tensor, its element offset within a token row, and its
/// strides (token, head, sequence) in elements.
struct Source<'a> {
    name: &'static str,
    t: &'a Tensor,
    col: usize,
    tok: usize,
    head: usize,
    seq: usize,
}

struct Form<'a> {
    q1: &'a Tensor,
    q2: Option<&'a Tensor>,
    k1: Source<'a>,
    k2: Source<'a>,
    v: Source<'a>,
    kv_lens: &'a Tensor,
    /// A paged cache's block table and layout (MLA; the sources' sequence stride is then 0).
    paged: Option<(&'a Tensor, CachePages)>,
    out: &'a Tensor,
    /// (B, T, H, D1, D2, DV, L)
    dims: (usize, usize, usize, usize, usize, usize, usize),
    scale: f32,
    causal: bool,
}

pub fn mla(rec: &mut Recorder, o: &MlaAttention) -> Result<()> {
    let (b, t, h, dc, dr, l) = o.dims();
    let w = dc + dr;
    let paged = o.block_table.as_ref().map(|table| (table, o.pages()));
    let seq = if paged.is_some() { 0 } else { l * w };
    let cache = |name, col| Source { name, t: &o.kv_cache, col, tok: w, head: 0, seq };
    run(
        rec,
        &Form {
            q1: &o.q_latent,
            q2: Some(&o.q_pe),
            k1: cache("kv_cache", 0),
            k2: cache("kv_cache", dc),
            v: cache("kv_cache", 0),
            kv_lens: &o.kv_lens,
            paged,
            out: &o.out,
            dims: (b, t, h, dc, dr, dc, l),
            scale: o.softmax_scale,
            causal: o.causal,
        },
    )
}

pub fn mha(rec: &mut Recorder, o: &MhaAttention) -> Result<()> {
    let (b, t, h, dk, dv, l) = o.dims();
    run(
        rec,
        &Form {
            q1: &o.q,
            q2: None,
            k1: Source { name: "k", t: &o.k, col: 0, tok: h * dk, head: dk, seq: l * h * dk },
            k2: Source { name: "k", t: &o.k, col: 0, tok: h * dk, head: dk, seq: l * h * dk },
            v: Source { name: "v", t: &o.v, col: 0, tok: h * dv, head: dv, seq: l * h * dv },
            kv_lens: &o.kv_lens,
            paged: None,
            out: &o.out,
            dims: (b, t, h, dk, 0, dv, l),
            scale: o.softmax_scale,
            causal: o.causal,
        },
    )
}

/// A window over sequences b0..b1, keys u0..u1 of a source; returns the element offset of (b0, u0, col).
fn kv_window(rec: &Recorder, s: &Source, b0: usize, b1: usize, u0: usize, u1: usize) -> Result<(Win, u32)> {
    let size = s.t.dtype.size();
    let first = s.t.offset + (b0 * s.seq + u0 * s.tok) * size;
    let end = s.t.offset + ((b1 - 1) * s.seq + u1 * s.tok) * size;
    let (w, off) = rec.window(s.name, s.t, first, end.max(first + size))?;
    Ok((w, off + s.col as u32))
}

fn run(rec: &mut Recorder, f: &Form) -> Result<()> {
    let (b_n, t_n, h_n, d1, d2, dv, l) = f.dims;
    let rows = b_n * t_n * h_n;
    if rows == 0 || dv == 0 {
        return Ok(());
    }
    let opt = dv.div_ceil(WG as usize) as u32;
    let elem_q2 = f.q2.map_or(Elem::of(f.q1.dtype), |q| Elem::of(q.dtype));
    let spec = kernels::Spec {
        name: "attention",
        sources: &[kernels::src::ATTENTION],
        args: &[
            input("q1", Elem::of(f.q1.dtype)),
            input("q2", elem_q2),
            input("k1", Elem::of(f.k1.t.dtype)),
            input("k2", Elem::of(f.k2.t.dtype)),
            input("vv", Elem::of(f.v.t.dtype)),
            input("lens", Elem::I32),
            input("table", Elem::I32),
            output("part", Elem::F32),
        ],
        consts: &[("WG", WG), ("OPT", opt)],
    };
    let kernel = rec.kernel(&spec)?;
    let combine = rec.kernel(&kernels::Spec {
        name: "attention_combine",
        sources: &[kernels::src::ATTENTION_COMBINE],
        args: &[input("part", Elem::F32), output("out", Elem::of(f.out.dtype))],
        consts: &[("WG", 256)],
    })?;
    // Splits of the keys: enough workgroups to fill a GPU, whole chunks of WG keys each.
    let splits_wanted = (TARGET_GROUPS / rows).clamp(1, l.div_ceil(WG as usize).max(1));
    let split_len =
        (l.div_ceil(splits_wanted).div_ceil(WG as usize) * WG as usize).clamp(WG as usize, MAX_SPLIT_KEYS);
    let cap = rec.window_capacity() as usize;
    let sources = [&f.k1, &f.k2, &f.v];
    // A split's keys must fit one binding (when the cache does not fit whole).
    let keys_fit = sources.iter().map(|s| cap / (s.tok * s.t.dtype.size()).max(1)).min().unwrap_or(l);
    if keys_fit == 0 {
        return Err(Error::unsupported(BACKEND, rec.op, "one cache row exceeds a storage binding"));
    }
    let split_len = split_len.min(keys_fit);
    let splits = l.div_ceil(split_len).max(1);
    // A page pool is bound whole, as one "sequence" of all its rows: its keys are found through the table.
    let pool_rows = f.paged.map(|(_, pages)| pages.pool * pages.page);
    let fits = |b0: usize, b1: usize, u0: usize, u1: usize| {
        let (b0, b1, u0, u1) = match pool_rows {
            Some(rows) => (0, 1, 0, rows),
            None => (b0, b1, u0, u1),
        };
        sources
            .iter()
            .all(|s| ((b1 - 1) * s.seq + u1 * s.tok - (b0 * s.seq + u0 * s.tok)) * s.t.dtype.size() <= cap)
    };
    let rows_per_seq = t_n * h_n;
    // Rows per chunk: queries, outputs and the partial results must fit a binding each.
    let per_row = [
        d1 * f.q1.dtype.size(),
        d2 * f.q2.map_or(0, |q| q.dtype.size()),
        dv * f.out.dtype.size(),
        splits * (dv + 2) * 4,
    ];
    let max_rows = per_row.iter().filter(|&&x| x > 0).map(|&x| cap / x).min().unwrap_or(rows).clamp(1, 65535);
    if per_row.iter().any(|&x| x > cap) {
        return Err(Error::unsupported(BACKEND, rec.op, "one query row's data exceeds a storage binding"));
    }
    let (lw, l_off) = rec.tensor("kv_lens", f.kv_lens)?;
    let site = rec.site("kv_lens", format!("cache lengths must be in {t_n}..={l}"));
    let (table_w, table_params) = match f.paged {
        Some((table, pages)) => {
            let (w, off) = rec.tensor("block_table", table)?;
            let site = rec.site("block_table", format!("each entry must be a page in 0..{}", pages.pool));
            (w, [1, off, pages.page as u32, pages.pages_per_seq as u32, pages.pool as u32, site])
        }
        None => (rec.dummy("kv_lens", f.kv_lens)?, [0; 6]),
    };
    let all_fit = fits(0, b_n, 0, l);
    // Row chunks: all sequences at once when the caches fit, else one sequence at a time.
    let mut chunks = Vec::new();
    if all_fit {
        for r0 in (0..rows).step_by(max_rows) {
            chunks.push((r0, (r0 + max_rows).min(rows)));
        }
    } else {
        for b in 0..b_n {
            for r0 in (b * rows_per_seq..(b + 1) * rows_per_seq).step_by(max_rows) {
                chunks.push((r0, (r0 + max_rows).min((b + 1) * rows_per_seq)));
            }
        }
    }
    let mut first = true;
    for (r0, r1) in chunks {
        let n = r1 - r0;
        let window = |t: &Tensor, width: usize, name| {
            let size = t.dtype.size();
            rec.window(name, t, t.offset + r0 * width * size, t.offset + r1 * width * size)
        };
        let (q1w, q1_off) = window(f.q1, d1, "q1")?;
        let (q2w, q2_off) = match f.q2 {
            Some(q) => window(q, d2, "q_pe")?,
            None => (q1w.clone(), q1_off),
        };
        let (ow, o_off) = window(f.out, dv, "out")?;
        let part = rec.scratch((n * splits * (dv + 2) * 4) as u64);
        let (b0, b1) = (r0 / rows_per_seq, (r1 - 1) / rows_per_seq + 1);
        // Key ranges bound per dispatch: all keys, or groups of whole splits that fit.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        if fits(b0, b1, 0, l) {
            groups.push((0, splits));
        } else if f.paged.is_some() {
            return Err(Error::unsupported(BACKEND, rec.op, "the page pool exceeds a storage binding"));
        } else {
            let mut s0 = 0;
            while s0 < splits {
                let mut s1 = s0 + 1;
                while s1 < splits && fits(b0, b1, s0 * split_len, ((s1 + 1) * split_len).min(l)) {
                    s1 += 1;
                }
                if !fits(b0, b1, s0 * split_len, ((s0 + 1) * split_len).min(l)) {
                    return Err(Error::unsupported(
                        BACKEND,
                        rec.op,
                        format!("{split_len} cache rows exceed a storage binding"),
                    ));
                }
                groups.push((s0, s1));
                s0 = s1;
            }
        }
        for (s0, s1) in groups {
            let (u0, u1) = (s0 * split_len, (s1 * split_len).min(l));
            let mut wins = vec![q1w.clone(), q2w.clone()];
            let mut params = vec![
                n as u32,
                t_n as u32,
                h_n as u32,
                d1 as u32,
                d2 as u32,
                dv as u32,
                splits as u32,
                split_len as u32,
                f.causal as u32,
                f.scale.to_bits(),
                q1_off,
                q2_off,
            ];
            for s in sources {
                let (w, off) = match pool_rows {
                    Some(rows) => kv_window(rec, s, 0, 1, 0, rows)?,
                    None => kv_window(rec, s, b0, b1, u0, u1)?,
                };
                wins.push(w);
                params.extend([off, s.tok as u32, s.head as u32, s.seq as u32]);
            }
            wins.extend([lw.clone(), table_w.clone(), part.clone()]);
            params.extend([
                l_off,
                l as u32,
                if first { site } else { 0 },
                r0 as u32,
                b0 as u32,
                u0 as u32,
                s0 as u32,
            ]);
            params.extend(table_params);
            first = false;
            rec.dispatch(kernel.clone(), wins, params, [(s1 - s0) as u32, n as u32, 1])?;
        }
        let count = count32(rec.op, "out", n * dv)?;
        rec.dispatch(
            combine.clone(),
            vec![part, ow],
            vec![n as u32, splits as u32, dv as u32, o_off],
            rec.grid(count.div_ceil(256)),
        )?;
    }
    Ok(())
}
