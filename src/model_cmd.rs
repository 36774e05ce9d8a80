//! `dsv3 generate`, `dsv3 logits` and `dsv3 golden`: loading a model onto a device and running it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use dsv3_core::{Device, Error};
use dsv3_model::builtin::Builtin;
use dsv3_model::chat::Message;
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::generate::{generate, Request, Sampling, MAX_NEW_TOKENS_LIMIT};
use dsv3_model::golden;
use dsv3_model::graph::{Logits, Model, NumericPath};
use dsv3_model::placement::{Assignment, Rules};
use dsv3_model::progress::Progress;
use dsv3_model::tokenizer::{BosPolicy, Tokenizer};
use dsv3_model::weights::WeightSource;

use crate::out::{out, outln, write_file};
use crate::{finish, registry, Options};

/// The device `--backend` names; `auto` takes the first backend of the registry (most capable first) that
/// has a device, skipping the slow reference oracle.
pub fn pick_device(spec: &str) -> Result<Arc<dyn Device>, String> {
    let candidates = if spec == "auto" { registry::backends() } else { registry::select(spec)? };
    let mut reasons = Vec::new();
    for backend in candidates.iter().filter(|b| spec != "auto" || b.name() != "cpu-ref") {
        match backend.devices() {
            // `auto` passes over software rasterizers (lavapipe): the CPU backend is far faster.
            Ok(devices)
                if spec == "auto" && !devices.is_empty() && devices.iter().all(registry::is_software) =>
            {
                reasons.push(format!("{}: only a software rasterizer", backend.name()))
            }
            Ok(devices) if !devices.is_empty() => return backend.open(0).map_err(|e| e.to_string()),
            Ok(_) => reasons.push(format!("{}: no device", backend.name())),
            Err(e) => reasons.push(e.to_string()),
        }
    }
    Err(format!("no device for --backend {spec}: {}", reasons.join("; ")))
}

/// Every device this machine has, by name, for messages.
fn present_devices() -> Vec<String> {
    let all = registry::select("all").into_iter().flatten().chain(registry::by_name_only());
    all.flat_map(|b| b.devices().unwrap_or_default())
        .map(|d| format!("{}:{}", d.backend, d.ordinal))
        .collect()
}

/// Where a model's parts go: `--place` rules over `--backend`'s device, which takes every part no rule
/// names. Opens each device a rule names once.
pub struct Placement {
    rules: Rules,
    default: Arc<dyn Device>,
    opened: HashMap<String, Arc<dyn Device>>,
}

impl Placement {
    /// `rules` `auto` plans against every device present (`crate::device_specs::present`); a plan that
    /// does not fit is an error when a model is resolved, before a byte of it is loaded.
    pub fn new(rules: Option<&str>, backend: &str) -> Result<Placement, String> {
        let default = pick_device(backend)?;
        let mut opened = HashMap::from([(default.id().to_string(), default.clone())]);
        let rules = match rules {
            Some(text) if Rules::is_auto(text) => {
                Rules::auto(crate::device_specs::present(&mut opened), None)
            }
            Some(text) => Rules::parse(text).map_err(|e| e.to_string())?,
            None => Rules::default(),
        };
        Ok(Placement { rules, default, opened })
    }

    pub fn default_name(&self) -> String {
        // `backend:ordinal`, as `dsv3 devices` prints it.
        self.default.id().to_string()
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The device a rule names (`cpu`, `wgpu:0`, `cuda-emu:0`), opened once.
    pub fn open(&mut self, name: &str) -> Result<Arc<dyn Device>, Error> {
        if let Some(d) = self.opened.get(name) {
            return Ok(d.clone());
        }
        let absent = |why: String| {
            let present = present_devices().join(", ");
            Error::invalid("place", "device", format!("`{name}`: {why} (present: {present})"))
        };
        let (backend, ordinal) = name.split_once(':').unwrap_or((name, "0"));
        let ordinal: usize = ordinal.parse().map_err(|_| absent("not a device name".into()))?;
        let backends = registry::select(backend).map_err(absent)?;
        let backend = backends.first().ok_or_else(|| absent("no such backend".into()))?;
        let devices = backend.devices().map_err(|e| absent(e.to_string()))?;
        if !devices.iter().any(|d| d.ordinal == ordinal) {
            return Err(absent(format!("{} has {} device(s)", backend.name(), devices.len())));
        }
        let device = backend.open(ordinal)?;
        self.opened.insert(name.to_string(), device.clone());
        Ok(device)
    }

    /// Every part of a model with `config` assigned, and each device it names opened.
    fn resolve(&mut self, config: &ModelConfig) -> Result<(Assignment, Vec<Arc<dyn Device>>), String> {
        let assignment = self.rules.assign(config, &self.default_name()).map_err(|e| e.to_string())?;
        let devices = assignment
            .device_names()
            .into_iter()
            .map(|n| self.open(n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        Ok((assignment, devices))
    }
}

/// A loaded model with its tokenizer (when one is known).
pub struct Loaded {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub random_weights: bool,
}

fn resolve_path(
    spec: &str,
    config: &ModelConfig,
    devices: &[Arc<dyn Device>],
) -> Result<NumericPath, String> {
    match spec {
        "fast" => Ok(NumericPath::fastest(config, devices)),
        other => NumericPath::parse(other)
            .ok_or_else(|| format!("--path {other}: expected f32, bf16, w8a8 or fast")),
    }
}

/// What to run: a checkpoint directory, any config with random weights, or the built-in model.
pub enum ModelSource<'a> {
    Checkpoint(&'a Path),
    /// `--random-weights --config FILE`: a shape to benchmark before downloading its weights.
    RandomConfig(&'a Path),
    Builtin,
}

/// Loads the model onto the placement's devices (a checkpoint is validated against its config first, with a
/// progress bar).
pub fn load(source: ModelSource, place: &mut Placement, path_spec: &str) -> Result<Loaded, String> {
    let dir = match source {
        ModelSource::Checkpoint(dir) => dir,
        ModelSource::RandomConfig(_) | ModelSource::Builtin => {
            let builtin = match source {
                ModelSource::RandomConfig(file) => {
                    Builtin::bulk(ModelConfig::from_file(file).map_err(|e| e.to_string())?, 0x5eed)
                }
                _ => Builtin::new(0x5eed).map_err(|e| e.to_string())?,
            };
            let tokenizer =
                Tokenizer::for_model(None, builtin.config.vocab_size).map_err(|e| e.to_string())?;
            let model = load_placed(builtin.config.clone(), &builtin, None, place, path_spec, None)?;
            return Ok(Loaded { model, tokenizer, random_weights: true });
        }
    };
    let config = ModelConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
    let checkpoint = Checkpoint::open(dir).map_err(|e| e.to_string())?;
    checkpoint.validate(&config, false).map_err(|e| e.to_string())?;
    let tokenizer = Tokenizer::for_model(Some(dir), config.vocab_size).map_err(|e| e.to_string())?;
    let mut progress = Progress::new(
        &format!("loading {}", checkpoint.describe()),
        checkpoint.total_bytes(),
        checkpoint.len(),
    );
    let model = load_placed(config, &checkpoint, Some(&checkpoint), place, path_spec, Some(&mut progress))?;
    progress.finish();
    Ok(Loaded { model, tokenizer, random_weights: false })
}

/// Loads `source` (the checkpoint itself when there is one, for the memory check) onto the placement's
/// devices.
fn load_placed(
    config: ModelConfig,
    source: &dyn WeightSource,
    checkpoint: Option<&Checkpoint>,
    place: &mut Placement,
    path_spec: &str,
    mut progress: Option<&mut Progress>,
) -> Result<Model, String> {
    let (assignment, devices) = place.resolve(&config)?;
    check_memory(&config, checkpoint, &assignment, &devices)?;
    let path = resolve_path(path_spec, &config, &devices)?;
    let mut open = |name: &str| place.open(name);
    Model::load_placed(config, source, &assignment, &mut open, path, |bytes| {
        if let Some(p) = progress.as_mut() {
            p.advance(bytes);
            p.tensor_done();
        }
    })
    .map_err(|e| e.to_string())
}

/// Refuses a placement that gives a device more weight bytes than it has memory (the checkpoint's bytes,
/// or estimated from the config, as `inspect` counts them), naming the device and the shortfall, before the
/// load allocates anything. Devices that share host memory (cpu, cpu-ref, the emulators) are judged
/// together against it.
fn check_memory(
    config: &ModelConfig,
    checkpoint: Option<&Checkpoint>,
    assignment: &Assignment,
    devices: &[Arc<dyn Device>],
) -> Result<(), String> {
    let sizes = dsv3_model::plan::part_sizes(config, checkpoint, None).map_err(|e| e.to_string())?;
    let loads: Vec<(u64, &dyn Device)> = assignment
        .device_names()
        .into_iter()
        .zip(devices)
        .map(|(name, device)| {
            let on_device = sizes.iter().filter(|s| assignment.device(s.part) == Some(name));
            (on_device.map(|s| s.weight_bytes).sum(), device.as_ref())
        })
        .collect();
    dsv3_model::memory::check_placement(&loads).map_err(|e| e.to_string())
}

fn number<T: std::str::FromStr>(opts: &Options, name: &str, default: T) -> Result<T, String> {
    opts.value(name)
        .map_or(Ok(default), |v| v.parse().map_err(|_| format!("--{name}: `{v}` is not a number")))
}

pub fn run_generate(args: &[OsString]) -> i32 {
    finish("generate", try_generate(args).map(|()| 0))
}

fn try_generate(args: &[OsString]) -> Result<(), String> {
    let opts = Options::parse(args, &["chat", "json", "ignore-eos", "random-weights"])?;
    opts.only(&[
        "model",
        "prompt",
        "tokens",
        "chat",
        "system",
        "max-new-tokens",
        "temperature",
        "top-p",
        "seed",
        "backend",
        "path",
        "json",
        "ignore-eos",
        "random-weights",
        "config",
        "place",
    ])?;
    let json = opts.flag("json");
    let mut place = Placement::new(opts.value("place"), opts.value("backend").unwrap_or("auto"))?;
    let source = match (opts.path("model"), opts.path("config"), opts.flag("random-weights")) {
        (Some(dir), None, false) => ModelSource::Checkpoint(dir),
        (None, Some(file), true) => ModelSource::RandomConfig(file),
        (None, None, false) => ModelSource::Builtin,
        _ => return Err("give --model DIR, or --random-weights --config FILE, or neither".into()),
    };
    let loaded = load(source, &mut place, opts.value("path").unwrap_or("fast"))?;
    let model = &loaded.model;
    if loaded.random_weights {
        eprintln!("note: running random weights (the built-in model, or --random-weights): timing is real, text is noise");
    }
    let shares = model.devices();
    let on = match shares.len() {
        1 => model.device.info().name.clone(),
        n => format!("{n} devices"),
    };
    eprintln!(
        "model: {} on {on} ({}), {} layers, {:.1} MB of weights",
        model.config.arch.name(),
        model.describe_numerics(),
        model.config.num_hidden_layers,
        model.weight_bytes as f64 / 1e6
    );
    if shares.len() > 1 {
        for share in &shares {
            let parts = model.describe_parts(&share.parts);
            eprintln!("  {}: {:.1} MB: {parts}", share.name, share.weight_bytes as f64 / 1e6);
        }
    }
    let tokenizer = loaded.tokenizer.as_ref();
    let prompt = match (opts.value("prompt"), opts.value("tokens")) {
        (Some(_), Some(_)) => return Err("give --prompt or --tokens, not both".into()),
        (None, Some(ids)) => dsv3_model::values::parse_tokens(ids)?,
        (Some(text), None) => {
            let tok = tokenizer.ok_or("this checkpoint has no tokenizer.json: use --tokens")?;
            let ids = if opts.flag("chat") {
                let mut messages = Vec::new();
                if let Some(system) = opts.value("system") {
                    messages.push(Message::system(system));
                }
                messages.push(Message::user(text));
                tok.encode_chat(&messages, true)
            } else {
                tok.encode_prompt(text, BosPolicy::FromConfig)
            };
            ids.map_err(|e| e.to_string())?
        }
        (None, None) => return Err("--prompt TEXT or --tokens IDS is required".into()),
    };
    let max_new_tokens = number(&opts, "max-new-tokens", 4096usize)?;
    if max_new_tokens > MAX_NEW_TOKENS_LIMIT {
        return Err(format!("--max-new-tokens {max_new_tokens} exceeds the limit of {MAX_NEW_TOKENS_LIMIT}"));
    }
    let sampling = Sampling {
        temperature: number(&opts, "temperature", 0.6f32)?,
        top_p: number(&opts, "top-p", 0.95f32)?,
        seed: number(&opts, "seed", 0u64)?,
    };
    let mut stop = model.config.eos_token_ids.clone();
    if let Some(t) = tokenizer {
        stop.push(t.eos_id());
    }
    if opts.flag("ignore-eos") {
        stop.clear(); // benchmarking: always produce --max-new-tokens
    }
    let request = Request { max_new_tokens, sampling, stop };
    let mut decoder = tokenizer.map(Tokenizer::stream_decoder);
    let mut text = String::new();
    let out = generate(model, &[prompt], &request, |_, token| {
        if let Some(d) = decoder.as_mut() {
            let piece = d.step(token)?;
            text.push_str(&piece);
            if !json {
                out!("{piece}")?;
            }
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    if let Some(d) = decoder {
        let rest = d.finish().map_err(|e| e.to_string())?;
        text.push_str(&rest);
        if !json {
            outln!("{rest}")?;
        }
    }
    eprintln!(
        "prompt: {} tokens, {:.1} tok/s | decode: {} tokens, {:.1} tok/s",
        out.prompt_tokens,
        out.prefill_tok_s(),
        out.decode_tokens,
        out.decode_tok_s()
    );
    // The run report: what each device held and did (one line per device where there are several).
    let shares = model.devices();
    if shares.len() > 1 {
        for d in &shares {
            eprintln!(
                "  {}: {:.2} s in launches, {:.2} MB in, {:.2} MB out across device boundaries, \
                 {:.3} s waiting for shared experts the routed ones did not hide",
                d.name,
                d.launch_secs,
                d.bytes_in as f64 / 1e6,
                d.bytes_out as f64 / 1e6,
                d.join_wait_secs
            );
        }
    }
    if json {
        let devices: Vec<serde_json::Value> = shares
            .iter()
            .map(|d| {
                serde_json::json!({
                    "device": d.name,
                    "parts": model.describe_parts(&d.parts),
                    "weight_bytes": d.weight_bytes,
                    "launch_s": d.launch_secs,
                    "bytes_in": d.bytes_in,
                    "bytes_out": d.bytes_out,
                    "shared_experts_join_wait_s": d.join_wait_secs,
                })
            })
            .collect();
        let line = serde_json::json!({
            "tokens": out.tokens[0],
            "text": if tokenizer.is_some() { serde_json::Value::String(text) } else { serde_json::Value::Null },
            "prefill_tok_s": out.prefill_tok_s(),
            "decode_tok_s": out.decode_tok_s(),
            "devices": devices,
        });
        outln!("{line}")?;
    }
    Ok(())
}

pub fn run_logits(args: &[OsString]) -> i32 {
    finish("logits", try_logits(args).map(|()| 0))
}

fn try_logits(args: &[OsString]) -> Result<(), String> {
    let opts = Options::parse(args, &[])?;
    opts.only(&["model", "tokens", "backend", "path", "out", "place"])?;
    let dir = opts.path("model").ok_or("--model DIR is required")?;
    let tokens = dsv3_model::values::parse_tokens(opts.value("tokens").ok_or("--tokens IDS is required")?)?;
    let out_path = opts.path("out").ok_or("--out FILE.safetensors is required")?;
    let mut place = Placement::new(opts.value("place"), opts.value("backend").unwrap_or("auto"))?;
    let loaded = load(ModelSource::Checkpoint(dir), &mut place, opts.value("path").unwrap_or("f32"))?;
    let model = &loaded.model;
    // Positions past the context are not what the model was trained for: refuse rather than extrapolate.
    if tokens.len() > model.config.max_position_embeddings {
        let context = model.config.max_position_embeddings;
        return Err(format!("--tokens: {} tokens exceed the model's context of {context}", tokens.len()));
    }
    let mut cache = dsv3_model::cache::KvCache::new(model, 1, tokens.len()).map_err(|e| e.to_string())?;
    let logits = model.forward(&mut cache, &tokens, tokens.len(), Logits::All).map_err(|e| e.to_string())?;
    let values = golden::download_f32(model, &logits).map_err(|e| e.to_string())?;
    // A NaN written to the file would pass for a result; say where it appeared instead.
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let vocab = model.config.vocab_size;
        return Err(format!(
            "op `lm_head`: tensor `logits` is {} at position {}, id {}; {} not written",
            values[i],
            i / vocab,
            i % vocab,
            out_path.display()
        ));
    }
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = vec![tokens.len(), model.config.vocab_size];
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape, &bytes)
        .map_err(|e| e.to_string())?;
    let file = safetensors::serialize([("logits", view)], None).map_err(|e| e.to_string())?;
    write_file("--out", out_path, &file)?;
    eprintln!(
        "wrote logits [{}, {}] ({}, {}) to {}",
        tokens.len(),
        model.config.vocab_size,
        model.device.info().backend,
        model.describe_numerics(),
        out_path.display()
    );
    Ok(())
}

/// `dsv3 golden`: the model-level oracle (fixtures with HF transformers logits) on one backend.
pub fn run_golden(args: &[OsString]) -> i32 {
    finish("golden", try_golden(args).map(|pass| if pass { 0 } else { 1 }))
}

fn try_golden(args: &[OsString]) -> Result<bool, String> {
    let opts = Options::parse(args, &[])?;
    opts.only(&["backend", "path", "fixtures", "place"])?;
    let root = opts.path("fixtures").unwrap_or(Path::new("model/tests/fixtures"));
    let backend = opts.value("backend").unwrap_or("auto");
    let paths: Vec<NumericPath> =
        match opts.value("path").unwrap_or("all") {
            "all" => vec![NumericPath::F32, NumericPath::Bf16, NumericPath::W8A8],
            p => vec![NumericPath::parse(p)
                .ok_or_else(|| format!("--path {p}: expected f32, bf16, w8a8 or all"))?],
        };
    let mut all_pass = true;
    for fixture in ["tiny-dsv3", "tiny-dsv3-bf16"] {
        let dir = root.join(fixture);
        let config = ModelConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
        for &path in &paths {
            if path == NumericPath::W8A8 && config.quantization.is_none() {
                continue; // a BF16 checkpoint has no W8A8 form
            }
            let mut place = Placement::new(opts.value("place"), backend)?;
            let (rules, default) = (place.rules().clone(), place.default_name());
            let report = golden::check_placed(&dir, &rules, &default, &mut |n| place.open(n), path)
                .map_err(|e| e.to_string())?;
            outln!("{}", report.line())?;
            all_pass &= report.pass();
        }
    }
    Ok(all_pass)
}
