//! The checkpoint's tensor table as the config implies it: every name, shape and storage kind in the
//! HuggingFace layout (`model.layers.{i}.self_attn.q_a_proj.weight`, per-expert MLPs, ...). The loader
//! validates a checkpoint against it and `dsv3 inspect` counts parameters from it.

use dsv3_core::ops::gemm::blocks;

use crate::config::ModelConfig;

/// What a tensor may be stored as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A projection `[out, in]`: block FP8 with a `<name>_scale_inv` companion when the config has a
    /// `quantization_config`, else (and also then, for checkpoints that keep some projections unquantized)
    /// bf16, f16 or f32.
    Linear,
    /// Norm gains, embeddings, the head, the router: bf16, f16 or f32.
    Float,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: Kind,
    /// Part of a multi-token-prediction layer (index ≥ `num_hidden_layers`): skipped unless MTP runs.
    pub mtp: bool,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The FP8 scale companion's name and grid shape for a projection `[out, in]`.
pub fn scale_companion(spec: &TensorSpec) -> (String, Vec<usize>) {
    (format!("{}_scale_inv", spec.name), vec![blocks(spec.shape[0]), blocks(spec.shape[1])])
}

/// Every tensor of the checkpoint, main model first, then MTP layers.
pub fn tensor_table(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let mut t = Table { specs: Vec::new(), mtp: false };
    let (d, v) = (cfg.hidden_size, cfg.vocab_size);
    t.float("model.embed_tokens.weight", &[v, d]);
    for layer in 0..cfg.num_hidden_layers {
        t.layer(cfg, layer);
    }
    t.float("model.norm.weight", &[d]);
    if !cfg.tie_word_embeddings {
        t.float("lm_head.weight", &[v, d]);
    }
    t.mtp = true;
    for layer in cfg.num_hidden_layers..cfg.num_hidden_layers + cfg.num_nextn_predict_layers {
        t.layer(cfg, layer);
        let p = format!("model.layers.{layer}.");
        t.float(&format!("{p}embed_tokens.weight"), &[v, d]);
        t.float(&format!("{p}enorm.weight"), &[d]);
        t.float(&format!("{p}hnorm.weight"), &[d]);
        t.float(&format!("{p}eh_proj.weight"), &[d, 2 * d]);
        t.float(&format!("{p}shared_head.norm.weight"), &[d]);
        t.float(&format!("{p}shared_head.head.weight"), &[v, d]);
    }
    t.specs
}

struct Table {
    specs: Vec<TensorSpec>,
    mtp: bool,
}

impl Table {
    fn push(&mut self, name: &str, shape: &[usize], kind: Kind) {
        self.specs.push(TensorSpec { name: name.to_string(), shape: shape.to_vec(), kind, mtp: self.mtp });
    }

    fn float(&mut self, name: &str, shape: &[usize]) {
        self.push(name, shape, Kind::Float);
    }

    fn linear(&mut self, name: &str, out: usize, inp: usize) {
        self.push(name, &[out, inp], Kind::Linear);
    }

    fn mlp(&mut self, prefix: &str, d: usize, width: usize) {
        self.linear(&format!("{prefix}gate_proj.weight"), width, d);
        self.linear(&format!("{prefix}up_proj.weight"), width, d);
        self.linear(&format!("{prefix}down_proj.weight"), d, width);
    }

    fn layer(&mut self, cfg: &ModelConfig, layer: usize) {
        let p = format!("model.layers.{layer}.");
        let d = cfg.hidden_size;
        let h = cfg.num_attention_heads;
        self.float(&format!("{p}input_layernorm.weight"), &[d]);
        self.float(&format!("{p}post_attention_layernorm.weight"), &[d]);
        let a = format!("{p}self_attn.");
        match cfg.q_lora_rank {
            Some(r) => {
                self.linear(&format!("{a}q_a_proj.weight"), r, d);
                self.float(&format!("{a}q_a_layernorm.weight"), &[r]);
                self.linear(&format!("{a}q_b_proj.weight"), h * cfg.qk_head_dim(), r);
            }
            None => self.linear(&format!("{a}q_proj.weight"), h * cfg.qk_head_dim(), d),
        }
        self.linear(&format!("{a}kv_a_proj_with_mqa.weight"), cfg.kv_latent_width(), d);
        self.float(&format!("{a}kv_a_layernorm.weight"), &[cfg.kv_lora_rank]);
        self.linear(
            &format!("{a}kv_b_proj.weight"),
            h * (cfg.qk_nope_head_dim + cfg.v_head_dim),
            cfg.kv_lora_rank,
        );
        self.linear(&format!("{a}o_proj.weight"), d, h * cfg.v_head_dim);
        match cfg.moe.filter(|_| cfg.is_moe_layer(layer)) {
            None => self.mlp(&format!("{p}mlp."), d, cfg.intermediate_size),
            Some(moe) => {
                let e = moe.n_routed_experts;
                self.float(&format!("{p}mlp.gate.weight"), &[e, d]);
                if moe.route.method == dsv3_core::ops::moe::TopkMethod::NoAuxTc {
                    self.float(&format!("{p}mlp.gate.e_score_correction_bias"), &[e]);
                }
                for j in 0..e {
                    self.mlp(&format!("{p}mlp.experts.{j}."), d, moe.moe_intermediate_size);
                }
                if moe.n_shared_experts > 0 {
                    self.mlp(
                        &format!("{p}mlp.shared_experts."),
                        d,
                        moe.n_shared_experts * moe.moe_intermediate_size,
                    );
                }
            }
        }
    }
}

/// What the files of a DeepSeek checkpoint with this config hold for `spec`, as (dtype, bytes), when only
/// the config is known: with a quantization_config every projection is FP8 (1 B per parameter) with an f32
/// [ceil(out/128), ceil(in/128)] scale grid; the routing correction bias is f32 in every released
/// checkpoint; everything else is bf16. `dsv3 inspect` and the planner both estimate through this.
pub fn estimated_storage(cfg: &ModelConfig, spec: &TensorSpec) -> Vec<(&'static str, u64)> {
    let numel = spec.numel() as u64;
    if spec.kind == Kind::Linear && cfg.quantization.is_some() {
        let grid: u64 = scale_companion(spec).1.iter().map(|&d| d as u64).product();
        vec![("f8e4m3fn", numel), ("f32", 4 * grid)]
    } else if spec.name.ends_with("e_score_correction_bias") {
        vec![("f32", 4 * numel)]
    } else {
        vec![("bf16", 2 * numel)]
    }
}

/// Parameter counts from the tensor table (FP8 scales are not parameters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamCount {
    /// Everything but MTP layers: the number model cards publish (671,026,419,200 for DeepSeek-V3).
    pub main: u64,
    pub mtp: u64,
    /// The main model minus the unchosen routed experts. Includes the whole input embedding table, of which
    /// a token reads one row (DeepSeek's published "activated" figures differ by about that much).
    pub active: u64,
}

pub fn param_count(cfg: &ModelConfig) -> ParamCount {
    let table = tensor_table(cfg);
    let sum = |mtp: bool| table.iter().filter(|s| s.mtp == mtp).map(|s| s.numel() as u64).sum::<u64>();
    let main = sum(false);
    let idle_experts = cfg.moe.map_or(0, |m| {
        let per_expert = 3 * cfg.hidden_size * m.moe_intermediate_size;
        let moe_layers = cfg.num_hidden_layers - cfg.first_k_dense_replace;
        (moe_layers * (m.n_routed_experts - m.route.top_k) * per_expert) as u64
    });
    ParamCount { main, mtp: sum(true), active: main - idle_experts }
}

/// Bytes of latent cache per token over all main layers at `bytes_per_value` (2 for bf16).
pub fn kv_bytes_per_token(cfg: &ModelConfig, bytes_per_value: usize) -> u64 {
    (cfg.num_hidden_layers * cfg.kv_latent_width() * bytes_per_value) as u64
}
