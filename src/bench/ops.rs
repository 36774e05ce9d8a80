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
use super::peer::{self, Outcome, Peer, Request};
use super::plot;
use super::results::{AbsentPeer, DeviceEntry, ModelEntry, Roofline, Row, Run};
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
    /// Draw a roofline (achieved FLOP/s against FLOPs per byte, per op and device, under each device's
    /// bandwidth and compute ceilings) as SVG
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Peers timed on the same shapes in the same run, shown as their time over ours: faer (f32 GEMM,
    /// all threads; timed by default whenever a CPU is, beside the peers named here), torch
    /// (torch.matmul, torch._scaled_mm, SDPA through --python); `none` times no peer. Rows a peer cannot
    /// time say why
    #[arg(long, value_name = "PEER,…|none", value_parser = PEERS)]
    peer: Option<Peers>,
    /// The python that runs the torch peer (benches/peer/torch_gemm.py, embedded in the binary)
    #[arg(long, value_name = "PATH", default_value = "python3")]
    python: PathBuf,
}

const POSITIVE: Checked<usize> = Checked(|s| match s.parse::<usize>() {
    Ok(n) if n > 0 && n <= 1 << 20 => Ok(n),
    _ => Err("expected a whole number in [1, 1048576]".into()),
});

const SECONDS: Checked<f64> = Checked(|s| match s.parse::<f64>() {
    Ok(seconds) if seconds > 0.0 && seconds <= 60.0 => Ok(seconds),
    _ => Err("must be in (0, 60]".into()),
});

/// What `--peer` asks for: the peers named (faer joins them wherever a CPU is timed), or none at all.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Peers {
    Named(Vec<Peer>),
    None,
}

const PEERS: Checked<Peers> = Checked(|s| {
    if s == "none" {
        return Ok(Peers::None);
    }
    let mut named = Vec::new();
    for item in s.split(',').map(str::trim) {
        let Some(peer) = Peer::ALL.into_iter().find(|p| p.name() == item) else {
            return Err(match item {
                "none" => "`none` stands alone: it turns every peer off, faer included".into(),
                _ => format!("unknown peer `{item}` (known: faer, torch; or none)"),
            });
        };
        if named.contains(&peer) {
            return Err(format!("{item} appears twice"));
        }
        named.push(peer);
    }
    Ok(Peers::Named(named))
});

impl Peers {
    /// The peers to time: faer first where a CPU is among the devices timed (`cpu`) and it is not named
    /// already — the CPU GEMM against faer belongs in every CPU table — then those named, in order.
    fn resolve(&self, cpu: bool) -> Vec<Peer> {
        match self {
            Peers::None => Vec::new(),
            Peers::Named(named) => {
                let faer = (cpu && !named.contains(&Peer::Faer)).then_some(Peer::Faer);
                faer.into_iter().chain(named.iter().copied()).collect()
            }
        }
    }
}

const DEEPSEEK_V3: &str = include_str!("../../model/tests/fixtures/configs/deepseek-v3.json");
const DEEPSEEK_V2_LITE: &str = include_str!("../../model/tests/fixtures/configs/deepseek-v2-lite.json");

pub fn run(args: Args) -> i32 {
    crate::finish("bench ops", try_run(args))
}

fn try_run(args: Args) -> Result<i32, String> {
    if let Some(file) = &args.json {
        writable("--json", file)?;
    }
    if let Some(file) = &args.plot {
        writable("--plot", file)?;
    }
    let (config, source) = load_config(&args)?;
    let backends = registry::select(&args.backend)?;
    registry::require_present(&args.backend, &backends)?;
    let refs: Vec<&dyn Backend> = backends.iter().map(|b| b.as_ref()).collect();
    let (table, run, wrong) = measure(&args, &refs, &config, source);
    out!("{table}")?;
    if let Some(file) = &args.json {
        write_file("--json", file, run.to_json().as_bytes())?;
    }
    if let Some(file) = &args.plot {
        write_file("--plot", file, plot::ops_roofline(&run)?.as_bytes())?;
    }
    if wrong > 0 {
        out!("{wrong} op(s) computed a wrong replica: their times are not results\n")?;
        return Ok(1);
    }
    Ok(0)
}

/// Times and checks the suite on `backends`, with the peers: the table, the run to save, and how many
/// rows' replicas were wrong.
fn measure(args: &Args, refs: &[&dyn Backend], config: &ModelConfig, source: String) -> (String, Run, usize) {
    let dims = dims(config);
    let mut phases = Vec::new();
    if args.phase != "prefill" {
        phases.push(Phase::Decode { batch: args.batch, context: args.context });
    }
    if args.phase != "decode" {
        phases.push(Phase::Prefill { tokens: args.prefill });
    }
    // The devices and their peaks, measured once for the whole run: the bandwidth every row's GB/s is
    // shown against, the ceilings of the chart and the figures saved with the run.
    let devices = open_devices(refs);
    let mut lines: Vec<String> = devices.iter().map(device_line).collect();
    lines.push(format!(
        "{:<8} {:<21} {:<10} {:>10} {:>9} {:>8} {:>9} {:>20}  {}",
        "phase", "part", "device", "ms", "GB/s", "% of BW", "TFLOP/s", "% of peak", "check"
    ));
    let (mut rows, mut absent, mut wrong, mut any_peer) = (Vec::new(), Vec::new(), 0, false);
    let named = args.peer.clone().unwrap_or(Peers::Named(Vec::new()));
    for phase in phases {
        let suite = layer_suite(&dims, phase);
        let checks = check_replicas(refs, &suite);
        let samples = time_suite(refs, &suite, args);
        // Every (device, case) row, device by device as `samples` has them, for the peers.
        let requests: Vec<Request> = samples
            .iter()
            .flat_map(|(device, _)| suite.iter().map(move |e| Request { case: &e.case, device }))
            .collect();
        let cpu = samples.iter().any(|(device, _)| device.starts_with("cpu"));
        let peers: Vec<(Peer, Vec<Outcome>)> = named
            .resolve(cpu)
            .into_iter()
            .map(|p| (p, peer::time(p, &requests, &args.python, args.seconds, args.repetitions)))
            .collect();
        any_peer |= !peers.is_empty();
        for (d, (device, per_case)) in samples.iter().enumerate() {
            for (i, entry) in suite.iter().enumerate() {
                let check = checks.get(&(device.clone(), i)).cloned().unwrap_or_else(|| "not run".into());
                wrong += usize::from(check.starts_with("WRONG"));
                let name = row_name(phase, entry, device);
                let mut ours_ms = None;
                let mut line = match &per_case[i] {
                    Timed::Perf(runs) if !runs.is_empty() => {
                        let last = &runs[runs.len() - 1];
                        let ms = median(runs.iter().map(|p| p.ms).collect());
                        ours_ms = Some(ms);
                        rows.push(row(phase, entry, device, runs));
                        let peak = match (last.pct_of_peak, &last.bound) {
                            (Some(pct), Some(bound)) => format!("{pct:.1} ({bound})"),
                            _ => "unknown".into(),
                        };
                        let of_bandwidth = bandwidth(&devices, device)
                            .map_or("-".into(), |bw| format!("{:.1}", 100.0 * last.gbps * 1e9 / bw));
                        format!(
                            "{:<8} {:<21} {:<10} {:>10.4} {:>9.2} {:>8} {:>9.3} {:>20}  {check}",
                            phase.name(),
                            entry.part,
                            device,
                            ms,
                            last.gbps,
                            of_bandwidth,
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
                for (p, outcomes) in &peers {
                    let outcome = &outcomes[d * suite.len() + i];
                    line += &format!("  | {}", peer_cell(*p, outcome, ours_ms));
                    match outcome {
                        Outcome::Timed { what, ms } => rows.push(peer_row(phase, &name, *p, what, ms)),
                        Outcome::Absent(reason) => absent.push(AbsentPeer {
                            peer: p.name().into(),
                            row: name.clone(),
                            reason: reason.clone(),
                        }),
                    }
                }
                lines.push(line);
            }
        }
        lines.push(String::new());
    }
    if any_peer {
        lines.push(
            "peers: the peer's ms over ours, medians over the repetitions (above 1: ours is faster)".into(),
        );
    }
    let table = format!("model {source}\n{}", lines.join("\n"));
    let mut run = saved_run(devices, config, source, rows);
    run.absent_peers = absent;
    (table, run, wrong)
}

/// A peer's figure beside ours: its time over ours, what it ran, or why it is absent.
fn peer_cell(p: Peer, outcome: &Outcome, ours_ms: Option<f64>) -> String {
    match (outcome, ours_ms) {
        (Outcome::Timed { what, ms }, Some(ours)) => {
            format!("{}: {:.2}x ({what})", p.name(), median(ms.clone()) / ours)
        }
        (Outcome::Timed { what, ms }, None) => {
            format!("{}: {:.4} ms ({what}; ours not timed)", p.name(), median(ms.clone()))
        }
        (Outcome::Absent(why), _) => format!("{}: absent: {why}", p.name()),
    }
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

/// What identifies an op row across runs: the phase, the step's shape, the part, the case and the device.
fn row_name(phase: Phase, entry: &SuiteCase, device: &str) -> String {
    let key = Row::new(phase.name(), shape_key(phase), vec![]).key();
    format!("{key} {} {} on {device}", entry.part, entry.case.name)
}

/// A phase's step shape in a row's (prompt, gen, batch) fields: the context or prompt, and the batch.
fn shape_key(phase: Phase) -> (usize, usize, usize) {
    match phase {
        Phase::Decode { batch, context } => (context, 0, batch),
        Phase::Prefill { tokens } => (tokens, 0, 1),
    }
}

/// A saved row: calls per second per repetition (higher is better, as `bench compare` reads every row),
/// with the op's FLOPs and bytes per call and its roof (the ops roofline chart reads them).
fn row(phase: Phase, entry: &SuiteCase, device: &str, runs: &[Perf]) -> Row {
    let mut r = Row::new(phase.name(), shape_key(phase), runs.iter().map(|p| 1e3 / p.ms).collect());
    r.unit = "calls/s".into();
    r.name = Some(row_name(phase, entry, device));
    r.op = Some(entry.case.op.to_string());
    r.device = Some(device.to_string());
    let last = &runs[runs.len() - 1];
    // The runner reports rates, not the work: a call's FLOPs and bytes are the rates times its time.
    let (flops, bytes) = (last.gflops * 1e6 * last.ms, last.gbps * 1e6 * last.ms);
    if let (Some(pct), Some(bound)) = (last.pct_of_peak, &last.bound) {
        // The roof's time per call is pct % of the measured one.
        let rate = 1e3 / (last.ms * pct / 100.0);
        r.roofline =
            Some(Roofline { rate, bound: bound.clone(), fraction: r.mean / rate, tokens: 1, flops, bytes });
    }
    r
}

/// A peer's timed row, named after ours so that `compare` matches it across runs.
fn peer_row(phase: Phase, ours: &str, p: Peer, what: &str, ms: &[f64]) -> Row {
    let mut r = Row::new(phase.name(), shape_key(phase), ms.iter().map(|ms| 1e3 / ms).collect());
    r.unit = "calls/s".into();
    r.name = Some(format!("{ours}: peer {}", p.name()));
    r.peer = Some(what.to_string());
    r
}

/// Every device of `backends` as the saved run describes it, its peak measured now (the CPU measures its
/// bandwidth and FMA rate when asked).
fn open_devices(backends: &[&dyn Backend]) -> Vec<DeviceEntry> {
    backends
        .iter()
        .flat_map(|b| {
            let infos = b.devices().unwrap_or_default();
            infos.into_iter().filter_map(|i| b.open(i.ordinal).ok()).map(|d| machine::device(d.as_ref()))
        })
        .collect()
}

/// A line above the table: the device and the peaks this run measured (or read from a datasheet).
fn device_line(d: &DeviceEntry) -> String {
    match &d.peak {
        Some(p) => format!(
            "{} {}: {:.1} GB/s, {:.1} GFLOP/s f32 ({})",
            d.id,
            d.name,
            p.bytes_per_s / 1e9,
            p.f32_flops / 1e9,
            p.source
        ),
        None => format!("{} {}: peak unknown", d.id, d.name),
    }
}

/// The bandwidth in bytes/s of the device with this id, where its peak is known.
fn bandwidth(devices: &[DeviceEntry], id: &str) -> Option<f64> {
    let peak = devices.iter().find(|d| d.id == id)?.peak.as_ref()?;
    (peak.bytes_per_s > 0.0).then_some(peak.bytes_per_s)
}

fn saved_run(devices: Vec<DeviceEntry>, config: &ModelConfig, source: String, rows: Vec<Row>) -> Run {
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

#[cfg(test)]
mod tests {
    //! The WRONG path: a backend whose attention is 1 % off (as conformance's mutation tests plant
    //! errors: a wrapper around the CPU backend) must fail its replica, be marked WRONG, and count.

    use std::sync::Arc;

    use clap::Parser;
    use dsv3_backend_cpu::{CpuBackend, Mode};
    use dsv3_core::{
        Backend, Buffer, Capabilities, Device, DeviceId, DeviceInfo, Op, Peak, Result, Stream, Support,
    };

    use super::*;

    /// The CPU backend with every MLA attention's softmax scale 1 % too large.
    struct Skewed;
    struct SkewedDevice(Arc<dyn Device>, Arc<dyn Stream>);
    struct SkewedStream(Arc<dyn Stream>);

    impl Backend for Skewed {
        fn name(&self) -> &'static str {
            "skewed"
        }
        fn devices(&self) -> Result<Vec<DeviceInfo>> {
            CpuBackend::new(Mode::Fast).devices()
        }
        fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>> {
            let inner = CpuBackend::new(Mode::Fast).open(ordinal)?;
            let stream = Arc::new(SkewedStream(inner.default_stream()));
            Ok(Arc::new(SkewedDevice(inner, stream)))
        }
    }

    impl Device for SkewedDevice {
        fn id(&self) -> DeviceId {
            self.0.id()
        }
        fn info(&self) -> &DeviceInfo {
            self.0.info()
        }
        fn capabilities(&self) -> &Capabilities {
            self.0.capabilities()
        }
        fn supports(&self, op: &Op) -> Support {
            self.0.supports(op)
        }
        fn peak(&self) -> Option<Peak> {
            self.0.peak()
        }
        fn alloc(&self, bytes: usize) -> Result<Buffer> {
            self.0.alloc(bytes)
        }
        fn default_stream(&self) -> Arc<dyn Stream> {
            self.1.clone()
        }
        fn new_stream(&self) -> Result<Arc<dyn Stream>> {
            Ok(self.1.clone())
        }
    }

    impl Stream for SkewedStream {
        fn upload(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
            self.0.upload(dst, offset, src)
        }
        fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
            self.0.download(src, offset, dst)
        }
        fn copy(
            &self,
            src: &Buffer,
            src_offset: usize,
            dst: &Buffer,
            dst_offset: usize,
            bytes: usize,
        ) -> Result<()> {
            self.0.copy(src, src_offset, dst, dst_offset, bytes)
        }
        fn sync(&self) -> Result<()> {
            self.0.sync()
        }
        fn launch(&self, op: &Op) -> Result<()> {
            match op {
                Op::MlaAttention(o) => {
                    let mut o = o.clone();
                    o.softmax_scale *= 1.01;
                    self.0.launch(&Op::MlaAttention(o))
                }
                _ => self.0.launch(op),
            }
        }
    }

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn a_wrong_replica_is_reported_wrong_and_counted() {
        let args = Command::parse_from([
            "ops",
            "--suite",
            "quick",
            "--phase",
            "decode",
            "--context",
            "64",
            "--repetitions",
            "1",
            "--seconds",
            "0.001",
            "--peer",
            "none",
        ])
        .args;
        let (config, source) = load_config(&args).unwrap();
        let (table, run, wrong) = measure(&args, &[&Skewed], &config, source);
        assert!(!table.contains("| faer") && run.rows.iter().all(|r| r.peer.is_none()), "{table}");
        let wrong_rows: Vec<&str> = table.lines().filter(|l| l.contains("WRONG")).collect();
        assert_eq!(wrong, wrong_rows.len(), "{table}");
        assert!(!wrong_rows.is_empty() && wrong_rows.iter().all(|l| l.contains("attn.mla")), "{table}");
        // Every other op is the CPU's own, and passes.
        assert!(table.lines().filter(|l| l.starts_with("decode ")).count() > wrong + 10, "{table}");
        assert!(
            table
                .lines()
                .filter(|l| l.starts_with("decode ") && !l.contains("WRONG"))
                .all(|l| l.ends_with("pass")),
            "{table}"
        );
    }

    /// `--peer`: faer joins where a CPU is timed, named or not, first unless named elsewhere; `none`
    /// stands alone; unknown or repeated names are refused.
    #[test]
    fn peers_default_to_faer_on_the_cpu_and_none_turns_them_off() {
        let parse = |s: &str| (PEERS.0)(s);
        let resolve = |s: &str, cpu: bool| parse(s).unwrap().resolve(cpu);
        let absent = Peers::Named(Vec::new());
        assert_eq!(absent.resolve(true), [Peer::Faer]);
        assert!(absent.resolve(false).is_empty());
        assert_eq!(resolve("torch", true), [Peer::Faer, Peer::Torch]);
        assert_eq!(resolve("torch", false), [Peer::Torch]);
        assert_eq!(resolve("torch,faer", true), [Peer::Torch, Peer::Faer]);
        assert_eq!(resolve("faer", false), [Peer::Faer]);
        assert!(resolve("none", true).is_empty());
        assert!(parse("none,torch").unwrap_err().contains("`none` stands alone"));
        assert!(parse("faer,faer").unwrap_err().contains("faer appears twice"));
        assert!(parse("numpy").unwrap_err().contains("unknown peer `numpy`"));
    }
}
