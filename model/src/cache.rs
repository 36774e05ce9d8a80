//! The latent KV cache, paged: per layer one pool of [`PAGE`]-position pages `[P, PAGE, kv_lora_rank +
//! qk_rope_head_dim]` on the device of that layer's attention (576 values per token per layer for
//! DeepSeek-V3), and per sequence slot a block table naming its pages in order (the MLA and cache_append
//! ops read it on the device, see `dsv3_core::ops::CachePages`). The host schedules every token, so it keeps
//! each sequence's length, the tables and a reference count per page.
//!
//! Pages are taken from the pool as a sequence grows and returned when it is cleared. Sequences may share
//! pages ([`KvCache::share_prefix`]): a page referenced more than once is read-only, and the first write
//! into one (the first token past the shared prefix) copies it first — copy-on-write at the first divergent
//! page. Moving a sequence to another slot moves its block table, not its rows.
//!
//! A view of some slots ([`KvCache::slots`]) shares the pools and the bookkeeping with its cache: what a
//! forward pass through the view allocates or appends is the cache's at once.
//!
//! A page of whole cached positions can also be held outside any sequence ([`KvCache::hold`]): it stays
//! in the pool after its sequence ends, and a new sequence can start on held pages ([`KvCache::attach`]) —
//! a server's prefix units kept on the device.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use dsv3_core::{DType, Error, Result, Tensor};

use crate::graph::Model;

/// Positions per page: DeepSeek's context-cache unit, so a stored prefix unit is one page.
pub const PAGE: usize = 64;

/// Pages that hold `tokens` positions (at least one).
pub fn pages_for(tokens: usize) -> usize {
    tokens.div_ceil(PAGE).max(1)
}

/// A page held outside any sequence ([`KvCache::hold`]): its rows stay in the pool until released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HeldPage(u32);

/// The bookkeeping a cache shares with its views.
struct Pages {
    /// Tokens cached per slot.
    lens: Vec<usize>,
    /// Per slot, `pages_per_seq` entries: the pages holding its positions in order, −1 past its end.
    tables: Vec<Vec<i32>>,
    /// Block tables and holders naming each page.
    refs: Vec<u32>,
    /// Pages no table names.
    free: Vec<u32>,
}

impl Pages {
    fn release(&mut self, slot: usize) {
        for j in 0..self.tables[slot].len() {
            let entry = std::mem::replace(&mut self.tables[slot][j], -1);
            if entry >= 0 {
                self.unref(entry as usize);
            }
        }
        self.lens[slot] = 0;
    }

    fn unref(&mut self, page: usize) {
        self.refs[page] -= 1;
        if self.refs[page] == 0 {
            self.free.push(page as u32);
        }
    }

    /// Empty `slot` starts with `pages` (whole pages of `tokens` positions), shared.
    fn share(&mut self, slot: usize, pages: &[i32], tokens: usize) {
        for (j, &page) in pages.iter().enumerate() {
            self.refs[page as usize] += 1;
            self.tables[slot][j] = page;
        }
        self.lens[slot] = tokens;
    }

    /// Whether writing into page position `j` of `slot` takes a page: none is there yet, or it is shared.
    fn needs_page(&self, slot: usize, j: usize) -> bool {
        let entry = self.tables[slot][j];
        entry < 0 || self.refs[entry as usize] > 1
    }

    fn take(&mut self) -> Result<usize> {
        let page = self.free.pop().ok_or_else(|| {
            Error::invalid(
                "kv_cache",
                "pages",
                format!("all {} pages of the pool are in use", self.refs.len()),
            )
        })? as usize;
        self.refs[page] = 1;
        Ok(page)
    }
}

pub struct KvCache {
    /// Per layer the page pool `[P, PAGE, W]`.
    pub layers: Vec<Tensor>,
    pages: Arc<Mutex<Pages>>,
    /// The slots of the shared bookkeeping this cache (or view) covers.
    slots: Range<usize>,
    capacity: usize,
    pages_per_seq: usize,
}

impl KvCache {
    /// Room for `batch` sequences of up to `capacity` tokens each, in the model's activation dtype: a pool
    /// of as many pages as the sequences could fill, so growing never runs out of pages.
    pub fn new(model: &Model, batch: usize, capacity: usize) -> Result<KvCache> {
        Self::with_pool(model, batch, capacity, batch * pages_for(capacity))
    }

    /// `batch` sequences of up to `capacity` tokens each over a pool of `pool` pages, fewer than they could
    /// fill (at least one sequence's worth): the caller decides who may grow ([`KvCache::pages_to_grow`],
    /// [`KvCache::free_pages`]); a step that finds too few free pages is an error that changes nothing.
    pub fn with_pool(model: &Model, batch: usize, capacity: usize, pool: usize) -> Result<KvCache> {
        let cfg = &model.config;
        if capacity > cfg.max_position_embeddings {
            return Err(Error::invalid(
                "kv_cache",
                "capacity",
                format!("{capacity} tokens exceed max_position_embeddings {}", cfg.max_position_embeddings),
            ));
        }
        let pages_per_seq = pages_for(capacity);
        if pool < pages_per_seq {
            let why =
                format!("{pool} pages of {PAGE} positions cannot hold one sequence of {capacity} tokens");
            return Err(Error::invalid("kv_cache", "pages", why));
        }
        let shape = [pool, PAGE, cfg.kv_latent_width()];
        let bytes = shape.iter().product::<usize>() * model.act.size();
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| Ok(Tensor::contiguous(model.attn_device(l).alloc(bytes.max(1))?, 0, &shape, model.act)))
            .collect::<Result<_>>()?;
        let pages = Pages {
            lens: vec![0; batch],
            tables: vec![vec![-1; pages_per_seq]; batch],
            refs: vec![0; pool],
            free: (0..pool as u32).rev().collect(),
        };
        Ok(KvCache { layers, pages: Arc::new(Mutex::new(pages)), slots: 0..batch, capacity, pages_per_seq })
    }

    fn state(&self) -> MutexGuard<'_, Pages> {
        self.pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn batch(&self) -> usize {
        self.slots.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Block table entries per sequence (`[B, pages_per_seq]` is the block table's shape).
    pub fn pages_per_seq(&self) -> usize {
        self.pages_per_seq
    }

    /// Tokens cached for each sequence.
    pub fn lens(&self) -> Vec<usize> {
        self.state().lens[self.slots.clone()].to_vec()
    }

    /// Pages no sequence holds.
    pub fn free_pages(&self) -> usize {
        self.state().free.len()
    }

    /// The most pages sequence `b` still takes from the pool to grow to `tokens` tokens: one for each page
    /// position it will write that it does not hold alone (not yet taken, or shared and so copied first).
    pub fn pages_to_grow(&self, b: usize, tokens: usize) -> Result<usize> {
        let slot = self.slot_index(b, "pages_to_grow")?;
        let s = self.state();
        let from = s.lens[slot] / PAGE;
        Ok((from..tokens.div_ceil(PAGE).min(self.pages_per_seq)).filter(|&j| s.needs_page(slot, j)).count())
    }

    /// Pages of the pool in use (named by some sequence), and the pool's size.
    pub fn pages_in_use(&self) -> (usize, usize) {
        let s = self.state();
        (s.refs.len() - s.free.len(), s.refs.len())
    }

    /// Bytes per token over all layers.
    pub fn bytes_per_token(&self) -> usize {
        self.layers.first().map_or(0, |t| t.shape[2] * t.dtype.size()) * self.layers.len()
    }

    pub fn dtype(&self) -> DType {
        self.layers.first().map_or(DType::F32, |t| t.dtype)
    }

    /// The block tables of this cache's sequences, row-major `[B, pages_per_seq]`, as a step uploads them.
    pub(crate) fn block_table(&self) -> Vec<i32> {
        self.state().tables[self.slots.clone()].concat()
    }

    /// Claims `new_tokens` more positions in every sequence and returns where each sequence's new tokens
    /// start: the pages they land in are allocated, and a shared page they land in is copied first.
    pub(crate) fn reserve(&mut self, model: &Model, new_tokens: usize) -> Result<Vec<usize>> {
        let mut s = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        let starts = s.lens[self.slots.clone()].to_vec();
        if let Some(&longest) = starts.iter().max() {
            if longest + new_tokens > self.capacity {
                return Err(Error::invalid(
                    "forward",
                    "tokens",
                    format!(
                        "{longest} cached + {new_tokens} new tokens exceed the cache's {} positions",
                        self.capacity
                    ),
                ));
            }
        }
        // Every page the step takes is counted first, so that too few free pages change nothing.
        let wanted: usize = self
            .slots
            .clone()
            .zip(&starts)
            .map(|(slot, &start)| {
                (start / PAGE..(start + new_tokens).div_ceil(PAGE)).filter(|&j| s.needs_page(slot, j)).count()
            })
            .sum();
        if wanted > s.free.len() {
            let why = format!(
                "{new_tokens} new tokens need {wanted} pages, {} of {} are free",
                s.free.len(),
                s.refs.len()
            );
            return Err(Error::invalid("kv_cache", "pages", why));
        }
        for (slot, &start) in self.slots.clone().zip(&starts) {
            let pages = start / PAGE..(start + new_tokens).div_ceil(PAGE);
            for j in pages {
                let entry = s.tables[slot][j];
                if entry < 0 {
                    let page = s.take()?;
                    s.tables[slot][j] = page as i32;
                } else if s.refs[entry as usize] > 1 {
                    let copy = s.take()?;
                    self.copy_page(model, entry as usize, copy)?;
                    s.refs[entry as usize] -= 1;
                    s.tables[slot][j] = copy as i32;
                }
            }
            s.lens[slot] = start + new_tokens;
        }
        Ok(starts)
    }

    /// Page `from`'s rows into page `to`, in every layer (a device copy on that layer's attention device).
    fn copy_page(&self, model: &Model, from: usize, to: usize) -> Result<()> {
        for (l, pool) in self.layers.iter().enumerate() {
            let bytes = PAGE * pool.shape[2] * pool.dtype.size();
            let at = |page: usize| pool.offset + page * bytes;
            model.attn_device(l).default_stream().copy(
                &pool.buffer,
                at(from),
                &pool.buffer,
                at(to),
                bytes,
            )?;
        }
        Ok(())
    }

    /// Slot `b` as a slot of the shared bookkeeping, or the error naming `what`.
    fn slot_index(&self, b: usize, what: &str) -> Result<usize> {
        if b >= self.batch() {
            let why = format!("{what}: slot {b} is not below batch {}", self.batch());
            return Err(Error::invalid("kv_cache", "slot", why));
        }
        Ok(self.slots.start + b)
    }

    /// The cache of one sequence (slot `b`), sharing this cache's pools and bookkeeping, for a prefill whose
    /// length differs from the other sequences'.
    pub fn slot(&self, b: usize) -> Result<KvCache> {
        self.slots(b..b + 1)
    }

    /// The cache of the sequences in slots `range`, sharing this cache's pools and bookkeeping: a batch of
    /// some of its sequences (a server's running ones).
    pub fn slots(&self, range: Range<usize>) -> Result<KvCache> {
        if range.start >= range.end || range.end > self.batch() {
            return Err(Error::invalid(
                "kv_cache",
                "slot",
                format!("slots {range:?} are not a non-empty range below batch {}", self.batch()),
            ));
        }
        let slots = self.slots.start + range.start..self.slots.start + range.end;
        Ok(KvCache { layers: self.layers.clone(), pages: self.pages.clone(), slots, ..*self })
    }

    /// Forgets sequence `b`'s tokens and returns its pages to the pool: the slot is free for another
    /// sequence.
    pub fn clear(&mut self, b: usize) {
        if let Ok(slot) = self.slot_index(b, "clear") {
            self.state().release(slot);
        }
    }

    /// Moves sequence `from` into slot `to` (its block table: no rows are copied), leaving `from` empty:
    /// how a server keeps its running sequences in the first slots. What slot `to` held is released.
    pub fn move_slot(&mut self, from: usize, to: usize) -> Result<()> {
        let (from, to) = (self.slot_index(from, "move_slot")?, self.slot_index(to, "move_slot")?);
        if from == to {
            return Ok(());
        }
        let mut s = self.state();
        s.release(to);
        let table = std::mem::replace(&mut s.tables[from], vec![-1; self.pages_per_seq]);
        s.tables[to] = table;
        s.lens[to] = std::mem::take(&mut s.lens[from]);
        Ok(())
    }

    /// Makes empty sequence `to` start with the first `tokens` tokens of sequence `from`, sharing the pages
    /// that hold them (nothing is copied now; the first token `to` appends into a shared page copies that
    /// page): a common prefix computed once.
    pub fn share_prefix(&mut self, from: usize, to: usize, tokens: usize) -> Result<()> {
        let (src, dst) = (self.slot_index(from, "share_prefix")?, self.slot_index(to, "share_prefix")?);
        let mut s = self.state();
        if src == dst || s.lens[dst] != 0 || tokens > s.lens[src] {
            let why = format!(
                "the first {tokens} tokens of slot {from} (holding {}) into slot {to} (holding {}): want \
                 two slots, the second empty, and tokens the first holds",
                s.lens[src], s.lens[dst]
            );
            return Err(Error::invalid("kv_cache", "share_prefix", why));
        }
        let pages = s.tables[src][..tokens.div_ceil(PAGE)].to_vec();
        s.share(dst, &pages, tokens);
        Ok(())
    }

    /// Holds the page of sequence `b`'s `unit`-th [`PAGE`] positions (all cached), so that it stays in the
    /// pool after the sequence lets go of it: what [`KvCache::attach`] starts a new sequence on.
    pub fn hold(&mut self, b: usize, unit: usize) -> Result<HeldPage> {
        let slot = self.slot_index(b, "hold")?;
        let mut s = self.state();
        if (unit + 1) * PAGE > s.lens[slot] {
            let why = format!("unit {unit} of slot {b} (holding {} tokens) is not whole", s.lens[slot]);
            return Err(Error::invalid("kv_cache", "hold", why));
        }
        let page = s.tables[slot][unit];
        s.refs[page as usize] += 1;
        Ok(HeldPage(page as u32))
    }

    /// Lets go of a held page: back to the pool once no sequence has it either.
    pub fn release(&mut self, page: HeldPage) {
        self.state().unref(page.0 as usize);
    }

    /// Whether only its holder has `page` (releasing it frees a page).
    pub fn held_alone(&self, page: HeldPage) -> bool {
        self.state().refs[page.0 as usize] == 1
    }

    /// Makes empty sequence `to` start with the held `pages`, shared (a [`PAGE`] positions each, in order):
    /// its first token past them goes into a page of its own.
    pub fn attach(&mut self, to: usize, pages: &[HeldPage]) -> Result<()> {
        let dst = self.slot_index(to, "attach")?;
        let mut s = self.state();
        if s.lens[dst] != 0 || pages.len() > self.pages_per_seq {
            let why = format!(
                "{} pages into slot {to} (holding {} tokens, {} pages at most): want an empty slot they fit",
                pages.len(),
                s.lens[dst],
                self.pages_per_seq
            );
            return Err(Error::invalid("kv_cache", "attach", why));
        }
        let entries: Vec<i32> = pages.iter().map(|p| p.0 as i32).collect();
        s.share(dst, &entries, pages.len() * PAGE);
        Ok(())
    }

    /// The latent rows of tokens `tokens` of sequence `b`, one byte vector per layer (each downloaded from
    /// that layer's attention device, a page at a time): what a prefix cache keeps of a finished request.
    pub fn export_rows(&self, model: &Model, b: usize, tokens: Range<usize>) -> Result<Vec<Vec<u8>>> {
        let slot = self.slot_index(b, "export_rows")?;
        let (len, table) = {
            let s = self.state();
            (s.lens[slot], s.tables[slot].clone())
        };
        if tokens.start > tokens.end || tokens.end > len {
            let why = format!("tokens {tokens:?} of sequence {b}: not all cached ({len} are)");
            return Err(Error::invalid("kv_cache", "export_rows", why));
        }
        let row_bytes = self.bytes_per_token() / self.layers.len().max(1);
        let mut out = vec![vec![0u8; tokens.len() * row_bytes]; self.layers.len()];
        for (start, end) in page_runs(tokens.clone()) {
            let at = table[start / PAGE] as usize * PAGE + start % PAGE;
            let dst = (start - tokens.start) * row_bytes..(end - tokens.start) * row_bytes;
            for (l, (pool, host)) in self.layers.iter().zip(out.iter_mut()).enumerate() {
                let stream = model.attn_device(l).default_stream();
                stream.download(&pool.buffer, pool.offset + at * row_bytes, &mut host[dst.clone()])?;
            }
        }
        Ok(out)
    }

    /// Appends latent rows made by [`KvCache::export_rows`] (one byte vector per layer, whole rows, the
    /// same number in every layer) to sequence `b`: those tokens then count as cached, so a forward pass
    /// goes on after them without recomputing them.
    pub fn append_rows(&mut self, model: &Model, b: usize, rows: &[Vec<u8>]) -> Result<()> {
        let slot = self.slot_index(b, "append_rows")?;
        let row_bytes = self.bytes_per_token() / self.layers.len().max(1);
        let n = rows.first().map_or(0, |r| r.len() / row_bytes.max(1));
        let start = self.state().lens[slot];
        if rows.len() != self.layers.len()
            || rows.iter().any(|r| r.len() != n * row_bytes)
            || start + n > self.capacity
        {
            let sizes: Vec<usize> = rows.iter().map(Vec::len).collect();
            let why = format!(
                "{sizes:?} bytes for sequence {b} of {start} tokens (capacity {}): want {} layers of whole \
                 {row_bytes}-byte rows that fit",
                self.capacity,
                self.layers.len()
            );
            return Err(Error::invalid("kv_cache", "append_rows", why));
        }
        let mut one = self.slot(b)?;
        one.reserve(model, n)?;
        let table = self.state().tables[slot].clone();
        for (first, end) in page_runs(start..start + n) {
            let at = table[first / PAGE] as usize * PAGE + first % PAGE;
            let src = (first - start) * row_bytes..(end - start) * row_bytes;
            for (l, (pool, bytes)) in self.layers.iter().zip(rows).enumerate() {
                let stream = model.attn_device(l).default_stream();
                stream.upload(&pool.buffer, pool.offset + at * row_bytes, &bytes[src.clone()])?;
            }
        }
        Ok(())
    }
}

/// `tokens` cut at page boundaries: (start, end) of each piece, whose rows are adjacent in one page.
fn page_runs(tokens: Range<usize>) -> impl Iterator<Item = (usize, usize)> {
    let end = tokens.end;
    std::iter::successors(Some(tokens.start), move |&s| Some((s / PAGE + 1) * PAGE))
        .take_while(move |&s| s < end)
        .map(move |s| (s, ((s / PAGE + 1) * PAGE).min(end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_runs_cut_at_page_boundaries() {
        assert_eq!(page_runs(0..0).count(), 0);
        assert_eq!(page_runs(3..10).collect::<Vec<_>>(), [(3, 10)]);
        assert_eq!(page_runs(60..130).collect::<Vec<_>>(), [(60, 64), (64, 128), (128, 130)]);
        assert_eq!(page_runs(64..128).collect::<Vec<_>>(), [(64, 128)]);
    }
}
