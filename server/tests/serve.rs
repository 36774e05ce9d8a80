//! The server in process, on a port of its own, over the built-in model (random weights, the real
//! tokenizer), driven by a real HTTP client.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::Backend;
use dsv3_model::builtin::Builtin;
use dsv3_model::graph::{Model, NumericPath};
use dsv3_model::tokenizer::Tokenizer;
use dsv3_server::{App, ServeOptions};
use serde_json::{json, Value};

fn model() -> (Arc<Model>, Arc<Tokenizer>) {
    static MODEL: OnceLock<(Arc<Model>, Arc<Tokenizer>)> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let builtin = Builtin::new(0x5eed).unwrap();
            let device = CpuBackend::new(Mode::Fast).open(0).unwrap();
            let model =
                Model::load(builtin.config.clone(), &builtin, device, NumericPath::F32, |_| {}).unwrap();
            (Arc::new(model), Arc::new(Tokenizer::builtin().unwrap()))
        })
        .clone()
}

/// Tests share one model, and a model runs one forward pass at a time (the server has one engine thread
/// per model; the CPU backend deadlocks when two threads launch on one device together): each test holds
/// this while its server runs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Server {
    _turn: tokio::sync::MutexGuard<'static, ()>,
    app: App,
    url: String,
    http: reqwest::Client,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<()>,
}

async fn start(options: ServeOptions) -> Server {
    let turn = ONE_AT_A_TIME.lock().await;
    let (model, tokenizer) = tokio::task::spawn_blocking(model).await.unwrap();
    let app = App::new(&options, model, tokenizer).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = app.router();
    let served = tokio::spawn(async move {
        let _ = axum::serve(listener, router).with_graceful_shutdown(async { drop(stopped.await) }).await;
    });
    Server { _turn: turn, app, url, http: reqwest::Client::new(), stop, served }
}

impl Server {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self.http.post(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn get_text(&self, path: &str) -> String {
        self.http.get(format!("{}{path}", self.url)).send().await.unwrap().text().await.unwrap()
    }

    /// A streamed request's `data:` payloads, all of them.
    async fn stream(&self, path: &str, body: &Value) -> Vec<String> {
        let mut response = self.http.post(format!("{}{path}", self.url)).json(body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut text = String::new();
        while let Some(chunk) = response.chunk().await.unwrap() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text.split("\n\n").filter_map(|e| e.strip_prefix("data: ")).map(str::to_string).collect()
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = self.get_text("/metrics").await;
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{text}"));
        line[name.len() + 1..].parse().unwrap()
    }

    /// Starts a streamed request that would run for 8192 tokens; returns it and its first bytes.
    async fn long_stream(&self) -> (reqwest::Response, String) {
        let long =
            json!({"model": "tiny", "prompt": "Hi", "max_tokens": 8192, "stream": true, "temperature": 0});
        let mut response =
            self.http.post(format!("{}/v1/completions", self.url)).json(&long).send().await.unwrap();
        let first = response.chunk().await.unwrap().unwrap();
        (response, String::from_utf8(first.to_vec()).unwrap())
    }

    async fn wait_for_queue_depth(&self, depth: f64) {
        while self.metric("dsv3_queue_depth").await != depth {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    async fn stop(self) {
        self.app.begin_shutdown();
        let _ = self.stop.send(());
        self.served.await.unwrap();
        let app = self.app;
        tokio::task::spawn_blocking(move || app.shutdown()).await.unwrap();
    }
}

/// 16 slots of 2048 tokens: 40 MiB of latent cache for the built-in model.
fn options() -> ServeOptions {
    ServeOptions { model: "tiny".into(), context: 2048, ..ServeOptions::default() }
}

/// A token prompt: 200 ids of ordinary text tokens, the first `shared` of them fixed.
fn tokens(shared: usize, salt: u32) -> Vec<u32> {
    (0..200u32).map(|i| if (i as usize) < shared { 1000 + i * 7 } else { 2000 + i * 13 + salt }).collect()
}

fn completion(prompt: &[u32], max_tokens: u32) -> Value {
    json!({"model": "tiny", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
}

fn usage(body: &Value) -> (u64, u64, u64, u64) {
    let u = &body["usage"];
    assert_eq!(
        u["total_tokens"],
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
    );
    assert_eq!(
        u["prompt_tokens"],
        u["prompt_cache_hit_tokens"].as_u64().unwrap() + u["prompt_cache_miss_tokens"].as_u64().unwrap()
    );
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], u["prompt_cache_hit_tokens"]);
    let n = |k: &str| u[k].as_u64().unwrap();
    (n("prompt_tokens"), n("completion_tokens"), n("prompt_cache_hit_tokens"), n("prompt_cache_miss_tokens"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streamed_and_whole_agree_and_report_usage() {
    let server = start(options()).await;
    let request = json!({"model": "tiny", "messages": [{"role": "user", "content": "Hello!"}],
                         "max_tokens": 6, "temperature": 0});
    let (status, whole) = server.post("/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["object"], "chat.completion");
    let content = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    let (prompt, completion, hit, _) = usage(&whole);
    assert!(prompt > 3 && (1..=6).contains(&completion) && hit == 0, "{whole}");

    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    streamed["stream_options"] = json!({"include_usage": true});
    let frames = server.stream("/v1/chat/completions", &streamed).await;
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> =
        frames[..frames.len() - 1].iter().map(|f| serde_json::from_str(f).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert_eq!(text, content, "greedy: the stream says what the whole response said");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(usage(last), usage(&whole));
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], whole["choices"][0]["finish_reason"]);

    // Stop strings: the same greedy text, cut before the first occurrence of a piece of it.
    let chars: Vec<char> = content.chars().collect();
    if chars.len() >= 4 {
        let stop: String = chars[chars.len() / 2..chars.len() / 2 + 2].iter().collect();
        let mut stopped = request.clone();
        stopped["stop"] = json!([stop]);
        let (_, body) = server.post("/v1/chat/completions", &stopped).await;
        let cut = &content[..content.find(&stop).unwrap()];
        assert_eq!(body["choices"][0]["message"]["content"], cut);
        assert_eq!(body["choices"][0]["finish_reason"], "stop");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completions_models_health_and_metrics() {
    let server = start(options()).await;
    let (status, body) = server
        .post("/v1/completions", &json!({"model": "tiny", "prompt": "Once upon", "max_tokens": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "text_completion");
    assert!(body["choices"][0]["text"].is_string());
    let (prompt, completion, ..) = usage(&body);
    let models: Value = serde_json::from_str(&server.get_text("/v1/models").await).unwrap();
    assert_eq!(models["data"][0]["id"], "tiny");
    let health: Value = serde_json::from_str(&server.get_text("/health").await).unwrap();
    assert_eq!(health["status"], "ok");
    // Two layers of 128 + 32 latent values in f32.
    assert_eq!(health["bytes_per_cached_token"], 2 * 160 * 4);
    assert_eq!(server.metric("dsv3_requests_total").await, 1.0);
    assert_eq!(server.metric("dsv3_prompt_tokens_total").await, prompt as f64);
    assert_eq!(server.metric("dsv3_completion_tokens_total").await, completion as f64);
    assert_eq!(server.metric("dsv3_queue_depth").await, 0.0);
    assert_eq!(server.metric("dsv3_batch_size").await, 0.0);
    assert_eq!(health["running_batch"], 0);
    // One step prefills the prompt and takes the first token; each later one decodes the next (the step
    // that takes the first token decodes the second with it).
    let steps = completion.saturating_sub(1).max(1);
    assert_eq!(server.metric("dsv3_step_seconds_count").await, steps as f64);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_prefix_hits_whole_units_and_matches_a_cold_run() {
    let warm = start(options()).await;
    let (first, second) = (tokens(150, 0), tokens(150, 1));
    let (_, a) = warm.post("/v1/completions", &completion(&first, 4)).await;
    assert_eq!(usage(&a).2, 0);
    let (_, b) = warm.post("/v1/completions", &completion(&second, 4)).await;
    assert_eq!(
        usage(&b),
        (200, usage(&b).1, 128, 72),
        "units 0 and 1 are shared; unit 2 differs at token 150"
    );
    // The same prompt again: every whole unit before its last token.
    let (_, again) = warm.post("/v1/completions", &completion(&first, 4)).await;
    assert_eq!(usage(&again).2, 192);
    assert_eq!(again["choices"][0]["text"], a["choices"][0]["text"]);
    assert_eq!(warm.metric("dsv3_prompt_cache_hit_tokens_total").await, 320.0);
    warm.stop().await;

    let cold = start(options()).await;
    let (_, b_cold) = cold.post("/v1/completions", &completion(&second, 4)).await;
    assert_eq!(usage(&b_cold).2, 0);
    assert_eq!(b_cold["choices"][0]["text"], b["choices"][0]["text"]);
    cold.stop().await;
}

/// With no context cache in memory, a finished request's units are still hit: their pages stay in the
/// latent cache pool. A pool too small to keep them beside a new request releases them (the new request
/// runs, nothing fails); every answer is the cold one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_requests_leave_their_units_on_the_device() {
    let device_only = || ServeOptions { cache_memory: 0, ..options() };
    let (first, second, other) = (tokens(150, 0), tokens(150, 1), tokens(0, 9));
    let server = start(device_only()).await;
    let (_, a) = server.post("/v1/completions", &completion(&first, 4)).await;
    let (_, b) = server.post("/v1/completions", &completion(&second, 4)).await;
    assert_eq!((usage(&a).2, usage(&b).2), (0, 128), "units 0 and 1 from the device: {b}");
    assert_eq!(server.metric("dsv3_cache_memory_bytes").await, 0.0, "nothing in the context cache");
    server.stop().await;

    // One context of 256 tokens over 4 pages: each request may take all 4, so the 3 units the one before
    // leaves are released for it.
    let page_bytes = 64 * dsv3_model::cache::KvCache::new(&model().0, 1, 1).unwrap().bytes_per_token();
    let small = start(ServeOptions { kv_memory: Some(4 * page_bytes), context: 256, ..device_only() }).await;
    for (prompt, expected) in [(&second, Some(&b)), (&other, None), (&first, Some(&a))] {
        let (status, reply) = small.post("/v1/completions", &completion(prompt, 4)).await;
        assert_eq!(status, 200, "{reply}");
        if let Some(expected) = expected {
            assert_eq!(reply["choices"][0]["text"], expected["choices"][0]["text"], "{reply}");
        }
    }
    assert_eq!(small.metric("dsv3_kv_pages_in_use").await, 3.0, "the last request's 3 units stay");
    small.stop().await;
}

fn unit_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_disk_cache_survives_a_restart_and_damaged_units_are_misses() {
    let dir = tempfile::tempdir().unwrap();
    let with_disk = || ServeOptions { cache_dir: Some(dir.path().to_path_buf()), ..options() };
    let prompt = tokens(200, 0);
    let server = start(with_disk()).await;
    let (_, cold) = server.post("/v1/completions", &completion(&prompt, 4)).await;
    server.stop().await;
    assert_eq!(unit_files(dir.path()).len(), 3, "200 prompt + 3 fed output tokens: 3 whole units");

    let server = start(with_disk()).await;
    let (_, warm) = server.post("/v1/completions", &completion(&prompt, 4)).await;
    server.stop().await;
    assert_eq!(usage(&warm).2, 192);
    assert_eq!(warm["choices"][0]["text"], cold["choices"][0]["text"]);

    // Truncate the first unit, flip a byte in the middle of the others: all misses, the same output.
    for (i, file) in unit_files(dir.path()).iter().enumerate() {
        let mut bytes = std::fs::read(file).unwrap();
        if i == 0 {
            bytes.truncate(bytes.len() / 2);
        } else {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x40;
        }
        std::fs::write(file, bytes).unwrap();
    }
    let server = start(with_disk()).await;
    let (_, damaged) = server.post("/v1/completions", &completion(&prompt, 4)).await;
    assert_eq!(usage(&damaged).2, 0);
    assert_eq!(damaged["choices"][0]["text"], cold["choices"][0]["text"]);
    server.stop().await;
    // The damaged units were computed again and replaced on disk: a restart hits them all.
    let server = start(with_disk()).await;
    let (_, again) = server.post("/v1/completions", &completion(&prompt, 4)).await;
    assert_eq!(usage(&again).2, 192);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_an_openai_error_and_the_server_goes_on() {
    let server = start(ServeOptions { api_key: Some("sekret".into()), ..options() }).await;
    let url = format!("{}/v1/completions", server.url);
    let send = |body: String, key: Option<&str>| {
        let mut request = server.http.post(&url).header("content-type", "application/json").body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let good = json!({"model": "tiny", "prompt": "Hi", "max_tokens": 2}).to_string();
    let cases: Vec<(String, Option<&str>, u16, Value, &str)> = vec![
        ("{not json".into(), Some("sekret"), 400, Value::Null, "invalid_json"),
        (
            json!({"model": "tiny", "prompt": "Hi", "max_tokens": "many"}).to_string(),
            Some("sekret"),
            400,
            json!("max_tokens"),
            "invalid_json",
        ),
        (
            json!({"model": "gpt-4", "prompt": "Hi"}).to_string(),
            Some("sekret"),
            404,
            json!("model"),
            "model_not_found",
        ),
        (
            json!({"model": "tiny", "prompt": vec![5; 16384]}).to_string(),
            Some("sekret"),
            400,
            json!("prompt"),
            "invalid_value",
        ),
        (
            json!({"model": "tiny", "prompt": "Hi", "max_tokens": 8193}).to_string(),
            Some("sekret"),
            400,
            json!("max_tokens"),
            "invalid_value",
        ),
        (
            json!({"model": "tiny", "prompt": "Hi", "temperature": 3}).to_string(),
            Some("sekret"),
            400,
            json!("temperature"),
            "invalid_value",
        ),
        (good.clone(), None, 401, Value::Null, "invalid_api_key"),
        (good.clone(), Some("wrong"), 401, Value::Null, "invalid_api_key"),
        (
            format!("{{\"model\": \"tiny\", \"prompt\": \"{}\"}}", "a".repeat(16 << 20)),
            Some("sekret"),
            413,
            Value::Null,
            "body_too_large",
        ),
    ];
    for (body, key, status, param, code) in cases {
        let (got, error) = send(body, key).await;
        assert_eq!((got, &error["error"]["code"]), (status, &json!(code)), "{error}");
        assert_eq!(error["error"]["param"], param, "{error}");
        assert!(error["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert!(error["error"]["type"].is_string());
        let (ok, body) = send(good.clone(), Some("sekret")).await;
        assert_eq!(ok, 200, "the next request succeeds: {body}");
    }
    let (status, chat_error) = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "tiny", "messages": [{"role": "narrator", "content": "x"}]}),
        )
        .await;
    assert_eq!((status, &chat_error["error"]["param"]), (401, &Value::Null), "the key is checked first");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_field_is_named_and_a_full_queue_is_429() {
    let server = start(ServeOptions { max_batch: 1, max_queue: 1, ..options() }).await;
    let (status, error) = server
        .post(
            "/v1/chat/completions",
            &json!({"model": "tiny", "messages": [{"role": "narrator", "content": "x"}]}),
        )
        .await;
    assert_eq!((status, &error["error"]["param"]), (400, &json!("messages[0].role")), "{error}");

    // One request running, one waiting: a third is refused.
    let (running, _) = server.long_stream().await;
    let long = json!({"model": "tiny", "prompt": "Hi", "max_tokens": 8192, "stream": true});
    let waiting = tokio::spawn(server.http.post(format!("{}/v1/completions", server.url)).json(&long).send());
    server.wait_for_queue_depth(1.0).await;
    let (status, error) = server.post("/v1/completions", &json!({"model": "tiny", "prompt": "Hi"})).await;
    assert_eq!((status, &error["error"]["code"]), (429, &json!("queue_full")));
    drop(running);
    drop(waiting.await.unwrap().unwrap());
    server.wait_for_queue_depth(0.0).await;
    let (status, _) = server.post("/v1/completions", &completion(&[5, 6], 2)).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_frees_its_slot() {
    // Two slots, both streaming: a third request runs only once the first client's slot is free.
    let server = start(ServeOptions { max_batch: 2, ..options() }).await;
    let (first, _) = server.long_stream().await;
    let (mut second, _) = server.long_stream().await;
    while server.metric("dsv3_batch_size").await != 2.0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    drop(first);
    let (status, body) = server.post("/v1/completions", &completion(&[5, 6], 2)).await;
    assert_eq!(status, 200, "{body}");
    assert!(second.chunk().await.unwrap().is_some(), "the other stream goes on");
    drop(second);
    let (status, body) = server.post("/v1/completions", &completion(&[7, 8], 2)).await;
    assert_eq!(status, 200, "{body}");
    let generated = server.metric("dsv3_completion_tokens_total").await;
    assert!(generated < 2000.0, "the abandoned requests stopped early ({generated} tokens in all)");
    server.stop().await;
}

/// Sixteen requests of different lengths (prompts of 3 to 63 tokens, prefilled in chunks of 32; 4 to 6 new
/// tokens), most greedy, some sampled with seeds.
fn sixteen_requests() -> Vec<Value> {
    (0..16u32)
        .map(|i| {
            let prompt: Vec<u32> = (0..3 + i * 4).map(|j| 1000 + (j * 31 + i * 97) % 5000).collect();
            let mut request = completion(&prompt, 4 + i % 3);
            if i % 4 == 3 {
                request["temperature"] = json!(0.9);
                request["top_p"] = json!(0.95);
                request["seed"] = json!(i);
            }
            request
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_get_what_they_get_alone() {
    let chunked = || ServeOptions { prefill_chunk: 32, ..options() };
    let requests = sixteen_requests();
    let alone = start(chunked()).await;
    let mut expected = Vec::new();
    for request in &requests {
        let (status, body) = alone.post("/v1/completions", request).await;
        assert_eq!(status, 200, "{body}");
        expected.push(body);
    }
    let steps_alone = alone.metric("dsv3_step_seconds_count").await;
    alone.stop().await;

    let together = start(chunked()).await;
    all_at_once(&together, &requests, &expected).await;
    let steps = together.metric("dsv3_step_seconds_count").await;
    assert!(steps < steps_alone / 2.0, "{steps} steps together, {steps_alone} one at a time: not batched");
    assert_eq!(together.metric("dsv3_batch_size").await, 0.0);
    together.stop().await;

    // A pool of 4 pages, one context of 256 tokens (each request may take 1 or 2): requests wait for
    // pages, none fails for want of one.
    let page_bytes = 64 * dsv3_model::cache::KvCache::new(&model().0, 1, 1).unwrap().bytes_per_token();
    let small = start(ServeOptions { kv_memory: Some(4 * page_bytes), context: 256, ..chunked() }).await;
    all_at_once(&small, &requests, &expected).await;
    // What stays in use when all is done: finished requests' units kept on the device.
    assert_eq!(small.metric("dsv3_kv_pages").await, 4.0);
    assert!(small.metric("dsv3_kv_pages_in_use").await <= 4.0);
    small.stop().await;
}

/// Sends every request at once; each reply must be what it was alone.
async fn all_at_once(server: &Server, requests: &[Value], expected: &[Value]) {
    let sent = requests.iter().map(|request| {
        let post = server.http.post(format!("{}/v1/completions", server.url)).json(request).send();
        tokio::spawn(async move { post.await.unwrap().json::<Value>().await.unwrap() })
    });
    let sent: Vec<_> = sent.collect();
    for (i, (reply, alone)) in sent.into_iter().zip(expected).enumerate() {
        let reply = reply.await.unwrap();
        assert_eq!(reply["choices"][0]["text"], alone["choices"][0]["text"], "request {i}: {reply}");
        assert_eq!(reply["choices"][0]["finish_reason"], alone["choices"][0]["finish_reason"], "request {i}");
        assert_eq!(usage(&reply), usage(alone), "request {i}");
    }
}

/// A latent cache pool that cannot hold one context is refused at start, naming the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kv_pool_below_one_context_is_refused() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (model, tokenizer) = tokio::task::spawn_blocking(model).await.unwrap();
    let options = ServeOptions { kv_memory: Some(1 << 10), ..options() };
    let err = App::new(&options, model, tokenizer).err().expect("1 KiB holds no page");
    assert!(err.to_string().starts_with("--kv-memory: "), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_a_running_stream_with_a_final_event() {
    let server = start(options()).await;
    let (mut response, mut text) = server.long_stream().await;
    server.app.begin_shutdown();
    while let Some(chunk) = response.chunk().await.unwrap() {
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.contains("\"finish_reason\":\"abort\""), "{text}");
    let (status, error) = server.post("/v1/completions", &completion(&[5, 6], 2)).await;
    assert_eq!((status, &error["error"]["code"]), (503, &json!("shutting_down")));
    server.stop().await;
}

/// A request whose prompt starts with the same two whole units as a running sequence's shares that
/// sequence's cache pages: it reports them as cache hits (the context cache has nothing yet) and answers
/// exactly what it answers cold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_shares_the_pages_of_a_running_one() {
    let (first, second) = (tokens(150, 1), tokens(150, 2));
    let cold = start(options()).await;
    let (status, expected) = cold.post("/v1/completions", &completion(&second, 4)).await;
    assert_eq!(status, 200, "{expected}");
    assert_eq!(usage(&expected).2, 0, "a cold server hits nothing");
    cold.stop().await;

    let server = start(options()).await;
    let long =
        json!({"model": "tiny", "prompt": first, "max_tokens": 8192, "stream": true, "temperature": 0});
    let mut running =
        server.http.post(format!("{}/v1/completions", server.url)).json(&long).send().await.unwrap();
    running.chunk().await.unwrap().expect("the first request is decoding");
    let (status, shared) = server.post("/v1/completions", &completion(&second, 4)).await;
    assert_eq!(status, 200, "{shared}");
    assert_eq!(shared["choices"][0]["text"], expected["choices"][0]["text"], "{shared}");
    assert_eq!(usage(&shared).2, 128, "two whole units shared: {shared}");
    drop(running);
    server.stop().await;
}
