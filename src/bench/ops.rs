//! `dsv3 bench ops`: every op of one model step at the model's real shapes (conformance's [`suite`]) on
//! each selected backend — time, GB/s, TFLOP/s and the share of the device's peak — with each figure
//! backed by its replica's check against the oracle on the same device: a fast wrong kernel is reported
//! as wrong (exit status 1), not as fast.

use std::collections::HashMap;
use std::path::PathBuf;

use dsv3_conformance::report::Perf;
use dsv3_conformance::suite::{layer_suite, LayerDims, MoeDims, Phase, SuiteCase};
use dsv3_conformance::{runner, Mode, Status};
use dsv3_core::Backend;
use dsv3_model::config::ModelConfig;

use super::machine;
use super::results::{ModelEntry, Row, Run};
use crate::cli::{Checked, TEXT};
use crate::out::{out, writable, write_file};
use crate::registry;

/// Time every op of a model's decode and prefill step at its real shapes, each checked on a replica
///
/// The suite is one dense layer, one MoE layer, the embedding and the head of the named model (or any
/// DeepSeek-style config.json): the projections, MLA, the cache append, routing, the routed experts'
/// grouped GEMMs, norms and sampling, in launch order. Each op is also run at reduced feature sizes
/// (same rows, dtypes and kernel path) and compared with the CPU oracle; a row whose replica fails is
/// marked WRONG and the command exits 1.
#[derive(clap::Args)]
pub struct Args {
    /// The model whose shapes are timed: deepseek-v3, deepseek-v2-lite, or quick (the built-in model:
    /// seconds)
    #[arg(long, value_parser = ["deepseek-v3", "deepseek-v2-lite", "quick"], required_unless_present = "config")]
    suite: Option<String>,
    /// Any DeepSeek-style config.json instead of a named suite
    #[arg(long, conflicts_with = "suite")]
    config: Option<PathBuf>,
    /// The backends to time on (`all`, or names separated by commas)
    #[arg(long, default_value = "cpu", value_parser = TEXT)]
    backend: String,
    /// Which step: decode, prefill or both
    #[arg(long, default_value = "both", value_parser = ["decode", "prefill", "both"])]
    phase: String,
    /// Decode: sequences in the batch
    #[arg(long, default_value = "1", value_parser = POSITIVE)]
    batch: usize,
    /// Decode: positions in each sequence's latent cache
    #[arg(long, default_value = "4096", value_parser = POSITIVE)]
    context: usize,
    /// Prefill: the prompt's tokens
    #[arg(long, default_value = "512", value_parser = POSITIVE)]
    prefill: usize,
    /// Timed runs of the whole suite (their spread is the noise `bench compare` judges by)
    #[arg(long, default_value = "3", value_parser = POSITIVE)]
    repetitions: usize,
    /// Time spent measuring each op per repetition, in (0, 60]
    #[arg(long, default_value = "0.2", value_parser = SECONDS)]
    seconds: f64,
    /// Save the run (format dsv3-bench, kind ops) for `dsv3 bench compare`
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

const POSITIVE: Checked<usize> = Checked(|s| match s.parse::<usize>() {
    Ok(n) if n > 0 && n <= 1 << 20 => Ok(n),
    _ => Err("expected a whole number in [1, 1048576]".into()),
});

const SECONDS: Checked<f64> = Checked(|s| match s.parse::<f64>() {
    Ok(seconds) if seconds > 0.0 && seconds <= 60.0 => Ok(seconds),
    _ => Err("must be in (0, 60]".into()),
});

const DEEPSEEK_V3: &str = include_str!("../../model/tests/fixtures/configs/deepseek-v3.json");
const DEEPSEEK_V2_LITE: &str = include_str!("../../model/tests/fixtures/configs/deepseek-v2-lite.json");

pub fn run(args: Args) -> i32 {
    crate::finish("bench ops", try_run(args))
}

fn try_run(args: Args) -> Result<i32, String> {
    if let Some(file) = &args.json {
        writable("--json", file)?;
    }
    let (config, source) = load_config(&args)?;
    let dims = dims(&config);
    let backends = registry::select(&args.backend)?;
    registry::require_present(&args.backend, &backends)?;
    let refs: Vec<&dyn Backend> = backends.iter().map(|b| b.as_ref()).collect();
    let mut phases = Vec::new();
    if args.phase != "prefill" {
        phases.push(Phase::Decode { batch: args.batch, context: args.context });
    }
    if args.phase != "decode" {
        phases.push(Phase::Prefill { tokens: args.prefill });
    }
    let mut lines = vec![format!(
        "{:<8} {:<21} {:<10} {:>10} {:>9} {:>9} {:>20}  {}",
        "phase", "part", "device", "ms", "GB/s", "TFLOP/s", "% of peak", "check"
    )];
    let (mut rows, mut wrong) = (Vec::new(), 0);
    for phase in phases {
        let suite = layer_suite(&dims, phase);
        let checks = check_replicas(&refs, &suite);
        let samples = time_suite(&refs, &suite, &args);
        for (device, per_case) in &samples {
            for (i, entry) in suite.iter().enumerate() {
                let check = checks.get(&(device.clone(), i)).cloned().unwrap_or_else(|| "not run".into());
                wrong += usize::from(check.starts_with("WRONG"));
                let line = match &per_case[i] {
                    Timed::Perf(runs) if !runs.is_empty() => {
                        let last = &runs[runs.len() - 1];
                        let ms = median(runs.iter().map(|p| p.ms).collect());
                        rows.push(row(phase, entry, device, runs));
                        let peak = match (last.pct_of_peak, &last.bound) {
                            (Some(pct), Some(bound)) => format!("{pct:.1} ({bound})"),
                            _ => "unknown".into(),
                        };
                        format!(
                            "{:<8} {:<21} {:<10} {:>10.4} {:>9.2} {:>9.3} {:>20}  {check}",
                            phase.name(),
                            entry.part,
                            device,
                            ms,
                            last.gbps,
                            last.gflops / 1e3,
                            peak
                        )
                    }
                    Timed::Not(status) => {
                        format!("{:<8} {:<21} {:<10} {status}", phase.name(), entry.part, device)
                    }
                    Timed::Perf(_) => {
                        format!("{:<8} {:<21} {:<10} not timed", phase.name(), entry.part, device)
                    }
                };
                lines.push(line);
            }
        }
        lines.push(String::new());
    }
    out!("model {source}\n{}", lines.join("\n"))?;
    if let Some(file) = &args.json {
        let run = saved_run(&refs, &config, source, rows);
        write_file("--json", file, run.to_json().as_bytes())?;
    }
    if wrong > 0 {
        out!("{wrong} op(s) computed a wrong replica: their times are not results\n")?;
        return Ok(1);
    }
    Ok(0)
}

fn load_config(args: &Args) -> Result<(ModelConfig, String), String> {
    let named = |text: &str, name: &str| {
        ModelConfig::from_json(text, name).map(|c| (c, name.to_string())).map_err(|e| e.to_string())
    };
    match (&args.suite, &args.config) {
        (_, Some(path)) => {
            ModelConfig::from_file(path).map(|c| (c, path.display().to_string())).map_err(|e| e.to_string())
        }
        (Some(s), None) if s == "deepseek-v3" => named(DEEPSEEK_V3, "deepseek-v3"),
        (Some(s), None) if s == "deepseek-v2-lite" => named(DEEPSEEK_V2_LITE, "deepseek-v2-lite"),
        _ => named(dsv3_model::builtin::CONFIG, "quick (the built-in model)"),
    }
}

/// What the suite needs of a config.
fn dims(c: &ModelConfig) -> LayerDims {
    LayerDims {
        hidden: c.hidden_size,
        q_lora_rank: c.q_lora_rank,
        kv_lora_rank: c.kv_lora_rank,
        qk_nope: c.qk_nope_head_dim,
        qk_rope: c.qk_rope_head_dim,
        v_head: c.v_head_dim,
        heads: c.num_attention_heads,
        dense_inter: c.intermediate_size,
        moe: c.moe.as_ref().map(|m| MoeDims {
            experts: m.n_routed_experts,
            shared: m.n_shared_experts,
            inter: m.moe_intermediate_size,
            route: m.route,
        }),
        vocab: c.vocab_size,
        rope: c.rope(),
        fp8_weights: c.quantization.is_some(),
    }
}

/// Each replica against the oracle on every device: `(device, case index) → "pass"`, `"WRONG: …"`, or
/// the status that kept it from running.
fn check_replicas(backends: &[&dyn Backend], suite: &[SuiteCase]) -> HashMap<(String, usize), String> {
    let replicas: Vec<_> = suite.iter().map(|s| s.replica.clone()).collect();
    let report = runner::run(backends, &replicas, &runner::Options::default());
    let mut checks = HashMap::new();
    for (device, rows) in by_device(&report.results, replicas.len()) {
        for (i, r) in rows.into_iter().enumerate() {
            let text = match r.status {
                Status::Pass => "pass".to_string(),
                Status::Fail => format!("WRONG: {}", r.reason),
                other => format!("{}: {}", other.as_str(), r.reason),
            };
            checks.insert((device.clone(), i), text);
        }
    }
    checks
}

enum Timed {
    /// One measurement per repetition.
    Perf(Vec<Perf>),
    Not(String),
}

/// The full-size cases timed `repetitions` times: per device, per case.
fn time_suite(backends: &[&dyn Backend], suite: &[SuiteCase], args: &Args) -> Vec<(String, Vec<Timed>)> {
    let cases: Vec<_> = suite.iter().map(|s| s.case.clone()).collect();
    let options =
        runner::Options { mode: Mode::Perf, perf_seconds: args.seconds, ..runner::Options::default() };
    let mut timed: Vec<(String, Vec<Timed>)> = Vec::new();
    for _ in 0..args.repetitions {
        let report = runner::run(backends, &cases, &options);
        for (device, rows) in by_device(&report.results, cases.len()) {
            let slot = match timed.iter().position(|(d, _)| *d == device) {
                Some(i) => i,
                None => {
                    timed.push((device.clone(), (0..cases.len()).map(|_| Timed::Perf(Vec::new())).collect()));
                    timed.len() - 1
                }
            };
            // One row per case (by_device makes it so); zip stops at the shorter anyway.
            for (entry, r) in timed[slot].1.iter_mut().zip(rows) {
                match (entry, r.perf) {
                    (Timed::Perf(runs), Some(p)) => runs.push(p),
                    (entry, _) => *entry = Timed::Not(format!("{}: {}", r.status.as_str(), r.reason)),
                }
            }
        }
    }
    timed
}

/// The runner's rows grouped per device (`cpu:0`), each group in case order. A backend without a device
/// has one row per op instead of per case: it gets that row for every case.
fn by_device(rows: &[dsv3_conformance::Row], cases: usize) -> Vec<(String, Vec<dsv3_conformance::Row>)> {
    let mut groups: Vec<(String, Vec<dsv3_conformance::Row>)> = Vec::new();
    for r in rows {
        // The runner labels a device `cpu:0 <its name>`.
        let device = r.device.split_whitespace().next().unwrap_or(&r.device);
        let name = if r.case == "*" { r.backend.clone() } else { device.to_string() };
        match groups.iter_mut().find(|(d, _)| *d == name) {
            Some((_, g)) => g.push(r.clone()),
            None => groups.push((name, vec![r.clone()])),
        }
    }
    for (_, g) in &mut groups {
        if g.iter().all(|r| r.case == "*") {
            let first = g[0].clone();
            *g = vec![first; cases];
        }
    }
    groups
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A saved row: calls per second per repetition (higher is better, as `bench compare` reads every row),
/// keyed by the phase, the step's shape, the part and the device.
fn row(phase: Phase, entry: &SuiteCase, device: &str, runs: &[Perf]) -> Row {
    let (prompt, batch) = match phase {
        Phase::Decode { batch, context } => (context, batch),
        Phase::Prefill { tokens } => (tokens, 1),
    };
    let mut r = Row::new(phase.name(), (prompt, 0, batch), runs.iter().map(|p| 1e3 / p.ms).collect());
    r.unit = "calls/s".into();
    r.name = Some(format!("{} {} {} on {device}", r.key(), entry.part, entry.case.name));
    r
}

fn saved_run(backends: &[&dyn Backend], config: &ModelConfig, source: String, rows: Vec<Row>) -> Run {
    let devices = backends
        .iter()
        .flat_map(|b| {
            let infos = b.devices().unwrap_or_default();
            infos.into_iter().filter_map(|i| b.open(i.ordinal).ok()).map(|d| machine::device(d.as_ref()))
        })
        .collect();
    let entry = ModelEntry {
        source,
        arch: config.arch.name().to_string(),
        layers: config.num_hidden_layers,
        weight_bytes: 0,
        dtype_path: if config.quantization.is_some() { "bf16 x fp8" } else { "bf16" }.into(),
        numerics: "bf16 activations; linear layers' weights as in the checkpoint (block-FP8 or bf16), \
                   router and head bf16"
            .into(),
    };
    machine::run("ops", devices, entry, rows)
}
