//! `dsv3 serve`'s engine (continuous batching) under concurrent streams on the CPU, on a full-width
//! DeepSeek-V2-Lite shape cut to 2 layers (1 dense + 1 MoE layer with 64 experts, bf16, random weights),
//! driven in process without HTTP. Not a criterion bench: it prints its measurements.
//!
//! 1. Aggregate decode tok/s with 1, 4 and 16 concurrent streams: each stream a 1-token prompt and
//!    `DECODE` new tokens; all tokens over the time from the first submission to the last stream's end.
//! 2. Inter-token latency of 4 running streams while a 4096-token prompt is admitted, for several
//!    `--prefill-chunk` sizes (4096: the prompt in one pass, which stalls the streams): p50 and p99 of the
//!    gaps between consecutive text events of the running streams that overlap the time from the long
//!    prompt's submission to its first token.
//! 3. Time to first token of a 2048-token prompt whose first 1984 tokens (31 whole units) the context
//!    cache holds, against the same prompt cold (each prompt prefilled in one pass, one new token; a
//!    warm-up request first, so neither pays for filling the workspace).
//!
//! `cargo bench -p dsv3-benches --bench serve`; `DSV3_BENCH_SERVE_PARTS=aggregate,admission,ttft` picks
//! the parts, `DSV3_BENCH_SERVE_CHUNKS=64,256` the chunk sizes of part 2.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::Backend;
use dsv3_model::builtin::Builtin;
use dsv3_model::cache::pages_for;
use dsv3_model::config::ModelConfig;
use dsv3_model::generate::Sampling;
use dsv3_model::graph::{Model, NumericPath};
use dsv3_model::tokenizer::Tokenizer;
use dsv3_server::engine::{Engine, Event, Job, Limits};
use dsv3_server::metrics::Metrics;
use dsv3_server::prefix_cache::PrefixCache;
use dsv3_server::validate::Generation;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const DECODE: usize = 32;
const LONG_PROMPT: usize = 4096;

fn v2_lite_two_layers() -> Arc<Model> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/configs");
    let text = std::fs::read_to_string(dir.join("deepseek-v2-lite.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["num_hidden_layers"] = 2.into();
    let cfg = ModelConfig::from_json(&json.to_string(), "deepseek-v2-lite.json (2 layers)").unwrap();
    let source = Builtin::with_config(cfg.clone(), 1);
    let device = CpuBackend::new(Mode::Fast).open(0).unwrap();
    Arc::new(Model::load(cfg, &source, device, NumericPath::Bf16, |_| {}).unwrap())
}

/// An engine with no context cache (every prompt is computed), `max_batch` 16.
fn engine(model: &Arc<Model>, tokenizer: &Arc<Tokenizer>, prefill_chunk: usize) -> Engine {
    engine_with_cache(model, tokenizer, prefill_chunk, 0)
}

/// An engine whose context cache keeps `cache_bytes` of units in memory.
fn engine_with_cache(
    model: &Arc<Model>,
    tokenizer: &Arc<Tokenizer>,
    prefill_chunk: usize,
    cache_bytes: usize,
) -> Engine {
    let context = LONG_PROMPT + 256;
    let kv_pages = 16 * pages_for(context);
    let limits = Limits { max_batch: 16, max_queue: 64, context, prefill_chunk, kv_pages };
    let cache = PrefixCache::new(cache_bytes, None);
    Engine::start(model.clone(), tokenizer.clone(), cache, [0; 32], Arc::new(Metrics::default()), limits)
        .unwrap()
}

fn submit(engine: &Engine, prompt: Vec<u32>, max_new_tokens: usize) -> UnboundedReceiver<Event> {
    let (events, rx) = unbounded_channel();
    let sampling = Sampling { temperature: 0.0, top_p: 1.0, seed: 0 };
    let generation = Generation { prompt, max_new_tokens, sampling, stop: Vec::new() };
    engine.submit(Job { generation, events }).unwrap();
    rx
}

/// Each stream's text events' arrival times, and its completion tokens, until it ends.
fn follow(mut rx: UnboundedReceiver<Event>) -> std::thread::JoinHandle<(Vec<Instant>, usize)> {
    std::thread::spawn(move || {
        let mut times = Vec::new();
        while let Some(event) = rx.blocking_recv() {
            match event {
                Event::Text(_) => times.push(Instant::now()),
                Event::Done { usage, .. } => return (times, usage.completion_tokens),
                Event::Failed(e) => panic!("{e:?}"),
            }
        }
        panic!("the engine went away")
    })
}

fn aggregate(model: &Arc<Model>, tokenizer: &Arc<Tokenizer>) {
    let engine = engine(model, tokenizer, 256);
    // Warm-up: the workspace's buffers for every batch size.
    let warm: Vec<_> = (0..16).map(|i| follow(submit(&engine, vec![3 + i], 4))).collect();
    warm.into_iter().for_each(|h| drop(h.join().unwrap()));
    let mut one = None;
    for streams in [1u32, 4, 16] {
        let start = Instant::now();
        let handles: Vec<_> =
            (0..streams).map(|i| follow(submit(&engine, vec![100 + i * 7], DECODE))).collect();
        let tokens: usize = handles.into_iter().map(|h| h.join().unwrap().1).sum();
        let tok_s = tokens as f64 / start.elapsed().as_secs_f64();
        let speedup = tok_s / *one.get_or_insert(tok_s);
        println!(
            "{streams:>2} streams: {tokens} tokens, {tok_s:.1} tok/s aggregate ({speedup:.2}× one stream)"
        );
    }
    engine.shutdown();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn admission(model: &Arc<Model>, tokenizer: &Arc<Tokenizer>, chunk: usize) {
    let engine = engine(model, tokenizer, chunk);
    let running: Vec<_> = (0..4).map(|i| submit(&engine, vec![200 + i], 4000)).collect();
    let mut running: Vec<_> = running.into_iter().map(follow_until_dropped).collect();
    std::thread::sleep(Duration::from_secs(2));
    let prompt: Vec<u32> = (0..LONG_PROMPT as u32).map(|i| 1000 + (i * 7919) % 90000).collect();
    let submitted = Instant::now();
    let (first_token, _) = follow(submit(&engine, prompt, 1)).join().unwrap();
    let admitted = first_token.first().copied().unwrap_or_else(Instant::now);
    let mut gaps = Vec::new();
    for stream in &mut running {
        let times = stream.stop();
        // Gaps that overlap the admission: ending after the submission, starting before the first token.
        let overlapping = times.windows(2).filter(|w| w[1] >= submitted && w[0] <= admitted);
        gaps.extend(overlapping.map(|w| (w[1] - w[0]).as_secs_f64() * 1e3));
    }
    if gaps.len() < 2 {
        println!("prefill chunk {chunk:>4}: too few tokens of the running streams to time ({})", gaps.len());
        return engine.shutdown();
    }
    gaps.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&gaps, 0.5), percentile(&gaps, 0.99));
    println!(
        "prefill chunk {chunk:>4}: a {LONG_PROMPT}-token prompt admitted in {:.2} s beside 4 streams; their \
         inter-token p50 {p50:.1} ms, p99 {p99:.1} ms ({:.2}× p50) over {} gaps",
        (admitted - submitted).as_secs_f64(),
        p99 / p50,
        gaps.len()
    );
    engine.shutdown();
}

/// A running stream whose text events are timed until [`Follower::stop`] drops it (the client goes away).
struct Follower {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<std::thread::JoinHandle<Vec<Instant>>>,
}

impl Follower {
    fn stop(&mut self) -> Vec<Instant> {
        drop(self.stop.take());
        self.handle.take().map(|h| h.join().unwrap()).unwrap_or_default()
    }
}

fn follow_until_dropped(mut rx: UnboundedReceiver<Event>) -> Follower {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::spawn(move || {
        let mut times = Vec::new();
        loop {
            if stopped.try_recv() != Err(tokio::sync::oneshot::error::TryRecvError::Empty) {
                return times;
            }
            match rx.try_recv() {
                Ok(Event::Text(_)) => times.push(Instant::now()),
                Ok(_) => return times,
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    std::thread::sleep(Duration::from_micros(200))
                }
                Err(_) => return times,
            }
        }
    });
    Follower { stop: Some(stop), handle: Some(handle) }
}

/// Seconds from submitting `prompt` (one new token) to its first event, and its cache-hit tokens.
fn first_token(engine: &Engine, prompt: Vec<u32>) -> (f64, usize) {
    let start = Instant::now();
    let mut rx = submit(engine, prompt, 1);
    let mut first = None;
    while let Some(event) = rx.blocking_recv() {
        first.get_or_insert_with(|| start.elapsed().as_secs_f64());
        match event {
            Event::Text(_) => {}
            Event::Done { usage, .. } => return (first.unwrap_or_default(), usage.prompt_cache_hit_tokens),
            Event::Failed(e) => panic!("{e:?}"),
        }
    }
    panic!("the engine went away")
}

fn ttft(model: &Arc<Model>, tokenizer: &Arc<Tokenizer>) {
    const PROMPT: usize = 2048;
    const CACHED: usize = 1984;
    let engine = engine_with_cache(model, tokenizer, PROMPT, 4 << 30);
    let prompt = |salt: u32, shared: usize| -> Vec<u32> {
        (0..PROMPT as u32)
            .map(|i| if (i as usize) < shared { 1000 + i * 7 } else { 50_000 + i * 3 + salt })
            .collect()
    };
    first_token(&engine, prompt(1, 0)); // warm-up
    let (cold, cold_hit) = first_token(&engine, prompt(2, CACHED));
    let (warm, warm_hit) = first_token(&engine, prompt(3, CACHED));
    println!(
        "time to first token, {PROMPT}-token prompt: cold {cold:.3} s ({cold_hit} hit tokens), with a cached {CACHED}-token prefix {warm:.3} s ({warm_hit} hit tokens): {:.1} % of cold",
        100.0 * warm / cold
    );
    engine.shutdown();
}

fn main() {
    let model = v2_lite_two_layers();
    let tokenizer = Arc::new(Tokenizer::builtin().unwrap());
    let parts = std::env::var("DSV3_BENCH_SERVE_PARTS").unwrap_or_else(|_| "aggregate,admission,ttft".into());
    let parts: Vec<&str> = parts.split(',').map(str::trim).collect();
    if parts.contains(&"aggregate") {
        println!("v2-lite-2-layers bf16 on the CPU, random weights; decode of {DECODE} tokens per stream:");
        aggregate(&model, &tokenizer);
    }
    if parts.contains(&"admission") {
        let chunks = std::env::var("DSV3_BENCH_SERVE_CHUNKS").unwrap_or_else(|_| "4096,256,64".into());
        for chunk in chunks.split(',').map(|c| c.trim().parse().unwrap()) {
            admission(&model, &tokenizer, chunk);
        }
    }
    if parts.contains(&"ttft") {
        ttft(&model, &tokenizer);
    }
}
