//! `dsv3 inspect`: what a checkpoint is before anyone downloads 640 GB of it: architecture, parameters
//! counted from the config's tensor table, weight bytes by dtype, latent-cache bytes per token, and whether
//! weights plus a 4096-token cache fit in each device's memory.

use std::collections::{BTreeMap, HashSet};

use dsv3_core::ops::gemm::ScaleFormat;
use dsv3_core::DeviceInfo;
use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::layout::{self, Kind};

/// Cache length the device fit is judged at.
pub const FIT_CACHE_TOKENS: u64 = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Architecture {
    pub layers: usize,
    pub dense_layers: usize,
    pub moe_layers: usize,
    pub mtp_layers: usize,
    pub heads: usize,
    pub hidden: usize,
    pub routed_experts: usize,
    pub shared_experts: usize,
    pub top_k: usize,
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub vocab: usize,
    pub context: usize,
    /// `None` for unquantized (bf16 / f16 / f32) weights.
    pub quantization: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightBytes {
    /// All tensor bytes in the files, FP8 scales and MTP layers included: what is downloaded.
    pub total: u64,
    /// Without the MTP layers, which are loaded only when MTP runs: what the device fit uses.
    pub main: u64,
    pub by_dtype: BTreeMap<String, u64>,
    /// `true` when computed from the config alone (FP8 projections 1 B per parameter plus f32 scales,
    /// `e_score_correction_bias` f32, everything else bf16), `false` when summed from the checkpoint.
    pub estimated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceFit {
    pub backend: String,
    pub ordinal: usize,
    pub name: String,
    pub memory_bytes: u64,
    /// `None` when the device does not report its memory (`memory_bytes` 0).
    pub fits: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub model_type: String,
    pub arch: Architecture,
    /// Main-model parameters (MTP layers excluded, FP8 scales are not parameters): the published total.
    pub total_params: u64,
    pub mtp_params: u64,
    /// `layout::ParamCount::active`: the main model minus the routed experts a token does not use.
    pub active_params: u64,
    pub weight_bytes: WeightBytes,
    pub kv_bytes_per_token_bf16: u64,
    /// Main weights + a `FIT_CACHE_TOKENS`-token bf16 latent cache; activations and workspace not counted.
    pub fit_bytes: u64,
    pub devices: Vec<DeviceFit>,
}

impl Report {
    /// Weight bytes come from `checkpoint` when given, else are estimated from the config.
    pub fn from_config(cfg: &ModelConfig, checkpoint: Option<&Checkpoint>, devices: &[DeviceInfo]) -> Report {
        let params = layout::param_count(cfg);
        let moe_layers =
            if cfg.moe.is_some() { cfg.num_hidden_layers - cfg.first_k_dense_replace } else { 0 };
        let arch = Architecture {
            layers: cfg.num_hidden_layers,
            dense_layers: cfg.num_hidden_layers - moe_layers,
            moe_layers,
            mtp_layers: cfg.num_nextn_predict_layers,
            heads: cfg.num_attention_heads,
            hidden: cfg.hidden_size,
            routed_experts: cfg.moe.map_or(0, |m| m.n_routed_experts),
            shared_experts: cfg.moe.map_or(0, |m| m.n_shared_experts),
            top_k: cfg.moe.map_or(0, |m| m.route.top_k),
            q_lora_rank: cfg.q_lora_rank,
            kv_lora_rank: cfg.kv_lora_rank,
            vocab: cfg.vocab_size,
            context: cfg.max_position_embeddings,
            quantization: cfg.quantization.map(|q| {
                let act = match q.activation_scales {
                    ScaleFormat::Ue8m0 => "power-of-two (ue8m0)",
                    ScaleFormat::F32 => "f32",
                };
                format!("fp8 e4m3, 128x128 weight blocks, {act} activation scales")
            }),
        };
        let weight_bytes = match checkpoint {
            Some(ckpt) => checkpoint_bytes(cfg, ckpt),
            None => estimate_bytes(cfg),
        };
        let kv = layout::kv_bytes_per_token(cfg, 2);
        let fit_bytes = weight_bytes.main + FIT_CACHE_TOKENS * kv;
        let devices = devices
            .iter()
            .map(|d| DeviceFit {
                backend: d.backend.to_string(),
                ordinal: d.ordinal,
                name: d.name.clone(),
                memory_bytes: d.memory_bytes,
                fits: (d.memory_bytes > 0).then_some(fit_bytes <= d.memory_bytes),
            })
            .collect();
        Report {
            model_type: cfg.arch.name().to_string(),
            arch,
            total_params: params.main,
            mtp_params: params.mtp,
            active_params: params.active,
            weight_bytes,
            kv_bytes_per_token_bf16: kv,
            fit_bytes,
            devices,
        }
    }

    pub fn render_text(&self) -> String {
        let a = &self.arch;
        let w = &self.weight_bytes;
        let mut lines = vec![format!("model_type      {}", self.model_type)];
        let mtp = if a.mtp_layers > 0 { format!(", + {} MTP", a.mtp_layers) } else { String::new() };
        lines.push(format!(
            "layers          {} ({} dense + {} MoE){mtp}",
            a.layers, a.dense_layers, a.moe_layers
        ));
        let q = a.q_lora_rank.map_or("none (q_proj)".to_string(), |r| r.to_string());
        lines.push(format!(
            "attention       MLA, {} heads, hidden {}, q_lora {q}, kv_lora {}",
            a.heads, a.hidden, a.kv_lora_rank
        ));
        if a.routed_experts > 0 {
            lines.push(format!(
                "experts         {} routed (top-{}) + {} shared",
                a.routed_experts, a.top_k, a.shared_experts
            ));
        }
        lines.push(format!("vocab           {}", group(a.vocab as u64)));
        lines.push(format!("context         {} tokens", group(a.context as u64)));
        lines.push(format!("quantization    {}", a.quantization.as_deref().unwrap_or("none")));
        lines.push(format!("parameters      {} ({})", group(self.total_params), billions(self.total_params)));
        if self.mtp_params > 0 {
            lines.push(format!("  MTP layers    {} ({})", group(self.mtp_params), billions(self.mtp_params)));
        }
        lines.push(format!(
            "  active/token  {} ({}; all but the unchosen routed experts)",
            group(self.active_params),
            billions(self.active_params)
        ));
        let source = if w.estimated { "estimated from config.json" } else { "summed from the checkpoint" };
        lines.push(format!("weights         {}, {source}", gb(w.total)));
        if w.main != w.total {
            lines.push(format!("  without MTP   {}", gb(w.main)));
        }
        for (dtype, bytes) in &w.by_dtype {
            lines.push(format!("  {dtype:<13} {}", gb(*bytes)));
        }
        lines.push(format!(
            "kv cache (bf16) {} bytes/token; {} tokens: {}",
            group(self.kv_bytes_per_token_bf16),
            FIT_CACHE_TOKENS,
            gb(FIT_CACHE_TOKENS * self.kv_bytes_per_token_bf16)
        ));
        lines.push(format!(
            "fit             needs {} (weights without MTP + {}-token cache; activations not counted)",
            gb(self.fit_bytes),
            FIT_CACHE_TOKENS
        ));
        if self.devices.is_empty() {
            lines.push("  no devices".into());
        }
        for d in &self.devices {
            let verdict = match d.fits {
                None => "memory unknown".to_string(),
                Some(true) => format!("fits in {}", gb(d.memory_bytes)),
                Some(false) => format!("does not fit in {}", gb(d.memory_bytes)),
            };
            lines.push(format!("  {}:{} {}: {verdict}", d.backend, d.ordinal, d.name));
        }
        let mut out = lines.join("\n");
        out.push('\n');
        out
    }

    pub fn to_json(&self) -> Value {
        let a = &self.arch;
        let w = &self.weight_bytes;
        json!({
            "model_type": self.model_type,
            "architecture": {
                "layers": a.layers,
                "dense_layers": a.dense_layers,
                "moe_layers": a.moe_layers,
                "mtp_layers": a.mtp_layers,
                "heads": a.heads,
                "hidden": a.hidden,
                "routed_experts": a.routed_experts,
                "shared_experts": a.shared_experts,
                "top_k": a.top_k,
                "q_lora_rank": a.q_lora_rank,
                "kv_lora_rank": a.kv_lora_rank,
                "vocab": a.vocab,
                "context": a.context,
                "quantization": a.quantization,
            },
            "total_params": self.total_params,
            "mtp_params": self.mtp_params,
            "active_params": self.active_params,
            "weight_bytes": w.total,
            "weight_bytes_main": w.main,
            "weight_bytes_by_dtype": w.by_dtype,
            "weight_bytes_estimated": w.estimated,
            "kv_bytes_per_token_bf16": self.kv_bytes_per_token_bf16,
            "fit_cache_tokens": FIT_CACHE_TOKENS,
            "fit_bytes": self.fit_bytes,
            "devices": self.devices.iter().map(|d| json!({
                "backend": d.backend,
                "ordinal": d.ordinal,
                "name": d.name,
                "memory_bytes": d.memory_bytes,
                "fits": d.fits,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Exact bytes from the files; MTP tensors (and their scales) are split out by name.
fn checkpoint_bytes(cfg: &ModelConfig, ckpt: &Checkpoint) -> WeightBytes {
    let mut mtp_names = HashSet::new();
    for spec in layout::tensor_table(cfg).into_iter().filter(|s| s.mtp) {
        if spec.kind == Kind::Linear {
            mtp_names.insert(layout::scale_companion(&spec).0);
        }
        mtp_names.insert(spec.name);
    }
    let mtp_bytes: u64 = ckpt
        .names()
        .into_iter()
        .filter(|n| mtp_names.contains(*n))
        .filter_map(|n| ckpt.tensor(n).ok())
        .map(|t| t.bytes.len() as u64)
        .sum();
    let total = ckpt.total_bytes();
    WeightBytes {
        total,
        main: total - mtp_bytes.min(total),
        by_dtype: ckpt.bytes_by_dtype(),
        estimated: false,
    }
}

/// The config's tensor table through `layout::estimated_storage`.
fn estimate_bytes(cfg: &ModelConfig) -> WeightBytes {
    let mut by_dtype: BTreeMap<String, u64> = BTreeMap::new();
    let (mut total, mut main) = (0u64, 0u64);
    for spec in layout::tensor_table(cfg) {
        for (dtype, bytes) in layout::estimated_storage(cfg, &spec) {
            *by_dtype.entry(dtype.to_string()).or_insert(0) += bytes;
            total += bytes;
            if !spec.mtp {
                main += bytes;
            }
        }
    }
    WeightBytes { total, main, by_dtype, estimated: true }
}

/// 671026419200 → "671,026,419,200".
pub(crate) fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn billions(n: u64) -> String {
    format!("{:.2} B", n as f64 / 1e9)
}

/// Decimal gigabytes (1 GB = 10^9 bytes), with the exact count.
pub(crate) fn gb(bytes: u64) -> String {
    format!("{:.2} GB ({} bytes)", bytes as f64 / 1e9, group(bytes))
}

/// The line `dsv3 inspect` prints when the embedding has rows the tokenizer has no id for (DeepSeek-V3:
/// 129,280 rows, 128,815 ids): a model may still choose such a row, which generation then streams as a
/// placeholder. `None` when every row has a token.
pub fn vocabulary_gap(embedding_rows: usize, tokenizer_ids: usize) -> Option<String> {
    (embedding_rows > tokenizer_ids).then(|| {
        format!(
            "vocab gap       {} embedding rows have no token (tokenizer: {} ids); generated, one streams as {}",
            group((embedding_rows - tokenizer_ids) as u64),
            group(tokenizer_ids as u64),
            crate::tokenizer::unknown_id_placeholder(tokenizer_ids as u32)
        )
    })
}
