//! A small built-in model with the DeepSeek-V3 architecture and the real tokenizer's vocabulary, its
//! weights generated deterministically on request, so that `dsv3 generate` runs on a fresh clone with no
//! download. Its weights are random: it exercises every part of the graph (FP8 block weights with their
//! scale grids, MLA, routed and shared experts), and its text is noise.

use std::borrow::Cow;
use std::collections::HashMap;

use dsv3_core::fp8::{Fp8Format, Overflow};
use dsv3_core::ops::gemm::blocks;
use dsv3_core::ops::sampling::uniform;
use dsv3_core::{DType, Error, Result};

use crate::config::ModelConfig;
use crate::layout::{tensor_table, Kind, TensorSpec};
use crate::weights::{HostTensor, WeightSource};

/// `config.json` of the built-in model: two layers (one dense, one MoE with 8 routed experts in 2 groups
/// and a shared expert), block-FP8 projections, YaRN as DeepSeek-V3 has it.
pub const CONFIG: &str = r#"{
  "model_type": "deepseek_v3", "vocab_size": 129280, "hidden_size": 256, "intermediate_size": 512,
  "moe_intermediate_size": 128, "num_hidden_layers": 2, "first_k_dense_replace": 1,
  "num_attention_heads": 4, "num_key_value_heads": 4, "n_routed_experts": 8, "n_shared_experts": 1,
  "num_experts_per_tok": 2, "n_group": 2, "topk_group": 1, "scoring_func": "sigmoid",
  "topk_method": "noaux_tc", "norm_topk_prob": true, "routed_scaling_factor": 2.5, "q_lora_rank": 128,
  "kv_lora_rank": 128, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
  "rope_theta": 10000, "max_position_embeddings": 16384, "rms_norm_eps": 1e-6,
  "rope_scaling": {"type": "yarn", "factor": 4, "original_max_position_embeddings": 4096,
                   "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0},
  "quantization_config": {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                          "weight_block_size": [128, 128]},
  "bos_token_id": 0, "eos_token_id": 1, "tie_word_embeddings": false
}"#;

/// The DeepSeek-V3 tokenizer's vocabulary (the embedding's rows), which the built-in model shares.
pub const VOCAB: usize = 129280;

pub struct Builtin {
    pub config: ModelConfig,
    specs: HashMap<String, TensorSpec>,
    seed: u64,
    /// Weights straight from a hash (see [`Builtin::bulk`]).
    bulk: bool,
}

impl Builtin {
    pub fn new(seed: u64) -> Result<Builtin> {
        Ok(Builtin::with_config(ModelConfig::from_json(CONFIG, "built-in config")?, seed))
    }

    /// Random weights for any configuration (benchmarks of full-width shapes); FP8 projections when the
    /// config has a `quantization_config`, bf16 otherwise.
    pub fn with_config(config: ModelConfig, seed: u64) -> Builtin {
        let specs = tensor_table(&config).into_iter().map(|s| (s.name.clone(), s)).collect();
        Builtin { config, specs, seed, bulk: false }
    }

    /// Weights for timing only, at about a nanosecond per byte (a full-width DeepSeek-V3 MoE layer is
    /// 11 GB): projections, embeddings and the head are hashed bits — FP8 codes with magnitudes ≤ 1.875
    /// and a `1/sqrt(in)` block scale, or bf16 values of magnitude [2⁻⁷, 2⁻⁶) — not samples of a
    /// distribution. Norm gains are 1 and the router bias small, as in [`Builtin::with_config`].
    pub fn bulk(config: ModelConfig, seed: u64) -> Builtin {
        Builtin { bulk: true, ..Builtin::with_config(config, seed) }
    }

    /// `n` bytes of SplitMix64 output keyed by (seed, tensor).
    fn hashed_bytes(&self, name_hash: u64, n: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(n + 8);
        for i in 0..n.div_ceil(8) as u64 {
            let mut z = (self.seed ^ name_hash).wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            bytes.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        bytes.truncate(n);
        bytes
    }

    /// The bulk form of a projection / embedding / head, or `None` for tensors generated normally.
    fn bulk_tensor(&self, spec: &TensorSpec, want_scales: bool) -> Option<HostTensor<'_>> {
        let generated = spec.name.ends_with("norm.weight") || spec.name.ends_with("e_score_correction_bias");
        if !self.bulk || generated {
            return None;
        }
        let hash = name_hash(&spec.name);
        let (n, k) = (spec.shape[0], spec.shape.get(1).copied().unwrap_or(1));
        let owned = |dtype, shape: Vec<usize>, bytes| HostTensor { dtype, shape, bytes: Cow::Owned(bytes) };
        if spec.kind == Kind::Linear && self.config.quantization.is_some() {
            if want_scales {
                let scales = vec![1.0 / (k as f32).sqrt(); blocks(n) * blocks(k)];
                return Some(owned(DType::F32, vec![blocks(n), blocks(k)], encode(DType::F32, &scales)));
            }
            // Clearing bit 6 keeps every code's exponent field ≤ 7: finite, |value| ≤ 1.875.
            let codes = self.hashed_bytes(hash, n * k).into_iter().map(|c| c & !0x40).collect();
            return Some(owned(DType::F8E4M3Fn, spec.shape.clone(), codes));
        }
        // bf16 with exponent 120 (2⁻⁷), a random sign and mantissa.
        let mut bytes = self.hashed_bytes(hash, 2 * spec.numel());
        for pair in bytes.chunks_exact_mut(2) {
            let bits = (u16::from_le_bytes([pair[0], pair[1]]) & 0x807F) | 0x3C00;
            pair.copy_from_slice(&bits.to_le_bytes());
        }
        Some(owned(DType::BF16, spec.shape.clone(), bytes))
    }

    /// A standard normal value for element `i` of tensor `name` (Box–Muller over the shared hash).
    fn normal(&self, name_hash: u64, i: usize) -> f32 {
        let u1 = uniform(self.seed, name_hash, 2 * i as u64);
        let u2 = uniform(self.seed, name_hash, 2 * i as u64 + 1);
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// The tensor's values before storage: projections N(0, 1/in), norms 1, embeddings N(0, 1), the router
    /// bias small.
    fn values(&self, spec: &TensorSpec) -> Vec<f32> {
        let hash = name_hash(&spec.name);
        let n = spec.numel();
        let scale = if spec.name.ends_with("norm.weight") {
            return vec![1.0; n];
        } else if spec.name.ends_with("e_score_correction_bias") {
            0.01
        } else if spec.name.contains("embed_tokens") {
            1.0
        } else {
            1.0 / (spec.shape[1] as f32).sqrt()
        };
        (0..n).map(|i| scale * self.normal(hash, i)).collect()
    }
}

/// FNV-1a of a tensor's name: the per-tensor key of its generated values.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn encode(dtype: DType, values: &[f32]) -> Vec<u8> {
    let mut bytes = vec![0u8; values.len() * dtype.size()];
    for (i, &v) in values.iter().enumerate() {
        dtype.write_f64(&mut bytes, i, v as f64);
    }
    bytes
}

/// Quantizes `[N, K]` as DeepSeek's checkpoints are: per 128×128 block, scale = amax / 448, codes =
/// e4m3(w / scale). Returns (codes, scales).
fn quantize(w: &[f32], n: usize, k: usize) -> (Vec<u8>, Vec<f32>) {
    let (gn, gk) = (blocks(n), blocks(k));
    let mut scales = vec![0f32; gn * gk];
    for r in 0..n {
        for c in 0..k {
            let s = &mut scales[(r / 128) * gk + c / 128];
            *s = s.max(w[r * k + c].abs());
        }
    }
    scales.iter_mut().for_each(|s| *s = s.max(1e-4) / 448.0);
    let codes = (0..n * k)
        .map(|i| {
            Fp8Format::E4M3Fn.encode(w[i] / scales[(i / k / 128) * gk + (i % k) / 128], Overflow::Saturate)
        })
        .collect();
    (codes, scales)
}

impl WeightSource for Builtin {
    fn describe(&self) -> String {
        "built-in model (random weights)".into()
    }

    fn contains(&self, name: &str) -> bool {
        self.specs.contains_key(name.strip_suffix("_scale_inv").unwrap_or(name))
    }

    fn tensor(&self, name: &str) -> Result<HostTensor<'_>> {
        let (base, want_scales) = match name.strip_suffix("_scale_inv") {
            Some(base) => (base, true),
            None => (name, false),
        };
        let missing =
            || Error::Data { file: self.describe(), field: name.into(), reason: "no such tensor".into() };
        let spec = self.specs.get(base).ok_or_else(missing)?;
        if let Some(t) = self.bulk_tensor(spec, want_scales) {
            return Ok(t);
        }
        let values = self.values(spec);
        let host =
            |dtype, shape: Vec<usize>, bytes| Ok(HostTensor { dtype, shape, bytes: Cow::Owned(bytes) });
        let fp8 = self.config.quantization.is_some();
        match (spec.kind, want_scales) {
            (Kind::Linear, _) if fp8 => {
                let (n, k) = (spec.shape[0], spec.shape[1]);
                let (codes, scales) = quantize(&values, n, k);
                if want_scales {
                    host(DType::F32, vec![blocks(n), blocks(k)], encode(DType::F32, &scales))
                } else {
                    host(DType::F8E4M3Fn, spec.shape.clone(), codes)
                }
            }
            (Kind::Linear, false) => host(DType::BF16, spec.shape.clone(), encode(DType::BF16, &values)),
            (Kind::Float, false) if base.ends_with("e_score_correction_bias") => {
                host(DType::F32, spec.shape.clone(), encode(DType::F32, &values))
            }
            (Kind::Float, false) => host(DType::BF16, spec.shape.clone(), encode(DType::BF16, &values)),
            (_, true) => Err(missing()),
        }
    }
}
