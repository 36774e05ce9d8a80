//! The latent KV cache: per layer one `[B, capacity, kv_lora_rank + qk_rope_head_dim]` tensor on the
//! device of that layer's attention (576 values per token per layer for DeepSeek-V3), with each sequence's length kept on the host,
//! which schedules every token and so always knows it.

use std::ops::Range;

use dsv3_core::{DType, Error, Result, Tensor};

use crate::graph::Model;

pub struct KvCache {
    pub layers: Vec<Tensor>,
    lens: Vec<usize>,
    capacity: usize,
}

impl KvCache {
    /// Room for `batch` sequences of up to `capacity` tokens each, in the model's activation dtype.
    pub fn new(model: &Model, batch: usize, capacity: usize) -> Result<KvCache> {
        let cfg = &model.config;
        if capacity > cfg.max_position_embeddings {
            return Err(Error::invalid(
                "kv_cache",
                "capacity",
                format!("{capacity} tokens exceed max_position_embeddings {}", cfg.max_position_embeddings),
            ));
        }
        let shape = [batch, capacity, cfg.kv_latent_width()];
        let bytes = shape.iter().product::<usize>() * model.act.size();
        let layers = (0..cfg.num_hidden_layers)
            .map(|l| Ok(Tensor::contiguous(model.attn_device(l).alloc(bytes.max(1))?, 0, &shape, model.act)))
            .collect::<Result<_>>()?;
        Ok(KvCache { layers, lens: vec![0; batch], capacity })
    }

    pub fn batch(&self) -> usize {
        self.lens.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Tokens cached for each sequence.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Bytes per token over all layers.
    pub fn bytes_per_token(&self) -> usize {
        self.layers.first().map_or(0, |t| t.shape[2] * t.dtype.size()) * self.layers.len()
    }

    pub fn dtype(&self) -> DType {
        self.layers.first().map_or(DType::F32, |t| t.dtype)
    }

    /// Claims `new_tokens` more positions in every sequence and returns where each sequence's new tokens
    /// start.
    pub(crate) fn reserve(&mut self, new_tokens: usize) -> Result<Vec<usize>> {
        let starts = self.lens.clone();
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
        self.lens.iter_mut().for_each(|l| *l += new_tokens);
        Ok(starts)
    }

    /// The cache of one sequence (slot `b`), sharing this cache's memory, for a prefill whose length differs
    /// from the other sequences'. Its length is written back with [`KvCache::absorb`].
    pub fn slot(&self, b: usize) -> Result<KvCache> {
        self.slots(b..b + 1)
    }

    /// The cache of the sequences in slots `range`, sharing this cache's memory: a batch of some of its
    /// sequences (a server's running ones). Their lengths are written back with [`KvCache::absorb`].
    pub fn slots(&self, range: Range<usize>) -> Result<KvCache> {
        if range.start >= range.end || range.end > self.batch() {
            return Err(Error::invalid(
                "kv_cache",
                "slot",
                format!("slots {range:?} are not a non-empty range below batch {}", self.batch()),
            ));
        }
        let n = range.end - range.start;
        let layers = self.layers.iter().map(|t| t.narrow(0, range.start, n)).collect::<Result<_>>()?;
        Ok(KvCache { layers, lens: self.lens[range].to_vec(), capacity: self.capacity })
    }

    /// Takes over the lengths of a view made by [`KvCache::slot`] or [`KvCache::slots`] whose first
    /// sequence is slot `b`.
    pub fn absorb(&mut self, b: usize, view: &KvCache) {
        self.lens[b..b + view.lens.len()].copy_from_slice(&view.lens);
    }

    /// Forgets sequence `b`'s tokens: the slot is free for another sequence.
    pub fn clear(&mut self, b: usize) {
        self.lens[b] = 0;
    }

    /// Moves sequence `from` into slot `to` (a device copy of its rows in every layer, on that layer's
    /// attention device), leaving `from` empty: how a server keeps its running sequences in the first
    /// slots. What slot `to` held is overwritten.
    pub fn move_slot(&mut self, model: &Model, from: usize, to: usize) -> Result<()> {
        if from >= self.batch() || to >= self.batch() {
            let why = format!("slot {from} → {to}: both must be below batch {}", self.batch());
            return Err(Error::invalid("kv_cache", "move_slot", why));
        }
        if from == to {
            return Ok(());
        }
        let n = self.lens[from];
        if n > 0 {
            for (l, layer) in self.layers.iter().enumerate() {
                let src = layer.narrow(0, from, 1)?.narrow(1, 0, n)?;
                let dst = layer.narrow(0, to, 1)?.narrow(1, 0, n)?;
                let bytes = src.span_bytes();
                model.attn_device(l).default_stream().copy(
                    &src.buffer,
                    src.offset,
                    &dst.buffer,
                    dst.offset,
                    bytes,
                )?;
            }
        }
        self.lens[to] = n;
        self.lens[from] = 0;
        Ok(())
    }

    /// The latent rows of tokens `tokens` of sequence `b`, one byte vector per layer (each downloaded from
    /// that layer's attention device): what a prefix cache keeps of a finished request.
    pub fn export_rows(&self, model: &Model, b: usize, tokens: Range<usize>) -> Result<Vec<Vec<u8>>> {
        if b >= self.batch() || tokens.start > tokens.end || tokens.end > self.lens[b] {
            let why = format!("tokens {tokens:?} of sequence {b}: not all cached (lengths {:?})", self.lens);
            return Err(Error::invalid("kv_cache", "export_rows", why));
        }
        let n = tokens.end - tokens.start;
        self.layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let rows = layer.narrow(0, b, 1)?.narrow(1, tokens.start, n)?;
                let mut host = vec![0u8; rows.span_bytes()];
                model.attn_device(l).default_stream().download(&rows.buffer, rows.offset, &mut host)?;
                Ok(host)
            })
            .collect()
    }

    /// Appends latent rows made by [`KvCache::export_rows`] (one byte vector per layer, whole rows, the
    /// same number in every layer) to sequence `b`: those tokens then count as cached, so a forward pass
    /// goes on after them without recomputing them.
    pub fn append_rows(&mut self, model: &Model, b: usize, rows: &[Vec<u8>]) -> Result<()> {
        let row_bytes = self.bytes_per_token() / self.layers.len().max(1);
        let n = rows.first().map_or(0, |r| r.len() / row_bytes.max(1));
        let fits = b < self.batch() && self.lens[b] + n <= self.capacity;
        if rows.len() != self.layers.len() || rows.iter().any(|r| r.len() != n * row_bytes) || !fits {
            let sizes: Vec<usize> = rows.iter().map(Vec::len).collect();
            let why = format!(
                "{sizes:?} bytes for sequence {b} of {:?} tokens (capacity {}): want {} layers of whole                  {row_bytes}-byte rows that fit",
                self.lens,
                self.capacity,
                self.layers.len()
            );
            return Err(Error::invalid("kv_cache", "append_rows", why));
        }
        let start = self.lens[b];
        for (l, (layer, bytes)) in self.layers.iter().zip(rows).enumerate() {
            let dst = layer.narrow(0, b, 1)?.narrow(1, start, n)?;
            model.attn_device(l).default_stream().upload(&dst.buffer, dst.offset, bytes)?;
        }
        self.lens[b] += n;
        Ok(())
    }
}
