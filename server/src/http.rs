//! The HTTP layer: routes, the API key, body limits, and turning engine events into OpenAI responses
//! (one JSON object, or server-sent events ending in `data: [DONE]`).

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use dsv3_model::tokenizer::Tokenizer;
use futures_util::stream::{self, Stream, StreamExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::{
    AssistantMessage, ChatChoice, ChatChunkChoice, Completion, Delta, FinishReason, ModelCard, ModelList,
    TextChoice, Usage,
};
use crate::engine::{Engine, Event, Job};
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::validate::{self, Limits};

/// Request bodies larger than this are refused (413): a prompt at the full context is well below it.
pub const BODY_LIMIT: usize = 4 << 20;

/// Past `BODY_LIMIT` a body is still read, and dropped, up to this many bytes more before the 413 goes
/// out. Closing a connection with unread input resets it (TCP RST), and the reset can destroy the 413
/// before the client reads it: the client would see a broken connection instead of the error. Bodies
/// beyond this bound are answered at once and the connection closes.
const DRAIN_LIMIT: usize = 64 << 20;

pub struct AppState {
    pub engine: Engine,
    pub tokenizer: Arc<Tokenizer>,
    pub metrics: Arc<Metrics>,
    pub model: String,
    pub context: usize,
    pub vocab: usize,
    pub api_key: Option<String>,
    /// Reported by `/health`.
    pub bytes_per_cached_token: usize,
    pub max_batch: usize,
    /// Unix seconds at start: `/v1/models`' `created`, and part of every response id.
    pub started: u64,
    /// Numbers the responses since start.
    pub next_id: AtomicU64,
}

impl AppState {
    fn limits(&self) -> Limits<'_> {
        Limits { model: &self.model, context: self.context, vocab: self.vocab }
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/models", get(models))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(|uri: Uri| async move { ApiError::not_found(uri.path()) })
        .layer(middleware::from_fn_with_state(state.clone(), count_refusals))
        .with_state(state)
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// With `--api-key`, the `/v1` routes need `Authorization: Bearer KEY`.
async fn require_key(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(key) = &app.api_key {
        let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if given.and_then(|v| v.strip_prefix("Bearer ")) != Some(key.as_str()) {
            return ApiError::unauthorized().into_response();
        }
    }
    next.run(request).await
}

async fn count_refusals(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if response.status().is_client_error() || response.status().is_server_error() {
        app.metrics.refused.inc();
    }
    response
}

async fn health(State(app): State<Arc<AppState>>) -> Response {
    let status = if app.engine.is_stopping() { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = serde_json::json!({
        "status": if status == StatusCode::OK { "ok" } else { "shutting_down" },
        "model": app.model,
        "bytes_per_cached_token": app.bytes_per_cached_token,
        "max_batch": app.max_batch,
        "running_batch": app.metrics.batch_size.get(),
    });
    (status, Json(body)).into_response()
}

async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], app.metrics.text()).into_response()
}

async fn models(State(app): State<Arc<AppState>>) -> Json<ModelList> {
    let card = ModelCard { id: app.model.clone(), object: "model", created: app.started, owned_by: "dsv3" };
    Json(ModelList { object: "list", data: vec![card] })
}

/// The body, or the error for one that is too large or unreadable. A body over the limit is read to its
/// end (up to `DRAIN_LIMIT` more) and dropped, never kept.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT + DRAIN_LIMIT) {
        return Err(ApiError::too_large(BODY_LIMIT));
    }
    let mut chunks = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::malformed(None, format!("the request body could not be read: {e}")))?;
        seen = seen.saturating_add(chunk.len());
        if seen <= BODY_LIMIT {
            kept.extend_from_slice(&chunk);
        } else if seen > BODY_LIMIT + DRAIN_LIMIT {
            break;
        }
    }
    if seen > BODY_LIMIT {
        return Err(ApiError::too_large(BODY_LIMIT));
    }
    Ok(kept.into())
}

async fn chat(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    complete(&app, read_body(&headers, body).await, Kind::Chat)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn completions(State(app): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    complete(&app, read_body(&headers, body).await, Kind::Text)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

/// Checks the request, queues its generation and answers: a stream, or one object once it is done.
async fn complete(app: &AppState, body: Result<Bytes, ApiError>, kind: Kind) -> Result<Response, ApiError> {
    let request = validate::parse(&body?)?;
    let checked = match kind {
        Kind::Chat => validate::chat(request, &app.limits(), &app.tokenizer)?,
        Kind::Text => validate::completion(request, &app.limits(), &app.tokenizer)?,
    };
    let (events, mut rx) = unbounded_channel();
    app.engine.submit(Job { generation: checked.generation, events })?;
    let n = app.next_id.fetch_add(1, Ordering::Relaxed);
    let shape = Shape {
        kind,
        id: match kind {
            Kind::Chat => format!("chatcmpl-{}-{n}", app.started),
            Kind::Text => format!("cmpl-{}-{n}", app.started),
        },
        created: now(),
        model: app.model.clone(),
        include_usage: checked.include_usage,
        sent_role: false,
    };
    if checked.stream {
        return Ok(Sse::new(sse(rx, shape)).into_response());
    }
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(Event::Text(piece)) => text.push_str(&piece),
            Some(Event::Done { finish, usage }) => return Ok(shape.whole(text, finish, usage)),
            Some(Event::Failed(e)) => return Err(e),
            None => return Err(ApiError::shutting_down()),
        }
    }
}

/// How one response is written.
struct Shape {
    kind: Kind,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Chat streams name the role in their first chunk only.
    sent_role: bool,
}

impl Shape {
    fn whole(&self, text: String, finish: FinishReason, usage: Usage) -> Response {
        match self.kind {
            Kind::Chat => {
                let message = AssistantMessage { role: "assistant", content: text };
                let choice = ChatChoice { index: 0, message, finish_reason: finish };
                Json(self.envelope("chat.completion", choice, Some(usage))).into_response()
            }
            Kind::Text => {
                Json(self.envelope("text_completion", text_choice(text, Some(finish)), Some(usage)))
                    .into_response()
            }
        }
    }

    /// One streamed chunk: text, or the end (`finish`), or the usage (which has no choices, as OpenAI's).
    fn chunk(&mut self, text: Option<String>, finish: Option<FinishReason>, usage: Option<Usage>) -> String {
        let json = match self.kind {
            Kind::Chat => {
                let role = (!self.sent_role).then_some("assistant");
                self.sent_role = true;
                let choice =
                    ChatChunkChoice { index: 0, delta: Delta { role, content: text }, finish_reason: finish };
                serde_json::to_string(&self.chunk_envelope("chat.completion.chunk", choice, usage))
            }
            Kind::Text => serde_json::to_string(&self.chunk_envelope(
                "text_completion",
                text_choice(text.unwrap_or_default(), finish),
                usage,
            )),
        };
        // Serialising these plain structs cannot fail.
        json.unwrap_or_default()
    }

    fn chunk_envelope<C>(&self, object: &'static str, choice: C, usage: Option<Usage>) -> Completion<C> {
        let mut chunk = self.envelope(object, choice, usage);
        if usage.is_some() {
            chunk.choices.clear();
        }
        chunk
    }

    fn envelope<C>(&self, object: &'static str, choice: C, usage: Option<Usage>) -> Completion<C> {
        Completion {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            choices: vec![choice],
            usage,
        }
    }

    /// The SSE data lines for one engine event (`None`: the engine went away), and whether more follow.
    fn frames(&mut self, event: Option<Event>) -> (Vec<String>, bool) {
        match event {
            Some(Event::Text(text)) => (vec![self.chunk(Some(text), None, None)], true),
            Some(Event::Done { finish, usage }) => {
                let mut frames = vec![self.chunk(None, Some(finish), None)];
                if self.include_usage {
                    frames.push(self.chunk(None, None, Some(usage)));
                }
                frames.push("[DONE]".into());
                (frames, false)
            }
            Some(Event::Failed(e)) => (vec![e.json().to_string(), "[DONE]".into()], false),
            None => (vec![ApiError::shutting_down().json().to_string(), "[DONE]".into()], false),
        }
    }
}

fn text_choice(text: String, finish_reason: Option<FinishReason>) -> TextChoice {
    TextChoice { index: 0, text, logprobs: None, finish_reason }
}

/// The engine's events as server-sent events. When the client goes away the stream is dropped, which
/// closes the channel, which the engine sees at the next token.
fn sse(rx: UnboundedReceiver<Event>, shape: Shape) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(Some((rx, shape)), |state| async move {
        let (mut rx, mut shape) = state?;
        let (frames, more) = shape.frames(rx.recv().await);
        let events = frames.into_iter().map(|data| Ok(SseEvent::default().data(data)));
        Some((stream::iter(events), more.then_some((rx, shape))))
    })
    .flatten()
}
