//! `GET /metrics`: Prometheus text, kept and encoded by `prometheus-client`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub struct Metrics {
    registry: Registry,
    /// Requests the engine took (accepted past validation and the queue).
    pub requests: Counter,
    /// Requests refused with an error status (bad input, a full queue, shutdown).
    pub refused: Counter,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
    pub cache_hit_tokens: Counter,
    /// Requests waiting for a slot.
    pub queue_depth: Gauge,
    /// Sequences decoding: the next decode step's batch (0 when idle).
    pub batch_size: Gauge,
    pub cache_memory_bytes: Gauge,
    /// Pages of the latent cache's pool that sequences hold, and the pool's size.
    pub kv_pages_in_use: Gauge,
    pub kv_pages: Gauge,
    /// Seconds per engine step: a decode step of the running batch, with the prefill chunk run before it.
    pub step_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("dsv3"),
            requests: Counter::default(),
            refused: Counter::default(),
            prompt_tokens: Counter::default(),
            completion_tokens: Counter::default(),
            cache_hit_tokens: Counter::default(),
            queue_depth: Gauge::default(),
            batch_size: Gauge::default(),
            cache_memory_bytes: Gauge::default(),
            kv_pages_in_use: Gauge::default(),
            kv_pages: Gauge::default(),
            step_seconds: Histogram::new(exponential_buckets(0.000_5, 2.0, 16)),
        };
        let r = &mut m.registry;
        r.register("requests", "Generation requests accepted", m.requests.clone());
        r.register("refused_requests", "Requests answered with an error status", m.refused.clone());
        r.register("prompt_tokens", "Prompt tokens of accepted requests", m.prompt_tokens.clone());
        r.register("completion_tokens", "Tokens generated", m.completion_tokens.clone());
        r.register(
            "prompt_cache_hit_tokens",
            "Prompt tokens served from the context cache",
            m.cache_hit_tokens.clone(),
        );
        r.register("queue_depth", "Requests waiting for a slot", m.queue_depth.clone());
        r.register("batch_size", "Sequences decoding together", m.batch_size.clone());
        r.register(
            "cache_memory_bytes",
            "Bytes of context-cache units in memory",
            m.cache_memory_bytes.clone(),
        );
        r.register(
            "kv_pages_in_use",
            "Pages of the latent cache pool held by sequences",
            m.kv_pages_in_use.clone(),
        );
        r.register("kv_pages", "Pages of the latent cache pool (64 tokens each)", m.kv_pages.clone());
        r.register(
            "step_seconds",
            "Time per engine step (a decode step of the running batch and the prompt chunks before it)",
            m.step_seconds.clone(),
        );
        m
    }
}

impl Metrics {
    pub fn text(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}
