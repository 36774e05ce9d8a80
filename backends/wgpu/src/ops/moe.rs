//! Mixture-of-experts on the device: routing, the stable expert permutation (an index pass then a gather),
//! and the weighted combine. Nothing is read back to the host.

use super::{count32, row_chunks, row_stride, rows_range};
use crate::device::Ctx;
use crate::kernels::{self, input, output, Elem};
use crate::stream::Recorder;
use dsv3_core::ops::{MoeCombine, MoeDispatch, MoeRoute, Scoring, TopkMethod};
use dsv3_core::{Error, Result};

const WG: u32 = 256;
/// Experts the router's workgroup memory holds.
pub const ROUTE_MAX_EXPERTS: usize = 512;
/// Experts the dispatch's index pass holds.
pub const DISPATCH_MAX_EXPERTS: usize = 4096;

pub fn route_limit(r: &MoeRoute) -> Option<String> {
    let e = r.logits.shape[1];
    (e > ROUTE_MAX_EXPERTS)
        .then(|| format!("{e} experts: the router kernel holds at most {ROUTE_MAX_EXPERTS} per token"))
}

/// Slots whose expert ids one thread of the index pass may scan on a software rasterizer: lavapipe stops a
/// shader after 65535 loop iterations in all, and the pass scans every slot once per expert a thread owns.
const SOFTWARE_SCAN_LIMIT: usize = 60_000;

pub fn dispatch_limit(ctx: &Ctx, d: &MoeDispatch) -> Option<String> {
    if d.n_experts > DISPATCH_MAX_EXPERTS {
        return Some(format!(
            "{} experts: the dispatch kernel counts at most {DISPATCH_MAX_EXPERTS}",
            d.n_experts
        ));
    }
    let slots = d.ids.numel();
    let scans = slots * d.n_experts.div_ceil(WG as usize);
    (ctx.software && scans > SOFTWARE_SCAN_LIMIT).then(|| {
        format!(
            "{slots} slots over {} experts: more than a software rasterizer's 65535-iteration shader loop \
             limit allows the index pass",
            d.n_experts
        )
    })
}

pub fn route(rec: &mut Recorder, o: &MoeRoute) -> Result<()> {
    let (t, e) = (o.logits.shape[0], o.logits.shape[1]);
    let c = &o.config;
    let spec = kernels::Spec {
        name: "moe_route",
        sources: &[kernels::src::MOE_ROUTE],
        args: &[
            input("logits", Elem::F32),
            input("bias", Elem::F32),
            output("ids", Elem::I32),
            output("weights", Elem::F32),
        ],
        consts: &[("WG", WG)],
    };
    let kernel = rec.kernel(&spec)?;
    let (bw, b_off) = match &o.bias {
        Some(b) => rec.tensor("bias", b)?,
        None => (rec.dummy("logits", &o.logits)?, 0),
    };
    let k = c.top_k;
    for (t0, t1) in row_chunks(rec, t, &[(e, e, 4), (k, k, 4), (k, k, 4)])? {
        let (lf, le) = rows_range(&o.logits, e, t0, t1);
        let (lw, l_off) = rec.window("logits", &o.logits, lf, le)?;
        let (if_, ie) = rows_range(&o.ids, k, t0, t1);
        let (iw, i_off) = rec.window("ids", &o.ids, if_, ie)?;
        let (wf, we) = rows_range(&o.weights, k, t0, t1);
        let (ww, w_off) = rec.window("weights", &o.weights, wf, we)?;
        let params = vec![
            (t1 - t0) as u32,
            e as u32,
            c.n_group as u32,
            c.topk_group as u32,
            k as u32,
            match c.scoring {
                Scoring::Sigmoid => 0,
                Scoring::Softmax => 1,
            },
            match c.method {
                TopkMethod::Greedy => 0,
                TopkMethod::GroupLimitedGreedy => 1,
                TopkMethod::NoAuxTc => 2,
            },
            c.norm_topk_prob as u32,
            c.routed_scaling_factor.to_bits(),
            l_off,
            b_off,
            i_off,
            w_off,
        ];
        let groups = rec.grid((t1 - t0) as u32);
        rec.dispatch(kernel.clone(), vec![lw, bw.clone(), iw, ww], params, groups)?;
    }
    Ok(())
}

pub fn dispatch(rec: &mut Recorder, o: &MoeDispatch) -> Result<()> {
    if let Some(reason) = dispatch_limit(rec.ctx, o) {
        return Err(Error::unsupported(crate::device::BACKEND, rec.op, reason));
    }
    let (t, d, k) = (o.x.shape[0], o.x.shape[1], o.ids.shape[1]);
    let slots = t * k;
    let e = o.n_experts;
    let index = rec.kernel(&kernels::Spec {
        name: "moe_index",
        sources: &[kernels::src::MOE_INDEX],
        args: &[input("ids", Elem::I32), output("offsets", Elem::I32), output("slot_rows", Elem::I32)],
        consts: &[("WG", WG)],
    })?;
    let (idw, id_off) = rec.tensor("ids", &o.ids)?;
    let (ow, o_off) = rec.tensor("expert_offsets", &o.expert_offsets)?;
    let (sw, s_off) = rec.tensor("slot_rows", &o.slot_rows)?;
    let site = rec.site("ids", format!("expert ids must be in 0..{e}"));
    let params = vec![slots as u32, e as u32, id_off, o_off, s_off, site];
    rec.dispatch(index, vec![idw, ow, sw.clone()], params, [1, 1, 1])?;
    if slots == 0 || d == 0 {
        return Ok(());
    }
    let gather = rec.kernel(&kernels::Spec {
        name: "moe_gather",
        sources: &[kernels::src::MOE_GATHER],
        args: &[
            input("x", Elem::of(o.x.dtype)),
            input("slot_rows", Elem::I32),
            output("rows", Elem::of(o.rows.dtype)),
        ],
        consts: &[("WG", WG)],
    })?;
    let (xs, rs) = (row_stride(&o.x), row_stride(&o.rows));
    let count = count32(rec.op, "rows", slots * d)?;
    for (r0, r1) in row_chunks(rec, slots, &[(rs, d, o.rows.dtype.size())])? {
        let (rf, re) = rows_range(&o.rows, rs, r0, r1);
        let (rw, r_off) = rec.window("rows", &o.rows, rf, re)?;
        for (t0, t1) in row_chunks(rec, t, &[(xs, d, o.x.dtype.size())])? {
            let (xf, xe) = rows_range(&o.x, xs, t0, t1);
            let (xw, x_off) = rec.window("x", &o.x, xf, xe)?;
            let params = vec![
                slots as u32,
                d as u32,
                k as u32,
                x_off,
                xs as u32,
                s_off,
                r_off,
                rs as u32,
                r0 as u32,
                r1 as u32,
                t0 as u32,
                t1 as u32,
            ];
            let groups = rec.grid(count.div_ceil(WG));
            rec.dispatch(gather.clone(), vec![xw, sw.clone(), rw.clone()], params, groups)?;
        }
    }
    Ok(())
}

pub fn combine(rec: &mut Recorder, o: &MoeCombine) -> Result<()> {
    let (t, k) = (o.weights.shape[0], o.weights.shape[1]);
    let n = o.expert_out.shape[1];
    if t == 0 || n == 0 {
        return Ok(());
    }
    let kernel = rec.kernel(&kernels::Spec {
        name: "moe_combine",
        sources: &[kernels::src::MOE_COMBINE],
        args: &[
            input("eo", Elem::of(o.expert_out.dtype)),
            input("slot_rows", Elem::I32),
            input("weights", Elem::F32),
            output("out", Elem::of(o.out.dtype)),
            output("part", Elem::F32),
        ],
        consts: &[("WG", WG)],
    })?;
    let (es, os) = (row_stride(&o.expert_out), row_stride(&o.out));
    let (sw, s_off) = rec.tensor("slot_rows", &o.slot_rows)?;
    let (ww, w_off) = rec.tensor("weights", &o.weights)?;
    let (ow, o_off) = rec.tensor("out", &o.out)?;
    let chunks = row_chunks(rec, t * k, &[(es, n, o.expert_out.dtype.size())])?;
    let count = count32(rec.op, "out", t * n)?;
    let part = if chunks.len() > 1 { rec.scratch(t as u64 * n as u64 * 4) } else { ow.clone() };
    let site = rec.site("slot_rows", format!("slot rows must be in 0..{}", t * k));
    let last = chunks.len() - 1;
    for (i, (r0, r1)) in chunks.into_iter().enumerate() {
        let (ef, ee) = rows_range(&o.expert_out, es, r0, r1);
        let (ew, e_off) = rec.window("expert_out", &o.expert_out, ef, ee)?;
        let params = vec![
            t as u32,
            k as u32,
            n as u32,
            e_off,
            es as u32,
            s_off,
            w_off,
            o_off,
            os as u32,
            if i == 0 { site } else { 0 },
            r0 as u32,
            r1 as u32,
            (i == 0) as u32,
            (i == last) as u32,
        ];
        let groups = rec.grid(count.div_ceil(WG));
        rec.dispatch(
            kernel.clone(),
            vec![ew, sw.clone(), ww.clone(), ow.clone(), part.clone()],
            params,
            groups,
        )?;
    }
    Ok(())
}
