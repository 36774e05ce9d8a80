//! The engine: one thread owns the model, the context cache and one batch latent cache of `--max-batch`
//! slots of up to `--context` tokens each over a pool of 64-token pages (`--kv-memory`), and runs the
//! requests with continuous batching.
//!
//! Every iteration: requests that arrived join the waiting line; up to `--prefill-chunk` prompt tokens are
//! prefilled, so a long prompt does not stall the running streams: the prompt being prefilled goes on,
//! and while tokens of the chunk are left, a slot is free and the pool has the pages the oldest waiting
//! request may take (its whole prompt and `max_tokens`, beside what the running ones may still take:
//! admission waits for pages, so no step runs out of them), that request takes the slot, its longest run
//! of cached units from token 0 restored into it (at least its last prompt token is left to prefill: the
//! first output token needs its logits), and its prompt is prefilled with what is left of the chunk —
//! several short prompts join in one iteration; then one decode step runs every decoding sequence together,
//! each sampling with its own temperature / top_p / seed, and each new token goes to its request. A
//! sequence ends at EOS, a stop string, `max_tokens`, a client that has gone (its event channel is
//! closed: checked every iteration), an error, or shutdown (finish reason `abort`); its slot is free for
//! the next iteration, and every whole unit of the tokens the model saw (prompt and output) is stored in
//! the context cache, and its units' pages stay in the latent cache pool as device units
//! (`device_units.rs`) until admission needs the pages.
//!
//! Slots and cache rows: the decoding sequences are slots `0..d` of the batch cache, so a decode step is
//! one forward pass over the view of those slots with each sequence's own length (no padding rows); the
//! sequence being prefilled, if any, is slot `d`. A finished sequence's slot is filled by moving the last
//! decoding sequence into it (and the prefilling one down after it): [`KvCache::move_slot`], which moves
//! that sequence's block table (the cache is paged), not its rows.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use dsv3_model::cache::{pages_for, KvCache};
use dsv3_model::generate::{sample_rows, Sampling};
use dsv3_model::graph::{Logits, Model};
use dsv3_model::tokenizer::{StreamDecoder, Tokenizer};
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{FinishReason, Usage};
use crate::device_units::DeviceUnits;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::prefix_cache::{unit_keys, Key, PrefixCache, Unit, UNIT_TOKENS};
use crate::stop::StopText;
use crate::validate::Generation;

/// What a request hears from the engine, in order: text pieces, then one `Done` or `Failed`.
#[derive(Debug)]
pub enum Event {
    Text(String),
    Done { finish: FinishReason, usage: Usage },
    Failed(ApiError),
}

pub struct Job {
    pub generation: Generation,
    pub events: UnboundedSender<Event>,
}

enum Msg {
    Job(Job),
    Stop,
}

/// The engine's sizes (`ServeOptions`' flags, checked).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Slots: sequences decoded together.
    pub max_batch: usize,
    /// Requests waiting for a slot; more are refused with 429.
    pub max_queue: usize,
    /// Tokens per slot (prompt and output): the context the server enforces.
    pub context: usize,
    /// Prompt tokens prefilled per iteration.
    pub prefill_chunk: usize,
    /// Pages of the latent cache's pool (at least one context's).
    pub kv_pages: usize,
}

/// A new sequence's cached prefix: whole units, and whether they came from the context cache (so they
/// need not be stored again) rather than a running sequence's pages.
struct Restored {
    units: usize,
    stored: bool,
}

/// How a sequence ended.
enum End {
    Finish(FinishReason),
    /// The client went away: nobody to tell.
    Gone,
    Failed(ApiError),
}

/// A request in a slot.
struct Seq<'t> {
    job: Job,
    /// Prompt tokens in the slot (restored units included); the prompt is being prefilled until all are.
    fed: usize,
    /// Prompt tokens restored (from the context cache or a running sequence's pages), and the units of
    /// them that the context cache holds already (not stored again).
    hit: usize,
    known: usize,
    out: Vec<u32>,
    decoder: StreamDecoder<'t>,
    stops: StopText,
    end: Option<End>,
}

impl Seq<'_> {
    fn decoding(&self) -> bool {
        self.fed == self.job.generation.prompt.len()
    }

    /// Takes the sequence's next token: streams its text and decides whether the sequence ends.
    fn take(&mut self, token: u32, eos: u32, stopping: bool) {
        self.out.push(token);
        if token == eos {
            self.end = Some(End::Finish(FinishReason::Stop));
            return;
        }
        let piece = match self.decoder.step(token) {
            Ok(piece) => piece,
            Err(e) => {
                self.end = Some(End::Failed(ApiError::internal(e.to_string())));
                return;
            }
        };
        let (text, stopped) = self.stops.push(&piece);
        if !text.is_empty() {
            // A failed send means the client has gone: seen at the next iteration.
            let _ = self.job.events.send(Event::Text(text));
        }
        self.end = if stopped {
            Some(End::Finish(FinishReason::Stop))
        } else if stopping {
            Some(End::Finish(FinishReason::Abort))
        } else if self.out.len() >= self.job.generation.max_new_tokens {
            Some(End::Finish(FinishReason::Length))
        } else {
            None
        };
    }

    /// The last event: the text held back, then `Done` (or `Failed`); `None` when the client has gone.
    fn last_event(mut self) -> Option<Event> {
        let mut finish = match self.end.take() {
            Some(End::Finish(finish)) => finish,
            Some(End::Failed(e)) => return Some(Event::Failed(e)),
            Some(End::Gone) | None => return None,
        };
        if finish != FinishReason::Stop {
            let (mut text, stopped) = match self.decoder.finish() {
                Ok(piece) => self.stops.push(&piece),
                Err(e) => return Some(Event::Failed(ApiError::internal(e.to_string()))),
            };
            if stopped {
                finish = FinishReason::Stop;
            } else {
                text.push_str(&self.stops.finish());
            }
            if !text.is_empty() {
                let _ = self.job.events.send(Event::Text(text));
            }
        }
        let usage = Usage::new(self.job.generation.prompt.len(), self.hit, self.out.len());
        Some(Event::Done { finish, usage })
    }
}

/// What the engine thread owns.
struct Worker {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    cache: PrefixCache,
    identity: Key,
    metrics: Arc<Metrics>,
    stopping: Arc<AtomicBool>,
    /// The batch latent cache: one slot per running sequence.
    kv: KvCache,
    /// Finished requests' units whose pages stay in `kv`'s pool.
    device: DeviceUnits,
    prefill_chunk: usize,
}

pub struct Engine {
    queue: Sender<Msg>,
    max_queue: usize,
    stopping: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Allocates the batch latent cache (`kv_pages` pages) and starts the engine thread.
    /// `identity` names the model in cache keys.
    pub fn start(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        cache: PrefixCache,
        identity: Key,
        metrics: Arc<Metrics>,
        limits: Limits,
    ) -> Result<Engine, crate::ServeError> {
        let kv = KvCache::with_pool(&model, limits.max_batch, limits.context, limits.kv_pages)?;
        metrics.kv_pages.set(limits.kv_pages as i64);
        let (queue, inbox) = channel();
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            model,
            tokenizer,
            cache,
            identity,
            metrics: metrics.clone(),
            stopping: stopping.clone(),
            kv,
            device: DeviceUnits::default(),
            prefill_chunk: limits.prefill_chunk,
        };
        let thread = std::thread::Builder::new()
            .name("dsv3-engine".into())
            .spawn(move || worker.run(inbox))
            .map_err(|source| crate::ServeError::Io { what: "starting the engine thread".into(), source })?;
        Ok(Engine { queue, max_queue: limits.max_queue, stopping, metrics, thread: Mutex::new(Some(thread)) })
    }

    /// Queues a request: 429 when `max_queue` requests wait for a slot already, 503 once shutting down.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        if self.is_stopping() {
            return Err(ApiError::shutting_down());
        }
        // `inc` returns the depth before: the check and the claim are one atomic step.
        if self.metrics.queue_depth.inc() >= self.max_queue as i64 {
            self.metrics.queue_depth.dec();
            return Err(ApiError::queue_full(self.max_queue));
        }
        self.queue.send(Msg::Job(job)).map_err(|_| {
            self.metrics.queue_depth.dec();
            ApiError::shutting_down()
        })
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Ends the running requests at their next token (finish reason `abort`) and refuses the rest.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// [`Engine::begin_shutdown`], then waits for the engine thread, which writes the memory cache to
    /// `--cache-dir` before it ends.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        let _ = self.queue.send(Msg::Stop);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("dsv3 serve: the engine thread panicked");
            }
        }
    }
}

impl Worker {
    fn run(mut self, inbox: Receiver<Msg>) {
        let tokenizer = self.tokenizer.clone();
        let eos = tokenizer.eos_id();
        let mut waiting: VecDeque<Job> = VecDeque::new();
        let mut running: Vec<Seq> = Vec::new();
        let mut open = true;
        while open || !running.is_empty() || !waiting.is_empty() {
            if open && running.is_empty() && waiting.is_empty() {
                match inbox.recv() {
                    Ok(Msg::Job(job)) => waiting.push_back(job),
                    Ok(Msg::Stop) | Err(_) => open = false,
                }
            }
            while open {
                match inbox.try_recv() {
                    Ok(Msg::Job(job)) => waiting.push_back(job),
                    Ok(Msg::Stop) | Err(TryRecvError::Disconnected) => open = false,
                    Err(TryRecvError::Empty) => break,
                }
            }
            let stopping = self.stopping.load(Ordering::SeqCst);
            self.drop_waiting(&mut waiting, stopping);
            for seq in running.iter_mut().filter(|s| s.end.is_none()) {
                if seq.job.events.is_closed() {
                    seq.end = Some(End::Gone);
                } else if stopping && !seq.decoding() {
                    seq.end = Some(End::Failed(ApiError::shutting_down()));
                }
            }
            self.retire(&mut running);

            let started = Instant::now();
            let mut stepped = false;
            let mut chunk = self.prefill_chunk;
            while chunk > 0 {
                let prefilling = running.last().is_some_and(|s| !s.decoding());
                if !prefilling {
                    if running.len() >= self.kv.batch() {
                        break;
                    }
                    let Some(wanted) = waiting.front().and_then(|job| self.room_for(job, &running)) else {
                        break;
                    };
                    let Some(job) = waiting.pop_front() else { break };
                    let keys = prefix_keys(&self.identity, &job.generation);
                    self.make_room(&keys, wanted);
                    self.metrics.queue_depth.dec();
                    let seq = self.admit(job, &keys, &running, &tokenizer);
                    running.push(seq);
                }
                let slot = running.len() - 1;
                if let Some(seq) = running.last_mut().filter(|s| s.end.is_none()) {
                    match self.prefill(seq, slot, eos, stopping, chunk) {
                        Ok(n) => chunk -= n,
                        Err(e) => seq.end = Some(End::Failed(ApiError::internal(e.to_string()))),
                    }
                    stepped = true;
                }
                // A sequence that failed to start or ended at its first token leaves now.
                if running.last().is_some_and(|s| s.end.is_some()) {
                    self.retire(&mut running);
                }
            }
            self.metrics.kv_pages_in_use.set(self.kv.pages_in_use().0 as i64);
            let d = running.iter().take_while(|s| s.decoding() && s.end.is_none()).count();
            if d > 0 {
                if let Err(e) = self.decode(&mut running[..d], eos, stopping) {
                    for seq in &mut running[..d] {
                        seq.end = Some(End::Failed(ApiError::internal(e.to_string())));
                    }
                }
                stepped = true;
            }
            if stepped {
                self.metrics.step_seconds.observe(started.elapsed().as_secs_f64());
            }
        }
        self.cache.flush();
    }

    /// Drops the waiting requests whose client has gone; at shutdown, refuses them all.
    fn drop_waiting(&self, waiting: &mut VecDeque<Job>, stopping: bool) {
        waiting.retain(|job| {
            let gone = job.events.is_closed();
            if gone || stopping {
                self.metrics.queue_depth.dec();
                if !gone {
                    let _ = job.events.send(Event::Failed(ApiError::shutting_down()));
                }
            }
            !gone && !stopping
        });
    }

    /// Puts `job` into the empty slot after the `running` ones with its cached prefix units (`keys`: its
    /// [`prefix_keys`]); a sequence that could not be set up comes back ended (failed), to be retired.
    fn admit<'t>(&mut self, job: Job, keys: &[Key], running: &[Seq], tokenizer: &'t Tokenizer) -> Seq<'t> {
        let slot = running.len();
        self.metrics.requests.inc();
        let g = &job.generation;
        self.metrics.prompt_tokens.inc_by(g.prompt.len() as u64);
        let stops = StopText::new(g.stop.clone());
        let mut seq = Seq {
            job,
            fed: 0,
            hit: 0,
            known: 0,
            out: Vec::new(),
            decoder: tokenizer.stream_decoder(),
            stops,
            end: None,
        };
        match self.restore(&seq.job.generation, keys, slot, running) {
            Ok(Restored { units, stored }) => {
                (seq.hit, seq.fed) = (units * UNIT_TOKENS, units * UNIT_TOKENS);
                seq.known = if stored { units } else { 0 };
                self.metrics.cache_hit_tokens.inc_by(seq.hit as u64);
            }
            Err(e) => seq.end = Some(End::Failed(ApiError::internal(e.to_string()))),
        }
        seq
    }

    /// Restores the longest run of cached units of `g`'s prompt (`keys`: its [`prefix_keys`]) into slot
    /// `slot`: the pages of a running sequence whose cache starts with them when none are longer (shared,
    /// nothing copied), else the device units' pages (shared too) followed by units of the context cache.
    fn restore(
        &mut self,
        g: &Generation,
        keys: &[Key],
        slot: usize,
        running: &[Seq],
    ) -> dsv3_core::Result<Restored> {
        self.kv.clear(slot);
        if g.prompt.is_empty() || g.prompt.len() + g.max_new_tokens > self.kv.capacity() {
            let why = format!(
                "{} prompt + {} new tokens do not fit a slot of {} (the context the server enforces)",
                g.prompt.len(),
                g.max_new_tokens,
                self.kv.capacity()
            );
            return Err(dsv3_core::Error::invalid("engine", "max_tokens", why));
        }
        let held = self.device.lookup(keys);
        if let Some((from, units)) = self.running_prefix(running, prefix(g)).filter(|&(_, u)| u > held.len())
        {
            self.kv.share_prefix(from, slot, units * UNIT_TOKENS)?;
            return Ok(Restored { units, stored: false });
        }
        self.kv.attach(slot, &held)?;
        let units = self.cache.lookup(&keys[held.len()..]);
        for unit in &units {
            if let Err(e) = self.kv.append_rows(&self.model, slot, &unit.layers) {
                self.kv.clear(slot);
                return Err(e);
            }
        }
        // Device units need not be in the context cache (it may have evicted them): they are not `stored`.
        Ok(Restored { units: held.len() + units.len(), stored: held.is_empty() })
    }

    /// The running sequence whose cached tokens share the most whole units with `tokens` from token 0, and
    /// how many (at least one).
    fn running_prefix(&self, running: &[Seq], tokens: &[u32]) -> Option<(usize, usize)> {
        let lens = self.kv.lens();
        let common = |(slot, seq): (usize, &Seq)| {
            let cached = seq.job.generation.prompt.iter().chain(&seq.out).take(lens[slot]);
            let n = cached.zip(tokens).take_while(|(a, b)| a == b).count();
            (slot, n / UNIT_TOKENS)
        };
        running.iter().enumerate().map(common).filter(|&(_, units)| units > 0).max_by_key(|&(_, units)| units)
    }

    /// The free pages the pool needs for `job` to start: those it may take (its whole prompt and output,
    /// none assumed shared) and those the `running` sequences may still take to reach theirs.
    fn pages_wanted(&self, job: &Job, running: &[Seq]) -> usize {
        let tokens = |g: &Generation| (g.prompt.len() + g.max_new_tokens).min(self.kv.capacity());
        let promised: usize = running
            .iter()
            .enumerate()
            .map(|(slot, seq)| self.kv.pages_to_grow(slot, tokens(&seq.job.generation)).unwrap_or(0))
            .sum();
        promised + pages_for(tokens(&job.generation))
    }

    /// The pages `job` wants ([`Self::pages_wanted`]) when the pool has them, counting those device units
    /// hold alone; `None` when it must wait.
    fn room_for(&self, job: &Job, running: &[Seq]) -> Option<usize> {
        let wanted = self.pages_wanted(job, running);
        (wanted <= self.kv.free_pages() + self.device.reclaimable(&self.kv)).then_some(wanted)
    }

    /// Frees `wanted` pages, releasing device units (those of the prefix `keys` last: they are marked used).
    fn make_room(&mut self, keys: &[Key], wanted: usize) {
        self.device.lookup(keys);
        self.device.reclaim(&mut self.kv, wanted);
    }

    /// Prefills the next at most `chunk` tokens of `seq`'s prompt into its slot (how many: the result);
    /// after the last of them, takes its first token.
    fn prefill(
        &mut self,
        seq: &mut Seq,
        slot: usize,
        eos: u32,
        stopping: bool,
        chunk: usize,
    ) -> dsv3_core::Result<usize> {
        let g = &seq.job.generation;
        let n = (g.prompt.len() - seq.fed).min(chunk);
        let mut view = self.kv.slot(slot)?;
        let logits = self.model.forward(&mut view, &g.prompt[seq.fed..seq.fed + n], n, Logits::Last)?;
        seq.fed += n;
        if seq.decoding() {
            let token = sample_rows(&self.model, &logits, &[(g.sampling, 0)])?[0];
            seq.take(token, eos, stopping);
        }
        Ok(n)
    }

    /// One decode step of the sequences in slots `0..running.len()`, each fed its last token.
    fn decode(&mut self, running: &mut [Seq], eos: u32, stopping: bool) -> dsv3_core::Result<()> {
        let last: Option<Vec<u32>> = running.iter().map(|s| s.out.last().copied()).collect();
        let tokens = last.ok_or_else(|| {
            dsv3_core::Error::invalid("engine", "decode", "a decoding sequence has no token yet")
        })?;
        let mut view = self.kv.slots(0..running.len())?;
        let logits = self.model.forward(&mut view, &tokens, 1, Logits::Last)?;
        // A sequence's j-th token is drawn at step j, as generating it alone would.
        let rows: Vec<(Sampling, usize)> =
            running.iter().map(|s| (s.job.generation.sampling, s.out.len())).collect();
        for (seq, token) in running.iter_mut().zip(sample_rows(&self.model, &logits, &rows)?) {
            seq.take(token, eos, stopping);
        }
        Ok(())
    }

    /// Ends the sequences that ended: stores their units, frees their slots (highest first, so that the
    /// sequences moved into freed slots are running ones) and sends their last events.
    fn retire(&mut self, running: &mut Vec<Seq>) {
        let mut last_events = Vec::new();
        for i in (0..running.len()).rev() {
            let Some(end) = &running[i].end else { continue };
            if !matches!(end, End::Failed(_)) {
                let seq = &running[i];
                let g = &seq.job.generation;
                let seen: Vec<u32> =
                    g.prompt.iter().chain(&seq.out).copied().take(self.kv.lens()[i]).collect();
                let keys = unit_keys(&self.identity, &seen);
                if let Err(e) = self.store(i, &keys, seq.known) {
                    tracing::warn!("dsv3 serve: storing a finished request's cache units failed: {e}");
                }
                if let Err(e) = self.device.keep(&mut self.kv, i, &keys) {
                    tracing::warn!(
                        "dsv3 serve: keeping a finished request's units on the device failed: {e}"
                    );
                }
            }
            let seq = self.vacate(running, i);
            self.metrics.completion_tokens.inc_by(seq.out.len() as u64);
            let events = seq.job.events.clone();
            last_events.extend(seq.last_event().map(|event| (events, event)));
        }
        // The metrics are true before anyone hears that their request is done.
        let decoding = running.iter().filter(|s| s.decoding()).count();
        self.metrics.batch_size.set(decoding as i64);
        self.metrics.kv_pages_in_use.set(self.kv.pages_in_use().0 as i64);
        for (events, event) in last_events {
            // The client may have gone meanwhile; nothing to tell then.
            let _ = events.send(event);
        }
    }

    /// Takes sequence `i` out of `running` and its slot, keeping the slots dense: decoding sequences
    /// first, the prefilling one (if any) last.
    fn vacate<'t>(&mut self, running: &mut Vec<Seq<'t>>, i: usize) -> Seq<'t> {
        let last = running.len() - 1;
        let seq = if i != last && !running[last].decoding() {
            // The last decoding sequence fills the hole, the prefilling one takes its slot.
            let prefilling = running.remove(last);
            let seq = running.swap_remove(i);
            running.push(prefilling);
            self.shift(running, last - 1, i);
            self.shift(running, last, last - 1);
            seq
        } else {
            let seq = running.swap_remove(i);
            self.shift(running, last, i);
            seq
        };
        self.kv.clear(last);
        seq
    }

    /// Moves the cache of slot `from` (its block table) to slot `to`, where `running` now has their
    /// sequence; a failed move ends that sequence.
    fn shift(&mut self, running: &mut [Seq], from: usize, to: usize) {
        if from != to {
            if let Err(e) = self.kv.move_slot(from, to) {
                running[to].end = Some(End::Failed(ApiError::internal(e.to_string())));
            }
        }
    }

    /// Stores the whole units of slot `slot` (`keys`, in order) past the first `known` (looked up).
    fn store(&mut self, slot: usize, keys: &[Key], known: usize) -> dsv3_core::Result<()> {
        for (i, key) in keys.iter().copied().enumerate().skip(known) {
            if !self.cache.refresh(&key) {
                let layers =
                    self.kv.export_rows(&self.model, slot, i * UNIT_TOKENS..(i + 1) * UNIT_TOKENS)?;
                self.cache.insert(key, Unit { layers });
            }
        }
        self.metrics.cache_memory_bytes.set(self.cache.memory_bytes() as i64);
        Ok(())
    }
}

/// The prompt tokens whose whole units a request may find cached: all but the last, which is fed to
/// produce the first logits.
fn prefix(g: &Generation) -> &[u32] {
    &g.prompt[..g.prompt.len().saturating_sub(1)]
}

/// The keys of the whole units of `g`'s [`prefix`], computed once per admission.
fn prefix_keys(identity: &Key, g: &Generation) -> Vec<Key> {
    unit_keys(identity, prefix(g))
}
