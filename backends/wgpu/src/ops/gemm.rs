//! The GEMM family: gemm, grouped_gemm (tiled through workgroup memory, or the decode kernel for few
//! rows), act_quant and dequantize. Operands bigger than a storage binding are split: columns of B (and
//! C), rows of A (and C), experts of a stacked B.

use super::{count32, row_chunks, row_stride, rows_range};
use crate::kernels::{self, input, output, Elem};
use crate::stream::{Recorder, Win};
use dsv3_core::ops::gemm::blocks;
use dsv3_core::ops::{
    ActQuant, Activations, BatchedGemm, Dequantize, Gemm, GroupedGemm, ScaleFormat, Weights,
};
use dsv3_core::{Error, Result, Tensor};

/// Rows at or below which the decode kernel runs (one workgroup streams B once for all rows).
const DECODE_ROWS: usize = 8;
/// Rows of a grouped GEMM at or below which every row gets its own workgroup (decode: one token's k
/// experts are k different B matrices).
const GROUPED_DECODE_ROWS: usize = 16;

struct Operands<'a> {
    a: &'a Activations,
    b: &'a Weights,
    c: &'a Tensor,
    /// grouped_gemm: expert offsets and expert count.
    offsets: Option<(&'a Tensor, usize)>,
}

pub fn gemm(rec: &mut Recorder, o: &Gemm) -> Result<()> {
    matmul(rec, &Operands { a: &o.a, b: &o.b, c: &o.c, offsets: None })
}

pub fn grouped_gemm(rec: &mut Recorder, o: &GroupedGemm) -> Result<()> {
    let experts = o.b.values().shape[0];
    matmul(rec, &Operands { a: &o.a, b: &o.b, c: &o.c, offsets: Some((&o.expert_offsets, experts)) })
}

/// One dispatch per batch, each batch's matrices as 2-D views (the tiled and decode kernels as gemm runs
/// them). The op is still one launch for the stream; a batch index in the kernels would make it one
/// dispatch too.
pub fn batched_gemm(rec: &mut Recorder, o: &BatchedGemm) -> Result<()> {
    let matrix = |t: &Tensor, i: usize| Tensor {
        offset: t.offset + i * t.strides[0] * t.dtype.size(),
        shape: t.shape[1..].to_vec(),
        strides: t.strides[1..].to_vec(),
        ..t.clone()
    };
    for i in 0..o.a.shape[0] {
        let (a, b) = (Activations::Dense(matrix(&o.a, i)), Weights::Dense(matrix(&o.b, i)));
        matmul(rec, &Operands { a: &a, b: &b, c: &matrix(&o.c, i), offsets: None })?;
    }
    Ok(())
}

fn matmul(rec: &mut Recorder, ops: &Operands) -> Result<()> {
    let a = ops.a.values();
    let b = ops.b.values();
    let (rows, k) = (a.shape[0], a.shape[1]);
    let lead = b.rank() - 2;
    let (n, experts) = (b.shape[lead], ops.offsets.map_or(1, |(_, e)| e));
    let (a_scales, a_fp8) = match ops.a {
        Activations::Fp8 { scales, .. } => (Some(scales), true),
        Activations::Dense(_) => (None, false),
    };
    let (b_scales, b_fp8) = match ops.b {
        Weights::BlockFp8 { scales, .. } => (Some(scales), true),
        Weights::Dense(_) => (None, false),
    };
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let grouped = ops.offsets.is_some();
    let decode = if grouped { rows <= GROUPED_DECODE_ROWS } else { rows <= DECODE_ROWS };
    let scale_elem = |s: Option<&Tensor>| s.map_or(Elem::F32, |t| Elem::of(t.dtype));
    let args = [
        input("a", Elem::of(a.dtype)),
        input("asc", scale_elem(a_scales)),
        input("b", Elem::of(b.dtype)),
        input("bsc", scale_elem(b_scales)),
        input("offs", Elem::I32),
        output("c", Elem::of(ops.c.dtype)),
    ];
    let flags = [("A_FP8", a_fp8 as u32), ("B_FP8", b_fp8 as u32), ("GROUPED", grouped as u32)];
    let maxm = if grouped { 1 } else { DECODE_ROWS as u32 };
    // Columns per workgroup: 8 spreads a decode GEMM over enough workgroups to fill a GPU; a software
    // rasterizer pays per workgroup and gets 64.
    let decode_cols: u32 = if rec.ctx.software { 64 } else { 8 };
    let (kernel, bm, bn) = if decode && rec.ctx.subgroups {
        let consts = [flags[0], flags[1], flags[2], ("COLS", decode_cols), ("WG", 64), ("MAXM", maxm)];
        let spec = kernels::Spec {
            name: "gemm_decode_subgroup",
            sources: &[kernels::src::GEMM_COMMON, kernels::src::GEMM_DECODE_SUBGROUP],
            args: &args,
            consts: &consts,
        };
        (rec.kernel(&spec)?, maxm as usize, decode_cols as usize)
    } else if decode {
        let consts = [flags[0], flags[1], flags[2], ("COLS", 8), ("LANES", 32), ("MAXM", maxm)];
        let spec = kernels::Spec {
            name: "gemm_decode",
            sources: &[kernels::src::GEMM_COMMON, kernels::src::GEMM_DECODE],
            args: &args,
            consts: &consts,
        };
        (rec.kernel(&spec)?, maxm as usize, 8)
    } else {
        let consts = [flags[0], flags[1], flags[2], ("TX", 16), ("TY", 16), ("TM", 4), ("TN", 4)];
        let spec = kernels::Spec {
            name: "gemm",
            sources: &[kernels::src::GEMM_COMMON, kernels::src::GEMM],
            args: &args,
            consts: &consts,
        };
        (rec.kernel(&spec)?, 64, 64)
    };
    let (lda, ldc) = (row_stride(a), row_stride(ops.c));
    let (asz, bsz, csz) = (a.dtype.size(), b.dtype.size(), ops.c.dtype.size());
    let cap = rec.window_capacity() as usize;
    // Columns per dispatch: B rows (of every expert in the dispatch) and C columns must fit.
    let col_limit = |e_span: usize| -> Result<usize> {
        let per_expert = n * k * bsz;
        // Within one expert, n columns of B span n·K elements.
        let fit = if e_span <= 1 {
            cap / (k * bsz).max(1)
        } else {
            (cap.saturating_sub((e_span - 1) * per_expert)) / (k * bsz).max(1)
        };
        if fit == 0 {
            return Err(Error::unsupported(
                crate::device::BACKEND,
                rec.op,
                format!("one row of `b` ({} bytes) does not fit a {cap}-byte storage binding", k * bsz),
            ));
        }
        Ok(fit.min(n))
    };
    // Experts per dispatch (grouped): whole expert matrices while they fit, else one at a time.
    let per_expert_bytes = n * k * bsz;
    let experts_per = if grouped { (cap / per_expert_bytes.max(1)).clamp(1, experts) } else { 1 };
    let cols = col_limit(experts_per)?;
    // Whole tiles per dispatch where the limit allows more than one.
    let cols = if cols < n && cols >= bn { cols / bn * bn } else { cols };
    let cols = cols.min(n).max(1);
    // Rows per dispatch: A rows and C rows (with the column span of a dispatch) must fit.
    let row_chunks = row_chunks(rec, rows, &[(lda, k, asz), (ldc, cols, csz)])?;
    let (a_sw, a_s_off) = match a_scales {
        Some(s) => rec.tensor("a_scales", s)?,
        None => (rec.dummy("a", a)?, 0),
    };
    let (b_sw, b_s_off) = match b_scales {
        Some(s) => rec.tensor("b_scales", s)?,
        None => (rec.dummy("a", a)?, 0),
    };
    let (offs_w, offs_off) = match ops.offsets {
        Some((t, _)) => rec.tensor("expert_offsets", t)?,
        None => (rec.dummy("a", a)?, 0),
    };
    let site =
        if grouped { rec.site("expert_offsets", format!("offsets must rise from 0 to {rows}")) } else { 0 };
    let mut first = true;
    let kb = blocks(k) as u32;
    for (r0, r1) in row_chunks {
        let (af, ae) = rows_range(a, lda, r0, r1);
        let (aw, a_off) = rec.window("a", a, af, ae)?;
        let a_s_row = a_s_off + (r0 as u32) * kb;
        for e0 in (0..experts).step_by(experts_per) {
            let e1 = (e0 + experts_per).min(experts);
            for n0 in (0..n).step_by(cols) {
                let n1 = (n0 + cols).min(n);
                let (bw, b_off) = b_window(rec, b, e0, e1, n0, n1, n, k)?;
                let (cw, c_off) = c_window(rec, ops.c, ldc, r0, r1, n0, n1)?;
                let m = (r1 - r0) as u32;
                let params = vec![
                    m,
                    (n1 - n0) as u32,
                    k as u32,
                    a_off,
                    lda as u32,
                    a_s_row,
                    kb,
                    b_off,
                    b_s_off,
                    n0 as u32,
                    blocks(n) as u32,
                    c_off,
                    ldc as u32,
                    e0 as u32,
                    e1 as u32,
                    offs_off,
                    r0 as u32,
                    (n * k) as u32,
                    if first { site } else { 0 },
                    rows as u32,
                    experts as u32,
                ];
                first = false;
                let gx = ((n1 - n0).div_ceil(bn)) as u32;
                let gy = if grouped && decode {
                    m
                } else if grouped {
                    (m as usize).div_ceil(bm) as u32 + (e1 - e0) as u32
                } else {
                    (m as usize).div_ceil(bm) as u32
                };
                let wins = vec![aw.clone(), a_sw.clone(), bw, b_sw.clone(), offs_w.clone(), cw];
                rec.dispatch(kernel.clone(), wins, params, [gx, gy, 1])?;
            }
        }
    }
    Ok(())
}

/// B rows n0..n1 of experts e0..e1 (one window from the first to the last).
#[allow(clippy::too_many_arguments)]
fn b_window(
    rec: &Recorder,
    b: &Tensor,
    e0: usize,
    e1: usize,
    n0: usize,
    n1: usize,
    n: usize,
    k: usize,
) -> Result<(Win, u32)> {
    let size = b.dtype.size();
    let first = b.offset + (e0 * n * k + n0 * k) * size;
    let end = b.offset + ((e1 - 1) * n * k + n1 * k) * size;
    rec.window("b", b, first, end)
}

fn c_window(
    rec: &Recorder,
    c: &Tensor,
    ldc: usize,
    r0: usize,
    r1: usize,
    n0: usize,
    n1: usize,
) -> Result<(Win, u32)> {
    let size = c.dtype.size();
    let first = c.offset + (r0 * ldc + n0) * size;
    let end = c.offset + ((r1 - 1) * ldc + n1) * size;
    rec.window("c", c, first, end)
}

pub fn act_quant(rec: &mut Recorder, o: &ActQuant) -> Result<()> {
    let (m, k) = (o.x.shape[0], o.x.shape[1]);
    if m == 0 || k == 0 {
        return Ok(());
    }
    let format = o.codes.dtype.fp8_format().expect("validated: codes are FP8");
    let ue8m0 = o.scale_format == ScaleFormat::Ue8m0;
    let spec = kernels::Spec {
        name: "act_quant",
        sources: &[kernels::src::ACT_QUANT],
        args: &[
            input("x", Elem::of(o.x.dtype)),
            output("codes", Elem::of(o.codes.dtype)),
            output("scales", Elem::of(o.scales.dtype)),
        ],
        consts: &[("KIND", Elem::fp8_kind(format)), ("UE8M0", ue8m0 as u32)],
    };
    let kernel = rec.kernel(&spec)?;
    let (xs, cs) = (row_stride(&o.x), row_stride(&o.codes));
    let kb = blocks(k);
    let (sw, s_off) = rec.tensor("scales", &o.scales)?;
    for (r0, r1) in row_chunks(rec, m, &[(xs, k, o.x.dtype.size()), (cs, k, 1)])? {
        let (xf, xe) = rows_range(&o.x, xs, r0, r1);
        let (cf, ce) = rows_range(&o.codes, cs, r0, r1);
        let (xw, x_off) = rec.window("x", &o.x, xf, xe)?;
        let (cw, c_off) = rec.window("codes", &o.codes, cf, ce)?;
        let params = vec![
            (r1 - r0) as u32,
            k as u32,
            x_off,
            xs as u32,
            c_off,
            cs as u32,
            s_off + (r0 * kb) as u32,
            kb as u32,
        ];
        let groups = rec.grid(count32(rec.op, "scales", (r1 - r0) * kb)?);
        rec.dispatch(kernel.clone(), vec![xw, cw, sw.clone()], params, groups)?;
    }
    Ok(())
}

pub fn dequantize(rec: &mut Recorder, o: &Dequantize) -> Result<()> {
    let shape = &o.codes.shape;
    let (n, k) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    let rows = o.codes.numel() / k.max(1);
    if rows == 0 || k == 0 {
        return Ok(());
    }
    const WG: u32 = 256;
    let spec = kernels::Spec {
        name: "dequantize",
        sources: &[kernels::src::DEQUANTIZE],
        args: &[
            input("codes", Elem::of(o.codes.dtype)),
            input("scales", Elem::of(o.scales.dtype)),
            output("out", Elem::of(o.out.dtype)),
        ],
        consts: &[("WG", WG)],
    };
    let kernel = rec.kernel(&spec)?;
    let codes = o.codes.reshape(&[rows, k])?;
    let out = o.out.reshape(&[rows, k])?;
    let (sw, s_off) = rec.tensor("scales", &o.scales)?;
    for (r0, r1) in row_chunks(rec, rows, &[(k, k, 1), (k, k, out.dtype.size())])? {
        let (cf, ce) = rows_range(&codes, k, r0, r1);
        let (of, oe) = rows_range(&out, k, r0, r1);
        let (cw, c_off) = rec.window("codes", &codes, cf, ce)?;
        let (ow, o_off) = rec.window("out", &out, of, oe)?;
        let params = vec![
            (r1 - r0) as u32,
            k as u32,
            n as u32,
            c_off,
            s_off,
            o_off,
            blocks(k) as u32,
            blocks(n) as u32,
            r0 as u32,
        ];
        let count = count32(rec.op, "out", (r1 - r0) * k)?;
        let groups = rec.grid(count.div_ceil(WG));
        rec.dispatch(kernel.clone(), vec![cw, sw.clone(), ow], params, groups)?;
    }
    Ok(())
}
