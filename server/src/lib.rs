//! dsv3-server: `dsv3 serve`, an OpenAI-compatible HTTP server (axum on tokio) over a loaded model, with
//! DeepSeek's context caching.
//!
//! One file per concern: [`api`] (wire types), [`validate`] (request checks), [`error`] (OpenAI error
//! objects), [`http`] (routes and responses), [`engine`] (the thread that owns the model), [`stop`]
//! (stop strings), [`prefix_cache`] (the 64-token units in memory), [`disk_store`] (units on disk),
//! [`metrics`] (Prometheus).
//!
//! The CLI fills a [`ServeOptions`] and calls [`serve`]; tests build an [`App`], serve its
//! [`App::router`] on a port of their own, and [`App::shutdown`] it.

pub mod api;
pub mod device_units;
pub mod disk_store;
pub mod engine;
pub mod error;
pub mod http;
pub mod metrics;
pub mod prefix_cache;
pub mod stop;
pub mod validate;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use dsv3_model::cache::{pages_for, KvCache, PAGE};
use dsv3_model::graph::Model;
use dsv3_model::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};

use crate::disk_store::DiskStore;
use crate::engine::{Engine, Limits};
use crate::http::AppState;
use crate::metrics::Metrics;
use crate::prefix_cache::{Key, PrefixCache, UNIT_TOKENS};

/// `dsv3 serve`'s flags (the model itself is loaded by the CLI from `--model/--backend/--place/--path`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// `--host`: the address to listen on.
    pub host: String,
    /// `--port`.
    pub port: u16,
    /// The model id clients name in requests and `/v1/models` lists (the CLI: the `--model` directory's
    /// name, or `dsv3-builtin`). It also keys the context cache, with the model's config and numerics:
    /// weights replaced under the same name and config need a fresh `--cache-dir`.
    pub model: String,
    /// `--max-batch`: sequences decoded together (slots of the batch latent cache).
    pub max_batch: usize,
    /// `--max-queue`: requests waiting for a slot; more are refused with 429.
    pub max_queue: usize,
    /// `--context`: tokens per request, prompt and output (at most the model's
    /// `max_position_embeddings`).
    pub context: usize,
    /// `--kv-memory`: bytes of the latent cache's page pool on the attention devices (whole 64-token pages,
    /// at least one context's); `None`: `max_batch × context` tokens' worth, so every slot can fill its
    /// context. A smaller pool lets more short requests run at once: a request is admitted when the pool
    /// has the pages its prompt and `max_tokens` may take, and waits otherwise.
    pub kv_memory: Option<usize>,
    /// `--prefill-chunk`: prompt tokens prefilled per engine iteration, between decode steps.
    pub prefill_chunk: usize,
    /// `--cache-dir`: where evicted context-cache units go, and are found again after a restart.
    pub cache_dir: Option<PathBuf>,
    /// `--cache-memory`: bytes of context-cache units kept in host memory.
    pub cache_memory: usize,
    /// `--api-key`: when set, `/v1` requests need `Authorization: Bearer KEY`.
    pub api_key: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8000,
            model: "dsv3-builtin".into(),
            max_batch: 16,
            max_queue: 64,
            context: 8192,
            kv_memory: None,
            prefill_chunk: 256,
            cache_dir: None,
            cache_memory: 1 << 30,
            api_key: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("--{flag}: {reason}")]
    Option { flag: &'static str, reason: String },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error(transparent)]
    Model(#[from] dsv3_core::Error),
}

/// A running server's state: the engine thread and what the routes share (cloning shares it).
#[derive(Clone)]
pub struct App {
    state: Arc<AppState>,
}

impl App {
    /// Starts the engine over `model`; nothing listens yet (see [`App::router`], [`serve`]).
    pub fn new(
        options: &ServeOptions,
        model: Arc<Model>,
        tokenizer: Arc<Tokenizer>,
    ) -> Result<App, ServeError> {
        let counts = [
            ("max-batch", options.max_batch),
            ("max-queue", options.max_queue),
            ("context", options.context),
            ("prefill-chunk", options.prefill_chunk),
        ];
        if let Some(&(flag, _)) = counts.iter().find(|(_, n)| *n == 0) {
            return Err(ServeError::Option { flag, reason: "must be at least 1".into() });
        }
        let limit = model.config.max_position_embeddings;
        if options.context > limit {
            let reason = format!("{} exceeds the model's max_position_embeddings {limit}", options.context);
            return Err(ServeError::Option { flag: "context", reason });
        }
        let identity = model_identity(&options.model, &model);
        // One token's latent rows, all layers, as the cache stores them.
        let bytes_per_token = KvCache::new(&model, 1, 1)?.bytes_per_token();
        if options
            .max_batch
            .checked_mul(options.context)
            .and_then(|n| n.checked_mul(bytes_per_token))
            .is_none()
        {
            let reason = format!(
                "{} slots of {} tokens: more bytes than can be counted",
                options.max_batch, options.context
            );
            return Err(ServeError::Option { flag: "max-batch", reason });
        }
        let kv_pages = kv_pages(options, bytes_per_token)?;
        let layers = model.config.num_hidden_layers;
        let disk = match &options.cache_dir {
            Some(dir) => Some(
                DiskStore::open(dir, identity, layers, UNIT_TOKENS * bytes_per_token / layers.max(1))
                    .map_err(|source| ServeError::Io {
                        what: format!("--cache-dir {}", dir.display()),
                        source,
                    })?,
            ),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let cache = PrefixCache::new(options.cache_memory, disk);
        let limits = Limits {
            max_batch: options.max_batch,
            max_queue: options.max_queue,
            context: options.context,
            prefill_chunk: options.prefill_chunk,
            kv_pages,
        };
        let engine =
            Engine::start(model.clone(), tokenizer.clone(), cache, identity, metrics.clone(), limits)?;
        let state = AppState {
            engine,
            tokenizer,
            metrics,
            model: options.model.clone(),
            context: options.context,
            vocab: model.config.vocab_size,
            api_key: options.api_key.clone(),
            bytes_per_cached_token: bytes_per_token,
            max_batch: options.max_batch,
            started: http::now(),
            next_id: AtomicU64::new(0),
        };
        Ok(App { state: Arc::new(state) })
    }

    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Bytes of latent cache per token (all layers): what a cached token costs.
    pub fn bytes_per_cached_token(&self) -> usize {
        self.state.bytes_per_cached_token
    }

    /// Ends the running generations at their next token (with a final event) and refuses new requests.
    pub fn begin_shutdown(&self) {
        self.state.engine.begin_shutdown();
    }

    /// Stops the engine and waits for it; with `--cache-dir` the memory cache is on disk afterwards.
    pub fn shutdown(&self) {
        self.state.engine.shutdown();
    }
}

/// Pages of the latent cache's pool: `--kv-memory`'s whole pages, or every slot's context; at least one
/// context's, so any request the server accepts can run.
fn kv_pages(options: &ServeOptions, bytes_per_token: usize) -> Result<usize, ServeError> {
    let per_context = pages_for(options.context);
    let Some(bytes) = options.kv_memory else { return Ok(options.max_batch * per_context) };
    let page_bytes = PAGE * bytes_per_token;
    let pages = bytes / page_bytes.max(1);
    if pages < per_context {
        let reason = format!(
            "{bytes} bytes hold {pages} pages of {PAGE} tokens ({page_bytes} bytes each); one context of {} \
             tokens needs {per_context} ({} bytes)",
            options.context,
            per_context * page_bytes
        );
        return Err(ServeError::Option { flag: "kv-memory", reason });
    }
    Ok(pages)
}

/// What distinguishes one model's latent rows from another's in cache keys: its name, configuration and
/// arithmetic.
fn model_identity(name: &str, model: &Model) -> Key {
    let described =
        format!("{name}\n{:?}\n{:?}\n{:?}\n{}", model.config, model.path, model.act, model.weight_bytes);
    Sha256::digest(described.as_bytes()).into()
}

/// Serves until SIGINT or SIGTERM: then the running requests end with a final event, open streams are
/// let finish, and the memory cache is written to `--cache-dir`.
pub fn serve(options: ServeOptions, model: Model, tokenizer: Tokenizer) -> Result<(), ServeError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ServeError::Io { what, source }
    };
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(io("tokio runtime"))?;
    let app = App::new(&options, Arc::new(model), Arc::new(tokenizer))?;
    let address = format!("{}:{}", options.host, options.port);
    let served = runtime.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(&address).await.map_err(io(&format!("listening on {address}")))?;
        tracing::info!(
            "dsv3 serve: {} on http://{address} ({} bytes per cached token; {} slots of {} tokens: {} bytes of \
             latent cache)",
            options.model,
            app.bytes_per_cached_token(),
            options.max_batch,
            options.context,
            options.max_batch * options.context * app.bytes_per_cached_token()
        );
        let stopper = app.clone();
        axum::serve(listener, app.router())
            .with_graceful_shutdown(async move {
                signal().await;
                tracing::info!("dsv3 serve: shutting down");
                stopper.begin_shutdown();
            })
            .await
            .map_err(io("serving"))
    });
    app.shutdown();
    served
}

/// SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {},
        _ = terminate => {},
    }
}
