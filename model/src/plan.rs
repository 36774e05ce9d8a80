//! The automatic planner behind `--place auto`, and the plan table of `dsv3 inspect --place`: how many bytes
//! each part of the model has, what each device offers ([`DeviceSpec`], measured or from `--assume`), where
//! the parts go, and the decode and prefill rates that placement predicts. Pure: nothing here opens a device
//! or reads a weight, so a plan for 700 GB of weights on hardware that is not present costs nothing.
//!
//! The prediction is a bandwidth / FLOP-rate bound, not a simulation:
//! * decode at batch 1 reads every weight of a part once per token, except the routed experts (a token
//!   reads `top_k / n_routed_experts` of a layer's expert bytes) and the embedding (one row); each device's
//!   time per token is the bytes it reads over its bandwidth, and the devices run one after the other;
//! * each hidden state that crosses devices costs its bytes over [`HOST_LINK_BYTES_PER_S`];
//! * prefill is compute-bound: 2 FLOPs per weight a token uses, over the device's peak matrix rate.
//!
//! The latent cache read by attention (`cache_bytes_per_token` × context per step) and attention's score
//! FLOPs grow with the context and are left out: the numbers are for a short context.

use std::collections::BTreeMap;
use std::fmt;

use dsv3_core::Peak;
use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::expert_stats::ExpertStats;
use crate::inspect::{gb, FIT_CACHE_TOKENS};
use crate::layout;
use crate::placement::{canonical_device, parts, Assignment, Part};

/// The share of each device's memory kept free for activations, workspace and the runtime, and its floor.
/// A V3 prefill chunk of 4096 tokens holds a few [4096, 7168] f32 activations (117 MB each) plus the MoE
/// intermediates, about 1–2 GB; a CUDA context takes a few hundred MB; the allocator fragments. 5 % (7 GB
/// of an H200, 38 GB of 768 GB of host RAM, where the OS and page cache live too) and at least 2 GB covers
/// that with room; it is an assumption, not a measurement.
pub const HEADROOM_FRACTION: f64 = 0.05;
pub const HEADROOM_MIN_BYTES: u64 = 2_000_000_000;

/// Host link rate for hidden states crossing devices: PCIe 4.0 x16 is 31.5 GB/s per direction raw, about
/// 25 GB/s achieved for pinned copies (PCIe 5.0 doubles it). Every crossing is charged at this rate, also
/// between two GPUs (staged through the host) and between two CPU devices (where it is really a memcpy):
/// at 28.7 KB per V3 hidden state it is a small term either way.
pub const HOST_LINK_BYTES_PER_S: f64 = 25e9;

/// Bytes per hidden-state value crossing a boundary: f32, the widest activation any numeric path keeps.
pub const HIDDEN_BYTES_PER_VALUE: u64 = 4;

/// Sizes of one part of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct PartSize {
    pub part: Part,
    /// Weight bytes (FP8 scales included).
    pub weight_bytes: u64,
    /// Latent-cache bytes per token (attention parts: kv_lora_rank + qk_rope_head_dim values at 2 bytes).
    pub cache_bytes_per_token: u64,
    /// Weight bytes a decode step reads at batch 1.
    pub decode_read_bytes: u64,
    /// Matrix FLOPs per token (2 per weight the token uses; the embedding lookup has none).
    pub flops_per_token: f64,
}

/// Every part's sizes in forward order: weight bytes summed from `checkpoint`'s tensors when given (by
/// `Part::of_tensor`), else estimated from the config (`layout::estimated_storage`, as `dsv3 inspect`).
/// A routed expert is read by the share of tokens that choose it: from `usage` (recorded routing) when
/// given, else `top_k / n_routed_experts` (uniform routing).
pub fn part_sizes(
    cfg: &ModelConfig,
    checkpoint: Option<&Checkpoint>,
    usage: Option<&ExpertStats>,
) -> dsv3_core::Result<Vec<PartSize>> {
    let mut params: BTreeMap<Part, u64> = BTreeMap::new();
    let mut estimated: BTreeMap<Part, u64> = BTreeMap::new();
    for spec in layout::tensor_table(cfg).iter().filter(|s| !s.mtp) {
        let Some(part) = Part::of_tensor(cfg, &spec.name) else { continue };
        *params.entry(part).or_insert(0) += spec.numel() as u64;
        let bytes: u64 = layout::estimated_storage(cfg, spec).iter().map(|(_, b)| b).sum();
        *estimated.entry(part).or_insert(0) += bytes;
    }
    let weights = match checkpoint {
        None => estimated,
        Some(ckpt) => {
            let mut sums = BTreeMap::new();
            for name in ckpt.names() {
                if let Some(part) = Part::of_tensor(cfg, name) {
                    *sums.entry(part).or_insert(0) += ckpt.tensor(name)?.bytes.len() as u64;
                }
            }
            sums
        }
    };
    let (top_k, routed) =
        cfg.moe.map_or((0, 1), |m| (m.route.top_k as u64, m.n_routed_experts.max(1) as u64));
    let cache = (cfg.kv_latent_width() * 2) as u64;
    Ok(parts(cfg)
        .into_iter()
        .map(|part| {
            let w = weights.get(&part).copied().unwrap_or(0);
            let p = params.get(&part).copied().unwrap_or(0);
            let (read, used) = match part {
                Part::Expert(l, e) => match usage.and_then(|u| u.usage(l, e)) {
                    Some(share) => ((w as f64 * share) as u64, (p as f64 * share) as u64),
                    None => (w * top_k / routed, p * top_k / routed),
                },
                Part::Embed => (w / cfg.vocab_size.max(1) as u64, 0),
                _ => (w, p),
            };
            PartSize {
                part,
                weight_bytes: w,
                cache_bytes_per_token: if matches!(part, Part::Attn(_)) { cache } else { 0 },
                decode_read_bytes: read,
                flops_per_token: 2.0 * used as f64,
            }
        })
        .collect())
}

/// What one device offers the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSpec {
    /// As rules name it: `cuda:0`, `cpu:0`.
    pub name: String,
    /// What it is: the driver's device name, a datasheet entry, or `768 GB @ 300 GB/s`.
    pub model: String,
    /// 0 when unknown: such a device gets no part from the planner.
    pub memory_bytes: u64,
    /// 0 when unknown.
    pub bytes_per_s: f64,
    /// Dense matrix peaks; 0 when unknown or absent (fp8 on parts without FP8 arithmetic).
    pub bf16_flops: f64,
    pub fp8_flops: f64,
    /// Where the numbers come from.
    pub source: String,
}

impl DeviceSpec {
    pub fn new(name: &str, model: &str, memory_bytes: u64, peak: Option<&Peak>, memory_source: &str) -> Self {
        let source = match peak {
            Some(p) => format!("memory: {memory_source}; rates: {}", p.source),
            None => format!("memory: {memory_source}; rates unknown"),
        };
        DeviceSpec {
            name: name.to_string(),
            model: model.to_string(),
            memory_bytes,
            bytes_per_s: peak.map_or(0.0, |p| p.bytes_per_s),
            bf16_flops: peak.map_or(0.0, |p| p.bf16_flops),
            fp8_flops: peak.map_or(0.0, |p| p.fp8_flops),
            source,
        }
    }

    /// The matrix rate a model with `cfg` computes at: FP8 for an FP8 checkpoint on a device with FP8
    /// arithmetic, else bf16. `None` when unknown.
    pub fn flops(&self, cfg: &ModelConfig) -> Option<f64> {
        let rate =
            if cfg.quantization.is_some() && self.fp8_flops > 0.0 { self.fp8_flops } else { self.bf16_flops };
        (rate > 0.0).then_some(rate)
    }

    /// Memory the plan may fill: all but the headroom.
    pub fn usable_bytes(&self) -> u64 {
        let headroom = ((self.memory_bytes as f64 * HEADROOM_FRACTION) as u64).max(HEADROOM_MIN_BYTES);
        self.memory_bytes.saturating_sub(headroom)
    }
}

/// Why a plan could not be made or does not fit. Each names the flag and item at fault.
#[derive(Clone, Debug, PartialEq)]
pub enum PlanError {
    /// An `--assume` item that is not `DEVICE=NAME` or `DEVICE=MEMORY@BANDWIDTH[@FLOPS]`.
    Assume { item: String, reason: String },
    /// No device to plan on (none present, or none reports its memory).
    NoDevice(String),
    /// A rule names a device that is not among the planned ones.
    UnknownDevice { device: String, known: Vec<String> },
    /// `--place auto` against devices that cannot hold the model: (device, shortfall bytes) for each
    /// device over its usable memory.
    DoesNotFit(Vec<(String, u64)>),
}

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlanError::Assume { item, reason } => write!(f, "--assume {item}: {reason}"),
            PlanError::NoDevice(why) => f.write_str(why),
            PlanError::UnknownDevice { device, known } => {
                write!(
                    f,
                    "--place: device `{device}` is not among the planned devices ({})",
                    known.join(", ")
                )
            }
            PlanError::DoesNotFit(short) => {
                let each: Vec<String> =
                    short.iter().map(|(d, b)| format!("{d} is {} short", gb(*b))).collect();
                write!(
                    f,
                    "the model does not fit ({}; headroom {:.0} % of each device or at least {:.0} GB, cache \
                     for {} tokens)",
                    each.join(", "),
                    HEADROOM_FRACTION * 100.0,
                    HEADROOM_MIN_BYTES as f64 / 1e9,
                    FIT_CACHE_TOKENS
                )
            }
        }
    }
}

impl std::error::Error for PlanError {}

/// Looks a datasheet name up (`H200`, `MI300X`): (memory bytes, peaks), or why not (listing the known
/// names). The CLI supplies it from the backend crates' tables; the model crate depends on none of them.
pub type DatasheetLookup<'a> = &'a dyn Fn(&str) -> Result<(u64, Peak), String>;

/// `--assume 'cuda:0=H200,cpu=768GB@300GB/s'`: devices to plan for instead of the present ones. An item is
/// `DEVICE=NAME`, a datasheet entry that `datasheet` looks up (memory and peaks; its error lists the known
/// names), or `DEVICE=MEMORY@BANDWIDTH[@FLOPS]` with units `GB`/`GiB`/`TB`/`TiB`/`MB`/`MiB`,
/// `GB/s`/`TB/s`/`GiB/s` and `TFLOPS`/`GFLOPS` (without `@FLOPS` the prefill rate is unknown).
pub fn parse_assume(text: &str, datasheet: DatasheetLookup) -> Result<Vec<DeviceSpec>, PlanError> {
    let mut specs: Vec<DeviceSpec> = Vec::new();
    for item in text.split(',').map(str::trim) {
        let fail = |reason: String| PlanError::Assume { item: item.to_string(), reason };
        let (device, what) = item
            .split_once('=')
            .ok_or_else(|| fail("expected DEVICE=NAME or DEVICE=MEMORY@BANDWIDTH".into()))?;
        let name = canonical_device(device.trim()).map_err(fail)?;
        if specs.iter().any(|s| s.name == name) {
            return Err(fail(format!("{name} is assumed twice")));
        }
        let what = what.trim();
        let spec = if what.contains('@') {
            let mut fields = what.split('@');
            let memory =
                quantity(fields.next().unwrap_or(""), &BYTES).map_err(|e| fail(format!("memory: {e}")))?;
            let rate = fields.next().unwrap_or("");
            let bandwidth = quantity(rate, &RATES).map_err(|e| fail(format!("bandwidth: {e}")))?;
            let flops = fields
                .next()
                .map(|f| quantity(f, &FLOPS))
                .transpose()
                .map_err(|e| fail(format!("FLOP rate: {e}")))?;
            if fields.next().is_some() {
                return Err(fail("expected MEMORY@BANDWIDTH or MEMORY@BANDWIDTH@FLOPS".into()));
            }
            let peak = Peak {
                f32_flops: 0.0,
                bf16_flops: flops.unwrap_or(0.0),
                fp8_flops: flops.unwrap_or(0.0),
                bytes_per_s: bandwidth,
                source: "--assume".into(),
            };
            DeviceSpec::new(&name, what, memory as u64, Some(&peak), "--assume")
        } else {
            let (memory, peak) = datasheet(what).map_err(fail)?;
            DeviceSpec::new(&name, what, memory, Some(&peak), &peak.source)
        };
        specs.push(spec);
    }
    Ok(specs)
}

const BYTES: [(&str, f64); 6] = [
    ("TiB", 1099511627776.0),
    ("GiB", 1073741824.0),
    ("MiB", 1048576.0),
    ("TB", 1e12),
    ("GB", 1e9),
    ("MB", 1e6),
];
const RATES: [(&str, f64); 5] =
    [("TiB/s", 1099511627776.0), ("GiB/s", 1073741824.0), ("TB/s", 1e12), ("GB/s", 1e9), ("MB/s", 1e6)];
const FLOPS: [(&str, f64); 4] = [("TFLOP/s", 1e12), ("GFLOP/s", 1e9), ("TFLOPS", 1e12), ("GFLOPS", 1e9)];

/// `768GB`, `1.5 TB/s`, `20TFLOPS`: a positive number followed by one of `units` (the unit is the suffix
/// that leaves a number before it, so `GiB` and `GB` cannot be confused).
fn quantity(text: &str, units: &[(&str, f64)]) -> Result<f64, String> {
    let text = text.trim();
    let names: Vec<&str> = units.iter().map(|(u, _)| *u).collect();
    let (unit, scale) = units
        .iter()
        .find(|(u, _)| text.ends_with(u) && text[..text.len() - u.len()].trim().parse::<f64>().is_ok())
        .ok_or_else(|| format!("`{text}` is not a number with a unit ({})", names.join(", ")))?;
    let value: f64 = text[..text.len() - unit.len()].trim().parse().unwrap_or(0.0);
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("`{text}` must be positive"));
    }
    Ok(value * scale)
}

/// One device's row of a plan.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRow {
    pub spec: DeviceSpec,
    pub parts: Vec<Part>,
    pub weight_bytes: u64,
    pub cache_bytes_per_token: u64,
    /// Weights plus a `FIT_CACHE_TOKENS`-token cache.
    pub needed_bytes: u64,
    /// Seconds per decoded token on this device; `None` when its bandwidth is unknown.
    pub decode_s: Option<f64>,
    /// Seconds per prefilled token; `None` when its FLOP rate is unknown.
    pub prefill_s: Option<f64>,
}

impl DeviceRow {
    /// `None` when the device does not report its memory.
    pub fn fits(&self) -> Option<bool> {
        (self.spec.memory_bytes > 0).then(|| self.needed_bytes <= self.spec.usable_bytes())
    }

    pub fn shortfall(&self) -> u64 {
        if self.spec.memory_bytes == 0 {
            return 0;
        }
        self.needed_bytes.saturating_sub(self.spec.usable_bytes())
    }
}

/// A placement with its sizes and predicted rates.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub assignment: Assignment,
    pub rows: Vec<DeviceRow>,
    /// Hidden states crossing devices per token.
    pub crossings: usize,
    /// Seconds per token those crossings take at `HOST_LINK_BYTES_PER_S`.
    pub transfer_s: f64,
}

impl Plan {
    /// Every device with a known memory holds its parts (devices of unknown memory are not judged).
    pub fn fits(&self) -> bool {
        self.rows.iter().all(|r| r.fits() != Some(false))
    }

    /// (device, shortfall) of each device that does not hold its parts.
    pub fn shortfalls(&self) -> Vec<(String, u64)> {
        self.rows
            .iter()
            .filter(|r| r.fits() == Some(false))
            .map(|r| (r.spec.name.clone(), r.shortfall()))
            .collect()
    }

    /// Seconds per decoded token: the devices in turn plus the crossings; `None` when a device with
    /// parts has no known bandwidth.
    pub fn decode_s(&self) -> Option<f64> {
        self.rows.iter().map(|r| r.decode_s).sum::<Option<f64>>().map(|s| s + self.transfer_s)
    }

    pub fn prefill_s(&self) -> Option<f64> {
        self.rows.iter().map(|r| r.prefill_s).sum::<Option<f64>>().map(|s| s + self.transfer_s)
    }

    pub fn decode_tok_s(&self) -> Option<f64> {
        self.decode_s().filter(|s| *s > 0.0).map(|s| 1.0 / s)
    }

    pub fn prefill_tok_s(&self) -> Option<f64> {
        self.prefill_s().filter(|s| *s > 0.0).map(|s| 1.0 / s)
    }

    pub fn render_text(&self) -> String {
        let mut lines = vec![format!(
            "plan            {} (weights + {}-token cache; headroom {:.0} % of each device, at least {:.0} GB)",
            if self.fits() { "fits" } else { "DOES NOT FIT" },
            FIT_CACHE_TOKENS,
            HEADROOM_FRACTION * 100.0,
            HEADROOM_MIN_BYTES as f64 / 1e9
        )];
        let total = self.decode_s();
        for r in &self.rows {
            let share = match (r.decode_s, total) {
                (Some(d), Some(t)) if t > 0.0 => format!("{:.0} % of decode step", 100.0 * d / t),
                _ => "share unknown".into(),
            };
            let verdict = match r.fits() {
                None => "memory unknown".to_string(),
                Some(true) => format!("fits in {:.1} GB usable", r.spec.usable_bytes() as f64 / 1e9),
                Some(false) => format!(
                    "DOES NOT FIT: {:.1} GB short of {:.1} GB usable",
                    r.shortfall() as f64 / 1e9,
                    r.spec.usable_bytes() as f64 / 1e9
                ),
            };
            lines.push(format!(
                "  {} ({}, {:.0} GB/s): {verdict}",
                r.spec.name,
                r.spec.model,
                r.spec.bytes_per_s / 1e9
            ));
            lines.push(format!(
                "    weights {}, cache {:.1} MB per 1K tokens, {share}",
                short_size(r.weight_bytes),
                (r.cache_bytes_per_token * 1000) as f64 / 1e6
            ));
            let parts = if r.parts.is_empty() {
                "(none)".to_string()
            } else {
                self.assignment.describe_parts(&r.parts)
            };
            lines.push(format!("    parts: {parts}"));
        }
        lines.push(format!(
            "  transfers     {} hidden states per token across devices, {:.3} ms at {:.0} GB/s",
            self.crossings,
            self.transfer_s * 1e3,
            HOST_LINK_BYTES_PER_S / 1e9
        ));
        // Which devices with parts lack the rate a prediction needs.
        let lacking = |unknown: fn(&DeviceRow) -> bool| {
            let names: Vec<&str> =
                self.rows.iter().filter(|r| unknown(r)).map(|r| r.spec.name.as_str()).collect();
            names.join(", ")
        };
        lines.push(match self.decode_tok_s() {
            Some(x) => format!(
                "predicted       decode {x:.1} tok/s (batch 1, short context: bytes read / bandwidth)"
            ),
            None => format!(
                "predicted       decode unknown: no bandwidth for {}",
                lacking(|r| r.decode_s.is_none())
            ),
        });
        lines.push(match self.prefill_tok_s() {
            Some(x) => format!("                prefill {x:.1} tok/s (2 FLOPs per weight a token uses / peak matrix rate)"),
            None => format!(
                "                prefill unknown: no FLOP rate for {} (--assume DEVICE=MEMORY@BANDWIDTH@FLOPS)",
                lacking(|r| r.prefill_s.is_none())
            ),
        });
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }

    /// The keys `dsv3 inspect --json` adds for a plan.
    pub fn json_fields(&self) -> Vec<(&'static str, Value)> {
        let total = self.decode_s().filter(|t| *t > 0.0);
        let placement: Vec<Value> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "decode_share": r.decode_s.zip(total).map(|(d, t)| d / t),
                    "device": r.spec.name,
                    "model": r.spec.model,
                    "parts": self.assignment.describe_parts(&r.parts),
                    "weight_bytes": r.weight_bytes,
                    "cache_bytes_per_1k_tokens": r.cache_bytes_per_token * 1000,
                    "memory_bytes": r.spec.memory_bytes,
                    "usable_bytes": r.spec.usable_bytes(),
                    "fits": r.fits(),
                    "shortfall_bytes": r.shortfall(),
                    "source": r.spec.source,
                })
            })
            .collect();
        vec![
            ("placement", Value::Array(placement)),
            ("fits", Value::Bool(self.fits())),
            ("predicted_decode_tok_s", json!(self.decode_tok_s())),
            ("predicted_prefill_tok_s", json!(self.prefill_tok_s())),
        ]
    }
}

/// `131.85 GB`, or `4.70 MB` for the small models of the tests.
fn short_size(bytes: u64) -> String {
    if bytes >= 1_000_000_000 {
        format!("{:.2} GB", bytes as f64 / 1e9)
    } else {
        format!("{:.2} MB", bytes as f64 / 1e6)
    }
}

/// The plan for a given assignment (from `--place RULES`): every device it names must be in `devices`.
pub fn evaluate(
    cfg: &ModelConfig,
    sizes: &[PartSize],
    devices: &[DeviceSpec],
    assignment: Assignment,
) -> Result<Plan, PlanError> {
    let known: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
    for name in assignment.device_names() {
        if !known.iter().any(|k| k == name) {
            return Err(PlanError::UnknownDevice { device: name.to_string(), known });
        }
    }
    let rows = devices
        .iter()
        .map(|spec| {
            let on: Vec<&PartSize> =
                sizes.iter().filter(|s| assignment.device(s.part) == Some(spec.name.as_str())).collect();
            let weight_bytes: u64 = on.iter().map(|s| s.weight_bytes).sum();
            let cache_bytes_per_token: u64 = on.iter().map(|s| s.cache_bytes_per_token).sum();
            let read: u64 = on.iter().map(|s| s.decode_read_bytes).sum();
            let flops: f64 = on.iter().map(|s| s.flops_per_token).sum();
            let decode_s = if read == 0 {
                Some(0.0)
            } else {
                (spec.bytes_per_s > 0.0).then(|| read as f64 / spec.bytes_per_s)
            };
            let prefill_s = if flops == 0.0 { Some(0.0) } else { spec.flops(cfg).map(|f| flops / f) };
            DeviceRow {
                spec: spec.clone(),
                parts: on.iter().map(|s| s.part).collect(),
                weight_bytes,
                cache_bytes_per_token,
                needed_bytes: weight_bytes + FIT_CACHE_TOKENS * cache_bytes_per_token,
                decode_s,
                prefill_s,
            }
        })
        .collect();
    let crossings = crossings(cfg, &assignment);
    let transfer_s =
        (crossings as u64 * cfg.hidden_size as u64 * HIDDEN_BYTES_PER_VALUE) as f64 / HOST_LINK_BYTES_PER_S;
    Ok(Plan { assignment, rows, crossings, transfer_s })
}

/// Hidden states that cross devices in one token's forward pass, as the graph moves them: the residual
/// stream lives with each layer's attention; a feed-forward part elsewhere takes the normed state there and
/// hands its output back (the router only takes it: its ids and weights are a few bytes); the stream moves
/// between layers' attention devices, from the embedding to layer 0 and from the last layer to norm and head.
pub fn crossings(cfg: &ModelConfig, assignment: &Assignment) -> usize {
    let dev = |p: Part| assignment.device(p);
    let mut n = 0;
    let mut at = dev(Part::Embed);
    for l in 0..cfg.num_hidden_layers {
        let home = dev(Part::Attn(l));
        n += usize::from(home != at);
        for (part, moves) in [(Part::Mlp(l), 2), (Part::Router(l), 1), (Part::Shared(l), 2)] {
            if let Some(d) = dev(part) {
                if Some(d) != home {
                    n += moves;
                }
            }
        }
        // Each device holding some of the layer's routed experts: the hidden state there and back (counted
        // whether or not this token's experts are among them: an upper bound).
        n += 2 * assignment.expert_groups(l).iter().filter(|(d, _)| Some(*d) != home).count();
        at = home;
    }
    n += usize::from(dev(Part::Norm) != at);
    n += usize::from(dev(Part::Head) != dev(Part::Norm));
    n
}

/// The order `--place auto` places parts in: attention (with its cache) first, then shared experts, dense
/// MLPs, embedding, norm and head, routers, and the routed experts — the parts every token reads whole
/// before the experts, of which a token reads a fraction: the most read expert first (from recorded
/// routing, `part_sizes`' `usage`), layer by layer among equals.
fn priority(s: &PartSize) -> (usize, std::cmp::Reverse<u64>, usize, usize) {
    let whole = |rank, l| (rank, std::cmp::Reverse(0), l, 0);
    match s.part {
        Part::Attn(l) => whole(0, l),
        Part::Shared(l) => whole(1, l),
        Part::Mlp(l) => whole(2, l),
        Part::Embed => whole(3, 0),
        Part::Norm => whole(3, 1),
        Part::Head => whole(3, 2),
        Part::Router(l) => whole(4, l),
        Part::Expert(l, e) => (5, std::cmp::Reverse(s.decode_read_bytes), l, e),
    }
}

/// `--place auto`: devices by bandwidth, fastest first (devices that do not report memory are skipped);
/// each part in [`priority`] order goes to the fastest device with room for it (weights, plus a
/// `FIT_CACHE_TOKENS`-token cache for attention, within [`DeviceSpec::usable_bytes`]). A part no device has
/// room for goes to the device with the most room left, and the plan reports the shortfall: the caller
/// decides whether that is an error (loading) or a row to show (`dsv3 inspect`).
pub fn auto(cfg: &ModelConfig, sizes: &[PartSize], devices: &[DeviceSpec]) -> Result<Plan, PlanError> {
    if devices.is_empty() {
        return Err(PlanError::NoDevice("no device to plan on".into()));
    }
    let mut order: Vec<&DeviceSpec> = devices.iter().filter(|d| d.memory_bytes > 0).collect();
    if order.is_empty() {
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        return Err(PlanError::NoDevice(format!("no device reports its memory ({})", names.join(", "))));
    }
    order.sort_by(|a, b| b.bytes_per_s.total_cmp(&a.bytes_per_s)); // stable: ties keep the given order
    let mut room: Vec<i128> = order.iter().map(|d| d.usable_bytes() as i128).collect();
    let mut by_priority: Vec<&PartSize> = sizes.iter().collect();
    by_priority.sort_by_key(|s| priority(s));
    let mut placed = BTreeMap::new();
    for s in by_priority {
        let need = (s.weight_bytes + FIT_CACHE_TOKENS * s.cache_bytes_per_token) as i128;
        let i = room.iter().position(|&r| r >= need).unwrap_or_else(|| {
            // No room anywhere: the device with the most left (the first of equals).
            (0..room.len()).fold(0, |best, i| if room[i] > room[best] { i } else { best })
        });
        room[i] -= need;
        placed.insert(s.part, order[i].name.clone());
    }
    evaluate(cfg, sizes, devices, Assignment::from_map(cfg, placed))
}
