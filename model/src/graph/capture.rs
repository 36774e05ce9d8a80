//! Decode steps captured as graphs: once per batch size (and cache) on a one-device placement whose
//! device captures, then replayed with the step's inputs uploaded into the graph's fixed buffers.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use dsv3_core::{Graph, Result, Tensor};

use super::{Logits, Model};
use crate::cache::KvCache;
use crate::exec::{DeviceInputs, Step};

/// A decode step captured for one shape bucket, and its fixed inputs.
struct StepGraph {
    graph: Box<dyn Graph>,
    ids: Tensor,
    positions: Tensor,
    kv_lens: Tensor,
    block_table: Tensor,
    logits: Tensor,
    /// Ops inside the graphs (each replay runs them; the launch count includes them).
    ops: u64,
}

/// The captured decode steps of one cache: its buffers are in the graphs, so a step of another cache (a new
/// request) captures anew, and the old graphs go with the old cache's memory.
#[derive(Default)]
pub(super) struct StepGraphs {
    /// The address of the cache's first layer buffer: kept alive by the graphs, so no other cache can have
    /// it while they live.
    cache: Option<usize>,
    by_bucket: HashMap<(usize, Logits), StepGraph>,
}

/// How often the model captured and replayed decode steps since loading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Decode steps captured (once per batch size and cache).
    pub captures: u64,
    /// Decode steps run from a captured graph (the captured step itself included).
    pub replays: u64,
}

impl Model {
    /// Turns capturing decode steps as graphs on or off (on by default where the device can, unless
    /// `DSV3_GRAPH=0`); turning it off drops the graphs captured so far.
    pub fn set_graph_capture(&self, on: bool) {
        self.graph_capture.store(on, Ordering::Relaxed);
        if !on {
            *self.graphs.lock().unwrap_or_else(|e| e.into_inner()) = StepGraphs::default();
        }
    }

    /// Decode steps captured and replayed as graphs since loading.
    pub fn graph_stats(&self) -> GraphStats {
        GraphStats {
            captures: self.captures.load(Ordering::Relaxed),
            replays: self.replays.load(Ordering::Relaxed),
        }
    }

    /// Why a step of `t` new tokens per sequence cannot run as a graph; `None` when it can. Only decode
    /// steps (t = 1) are captured: their shape repeats, a prompt's does not.
    pub(super) fn eager_reason(&self, t: usize) -> Option<&'static str> {
        if t != 1 {
            return Some("");
        }
        if !self.graph_capture.load(Ordering::Relaxed) {
            return Some("graph capture is off (DSV3_GRAPH=0, or a capture failed)");
        }
        if self.execs.len() > 1 {
            return Some(
                "the model is placed over several devices: crossings and split experts need the host mid-step",
            );
        }
        if !self.execs[0].device.capabilities().graph_capture {
            return Some("the device cannot capture graphs");
        }
        if self.routes.lock().unwrap_or_else(|e| e.into_inner()).is_some() {
            return Some("routing is being recorded, which reads it on the host mid-step");
        }
        None
    }

    /// A decode step (one device, which captures) from its graph: captured on the first step of its batch
    /// size (and cache), then the step's inputs uploaded into the graph's fixed buffers and the graph
    /// replayed (nothing in the step depends on host-side positions: the cache append reads them from
    /// kv_lens on the device). The logits are copied out of the graph's buffer, so the next replay does not
    /// overwrite what the caller holds. `None` when the capture failed (logged; capture is then off for this
    /// model): nothing ran, and the caller runs the step eagerly.
    pub(super) fn forward_graph(
        &self,
        cache: &KvCache,
        [ids, positions, kv_lens, block_table]: [&[i32]; 4],
        which: Logits,
    ) -> Result<Option<Tensor>> {
        let e = &self.execs[0];
        let mut graphs = self.graphs.lock().unwrap_or_else(|e| e.into_inner());
        // Views of the cache's slots share its pools: their steps replay the same graphs, with their own
        // block tables and lengths.
        let buffer = cache.layers.first().map(|l| Arc::as_ptr(&l.buffer) as *const () as usize);
        if graphs.cache != buffer {
            *graphs = StepGraphs { cache: buffer, by_bucket: HashMap::new() };
        }
        let batch = kv_lens.len();
        let g = match graphs.by_bucket.entry((batch, which)) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(entry) => {
                let graph = match self.capture_step(cache, batch, which) {
                    Ok(graph) => graph,
                    // Capture ran nothing: the step runs eagerly, and so do later ones.
                    Err(e) => {
                        tracing::warn!("capturing the decode step failed, decode runs eagerly: {e}");
                        self.graph_capture.store(false, Ordering::Relaxed);
                        return Ok(None);
                    }
                };
                tracing::debug!("decode step of batch {batch} captured as a graph ({} ops)", graph.ops);
                self.captures.fetch_add(1, Ordering::Relaxed);
                entry.insert(graph)
            }
        };
        let inputs =
            [(&g.ids, ids), (&g.positions, positions), (&g.kv_lens, kv_lens), (&g.block_table, block_table)];
        for (t, values) in inputs {
            e.stream.upload(&t.buffer, t.offset, bytemuck::cast_slice(values))?;
        }
        // Counted as launch time, as the ops inside would be eagerly (run time on the emulator, enqueue
        // time on a GPU).
        let start = std::time::Instant::now();
        g.graph.replay()?;
        e.stats.launch_ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        e.stats.launches.fetch_add(g.ops, Ordering::Relaxed);
        self.replays.fetch_add(1, Ordering::Relaxed);
        let logits = e.tmp(&g.logits.shape, g.logits.dtype)?;
        e.stream.copy(
            &g.logits.buffer,
            g.logits.offset,
            &logits.buffer,
            logits.offset,
            logits.span_bytes(),
        )?;
        self.sync_all()?;
        Ok(Some(logits))
    }

    /// Captures a decode step for `batch` sequences: nothing runs. Its inputs get buffers of their own,
    /// uploaded before each replay; if anything fails, the stream leaves capture mode and the error is
    /// returned.
    fn capture_step(&self, cache: &KvCache, batch: usize, which: Logits) -> Result<StepGraph> {
        let e = &self.execs[0];
        let zeros = vec![0i32; batch];
        let (ids, positions, kv_lens) = (e.upload_i32(&zeros)?, e.upload_i32(&zeros)?, e.upload_i32(&zeros)?);
        let table = vec![-1i32; batch * cache.pages_per_seq()];
        let block_table = e.upload_i32(&table)?.reshape(&[batch, cache.pages_per_seq()])?;
        let s = Step {
            execs: &self.execs,
            rows: batch,
            batch,
            t: 1,
            inputs: vec![DeviceInputs {
                positions: positions.clone(),
                kv_lens: kv_lens.clone(),
                block_table: block_table.clone(),
            }],
            routes: &self.routes,
        };
        let before = e.stats.launches.load(Ordering::Relaxed);
        e.stream.begin_capture()?;
        let body = self.body(&s, cache, &ids, which);
        // Ended whatever happened, so that a failed capture leaves the stream as it was.
        let graph = e.stream.end_capture();
        // Launches while capturing ran nothing; each replay counts them.
        let ops = e.stats.launches.load(Ordering::Relaxed) - before;
        e.stats.launches.fetch_sub(ops, Ordering::Relaxed);
        let logits = body?;
        Ok(StepGraph { graph: graph?, ids, positions, kv_lens, block_table, logits, ops })
    }
}
