//! The engine: one thread owns the model and the context cache and runs the queued requests one after
//! another (batch 1: the model's decode batch has one shape for its whole run, so requests cannot join
//! and leave it between steps yet; continuous batching comes with a paged latent cache).
//!
//! A request's prompt reuses the longest run of cached units from token 0, leaving at least its last
//! token to prefill (the first output token needs its logits). Generation stops at EOS, a stop string,
//! `max_tokens`, when the client has gone (its event channel is closed: checked at every token), or at
//! shutdown (the request then ends with finish reason `abort`). Afterwards every whole unit of the tokens
//! the model saw (prompt and output) is stored.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use dsv3_model::cache::KvCache;
use dsv3_model::generate::{generate_cached, Request};
use dsv3_model::graph::Model;
use dsv3_model::tokenizer::Tokenizer;
use tokio::sync::mpsc::UnboundedSender;

use crate::api::{FinishReason, Usage};
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

/// What the engine thread owns.
struct Worker {
    model: Arc<Model>,
    tokenizer: Arc<Tokenizer>,
    cache: PrefixCache,
    identity: Key,
    metrics: Arc<Metrics>,
    stopping: Arc<AtomicBool>,
}

pub struct Engine {
    queue: SyncSender<Msg>,
    max_queue: usize,
    stopping: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Starts the engine thread with room for `max_queue` waiting requests. `identity` names the model in
    /// cache keys.
    pub fn start(
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
        cache: PrefixCache,
        identity: Key,
        metrics: Arc<Metrics>,
        max_queue: usize,
    ) -> std::io::Result<Engine> {
        let (queue, inbox) = sync_channel(max_queue);
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = Worker {
            model,
            tokenizer,
            cache,
            identity,
            metrics: metrics.clone(),
            stopping: stopping.clone(),
        };
        let thread =
            std::thread::Builder::new().name("dsv3-engine".into()).spawn(move || worker.run(inbox))?;
        Ok(Engine { queue, max_queue, stopping, metrics, thread: Mutex::new(Some(thread)) })
    }

    /// Queues a request: 429 when the queue is full, 503 once shutting down.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        if self.is_stopping() {
            return Err(ApiError::shutting_down());
        }
        self.metrics.queue_depth.inc();
        self.queue.try_send(Msg::Job(job)).map_err(|e| {
            self.metrics.queue_depth.dec();
            match e {
                TrySendError::Full(_) => ApiError::queue_full(self.max_queue),
                TrySendError::Disconnected(_) => ApiError::shutting_down(),
            }
        })
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Ends the running request at its next token (finish reason `abort`) and refuses the rest.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::SeqCst);
    }

    /// [`Engine::begin_shutdown`], then waits for the engine thread, which writes the memory cache to
    /// `--cache-dir` before it ends.
    pub fn shutdown(&self) {
        self.begin_shutdown();
        // Blocks only while the queue is full, which the stopping engine drains at once.
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
        while let Ok(Msg::Job(job)) = inbox.recv() {
            self.metrics.queue_depth.dec();
            let event = if self.stopping.load(Ordering::SeqCst) {
                Event::Failed(ApiError::shutting_down())
            } else {
                self.metrics.requests.inc();
                self.generate(&job).unwrap_or_else(|e| Event::Failed(ApiError::internal(e.to_string())))
            };
            // The client may have gone; nothing to tell then.
            let _ = job.events.send(event);
        }
        self.cache.flush();
    }

    /// Runs one request, sending its text as it comes; returns its last event.
    fn generate(&mut self, job: &Job) -> dsv3_core::Result<Event> {
        let (g, model) = (&job.generation, self.model.clone());
        let keys = unit_keys(&self.identity, &g.prompt[..g.prompt.len() - 1]);
        let units = self.cache.lookup(&keys);
        let hit = units.len() * UNIT_TOKENS;
        let mut kv = KvCache::new(&model, 1, g.prompt.len() + g.max_new_tokens)?;
        for unit in &units {
            kv.append_rows(&model, 0, &unit.layers)?;
        }
        self.metrics.prompt_tokens.inc_by(g.prompt.len() as u64);
        self.metrics.cache_hit_tokens.inc_by(hit as u64);

        let eos = self.tokenizer.eos_id();
        let request = Request { max_new_tokens: g.max_new_tokens, sampling: g.sampling, stop: vec![eos] };
        let mut decoder = self.tokenizer.stream_decoder();
        let mut stops = StopText::new(g.stop.clone());
        let mut finish = FinishReason::Length;
        let mut last = Instant::now();
        let rest = vec![g.prompt[hit..].to_vec()];
        let out = generate_cached(&model, &mut kv, &rest, &request, |_, token| {
            self.metrics.step_seconds.observe(last.elapsed().as_secs_f64());
            last = Instant::now();
            if token == eos {
                finish = FinishReason::Stop;
                return Ok(false);
            }
            let (text, stopped) = stops.push(&decoder.step(token)?);
            if !text.is_empty() {
                // A failed send means the client has gone: caught just below.
                let _ = job.events.send(Event::Text(text));
            }
            if stopped {
                finish = FinishReason::Stop;
                return Ok(false);
            }
            if self.stopping.load(Ordering::SeqCst) {
                finish = FinishReason::Abort;
                return Ok(false);
            }
            Ok(!job.events.is_closed())
        })?;
        if finish != FinishReason::Stop {
            let (mut text, stopped) = stops.push(&decoder.finish()?);
            if stopped {
                finish = FinishReason::Stop;
            } else {
                text.push_str(&stops.finish());
            }
            if !text.is_empty() {
                let _ = job.events.send(Event::Text(text));
            }
        }
        let completion = out.tokens[0].len();
        self.metrics.completion_tokens.inc_by(completion as u64);

        let seen: Vec<u32> = g.prompt.iter().chain(&out.tokens[0]).copied().take(kv.lens()[0]).collect();
        self.store(&kv, &seen, units.len())?;
        Ok(Event::Done { finish, usage: Usage::new(g.prompt.len(), hit, completion) })
    }

    /// Stores the whole units of `seen` (the tokens in `kv`) past the first `known` (just looked up).
    fn store(&mut self, kv: &KvCache, seen: &[u32], known: usize) -> dsv3_core::Result<()> {
        for (i, key) in unit_keys(&self.identity, seen).into_iter().enumerate().skip(known) {
            if !self.cache.refresh(&key) {
                let layers = kv.export_rows(&self.model, 0, i * UNIT_TOKENS..(i + 1) * UNIT_TOKENS)?;
                self.cache.insert(key, Unit { layers });
            }
        }
        self.metrics.cache_memory_bytes.set(self.cache.memory_bytes() as i64);
        Ok(())
    }
}
