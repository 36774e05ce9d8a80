//! `dsv3 serve`: a model behind an OpenAI-compatible HTTP API with DeepSeek's context caching (the
//! `dsv3-server` crate); this module loads the model as `generate` does and hands it over.

use std::path::PathBuf;

use dsv3_server::ServeOptions;

use crate::cli::{number, Checked, TEXT};
use crate::finish;
use crate::model_cmd::{self, DeviceArgs, ModelSource, PathChoice, PATH};

/// Serve a model over an OpenAI-compatible HTTP API, with DeepSeek's context caching
///
/// POST /v1/chat/completions (streaming with "stream": true), POST /v1/completions, GET /v1/models,
/// GET /health, GET /metrics (Prometheus). `usage` reports prompt_cache_hit_tokens /
/// prompt_cache_miss_tokens: the latent cache of finished requests is kept in 64-token units and a request
/// reuses the longest stored run of them from token 0. Up to --max-batch requests decode together
/// (continuous batching: requests join and leave between decode steps, prompts prefill in chunks of
/// --prefill-chunk tokens between them). Stops on SIGINT / SIGTERM (running requests end with a final
/// event; the cache goes to --cache-dir).
#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint directory (HF layout, with its tokenizer); without it the small built-in model
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// fast, bf16, w8a8 or f32 (as for generate)
    #[arg(long, default_value = "fast", value_parser = PATH)]
    path: PathChoice,
    /// The address to listen on
    #[arg(long, default_value = "127.0.0.1", value_parser = TEXT)]
    host: String,
    #[arg(long, default_value = "8000", value_parser = PORT)]
    port: u16,
    /// Sequences decoded together: slots of the latent cache
    #[arg(long, value_name = "N", default_value = "16", value_parser = MAX_BATCH)]
    max_batch: usize,
    /// Tokens per request, prompt and output (at most the model's context)
    /// [default: 8192, or the model's context when shorter]
    #[arg(long, value_name = "TOKENS", value_parser = CONTEXT)]
    context: Option<usize>,
    /// Bytes of the latent cache's pool of 64-token pages on the attention devices, at least one context's
    /// (64 × /health's bytes_per_cached_token per page); a request waits until the pool has the pages its
    /// prompt and max_tokens may take [default: every slot's context, max-batch × context tokens]
    #[arg(long, value_name = "BYTES", value_parser = COUNT)]
    kv_memory: Option<usize>,
    /// Prompt tokens prefilled per step, between decode steps of the running requests
    #[arg(long, value_name = "TOKENS", default_value = "256", value_parser = PREFILL_CHUNK)]
    prefill_chunk: usize,
    /// Requests waiting for a slot; more are refused with 429
    #[arg(long, value_name = "N", default_value = "64", value_parser = COUNT)]
    max_queue: usize,
    /// Where context-cache units evicted from memory go, found again after a restart
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Bytes of context-cache units kept in host memory
    #[arg(long, value_name = "BYTES", default_value = "1073741824", value_parser = COUNT)]
    cache_memory: usize,
    /// When set, /v1 requests need `Authorization: Bearer KEY`
    #[arg(long, value_name = "KEY", value_parser = TEXT)]
    api_key: Option<String>,
}

const PORT: Checked<u16> = Checked(|s| number("--port", s));
const COUNT: Checked<usize> = Checked(|s| number("a count", s));
const DEFAULT_CONTEXT: usize = 8192;
const MAX_BATCH: Checked<usize> = Checked(|s| at_least_one("--max-batch", s));
const CONTEXT: Checked<usize> = Checked(|s| at_least_one("--context", s));
const PREFILL_CHUNK: Checked<usize> = Checked(|s| at_least_one("--prefill-chunk", s));

fn at_least_one(flag: &str, s: &str) -> Result<usize, String> {
    match number(flag, s)? {
        0 => Err(format!("{flag} 0: must be at least 1")),
        n => Ok(n),
    }
}

pub fn run(args: Args) -> i32 {
    finish("serve", try_run(args).map(|()| 0))
}

fn try_run(args: Args) -> Result<(), String> {
    let mut place = args.device.placement()?;
    let source = match &args.model {
        Some(dir) => ModelSource::Checkpoint(dir),
        None => ModelSource::Builtin,
    };
    let loaded = model_cmd::load(source, &mut place, args.path)?;
    let tokenizer =
        loaded.tokenizer.ok_or("this checkpoint has no tokenizer.json: serving reads and writes text")?;
    // Clients name the model by its directory; the name also keys the context cache.
    let name = match &args.model {
        Some(dir) => dir
            .canonicalize()
            .unwrap_or(dir.clone())
            .file_name()
            .map_or_else(|| "dsv3-model".to_string(), |n| n.to_string_lossy().into_owned()),
        None => "dsv3-builtin".to_string(),
    };
    let options = ServeOptions {
        host: args.host,
        port: args.port,
        model: name,
        max_batch: args.max_batch,
        max_queue: args.max_queue,
        context: args.context.unwrap_or(DEFAULT_CONTEXT.min(loaded.model.config.max_position_embeddings)),
        kv_memory: args.kv_memory,
        prefill_chunk: args.prefill_chunk,
        cache_dir: args.cache_dir,
        cache_memory: args.cache_memory,
        api_key: args.api_key,
    };
    dsv3_server::serve(options, loaded.model, tokenizer).map_err(|e| e.to_string())
}
