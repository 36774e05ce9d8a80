//! Writes into attention caches: cache_append (a step's latent rows at positions read on the device).

use crate::kernels::{self, Variant};
use crate::launch::{Launch, Params, BLOCK};
use dsv3_core::ops::CacheAppend;
use dsv3_core::Result;

fn variant(dtype: dsv3_core::DType) -> Variant {
    Variant::new(kernels::CACHE_APPEND).ty("x", dtype)
}

/// One block per row (b, t) of the step.
pub fn cache_append(l: &Launch, o: &CacheAppend) -> Result<()> {
    let [b, t, w] = o.rows.shape[..] else { unreachable!("validated rank 3") };
    if b * t * w == 0 {
        return Ok(());
    }
    let f = l.kernel(&variant(o.rows.dtype))?;
    let pages = o.pages();
    let capacity = pages.capacity();
    let site = l.site("kv_lens", format!("each length must be in {t}..={capacity}"));
    let (table, page_site) = super::attention::block_table(l, o.block_table.as_ref(), pages)?;
    let params = Params::new()
        .u(t)
        .u(w)
        .u(capacity)
        .addr(l.addr("rows", &o.rows)?)
        .u(o.rows.strides[0])
        .u(o.rows.strides[1])
        .addr(l.addr("kv_lens", &o.kv_lens)?)
        .addr(l.addr("cache", &o.cache)?)
        .u(o.cache.strides[0])
        .u(o.cache.strides[1])
        .addr(l.err())
        .u(site as usize)
        .addr(table)
        .u(pages.page)
        .u(pages.pages_per_seq)
        .u(pages.pool)
        .u(page_site);
    l.run(&f, l.grid((b * t) as u64 * BLOCK as u64, BLOCK)?, params)
}

/// The bf16 latent cache's variant.
pub fn catalog() -> Vec<Variant> {
    vec![variant(dsv3_core::DType::BF16)]
}
