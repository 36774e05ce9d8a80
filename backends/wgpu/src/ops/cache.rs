//! Writes into attention caches: cache_append, one dispatch per sequence, each binding only that
//! sequence's cache rows (so a cache larger than one storage binding works) — or, for a page pool, the
//! whole pool and the block table.

use super::count32;
use crate::kernels::{self, input, output, Elem};
use crate::stream::Recorder;
use dsv3_core::ops::CacheAppend;
use dsv3_core::Result;

const WG: u32 = 256;

pub fn cache_append(rec: &mut Recorder, o: &CacheAppend) -> Result<()> {
    let [b_n, t, w] = o.rows.shape[..] else { unreachable!("validated rank 3") };
    if b_n * t * w == 0 {
        return Ok(());
    }
    let pages = o.pages();
    let capacity = pages.capacity();
    let elem = Elem::of(o.rows.dtype);
    let spec = kernels::Spec {
        name: "cache_append",
        sources: &[kernels::src::CACHE_APPEND],
        args: &[
            input("rows", elem),
            input("lens", Elem::I32),
            input("table", Elem::I32),
            output("cache", elem),
        ],
        consts: &[("WG", WG)],
    };
    let kernel = rec.kernel(&spec)?;
    let (lw, l_off) = rec.tensor("kv_lens", &o.kv_lens)?;
    let site = rec.site("kv_lens", format!("each length must be in {t}..={capacity}"));
    let (paged, table_w, table_off, page_site) = match &o.block_table {
        Some(table) => {
            let (w, off) = rec.tensor("block_table", table)?;
            (1, w, off, rec.site("block_table", format!("each entry must be a page in 0..{}", pages.pool)))
        }
        None => (0, rec.dummy("kv_lens", &o.kv_lens)?, 0, 0),
    };
    // A pool is bound once, whole; a contiguous cache one sequence at a time.
    let pool = match o.block_table {
        Some(_) => Some(rec.tensor("cache", &o.cache)?),
        None => None,
    };
    let count = count32(rec.op, "rows", t * w)?;
    let (rs, cs) = (&o.rows.strides, &o.cache.strides);
    let size = o.rows.dtype.size();
    for b in 0..b_n {
        // This sequence's rows and cache rows, as windows of their buffers.
        let r_first = o.rows.offset + b * rs[0] * size;
        let (rw, r_off) = rec.window("rows", &o.rows, r_first, r_first + ((t - 1) * rs[1] + w) * size)?;
        let (cw, c_off) = match &pool {
            Some(whole) => whole.clone(),
            None => {
                let c_first = o.cache.offset + b * cs[0] * size;
                rec.window("cache", &o.cache, c_first, c_first + ((capacity - 1) * cs[1] + w) * size)?
            }
        };
        let params = vec![
            t as u32,
            w as u32,
            capacity as u32,
            b as u32,
            r_off,
            count32(rec.op, "rows", rs[1])?,
            l_off,
            c_off,
            count32(rec.op, "cache", cs[1])?,
            site,
            paged,
            table_off,
            pages.page as u32,
            pages.pages_per_seq as u32,
            pages.pool as u32,
            count32(rec.op, "cache", cs[0])?,
            page_site,
        ];
        let groups = rec.grid(count.div_ceil(WG));
        rec.dispatch(kernel.clone(), vec![rw, lw.clone(), table_w.clone(), cw], params, groups)?;
    }
    Ok(())
}
