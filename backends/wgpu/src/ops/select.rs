//! Choosing tokens: argmax, top-k and seeded sampling, one workgroup per row.

use super::{row_chunks, row_stride, rows_range};
use crate::kernels::{self, input, output, Elem};
use crate::stream::Recorder;
use dsv3_core::ops::{Argmax, Sample, TopK};
use dsv3_core::{Result, Tensor};

const WG: u32 = 256;

fn select(rec: &mut Recorder, x: &Tensor, k: usize, values: Option<&Tensor>, ids: &Tensor) -> Result<()> {
    let (rows, n) = (x.shape[0], x.shape[1]);
    let kernel = rec.kernel(&kernels::Spec {
        name: "select",
        sources: &[kernels::src::SELECT],
        args: &[input("x", Elem::of(x.dtype)), output("values", Elem::F32), output("ids", Elem::I32)],
        consts: &[("WG", WG), ("OPK", values.is_some() as u32)],
    })?;
    let xs = row_stride(x);
    for (r0, r1) in row_chunks(rec, rows, &[(xs, n, x.dtype.size()), (k, k, 4), (k, k, 4)])? {
        let (xf, xe) = rows_range(x, xs, r0, r1);
        let (xw, x_off) = rec.window("x", x, xf, xe)?;
        let ids_rows = ids.reshape(&[rows, k])?;
        let (idf, ide) = rows_range(&ids_rows, k, r0, r1);
        let (iw, i_off) = rec.window("ids", ids, idf, ide)?;
        let (vw, v_off) = match values {
            Some(v) => {
                let (vf, ve) = rows_range(v, k, r0, r1);
                rec.window("values", v, vf, ve)?
            }
            None => (iw.clone(), i_off),
        };
        let params = vec![(r1 - r0) as u32, n as u32, k as u32, x_off, xs as u32, v_off, i_off];
        let groups = rec.grid((r1 - r0) as u32);
        rec.dispatch(kernel.clone(), vec![xw, vw, iw], params, groups)?;
    }
    Ok(())
}

pub fn argmax(rec: &mut Recorder, o: &Argmax) -> Result<()> {
    select(rec, &o.x, 1, None, &o.out)
}

pub fn topk(rec: &mut Recorder, o: &TopK) -> Result<()> {
    select(rec, &o.x, o.k, Some(&o.values), &o.ids)
}

pub fn sample(rec: &mut Recorder, o: &Sample) -> Result<()> {
    let (rows, v) = (o.logits.shape[0], o.logits.shape[1]);
    let kernel = rec.kernel(&kernels::Spec {
        name: "sample",
        sources: &[kernels::src::SAMPLE],
        args: &[input("x", Elem::of(o.logits.dtype)), input("rows", Elem::I32), output("out", Elem::I32)],
        consts: &[("WG", WG)],
    })?;
    let xs = row_stride(&o.logits);
    let (ow, o_off) = rec.tensor("out", &o.out)?;
    // Per-row parameters are bound whole (16 bytes a row) and indexed by the global row.
    let (rw, row_params) = match &o.row_params {
        Some(t) => {
            let (w, off) = rec.tensor("row_params", t)?;
            let site = rec.site("row_params", "each row: temperature finite and ≥ 0, top_p in (0, 1]");
            (w, [1, off, site])
        }
        None => (rec.dummy("logits", &o.logits)?, [0; 3]),
    };
    for (r0, r1) in row_chunks(rec, rows, &[(xs, v, o.logits.dtype.size())])? {
        let (xf, xe) = rows_range(&o.logits, xs, r0, r1);
        let (xw, x_off) = rec.window("logits", &o.logits, xf, xe)?;
        let mut params = vec![
            (r1 - r0) as u32,
            v as u32,
            x_off,
            xs as u32,
            o_off + r0 as u32,
            o.temperature.to_bits(),
            o.top_p.to_bits(),
            o.seed as u32,
            (o.seed >> 32) as u32,
            r0 as u32,
        ];
        params.extend(row_params);
        let groups = rec.grid((r1 - r0) as u32);
        rec.dispatch(kernel.clone(), vec![xw, rw.clone(), ow.clone()], params, groups)?;
    }
    Ok(())
}
