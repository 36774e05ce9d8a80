//! HuggingFace `config.json` of DeepSeek-V3 / V2-family checkpoints, parsed strictly.
//!
//! Every key is either understood or on a short list of training/bookkeeping keys that do not change
//! inference. Anything else is an error naming the key: a new architecture variant (DeepSeek-V3.2's
//! sparse-attention indexer, say) adds keys, and silently ignoring them would compute the wrong model.
//! Missing required keys, values of the wrong type and contradictions between keys are errors too.

use std::path::Path;

use dsv3_core::ops::gemm::ScaleFormat;
use dsv3_core::ops::moe::{RouteConfig, Scoring, TopkMethod};
use dsv3_core::rope::{RopeParams, Yarn};
use dsv3_core::{Error, Result};
use serde_json::{Map, Value};

/// The two HF model types this graph runs (V3 covers R1, V3.1, Kimi-K2 and Moonlight look-alikes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    DeepseekV3,
    DeepseekV2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::DeepseekV3 => "deepseek_v3",
            Arch::DeepseekV2 => "deepseek_v2",
        }
    }
}

/// Block-FP8 weights (`quantization_config`): e4m3fn codes with 128×128 `weight_scale_inv` blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fp8Quant {
    /// How activations are quantized on the W8A8 path (`scale_fmt`, DeepSeek-V3.1: power-of-two scales).
    pub activation_scales: ScaleFormat,
}

/// The mixture-of-experts layers (`first_k_dense_replace..num_hidden_layers`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Moe {
    pub n_routed_experts: usize,
    /// Always-active experts, fused in the checkpoint into one MLP of width `n_shared · moe_intermediate_size`.
    pub n_shared_experts: usize,
    pub moe_intermediate_size: usize,
    pub route: RouteConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// Dense MLP width (layers below `first_k_dense_replace`).
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub first_k_dense_replace: usize,
    pub num_attention_heads: usize,
    /// `None` when every layer is dense.
    pub moe: Option<Moe>,
    /// `None`: queries come straight from `q_proj` (V2-Lite).
    pub q_lora_rank: Option<usize>,
    pub kv_lora_rank: usize,
    pub qk_nope_head_dim: usize,
    pub qk_rope_head_dim: usize,
    pub v_head_dim: usize,
    pub rope_theta: f64,
    pub yarn: Option<Yarn>,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f32,
    pub num_nextn_predict_layers: usize,
    pub tie_word_embeddings: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub quantization: Option<Fp8Quant>,
}

/// Keys that describe training or file bookkeeping and do not change the forward pass.
const IGNORED_KEYS: &[&str] = &[
    "_name_or_path",
    "architectures",
    "attention_dropout",
    "auto_map",
    "aux_loss_alpha",
    "dtype",
    "ep_size",
    "initializer_range",
    "output_router_logits",
    "pad_token_id",
    "pretraining_tp",
    "router_aux_loss_coef",
    "seq_aux",
    "torch_dtype",
    "transformers_version",
    "use_cache",
];

/// Keys this parser reads (the rest of the known set).
const READ_KEYS: &[&str] = &[
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "moe_intermediate_size",
    "num_hidden_layers",
    "first_k_dense_replace",
    "num_attention_heads",
    "num_key_value_heads",
    "n_routed_experts",
    "n_shared_experts",
    "num_experts_per_tok",
    "n_group",
    "topk_group",
    "scoring_func",
    "topk_method",
    "norm_topk_prob",
    "routed_scaling_factor",
    "q_lora_rank",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "head_dim",
    "qk_head_dim",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "rope_interleave",
    "max_position_embeddings",
    "rms_norm_eps",
    "num_nextn_predict_layers",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
    "quantization_config",
    "moe_layer_freq",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
];

/// A JSON object being read, remembering which file it came from for error messages.
struct Fields<'a> {
    file: &'a str,
    prefix: &'static str,
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    fn error(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Data {
            file: self.file.to_string(),
            field: format!("{}{key}", self.prefix),
            reason: reason.into(),
        }
    }

    /// The value of `key`, treating JSON `null` as absent.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.error(key, "missing (required)"))
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.error(key, format!("must be a non-negative integer, got {v}"))),
        }
    }

    fn f64(&self, key: &str) -> Result<f64> {
        self.opt_f64(key)?.ok_or_else(|| self.error(key, "missing (required)"))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if x.is_finite() => Ok(Some(x)),
                _ => Err(self.error(key, format!("must be a finite number, got {v}"))),
            },
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.error(key, format!("must be true or false, got {v}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => {
                v.as_str().map(Some).ok_or_else(|| self.error(key, format!("must be a string, got {v}")))
            }
        }
    }

    /// A required count in `1..=limit(key)`: the limits are far above any real model and keep the tensor
    /// table's arithmetic and size finite for a malformed config.
    fn positive(&self, key: &str) -> Result<usize> {
        let n = self.usize(key)?;
        let limit = match key {
            "num_hidden_layers" | "num_attention_heads" => 1 << 12,
            "n_routed_experts" | "num_experts_per_tok" | "n_group" | "topk_group" => 1 << 16,
            _ => 1 << 24,
        };
        if n == 0 || n > limit {
            return Err(self.error(key, format!("must be in 1..={limit}, got {n}")));
        }
        Ok(n)
    }

    fn check(&self, key: &str, ok: bool, reason: impl FnOnce() -> String) -> Result<()> {
        if ok {
            Ok(())
        } else {
            Err(self.error(key, reason()))
        }
    }

    fn reject_unknown(&self, known: &[&str]) -> Result<()> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => {
                Err(self.error(k, "unknown key: this parser does not know what it changes in the model"))
            }
            None => Ok(()),
        }
    }
}

/// Bounds on config scalars that are finite yet make every output 0, ±inf or NaN: far above any release
/// (rms_norm_eps 1e-6; routed_scaling_factor 1.0 to 16.0 for V2, 2.5 for V3).
pub const MAX_RMS_NORM_EPS: f64 = 1.0;
pub const MAX_ROUTED_SCALING_FACTOR: f64 = 1000.0;

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = crate::files::read_text_capped(path, crate::files::CONFIG_LIMIT)?;
        ModelConfig::from_json(&text, &path.display().to_string())
    }

    /// Parses config JSON text; `file` names it in errors.
    pub fn from_json(text: &str, file: &str) -> Result<ModelConfig> {
        let value: Value = serde_json::from_str(text).map_err(|e| Error::Data {
            file: file.to_string(),
            field: "(json)".into(),
            reason: format!("not valid JSON: {e}"),
        })?;
        let Some(map) = value.as_object() else {
            return Err(Error::Data {
                file: file.into(),
                field: "(root)".into(),
                reason: "not a JSON object".into(),
            });
        };
        let f = Fields { file, prefix: "", map };
        let known: Vec<&str> = IGNORED_KEYS.iter().chain(READ_KEYS).copied().collect();
        f.reject_unknown(&known)?;
        parse(&f)
    }

    pub fn qk_head_dim(&self) -> usize {
        self.qk_nope_head_dim + self.qk_rope_head_dim
    }

    /// Values cached per token per layer: the normalized latent plus the rotated shared rope key.
    pub fn kv_latent_width(&self) -> usize {
        self.kv_lora_rank + self.qk_rope_head_dim
    }

    pub fn is_moe_layer(&self, layer: usize) -> bool {
        layer >= self.first_k_dense_replace
    }

    pub fn rope(&self) -> RopeParams {
        RopeParams { dim: self.qk_rope_head_dim, theta: self.rope_theta, yarn: self.yarn }
    }

    /// Attention logit scale: `qk_head_dim^-0.5`, times YaRN's mscale² when YaRN is on.
    pub fn softmax_scale(&self) -> f32 {
        dsv3_core::rope::softmax_scale(self.qk_head_dim(), self.yarn.as_ref())
    }
}

fn parse(f: &Fields) -> Result<ModelConfig> {
    let arch = match f.opt_str("model_type")? {
        Some("deepseek_v3") => Arch::DeepseekV3,
        Some("deepseek_v2") => Arch::DeepseekV2,
        Some(other) => {
            return Err(f.error("model_type", format!("`{other}` is not deepseek_v3 or deepseek_v2")));
        }
        None => return Err(f.error("model_type", "missing (required)")),
    };
    let hidden_size = f.positive("hidden_size")?;
    let num_hidden_layers = f.positive("num_hidden_layers")?;
    let num_attention_heads = f.positive("num_attention_heads")?;
    if let Some(kv_heads) = f.opt_usize("num_key_value_heads")? {
        f.check("num_key_value_heads", kv_heads == num_attention_heads, || {
            format!(
                "MLA has one latent KV per token: expected {num_attention_heads} (= heads), got {kv_heads}"
            )
        })?;
    }
    let first_k_dense_replace = f.opt_usize("first_k_dense_replace")?.unwrap_or(0);
    f.check("first_k_dense_replace", first_k_dense_replace <= num_hidden_layers, || {
        format!("{first_k_dense_replace} exceeds num_hidden_layers {num_hidden_layers}")
    })?;
    if let Some(freq) = f.opt_usize("moe_layer_freq")? {
        f.check("moe_layer_freq", freq == 1, || {
            format!("only 1 (every layer past the dense ones) is supported, got {freq}")
        })?;
    }
    if let Some(act) = f.opt_str("hidden_act")? {
        f.check("hidden_act", act == "silu", || format!("only silu is supported, got `{act}`"))?;
    }
    for key in ["attention_bias", "mlp_bias"] {
        if let Some(bias) = f.opt_bool(key)? {
            f.check(key, !bias, || "projections with a bias are not supported".into())?;
        }
    }

    let moe = if first_k_dense_replace < num_hidden_layers { Some(parse_moe(f, arch)?) } else { None };
    let intermediate_size = if first_k_dense_replace > 0 {
        f.positive("intermediate_size")?
    } else {
        f.opt_usize("intermediate_size")?.unwrap_or(0)
    };

    let q_lora_rank = match f.opt_usize("q_lora_rank")? {
        Some(0) | None => None, // REF spells "no q compression" as 0, HF as null
        Some(r) => Some(r),
    };
    let kv_lora_rank = f.positive("kv_lora_rank")?;
    let qk_nope_head_dim = f.positive("qk_nope_head_dim")?;
    let qk_rope_head_dim = f.positive("qk_rope_head_dim")?;
    f.check("qk_rope_head_dim", qk_rope_head_dim % 2 == 0, || {
        format!("must be even (rotary pairs), got {qk_rope_head_dim}")
    })?;
    let v_head_dim = f.positive("v_head_dim")?;
    // transformers 5 re-saves add derived keys; they must agree with the primary ones.
    if let Some(d) = f.opt_usize("qk_head_dim")? {
        f.check("qk_head_dim", d == qk_nope_head_dim + qk_rope_head_dim, || {
            format!("{d} != qk_nope_head_dim + qk_rope_head_dim = {}", qk_nope_head_dim + qk_rope_head_dim)
        })?;
    }
    if let Some(d) = f.opt_usize("head_dim")? {
        f.check("head_dim", d == qk_rope_head_dim, || format!("{d} != qk_rope_head_dim {qk_rope_head_dim}"))?;
    }
    if let Some(interleave) = f.opt_bool("rope_interleave")? {
        // false would mean the rope rows were already permuted to NeoX halves; this graph rotates the
        // checkpoint's interleaved pairs, so such a checkpoint would be silently wrong.
        f.check("rope_interleave", interleave, || {
            "only the checkpoints' interleaved rope layout is supported".into()
        })?;
    }

    let rope_theta = f.opt_f64("rope_theta")?.unwrap_or(10000.0);
    f.check("rope_theta", rope_theta > 1.0, || format!("must exceed 1, got {rope_theta}"))?;
    // transformers 5 re-saves move the rope settings to `rope_parameters` and may drop `rope_scaling`.
    let yarn = match (f.get("rope_scaling"), f.get("rope_parameters")) {
        (Some(_), params) => {
            let yarn = parse_yarn(f, "rope_scaling", "rope_scaling.", rope_theta)?;
            if let Some(v) = params {
                check_rope_parameters(f, v, rope_theta, yarn.as_ref())?;
            }
            yarn
        }
        (None, Some(_)) => parse_yarn(f, "rope_parameters", "rope_parameters.", rope_theta)?,
        (None, None) => None,
    };
    let max_position_embeddings = f.positive("max_position_embeddings")?;
    let rms_norm_eps = f.opt_f64("rms_norm_eps")?.unwrap_or(1e-6);
    // Checked as the f32 the norm uses: 1e-50 rounds to 0 (division by zero on a zero row) and a large
    // epsilon swamps every activation (released configs use 1e-6).
    f.check("rms_norm_eps", (rms_norm_eps as f32) > 0.0 && rms_norm_eps <= MAX_RMS_NORM_EPS, || {
        format!("must be in (0, {MAX_RMS_NORM_EPS}] as an f32, got {rms_norm_eps}")
    })?;

    let vocab_size = f.positive("vocab_size")?;
    let token = |key: &str, v: &Value| -> Result<u32> {
        v.as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| (n as usize) < vocab_size)
            .ok_or_else(|| f.error(key, format!("must be a token id below vocab_size {vocab_size}, got {v}")))
    };
    let bos_token_id = f.get("bos_token_id").map(|v| token("bos_token_id", v)).transpose()?;
    let eos_token_ids = match f.get("eos_token_id") {
        None => Vec::new(),
        Some(Value::Array(ids)) => ids.iter().map(|v| token("eos_token_id", v)).collect::<Result<_>>()?,
        Some(v) => vec![token("eos_token_id", v)?],
    };

    Ok(ModelConfig {
        arch,
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        first_k_dense_replace,
        num_attention_heads,
        moe,
        q_lora_rank,
        kv_lora_rank,
        qk_nope_head_dim,
        qk_rope_head_dim,
        v_head_dim,
        rope_theta,
        yarn,
        max_position_embeddings,
        rms_norm_eps: rms_norm_eps as f32,
        num_nextn_predict_layers: f.opt_usize("num_nextn_predict_layers")?.unwrap_or(0),
        tie_word_embeddings: f.opt_bool("tie_word_embeddings")?.unwrap_or(false),
        bos_token_id,
        eos_token_ids,
        quantization: parse_quantization(f)?,
    })
}

fn parse_moe(f: &Fields, arch: Arch) -> Result<Moe> {
    let n_routed = f.positive("n_routed_experts")?;
    let n_shared = f.opt_usize("n_shared_experts")?.unwrap_or(0);
    let top_k = f.positive("num_experts_per_tok")?;
    let scoring = match f.opt_str("scoring_func")? {
        Some("sigmoid") => Scoring::Sigmoid,
        Some("softmax") => Scoring::Softmax,
        Some(other) => return Err(f.error("scoring_func", format!("`{other}` is not sigmoid or softmax"))),
        None if arch == Arch::DeepseekV2 => Scoring::Softmax, // DeepseekV2Config's default
        None => return Err(f.error("scoring_func", "missing (required for deepseek_v3)")),
    };
    let method = match f.opt_str("topk_method")? {
        Some("noaux_tc") => TopkMethod::NoAuxTc,
        // DeepSeek-V2's config class spells it "gready" in its defaults.
        Some("greedy" | "gready") => TopkMethod::Greedy,
        Some("group_limited_greedy") => TopkMethod::GroupLimitedGreedy,
        Some(other) => {
            return Err(
                f.error("topk_method", format!("`{other}` is not noaux_tc, greedy or group_limited_greedy"))
            );
        }
        None if arch == Arch::DeepseekV2 => TopkMethod::Greedy,
        None => return Err(f.error("topk_method", "missing (required for deepseek_v3)")),
    };
    let consistent = matches!(
        (scoring, method),
        (Scoring::Sigmoid, TopkMethod::NoAuxTc)
            | (Scoring::Softmax, TopkMethod::Greedy | TopkMethod::GroupLimitedGreedy)
    );
    f.check("topk_method", consistent, || {
        format!("{method:?} with {scoring:?} scoring is not a combination any DeepSeek model uses")
    })?;
    let grouped = method != TopkMethod::Greedy;
    let (n_group, topk_group) = if grouped {
        (f.positive("n_group")?, f.positive("topk_group")?)
    } else {
        (f.opt_usize("n_group")?.unwrap_or(1).max(1), f.opt_usize("topk_group")?.unwrap_or(1).max(1))
    };
    f.check("n_group", n_routed % n_group == 0, || {
        format!("{n_routed} experts do not split into {n_group} groups")
    })?;
    f.check("topk_group", topk_group <= n_group, || format!("{topk_group} exceeds n_group {n_group}"))?;
    let reachable = if grouped { topk_group * (n_routed / n_group) } else { n_routed };
    f.check("num_experts_per_tok", top_k <= reachable, || {
        format!("{top_k} exceeds the {reachable} experts reachable through the kept groups")
    })?;
    // The routed experts' sum is scaled before it meets bf16 activations: 1e38 overflows them to ±inf, and
    // the norm that follows turns every logit to 0 or NaN.
    let routed_scaling_factor = f.opt_f64("routed_scaling_factor")?.unwrap_or(1.0);
    f.check(
        "routed_scaling_factor",
        routed_scaling_factor > 0.0 && routed_scaling_factor <= MAX_ROUTED_SCALING_FACTOR,
        || format!("must be in (0, {MAX_ROUTED_SCALING_FACTOR}], got {routed_scaling_factor}"),
    )?;
    let routed_scaling_factor = routed_scaling_factor as f32;
    let route = RouteConfig {
        scoring,
        method,
        n_group: if grouped { n_group } else { 1 },
        topk_group: if grouped { topk_group } else { 1 },
        top_k,
        norm_topk_prob: f.opt_bool("norm_topk_prob")?.unwrap_or(false),
        routed_scaling_factor,
    };
    Ok(Moe {
        n_routed_experts: n_routed,
        n_shared_experts: n_shared,
        moe_intermediate_size: f.positive("moe_intermediate_size")?,
        route,
    })
}

/// YaRN settings from `rope_scaling` (or a re-save's `rope_parameters`); `None` for plain RoPE.
fn parse_yarn(f: &Fields, key: &str, prefix: &'static str, rope_theta: f64) -> Result<Option<Yarn>> {
    let Some(v) = f.get(key) else { return Ok(None) };
    let Some(map) = v.as_object() else { return Err(f.error(key, format!("must be an object, got {v}"))) };
    let s = Fields { file: f.file, prefix, map };
    s.reject_unknown(&[
        "type",
        "rope_type",
        "factor",
        "original_max_position_embeddings",
        "beta_fast",
        "beta_slow",
        "mscale",
        "mscale_all_dim",
        "rope_theta",
    ])?;
    let (new_key, old_key) = (s.opt_str("rope_type")?, s.opt_str("type")?);
    if let (Some(a), Some(b)) = (new_key, old_key) {
        s.check("type", a == b, || format!("`{b}` contradicts rope_type `{a}`"))?;
    }
    let kind = new_key.or(old_key);
    if key == "rope_parameters" && matches!(kind, Some("default") | None) {
        return Ok(None);
    }
    s.check("type", kind == Some("yarn"), || format!("only yarn rope scaling is supported, got {kind:?}"))?;
    if let Some(theta) = s.opt_f64("rope_theta")? {
        s.check("rope_theta", theta == rope_theta, || {
            format!("{theta} contradicts the top-level rope_theta {rope_theta}")
        })?;
    }
    let factor = s.f64("factor")?;
    s.check("factor", factor >= 1.0, || format!("must be at least 1, got {factor}"))?;
    let mscale = s.opt_f64("mscale")?.unwrap_or(1.0);
    let mscale_all_dim = s.opt_f64("mscale_all_dim")?.unwrap_or(0.0);
    // cos/sin are multiplied by get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim): 1 when they
    // agree (every DeepSeek release). A different amplitude is a rope variant this graph does not implement.
    let amplitude_one = mscale == mscale_all_dim || (mscale_all_dim == 0.0 && mscale == 1.0) || factor <= 1.0;
    s.check("mscale", amplitude_one, || {
        format!("{mscale} differs from mscale_all_dim {mscale_all_dim}: a rotary amplitude other than 1 is not supported")
    })?;
    let original_max_position = s.f64("original_max_position_embeddings")?;
    s.check("original_max_position_embeddings", original_max_position >= 1.0, || {
        format!("must be at least 1, got {original_max_position}")
    })?;
    // YaRN interpolates between the dimension beta_fast rotations reach and the one beta_slow rotations
    // reach: the ramp is empty or reversed unless beta_fast > beta_slow > 0.
    let beta_fast = s.opt_f64("beta_fast")?.unwrap_or(32.0);
    let beta_slow = s.opt_f64("beta_slow")?.unwrap_or(1.0);
    s.check("beta_slow", beta_slow > 0.0, || format!("must be positive, got {beta_slow}"))?;
    s.check("beta_fast", beta_fast > beta_slow, || {
        format!("must be greater than beta_slow ({beta_slow}), got {beta_fast}")
    })?;
    Ok(Some(Yarn { factor, original_max_position, beta_fast, beta_slow, mscale_all_dim }))
}

/// transformers 5 re-saves repeat the rope settings under `rope_parameters`; they must agree.
fn check_rope_parameters(f: &Fields, v: &Value, rope_theta: f64, yarn: Option<&Yarn>) -> Result<()> {
    let Some(map) = v.as_object() else {
        return Err(f.error("rope_parameters", format!("must be an object, got {v}")));
    };
    let p = Fields { file: f.file, prefix: "rope_parameters.", map };
    if let Some(theta) = p.opt_f64("rope_theta")? {
        p.check("rope_theta", theta == rope_theta, || {
            format!("{theta} contradicts rope_theta {rope_theta}")
        })?;
    }
    let kind = p.opt_str("rope_type")?.unwrap_or("default");
    let agrees = match (kind, yarn) {
        ("yarn", Some(y)) => p.opt_f64("factor")?.is_none_or(|x| x == y.factor),
        ("default", None) => true,
        _ => false,
    };
    p.check("rope_type", agrees, || format!("`{kind}` contradicts rope_scaling"))
}

fn parse_quantization(f: &Fields) -> Result<Option<Fp8Quant>> {
    let Some(v) = f.get("quantization_config") else { return Ok(None) };
    let Some(map) = v.as_object() else {
        return Err(f.error("quantization_config", format!("must be an object, got {v}")));
    };
    let q = Fields { file: f.file, prefix: "quantization_config.", map };
    q.reject_unknown(&["quant_method", "fmt", "activation_scheme", "weight_block_size", "scale_fmt"])?;
    let method = q.opt_str("quant_method")?;
    q.check("quant_method", method == Some("fp8"), || format!("only fp8 is supported, got {method:?}"))?;
    let fmt = q.opt_str("fmt")?.unwrap_or("e4m3");
    q.check("fmt", fmt == "e4m3", || format!("only e4m3 weights are supported, got `{fmt}`"))?;
    if let Some(scheme) = q.opt_str("activation_scheme")? {
        q.check("activation_scheme", scheme == "dynamic", || {
            format!("only dynamic is supported, got `{scheme}`")
        })?;
    }
    let block = q
        .get("weight_block_size")
        .and_then(Value::as_array)
        .map(|b| b.iter().map(Value::as_u64).collect::<Vec<_>>());
    q.check("weight_block_size", block == Some(vec![Some(128), Some(128)]), || {
        format!("only [128, 128] blocks are supported, got {:?}", q.get("weight_block_size"))
    })?;
    let activation_scales = match q.opt_str("scale_fmt")? {
        None => ScaleFormat::F32,
        Some("ue8m0") => ScaleFormat::Ue8m0,
        Some(other) => return Err(q.error("scale_fmt", format!("`{other}` is not ue8m0"))),
    };
    Ok(Some(Fp8Quant { activation_scales }))
}
