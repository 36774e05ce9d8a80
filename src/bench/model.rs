//! `dsv3 bench model`: prefill and decode tokens per second over a grid of prompt lengths × generated
//! lengths × batch sizes, as llama-bench tables them, with each figure's spread over repetitions and its
//! roofline. The model is loaded and run exactly as `dsv3 generate` does (`crate::model_cmd`).

use std::path::PathBuf;

use dsv3_model::generate::{generate, Request, Sampling, MAX_NEW_TOKENS_LIMIT};
use dsv3_model::graph::Model;
use dsv3_model::plan;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::results::{self, AbsentPeer, ModelEntry, Roofline, Row};
use super::{machine, peer, plot, report, roofline};
use crate::cli::Checked;
use crate::model_cmd::{self, DeviceArgs, ModelSource, PathChoice, PATH};
use crate::out::{outln, writable, write_file};

/// Prefill and decode tok/s over prompt × generation × batch, with mean ± stddev and rooflines
///
/// Every cell of the grid runs --warmup unrecorded times, then --repetitions times; each run prefills
/// --batch prompts of --prompt tokens (random ids) one after another, then decodes --gen tokens for all of
/// them together. Prefill tok/s is prompt tokens over prefill time, decode tok/s is tokens from decode
/// steps over their time (the first token of each sequence comes from its prefill). Beside each figure:
/// the roofline of the devices' peaks (decode: weight bytes read per step over bandwidth; prefill: FLOPs
/// over the matrix rate, whichever bounds) and the fraction of it reached. Without --model or --config:
/// the built-in model. Progress goes to stderr on a terminal (not with -q).
#[derive(clap::Args)]
pub struct Args {
    /// A checkpoint directory (HF layout)
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    model: Option<PathBuf>,
    /// A config.json whose shape runs with random weights (no download)
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
    /// fast: W8A8 for FP8 checkpoints on devices with native FP8 arithmetic, else bf16 activations; or
    /// bf16, w8a8, f32
    #[arg(long, default_value = "fast", value_parser = PATH)]
    path: PathChoice,
    /// Prompt lengths, e.g. 512,2048
    #[arg(short = 'p', long = "prompt", value_name = "N,…", default_value = "512", value_parser = PROMPTS)]
    prompts: Counts,
    /// Tokens generated per sequence (at least 2: the first comes from the prefill), e.g. 128
    #[arg(short = 'n', long = "gen", value_name = "N,…", default_value = "128", value_parser = GENS)]
    gens: Counts,
    /// Sequences decoded together, e.g. 1,8,32
    #[arg(short = 'b', long = "batch", value_name = "N,…", default_value = "1", value_parser = BATCHES)]
    batches: Counts,
    /// Measured runs per cell, in 1..=1000
    #[arg(long, value_name = "N", default_value = "5", value_parser = REPETITIONS)]
    repetitions: usize,
    /// Unrecorded runs per cell before the measured ones (first-use costs: kernel compiles, workspace),
    /// in 0..=100
    #[arg(long, value_name = "N", default_value = "1", value_parser = WARMUP)]
    warmup: usize,
    /// Save the run (machine, devices, commit, flags, every sample) as JSON, for `dsv3 bench compare`
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Print the table as CSV
    #[arg(long, conflicts_with = "markdown")]
    csv: bool,
    /// Print the table as Markdown
    #[arg(long)]
    markdown: bool,
    /// Draw tok/s by batch size (prefill and decode, with their rooflines) as an SVG file
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Time a peer on the same model and prompts in the same run: transformers (HuggingFace, torch f32,
    /// eager attention, one sequence: batch-1 cells) through --python. Cells it cannot run say why
    #[arg(long, value_parser = ["transformers"])]
    peer: Option<String>,
    /// The python that runs the transformers peer (benches/peer/transformers_generate.py, embedded)
    #[arg(long, value_name = "PATH", default_value = "python3")]
    python: PathBuf,
}

/// Comma-separated counts. A named type: clap takes a field of type `Vec` for an option given several
/// times.
type Counts = Vec<usize>;

/// A comma-separated list of counts in `range` for `flag`, without repeats.
fn counts(flag: &str, s: &str, range: std::ops::RangeInclusive<usize>) -> Result<Counts, String> {
    let mut out = Vec::new();
    for item in s.split(',') {
        let n: usize = crate::cli::number(flag, item.trim())?;
        if !range.contains(&n) {
            return Err(format!("{flag} {n}: must be in {}..={}", range.start(), range.end()));
        }
        if out.contains(&n) {
            return Err(format!("{flag} {s}: {n} appears twice"));
        }
        out.push(n);
    }
    Ok(out)
}

/// The model's context is checked once it is loaded; this bound only keeps the arithmetic small.
const PROMPTS: Checked<Counts> = Checked(|s| counts("--prompt", s, 1..=1 << 20));
const GENS: Checked<Counts> = Checked(|s| counts("--gen", s, 2..=MAX_NEW_TOKENS_LIMIT));
/// A batch beyond a thousand sequences is a serving load, not a bench cell.
const BATCHES: Checked<Counts> = Checked(|s| counts("--batch", s, 1..=1024));
const REPETITIONS: Checked<usize> = Checked(|s| match crate::cli::number("--repetitions", s)? {
    n @ 1..=1000 => Ok(n),
    n => Err(format!("--repetitions {n}: must be in 1..=1000")),
});
const WARMUP: Checked<usize> = Checked(|s| match crate::cli::number("--warmup", s)? {
    n @ 0..=100 => Ok(n),
    n => Err(format!("--warmup {n}: must be in 0..=100")),
});

pub fn run(args: Args, quiet: bool) -> i32 {
    crate::finish("bench model", try_run(args, quiet))
}

fn try_run(args: Args, quiet: bool) -> Result<i32, String> {
    // A grid can run for an hour: an output that cannot be written is refused before it starts.
    for (flag, file) in [("--json", &args.json), ("--plot", &args.plot)] {
        if let Some(file) = file {
            writable(flag, file)?;
        }
    }
    let mut place = args.device.placement()?;
    let (source, described) = match (&args.model, &args.config) {
        (Some(dir), _) => (ModelSource::Checkpoint(dir), dir.display().to_string()),
        (None, Some(file)) => {
            (ModelSource::RandomConfig(file), format!("{} (random weights)", file.display()))
        }
        (None, None) => (ModelSource::Builtin, "built-in (random weights)".to_string()),
    };
    let loaded = model_cmd::load(source, &mut place, args.path)?;
    let model = &loaded.model;
    let context = model.config.max_position_embeddings;
    for &p in &args.prompts {
        for &n in &args.gens {
            if p + n > context {
                return Err(format!(
                    "--prompt {p} --gen {n}: {} tokens exceed the model's context of {context}",
                    p + n
                ));
            }
        }
    }
    let mut cells = Vec::new();
    for &p in &args.prompts {
        for &n in &args.gens {
            cells.extend(args.batches.iter().map(|&b| (p, n, b)));
        }
    }
    let progress = progress_bar(quiet, cells.len() * (args.warmup + args.repetitions));
    let mut rows = Vec::new();
    for &cell in &cells {
        let (mut prefill, mut decode) = (Vec::new(), Vec::new());
        for run in 0..args.warmup + args.repetitions {
            let (p, n, b) = cell;
            let what = if run < args.warmup {
                "warm-up".to_string()
            } else {
                format!("run {}/{}", run - args.warmup + 1, args.repetitions)
            };
            progress.set_message(format!("p{p} n{n} b{b} {what}"));
            let out = run_once(model, cell).map_err(|e| format!("p{p} n{n} b{b}: {e}"))?;
            if run >= args.warmup {
                prefill.push(out.prefill_tok_s());
                decode.push(out.decode_tok_s());
            }
            progress.inc(1);
        }
        rows.push(Row::new("prefill", cell, prefill));
        rows.push(Row::new("decode", cell, decode));
    }
    let mut absent = Vec::new();
    if args.peer.is_some() {
        progress.set_message("transformers");
        peer_rows(&args, &model.config, &cells, &mut rows, &mut absent)?;
    }
    progress.finish_and_clear();

    let mut devices = Vec::new();
    let mut peaks = Vec::new();
    let shares = model.devices();
    for share in &shares {
        let device = place.open(&share.name).map_err(|e| e.to_string())?;
        let entry = machine::device(device.as_ref());
        peaks.push(entry.peak.clone());
        devices.push(entry);
    }
    add_rooflines(model, &shares, &peaks, &mut rows)?;
    let entry = ModelEntry {
        source: described,
        arch: model.config.arch.name().to_string(),
        layers: model.config.num_hidden_layers,
        weight_bytes: model.weight_bytes,
        dtype_path: model.path.name().to_string(),
        numerics: model.describe_numerics(),
    };
    let mut run = machine::run("model", devices, entry, rows);
    run.absent_peers = absent;
    let table = if args.csv {
        report::csv(&run)
    } else if args.markdown {
        report::markdown(&run)
    } else {
        report::text(&run)
    };
    // The table first: should a file fail after all (a full disk), the figures are still shown.
    outln!("{table}")?;
    if let Some(file) = &args.json {
        write_file("--json", file, run.to_json().as_bytes())?;
    }
    if let Some(file) = &args.plot {
        write_file("--plot", file, plot::tok_s_by_batch(&run)?.as_bytes())?;
    }
    Ok(0)
}

/// Progress on stderr: hidden with -q, and by indicatif itself when stderr is not a terminal.
fn progress_bar(quiet: bool, runs: usize) -> ProgressBar {
    let target = if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr() };
    let bar = ProgressBar::with_draw_target(Some(runs as u64), target);
    // The template is fixed; the default style is the fallback should indicatif ever reject it.
    let style = ProgressStyle::with_template("bench model {msg} [{bar:30}] {pos}/{len} runs, ETA {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// One generation of `batch` sequences of `prompt` random ids, `gen` new tokens each (greedy, no stop
/// token, so every run does the same work).
fn run_once(
    model: &Model,
    (prompt, gen, batch): (usize, usize, usize),
) -> dsv3_core::Result<dsv3_model::generate::Output> {
    let prompts = prompts(model.config.vocab_size, prompt, batch);
    let request = Request {
        max_new_tokens: gen,
        sampling: Sampling { temperature: 0.0, top_p: 1.0, seed: 0 },
        stop: Vec::new(),
    };
    generate(model, &prompts, &request, |_, _| Ok(()))
}

/// `batch` prompts of `prompt` ids below `vocab`, the same in every run and for the peer.
fn prompts(vocab: usize, prompt: usize, batch: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| (0..prompt).map(|i| (mix((b as u64) << 32 | i as u64) % vocab as u64) as u32).collect())
        .collect()
}

/// transformers on each batch-1 cell (it generates one sequence), as rows named after ours; the other
/// cells, or all when it fails, are absent with the reason.
fn peer_rows(
    args: &Args,
    config: &dsv3_model::config::ModelConfig,
    cells: &[(usize, usize, usize)],
    rows: &mut Vec<Row>,
    absent: &mut Vec<AbsentPeer>,
) -> Result<(), String> {
    // The built-in model has no file: its config.json goes to a temporary file for the script.
    let builtin = std::env::temp_dir().join(format!("dsv3-bench-builtin-{}.json", std::process::id()));
    let model = match (&args.model, &args.config) {
        (Some(dir), _) => ["--model".to_string(), dir.display().to_string()],
        (None, Some(file)) => ["--config".to_string(), file.display().to_string()],
        (None, None) => {
            std::fs::write(&builtin, dsv3_model::builtin::CONFIG)
                .map_err(|e| format!("--peer: writing {}: {e}", builtin.display()))?;
            ["--config".to_string(), builtin.display().to_string()]
        }
    };
    for &cell in cells {
        let (p, n, b) = cell;
        let result = if b == 1 {
            let prompt = &prompts(config.vocab_size, p, 1)[0];
            let model = [model[0].as_str(), model[1].as_str()];
            peer::transformers(&args.python, model, prompt, n, args.repetitions)
        } else {
            Err("the transformers peer generates one sequence: batch 1 only".into())
        };
        for phase in ["prefill", "decode"] {
            let ours = Row::new(phase, cell, vec![]).key();
            match &result {
                Ok(g) => {
                    let samples = if phase == "prefill" { &g.prefill } else { &g.decode };
                    let mut r = Row::new(phase, cell, samples.clone());
                    r.name = Some(format!("{ours}: peer transformers"));
                    r.peer = Some(g.what.clone());
                    rows.push(r);
                }
                Err(why) => {
                    absent.push(AbsentPeer { peer: "transformers".into(), row: ours, reason: why.clone() })
                }
            }
        }
    }
    let _ = std::fs::remove_file(&builtin);
    Ok(())
}

/// splitmix64's finalizer: distinct, well-spread token ids per (sequence, position), so the sequences of a
/// batch route to different experts as real prompts would.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Each row's roofline: a prefill pass takes one prompt's tokens, a decode step one token per sequence.
fn add_rooflines(
    model: &Model,
    shares: &[dsv3_model::graph::DeviceShare],
    peaks: &[Option<results::Peak>],
    rows: &mut [Row],
) -> Result<(), String> {
    let sizes = plan::part_sizes(&model.config, None, None).map_err(|e| e.to_string())?;
    let shares: Vec<roofline::Share> = shares
        .iter()
        .zip(peaks)
        .map(|(s, p)| roofline::Share { parts: &s.parts, peak: p.as_ref() })
        .collect();
    // A peer's rows are its own figures: the roofline is ours.
    for row in rows.iter_mut().filter(|r| r.peer.is_none()) {
        // generate's prefill takes one prompt per pass and its last position's logits; a decode step
        // takes a token and gives logits per sequence.
        let (tokens, logit_rows) =
            if row.phase == "prefill" { (row.prompt, 1) } else { (row.batch, row.batch) };
        row.roofline =
            roofline::rate(&model.config, &sizes, &shares, model.path, tokens, logit_rows).map(|b| {
                Roofline {
                    rate: b.rate,
                    bound: b.kind.to_string(),
                    fraction: row.mean / b.rate,
                    tokens,
                    flops: b.flops,
                    bytes: b.bytes,
                }
            });
    }
    Ok(())
}
