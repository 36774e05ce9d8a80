//! `dsv3 generate`, `dsv3 logits` and `dsv3 golden`: loading a model onto a device and running it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dsv3_core::{Device, Error};
use dsv3_model::builtin::Builtin;
use dsv3_model::chat::Message;
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::expert_stats::ExpertStats;
use dsv3_model::generate::{generate, Request, Sampling};
use dsv3_model::golden;
use dsv3_model::graph::{Logits, Model, NumericPath};
use dsv3_model::placement::{Assignment, Rules};
use dsv3_model::progress::Progress;
use dsv3_model::tokenizer::{BosPolicy, Tokenizer};
use dsv3_model::weights::WeightSource;

use crate::cli::{Checked, MAX_NEW_TOKENS, SEED, TEMPERATURE, TEXT, TOP_P};
use crate::out::{errln, out, outln, write_file};
use crate::{finish, registry};

/// The device options `generate`, `logits` and `golden` share.
#[derive(clap::Args)]
pub struct DeviceArgs {
    /// `auto` (the most capable backend with a device) or NAME: the device of every part no --place rule
    /// names
    #[arg(long, default_value = "auto", value_parser = TEXT)]
    backend: String,
    /// Put parts of the model on other devices than --backend's, e.g. 'experts=cpu,*=cuda:0': rules
    /// PATTERN=DEVICE, first match wins; parts embed, norm, head and per layer attn, mlp, router, shared,
    /// experts (`experts` alone: in every layer; `layers.0-2`, `layers.*.experts`, `layers.5.experts.0-63`:
    /// a range of expert ids); DEVICE as `dsv3 devices` prints it. `auto` plans over the devices present
    /// (see inspect) and fails before loading when the model does not fit
    #[arg(long, value_name = "RULES|auto", value_parser = TEXT)]
    place: Option<String>,
    /// Expert-usage counts (written by `generate --record-expert-stats`): --place auto puts each layer's
    /// most used routed experts on the fastest device first
    #[arg(long, value_name = "FILE", requires = "place")]
    expert_stats: Option<PathBuf>,
}

impl DeviceArgs {
    pub fn placement(&self) -> Result<Placement, String> {
        let usage = match (&self.expert_stats, self.place.as_deref()) {
            (None, _) => None,
            (Some(file), Some(place)) if Rules::is_auto(place) => {
                Some(ExpertStats::load(file).map_err(|e| e.to_string())?)
            }
            (Some(_), _) => return Err("--expert-stats orders the experts for --place auto".into()),
        };
        Placement::new(self.place.as_deref(), &self.backend, usage)
    }
}

/// `--path` of `generate` and `logits`: `fast`, chosen per model and devices once they are known, or one
/// numeric path.
#[derive(Clone, Copy)]
pub enum PathChoice {
    Fast,
    Fixed(NumericPath),
}

pub const PATH: Checked<PathChoice> = Checked(|s| match s {
    "fast" => Ok(PathChoice::Fast),
    other => NumericPath::parse(other)
        .map(PathChoice::Fixed)
        .ok_or_else(|| format!("--path {other}: expected f32, bf16, w8a8 or fast")),
});

/// Generate from a DeepSeek-V3 / V2 checkpoint, streaming text to stdout
///
/// Prompt / decode tokens per second go to stderr. The checkpoint is in HF layout, FP8 or BF16. Without
/// --model: a small built-in model of the same architecture with random weights and the real tokenizer;
/// --random-weights --config FILE times any shape (hashed weights, no download).
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["prompt", "tokens"])))]
pub struct GenerateArgs {
    /// A checkpoint directory (HF layout)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "random_weights"])]
    model: Option<PathBuf>,
    /// Hashed weights for --config's shape instead of a checkpoint
    #[arg(long, requires = "config")]
    random_weights: bool,
    /// The config.json whose shape --random-weights runs
    #[arg(long, value_name = "FILE", requires = "random_weights")]
    config: Option<PathBuf>,
    /// The prompt as text (needs a tokenizer)
    #[arg(long, value_name = "TEXT", value_parser = TEXT, allow_hyphen_values = true)]
    prompt: Option<String>,
    /// The prompt as token ids, e.g. 1,2,3
    #[arg(long, value_name = "IDS", value_parser = TOKENS)]
    tokens: Option<TokenIds>,
    /// Wrap --prompt in the model's chat template
    #[arg(long)]
    chat: bool,
    /// A system message for --chat
    #[arg(long, value_name = "TEXT", value_parser = TEXT, allow_hyphen_values = true)]
    system: Option<String>,
    /// At most 8192
    #[arg(long, value_name = "N", default_value = "4096", value_parser = MAX_NEW_TOKENS)]
    max_new_tokens: usize,
    /// 0 is greedy; otherwise at least 0.001
    #[arg(long, value_name = "T", default_value = "0.6", value_parser = TEMPERATURE, allow_negative_numbers = true)]
    temperature: f32,
    /// Nucleus sampling: the smallest set of tokens whose probabilities add up to P
    #[arg(long, value_name = "P", default_value = "0.95", value_parser = TOP_P, allow_negative_numbers = true)]
    top_p: f32,
    /// The sampling seed: the same seed, prompt and device give the same tokens
    #[arg(long, value_name = "S", default_value = "0", value_parser = SEED)]
    seed: u64,
    #[command(flatten)]
    device: DeviceArgs,
    /// fast: W8A8 for FP8 checkpoints on devices with native FP8 arithmetic, else bf16 activations; or
    /// bf16, w8a8, f32
    #[arg(long, default_value = "fast", value_parser = PATH)]
    path: PathChoice,
    /// The last stdout line is {"tokens":[new ids],"text":...,"prefill_tok_s":...,"decode_tok_s":...}
    #[arg(long)]
    json: bool,
    /// Always produce --max-new-tokens (benchmarking)
    #[arg(long)]
    ignore_eos: bool,
    /// Count how many tokens chose each routed expert of each layer into FILE (added to its counts when
    /// it exists), for --place auto --expert-stats
    #[arg(long, value_name = "FILE")]
    record_expert_stats: Option<PathBuf>,
}

/// Token ids. A named type: clap takes a field of type `Vec` for an option given several times.
type TokenIds = Vec<u32>;

const TOKENS: Checked<TokenIds> = Checked(dsv3_model::values::parse_tokens);

/// Write the logits of every prompt position, to compare with PyTorch
///
/// `logits` [T, V] f32 in a safetensors file.
#[derive(clap::Args)]
pub struct LogitsArgs {
    /// A checkpoint directory (HF layout)
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    /// The prompt as token ids, e.g. 1,2,3
    #[arg(long, value_name = "IDS", value_parser = TOKENS)]
    tokens: TokenIds,
    #[command(flatten)]
    device: DeviceArgs,
    /// f32, bf16, w8a8 or fast (as for generate)
    #[arg(long, default_value = "f32", value_parser = PATH)]
    path: PathChoice,
    #[arg(long, value_name = "FILE.safetensors")]
    out: PathBuf,
}

/// Run the golden fixtures on one backend
///
/// The fixtures hold logits from HF transformers (model/tests/fixtures); each path's agreement is printed
/// against its derived bound. Exit status 1 on any failure.
#[derive(clap::Args)]
pub struct GoldenArgs {
    #[command(flatten)]
    device: DeviceArgs,
    /// f32, bf16, w8a8 or all
    #[arg(long, value_name = "PATH", default_value = "all", value_parser = GOLDEN_PATHS)]
    path: NumericPaths,
    /// The fixtures directory
    #[arg(long, value_name = "DIR", default_value = "model/tests/fixtures")]
    fixtures: PathBuf,
}

/// A named type for the same reason as [`TokenIds`].
type NumericPaths = Vec<NumericPath>;

const GOLDEN_PATHS: Checked<NumericPaths> = Checked(|s| match s {
    "all" => Ok(vec![NumericPath::F32, NumericPath::Bf16, NumericPath::W8A8]),
    p => NumericPath::parse(p)
        .map(|p| vec![p])
        .ok_or_else(|| format!("--path {p}: expected f32, bf16, w8a8 or all")),
});

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
    /// `usage` (recorded expert counts) orders the routed experts for `auto`.
    pub fn new(rules: Option<&str>, backend: &str, usage: Option<ExpertStats>) -> Result<Placement, String> {
        let default = pick_device(backend)?;
        let mut opened = HashMap::from([(default.id().to_string(), default.clone())]);
        let rules = match rules {
            Some(text) if Rules::is_auto(text) => {
                Rules::auto(crate::device_specs::present(&mut opened), usage)
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
    choice: PathChoice,
    config: &ModelConfig,
    devices: &[Arc<dyn Device>],
) -> Result<NumericPath, String> {
    match choice {
        PathChoice::Fast => {
            let path = NumericPath::fastest(config, devices);
            tracing::info!("--path fast: {} on these devices", path.name());
            Ok(path)
        }
        PathChoice::Fixed(path) => Ok(path),
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
pub fn load(source: ModelSource, place: &mut Placement, path: PathChoice) -> Result<Loaded, String> {
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
            let model = load_placed(builtin.config.clone(), &builtin, None, place, path, None)?;
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
    let model = load_placed(config, &checkpoint, Some(&checkpoint), place, path, Some(&mut progress))?;
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
    path: PathChoice,
    mut progress: Option<&mut Progress>,
) -> Result<Model, String> {
    let (assignment, devices) = place.resolve(&config)?;
    check_memory(&config, checkpoint, &assignment, &devices)?;
    let path = resolve_path(path, &config, &devices)?;
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

pub fn run_generate(args: GenerateArgs) -> i32 {
    finish("generate", try_generate(args).map(|()| 0))
}

fn try_generate(args: GenerateArgs) -> Result<(), String> {
    let json = args.json;
    let mut place = args.device.placement()?;
    // clap lets --model and --config (with --random-weights) through only one at a time.
    let source = match (&args.model, &args.config) {
        (Some(dir), _) => ModelSource::Checkpoint(dir),
        (None, Some(file)) => ModelSource::RandomConfig(file),
        (None, None) => ModelSource::Builtin,
    };
    let loaded = load(source, &mut place, args.path)?;
    let model = &loaded.model;
    if loaded.random_weights {
        tracing::warn!(
            "running random weights (the built-in model, or --random-weights): timing is real, text is noise"
        );
    }
    let shares = model.devices();
    let on = match shares.len() {
        1 => model.device.info().name.clone(),
        n => format!("{n} devices"),
    };
    tracing::info!(
        "model: {} on {on} ({}), {} layers, {:.1} MB of weights",
        model.config.arch.name(),
        model.describe_numerics(),
        model.config.num_hidden_layers,
        model.weight_bytes as f64 / 1e6
    );
    if shares.len() > 1 {
        for share in &shares {
            let parts = model.describe_parts(&share.parts);
            tracing::info!("  {}: {:.1} MB: {parts}", share.name, share.weight_bytes as f64 / 1e6);
        }
    }
    let tokenizer = loaded.tokenizer.as_ref();
    // clap lets exactly one of --prompt and --tokens through.
    let prompt = match (args.tokens, &args.prompt) {
        (Some(ids), _) => ids,
        (None, Some(text)) => {
            let tok = tokenizer.ok_or("this checkpoint has no tokenizer.json: use --tokens")?;
            let ids = if args.chat {
                let mut messages = Vec::new();
                if let Some(system) = &args.system {
                    messages.push(Message::system(system));
                }
                messages.push(Message::user(text));
                tok.encode_chat(&messages, true)
            } else {
                tok.encode_prompt(text, BosPolicy::FromConfig)
            };
            ids.map_err(|e| e.to_string())?
        }
        (None, None) => unreachable!("clap requires --prompt or --tokens"),
    };
    let sampling = Sampling { temperature: args.temperature, top_p: args.top_p, seed: args.seed };
    let mut stop = model.config.eos_token_ids.clone();
    if let Some(t) = tokenizer {
        stop.push(t.eos_id());
    }
    if args.ignore_eos {
        stop.clear(); // benchmarking: always produce --max-new-tokens
    }
    let request = Request { max_new_tokens: args.max_new_tokens, sampling, stop };
    // The counts to add to, read (and checked against this model) before the run rather than after it.
    let expert_stats = match &args.record_expert_stats {
        Some(file) => {
            model.record_routes();
            Some((file, expert_stats_to_extend(file, &model.config)?))
        }
        None => None,
    };
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
    errln!(
        "prompt: {} tokens, {:.1} tok/s | decode: {} tokens, {:.1} tok/s",
        out.prompt_tokens,
        out.prefill_tok_s(),
        out.decode_tokens,
        out.decode_tok_s()
    );
    if let Some((file, mut stats)) = expert_stats {
        stats.add_routes(&model.take_routes()).map_err(|e| e.to_string())?;
        write_file("--record-expert-stats", file, stats.to_json().as_bytes())?;
        tracing::info!("expert usage of {} tokens in {}", stats.tokens, file.display());
    }
    // The run report: what each device held and did (one line per device where there are several).
    let shares = model.devices();
    if shares.len() > 1 {
        for d in &shares {
            errln!(
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
            "launches_per_step": out.launches_per_step(),
            "decode_graph_replays": out.decode_graph_replays,
            "devices": devices,
        });
        outln!("{line}")?;
    }
    Ok(())
}

/// The counts `--record-expert-stats FILE` adds to: FILE's when it exists (for this model's shape, else an
/// error naming the file and field), else none yet.
fn expert_stats_to_extend(file: &Path, config: &ModelConfig) -> Result<ExpertStats, String> {
    if file.exists() {
        ExpertStats::load_for(file, config).map_err(|e| e.to_string())
    } else {
        ExpertStats::new(config).map_err(|e| format!("--record-expert-stats: {e}"))
    }
}

pub fn run_logits(args: LogitsArgs) -> i32 {
    finish("logits", try_logits(args).map(|()| 0))
}

fn try_logits(args: LogitsArgs) -> Result<(), String> {
    let (tokens, out_path) = (&args.tokens, args.out.as_path());
    let mut place = args.device.placement()?;
    let loaded = load(ModelSource::Checkpoint(&args.model), &mut place, args.path)?;
    let model = &loaded.model;
    // Positions past the context are not what the model was trained for: refuse rather than extrapolate.
    if tokens.len() > model.config.max_position_embeddings {
        let context = model.config.max_position_embeddings;
        return Err(format!("--tokens: {} tokens exceed the model's context of {context}", tokens.len()));
    }
    let mut cache = dsv3_model::cache::KvCache::new(model, 1, tokens.len()).map_err(|e| e.to_string())?;
    let logits = model.forward(&mut cache, tokens, tokens.len(), Logits::All).map_err(|e| e.to_string())?;
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
    tracing::info!(
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
pub fn run_golden(args: GoldenArgs) -> i32 {
    finish("golden", try_golden(args).map(|pass| if pass { 0 } else { 1 }))
}

fn try_golden(args: GoldenArgs) -> Result<bool, String> {
    let root = args.fixtures.as_path();
    let mut all_pass = true;
    for fixture in ["tiny-dsv3", "tiny-dsv3-bf16"] {
        let dir = root.join(fixture);
        let config = ModelConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
        for &path in &args.path {
            if path == NumericPath::W8A8 && config.quantization.is_none() {
                continue; // a BF16 checkpoint has no W8A8 form
            }
            let mut place = args.device.placement()?;
            let (rules, default) = (place.rules().clone(), place.default_name());
            let report = golden::check_placed(&dir, &rules, &default, &mut |n| place.open(n), path)
                .map_err(|e| e.to_string())?;
            outln!("{}", report.line())?;
            all_pass &= report.pass();
        }
    }
    Ok(all_pass)
}
