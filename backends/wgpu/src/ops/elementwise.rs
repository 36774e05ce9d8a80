//! Row-wise and element-wise ops: add, silu_mul, cast, rms_norm, softmax, rope, embedding.

use super::{count32, row_chunks, row_stride, rows_range};
use crate::kernels::{self, input, output, Elem};
use crate::stream::Recorder;
use dsv3_core::ops::{Add, Cast, Embedding, RmsNorm, Rope, SiluMul, Softmax};
use dsv3_core::{Result, Tensor};

const WG: u32 = 256;

/// `out = f(a, b)` over `[R, N]` row views, split into row runs that fit the binding limit.
fn binary(rec: &mut Recorder, opk: u32, a: &Tensor, b: &Tensor, out: &Tensor) -> Result<()> {
    let (rows, n) = (out.shape[0], out.shape[1]);
    let spec = kernels::Spec {
        name: "elementwise",
        sources: &[kernels::src::ELEMENTWISE],
        args: &[
            input("a", Elem::of(a.dtype)),
            input("b", Elem::of(b.dtype)),
            output("out", Elem::of(out.dtype)),
        ],
        consts: &[("WG", WG), ("OPK", opk)],
    };
    let kernel = rec.kernel(&spec)?;
    let strides = [row_stride(a), row_stride(b), row_stride(out)];
    let layout: Vec<(usize, usize, usize)> =
        [a, b, out].iter().zip(strides).map(|(t, s)| (s, n, t.dtype.size())).collect();
    for (r0, r1) in row_chunks(rec, rows, &layout)? {
        let mut wins = Vec::new();
        let mut params = vec![(r1 - r0) as u32, n as u32];
        for ((name, t), s) in [("a", a), ("b", b), ("out", out)].into_iter().zip(strides) {
            let (first, end) = rows_range(t, s, r0, r1);
            let (w, off) = rec.window(name, t, first, end)?;
            wins.push(w);
            params.extend([off, s as u32]);
        }
        let count = count32(rec.op, "out", (r1 - r0) * n)?;
        let groups = rec.grid(count.div_ceil(WG));
        rec.dispatch(kernel.clone(), wins, params, groups)?;
    }
    Ok(())
}

pub fn add(rec: &mut Recorder, o: &Add) -> Result<()> {
    binary(rec, 0, &o.a, &o.b, &o.out)
}

pub fn silu_mul(rec: &mut Recorder, o: &SiluMul) -> Result<()> {
    binary(rec, 1, &o.gate, &o.up, &o.out)
}

/// Contiguous, any rank: seen as rows of its last dimension.
pub fn cast(rec: &mut Recorder, o: &Cast) -> Result<()> {
    let n = o.x.shape.last().copied().unwrap_or(1).max(1);
    let numel = o.x.numel();
    if numel == 0 {
        return Ok(());
    }
    let x = o.x.reshape(&[numel / n, n])?;
    let out = o.out.reshape(&[numel / n, n])?;
    binary(rec, 2, &x, &x, &out)
}

/// One workgroup per row: `opk` 0 rms_norm (with `weight`), 1 softmax.
fn rows(
    rec: &mut Recorder,
    opk: u32,
    x: &Tensor,
    weight: Option<&Tensor>,
    eps: f32,
    out: &Tensor,
) -> Result<()> {
    let (n_rows, n) = (x.shape[0], x.shape[1]);
    let w_elem = weight.map_or(Elem::F32, |w| Elem::of(w.dtype));
    let spec = kernels::Spec {
        name: "rows",
        sources: &[kernels::src::ROWS],
        args: &[input("x", Elem::of(x.dtype)), input("w", w_elem), output("out", Elem::of(out.dtype))],
        consts: &[("WG", WG), ("OPK", opk)],
    };
    let kernel = rec.kernel(&spec)?;
    let (xs, os) = (row_stride(x), row_stride(out));
    let (w_win, w_off) = match weight {
        Some(w) => rec.tensor("weight", w)?,
        None => (rec.dummy("x", x)?, 0),
    };
    let layout = [(xs, n, x.dtype.size()), (os, n, out.dtype.size())];
    for (r0, r1) in row_chunks(rec, n_rows, &layout)? {
        let (xf, xe) = rows_range(x, xs, r0, r1);
        let (of, oe) = rows_range(out, os, r0, r1);
        let (xw, x_off) = rec.window("x", x, xf, xe)?;
        let (ow, o_off) = rec.window("out", out, of, oe)?;
        let params =
            vec![(r1 - r0) as u32, n as u32, x_off, xs as u32, w_off, o_off, os as u32, eps.to_bits()];
        let groups = rec.grid((r1 - r0) as u32);
        rec.dispatch(kernel.clone(), vec![xw, w_win.clone(), ow], params, groups)?;
    }
    Ok(())
}

pub fn rms_norm(rec: &mut Recorder, o: &RmsNorm) -> Result<()> {
    rows(rec, 0, &o.x, Some(&o.weight), o.eps, &o.out)
}

pub fn softmax(rec: &mut Recorder, o: &Softmax) -> Result<()> {
    rows(rec, 1, &o.x, None, 0.0, &o.out)
}

/// One thread per (token, head, pair); split over tokens when the views exceed a binding.
pub fn rope(rec: &mut Recorder, o: &Rope) -> Result<()> {
    let (t_n, h_n, d) = (o.x.shape[0], o.x.shape[1], o.x.shape[2]);
    let spec = kernels::Spec {
        name: "rope",
        sources: &[kernels::src::ROPE],
        args: &[
            input("x", Elem::of(o.x.dtype)),
            input("pos", Elem::I32),
            output("out", Elem::of(o.out.dtype)),
        ],
        consts: &[("WG", WG)],
    };
    let kernel = rec.kernel(&spec)?;
    let freqs: Vec<u32> = o.params.inv_freqs().iter().map(|f| f.to_bits()).collect();
    // A token's slice of a [T, H, D] view: its heads at their stride, D each.
    let token_span = |t: &Tensor| (h_n.saturating_sub(1) * t.strides[1] + d, t.strides[0]);
    let (xl, xs) = token_span(&o.x);
    let (ol, os) = token_span(&o.out);
    let layout = [(xs, xl, o.x.dtype.size()), (os, ol, o.out.dtype.size())];
    let (pw, p_off) = rec.tensor("positions", &o.positions)?;
    for (t0, t1) in row_chunks(rec, t_n, &layout)? {
        let span = |t: &Tensor, stride: usize, len: usize| {
            let size = t.dtype.size();
            let first = t.offset + t0 * stride * size;
            (first, first + ((t1 - t0 - 1) * stride + len) * size)
        };
        let (xf, xe) = span(&o.x, xs, xl);
        let (of, oe) = span(&o.out, os, ol);
        let (xw, x_off) = rec.window("x", &o.x, xf, xe)?;
        let (ow, o_off) = rec.window("out", &o.out, of, oe)?;
        let mut params = vec![
            (t1 - t0) as u32,
            h_n as u32,
            (d / 2) as u32,
            x_off,
            o.x.strides[0] as u32,
            o.x.strides[1] as u32,
            p_off + t0 as u32,
            o_off,
            o.out.strides[0] as u32,
            o.out.strides[1] as u32,
        ];
        params.extend(&freqs);
        let count = count32(rec.op, "x", (t1 - t0) * h_n * d / 2)?;
        let groups = rec.grid(count.div_ceil(WG));
        rec.dispatch(kernel.clone(), vec![xw, pw.clone(), ow], params, groups)?;
    }
    Ok(())
}

/// One thread per output element; a table larger than a binding is bound in row ranges, one dispatch
/// each (the ids are on the device, so every range looks at every token).
pub fn embedding(rec: &mut Recorder, o: &Embedding) -> Result<()> {
    let (v, d) = (o.table.shape[0], o.table.shape[1]);
    let t_n = o.ids.shape[0];
    let spec = kernels::Spec {
        name: "embedding",
        sources: &[kernels::src::EMBEDDING],
        args: &[
            input("table", Elem::of(o.table.dtype)),
            input("ids", Elem::I32),
            output("out", Elem::of(o.out.dtype)),
        ],
        consts: &[("WG", WG)],
    };
    let kernel = rec.kernel(&spec)?;
    let (iw, i_off) = rec.tensor("ids", &o.ids)?;
    let (ow, o_off) = rec.tensor("out", &o.out)?;
    let os = row_stride(&o.out);
    let site = rec.site("ids", format!("ids must be in 0..{v}"));
    let count = count32(rec.op, "out", t_n * d)?;
    for (i, (v0, v1)) in row_chunks(rec, v, &[(d, d, o.table.dtype.size())])?.into_iter().enumerate() {
        let (tf, te) = rows_range(&o.table, d, v0, v1);
        let (tw, t_off) = rec.window("table", &o.table, tf, te)?;
        let params = vec![
            t_n as u32,
            d as u32,
            v as u32,
            v0 as u32,
            v1 as u32,
            t_off,
            i_off,
            o_off,
            os as u32,
            if i == 0 { site } else { 0 },
        ];
        let groups = rec.grid(count.div_ceil(WG));
        rec.dispatch(kernel.clone(), vec![tw, iw.clone(), ow.clone()], params, groups)?;
    }
    Ok(())
}
