//! The DeepSeek-V3 / V2 forward pass as a sequence of backend ops. Nothing here knows which backend runs
//! it; everything between the token upload and the logits stays on the device (routing, expert
//! permutation and combine included), so a step has no host synchronisation inside a layer.
//!
//! Attention is the absorbed (latent) form for prefill and decode alike: the cache holds, per token and
//! layer, the normalized latent `c_kv` and the rotated shared rope key (`kv_lora_rank + qk_rope_head_dim`
//! values). RoPE rotates the checkpoint's interleaved pairs (DeepSeek's reference convention) for both the
//! queries and the cached key.

use std::sync::{Arc, Mutex};

use dsv3_core::ops::attention::MlaAttention;
use dsv3_core::ops::elementwise::{Add, Embedding, RmsNorm, Rope, SiluMul};
use dsv3_core::ops::gemm::{blocks, ActQuant, Activations, Gemm, GroupedGemm, ScaleFormat, Weights};
use dsv3_core::ops::moe::{MoeCombine, MoeDispatch, MoeRoute};
use dsv3_core::{DType, Device, Error, Op, Result, Stream, Support, Tensor};

use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::weights::{Uploader, WeightSource};

/// Which arithmetic the graph uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NumericPath {
    /// f32 activations, cache and accumulation against exactly decoded weights: the path that must match
    /// the float32 reference logits.
    F32,
    /// bf16 activations and cache, weights as stored (FP8 decoded exactly inside the GEMM): DeepSeek's
    /// reference implementation's default (`gemm_impl = "bf16"`).
    Bf16,
    /// bf16 activations quantized per token per 128 channels to FP8 before every block-FP8 projection:
    /// the W8A8 arithmetic production engines (DeepGEMM, vLLM, SGLang) use.
    W8A8,
}

impl NumericPath {
    /// `f32`, `bf16`, `w8a8`; `fast` is resolved per model by [`NumericPath::fastest`].
    pub fn parse(s: &str) -> Option<NumericPath> {
        match s {
            "f32" => Some(NumericPath::F32),
            "bf16" => Some(NumericPath::Bf16),
            "w8a8" => Some(NumericPath::W8A8),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            NumericPath::F32 => "f32",
            NumericPath::Bf16 => "bf16",
            NumericPath::W8A8 => "w8a8",
        }
    }

    /// What real use takes: W8A8 for an FP8 checkpoint on a device with FP8 arithmetic, else bf16
    /// activations (where FP8 is only emulated — the CPU decodes both operands — W8A8 is slower: measured
    /// 12.6 vs 20.4 tok/s on a full-width DeepSeek-V3 MoE layer, benches/results/2026-11-28-cpu-model.md).
    pub fn fastest(config: &ModelConfig, device: &dyn Device) -> Result<NumericPath> {
        Ok(match config.quantization {
            Some(q) if matches!(w8a8_support(device, q.activation_scales)?, Support::Native) => {
                NumericPath::W8A8
            }
            _ => NumericPath::Bf16,
        })
    }
}

enum QProj {
    Lora(Box<(Weights, Tensor, Weights)>),
    Direct(Weights),
}

struct Attention {
    q: QProj,
    kv_a: Weights,
    kv_norm: Tensor,
    /// W_UKᵀ per head, `[H, Dc, dn]`: q̃_h = q_nope_h · W_UK[h].
    w_uk_t: Tensor,
    /// W_UV per head, `[H, dv, Dc]`: o_h = õ_h · W_UV[h]ᵀ.
    w_uv: Tensor,
    o: Weights,
}

struct Mlp {
    gate: Weights,
    up: Weights,
    down: Weights,
}

struct MoeBlock {
    config: crate::config::Moe,
    router: Weights,
    bias: Option<Tensor>,
    /// Routed experts stacked `[E, N, K]`.
    experts: Mlp,
    shared: Option<Mlp>,
}

enum Ffn {
    Dense(Box<Mlp>),
    Moe(Box<MoeBlock>),
}

struct Layer {
    attn_norm: Tensor,
    ffn_norm: Tensor,
    attn: Attention,
    ffn: Ffn,
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Every new token (`dsv3 logits`, tests).
    All,
    /// The last new token of each sequence (generation).
    Last,
}

pub struct Model {
    pub config: ModelConfig,
    pub path: NumericPath,
    pub device: Arc<dyn Device>,
    stream: Arc<dyn Stream>,
    /// Activation and cache dtype.
    pub act: DType,
    /// Activation-scale format when the GEMMs run W8A8.
    w8a8: Option<ScaleFormat>,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    head: Weights,
    /// Bytes of weights on the device.
    pub weight_bytes: u64,
    /// When `Some`, every MoE layer's routing ids `[rows, k]` of every forward pass, in order (the golden
    /// comparison of low-precision paths; downloading them synchronises the stream).
    routes: Mutex<Option<Vec<Vec<i32>>>>,
}

impl Model {
    /// Uploads every main-model tensor of `source` to `device`; `on_tensor` sees each tensor's stored bytes
    /// (for a progress bar).
    pub fn load(
        config: ModelConfig,
        source: &dyn WeightSource,
        device: Arc<dyn Device>,
        path: NumericPath,
        on_tensor: impl FnMut(u64),
    ) -> Result<Model> {
        let act = if path == NumericPath::F32 { DType::F32 } else { DType::BF16 };
        let w8a8 = match (path, config.quantization) {
            (NumericPath::W8A8, Some(q))
                if w8a8_support(device.as_ref(), q.activation_scales)?.is_runnable() =>
            {
                Some(q.activation_scales)
            }
            (NumericPath::W8A8, Some(_)) => {
                let why = "the W8A8 path needs act_quant and an FP8 × block-FP8 gemm, which this device does not run";
                return Err(Error::unsupported(device.info().backend, "gemm", why));
            }
            (NumericPath::W8A8, None) => {
                return Err(Error::invalid(
                    "model",
                    "path",
                    "w8a8 needs an FP8 checkpoint (no quantization_config)",
                ));
            }
            _ => None,
        };
        let mut up = Uploader::new(device.clone(), source, on_tensor);
        let embed = up.float("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            layers.push(load_layer(&config, &mut up, i, act)?);
        }
        let norm = up.float("model.norm.weight")?;
        let head = if config.tie_word_embeddings {
            Weights::Dense(embed.clone())
        } else {
            up.linear("lm_head.weight")?
        };
        let weight_bytes = up.bytes;
        let stream = device.default_stream();
        let routes = Mutex::new(None);
        Ok(Model { config, path, device, stream, act, w8a8, embed, layers, norm, head, weight_bytes, routes })
    }

    /// A human-readable line on the arithmetic in use.
    pub fn describe_numerics(&self) -> String {
        match self.path {
            NumericPath::F32 => "f32 activations, exactly decoded weights".into(),
            NumericPath::Bf16 => "bf16 activations, weights as stored".into(),
            NumericPath::W8A8 => "bf16 activations, W8A8 block-FP8 GEMMs".into(),
        }
    }

    pub fn stream(&self) -> &Arc<dyn Stream> {
        &self.stream
    }

    /// Starts recording every MoE layer's routing ids (see [`Model::take_routes`]).
    pub fn record_routes(&self) {
        *self.routes.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
    }

    /// The routing ids recorded since the last call, one `[rows, k]` array per MoE layer run, in order.
    pub fn take_routes(&self) -> Vec<Vec<i32>> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        routes.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Runs `new_tokens` tokens of each of the cache's sequences `slots` (row-major `[B, T]` in `tokens`),
    /// appending their latents to the cache, and returns f32 logits: `[B·T, V]` or `[B, V]`.
    pub fn forward(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        new_tokens: usize,
        which: Logits,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let batch = cache.batch();
        let t = new_tokens;
        if t == 0 || tokens.len() != batch * t {
            return Err(Error::invalid(
                "forward",
                "tokens",
                format!("{} ids for {batch} sequences of {t}", tokens.len()),
            ));
        }
        if let Some((i, &id)) = tokens.iter().enumerate().find(|(_, &id)| id as usize >= cfg.vocab_size) {
            return Err(Error::invalid(
                "forward",
                "tokens",
                format!("token {i} is id {id}, not below vocab_size {}", cfg.vocab_size),
            ));
        }
        let starts = cache.reserve(t)?;
        let positions: Vec<i32> = starts.iter().flat_map(|&s| (s..s + t).map(|p| p as i32)).collect();
        let kv_lens: Vec<i32> = starts.iter().map(|&s| (s + t) as i32).collect();
        let ids: Vec<i32> = tokens.iter().map(|&id| id as i32).collect();
        let s = Step {
            model: self,
            rows: batch * t,
            batch,
            t,
            starts: &starts,
            ids: self.upload_i32(&ids)?,
            positions: self.upload_i32(&positions)?,
            kv_lens: self.upload_i32(&kv_lens)?,
        };
        let mut h = s.tmp(&[s.rows, cfg.hidden_size], self.act)?;
        s.launch(Op::Embedding(Embedding { table: self.embed.clone(), ids: s.ids.clone(), out: h.clone() }))?;
        for (i, layer) in self.layers.iter().enumerate() {
            h = s.layer(layer, &cache.layers[i], h)?;
        }
        let d = cfg.hidden_size;
        let last = match which {
            Logits::All => h,
            Logits::Last => view(&h, (t - 1) * d, &[batch, d], &[t * d, 1]),
        };
        let normed = s.rms_norm(&last, &self.norm)?;
        s.linear(&normed, &self.head, DType::F32)
    }

    fn upload_i32(&self, values: &[i32]) -> Result<Tensor> {
        let buffer = self.device.alloc((values.len() * 4).max(1))?;
        self.stream.upload(&buffer, 0, bytemuck::cast_slice(values))?;
        Ok(Tensor::contiguous(buffer, 0, &[values.len()], DType::I32))
    }
}

fn load_layer(cfg: &ModelConfig, up: &mut Uploader, i: usize, act: DType) -> Result<Layer> {
    let p = format!("model.layers.{i}.");
    let a = format!("{p}self_attn.");
    let q = match cfg.q_lora_rank {
        Some(_) => QProj::Lora(Box::new((
            up.linear(&format!("{a}q_a_proj.weight"))?,
            up.float(&format!("{a}q_a_layernorm.weight"))?,
            up.linear(&format!("{a}q_b_proj.weight"))?,
        ))),
        None => QProj::Direct(up.linear(&format!("{a}q_proj.weight"))?),
    };
    let (w_uk_t, w_uv) = up.absorbed_kv_b(
        &format!("{a}kv_b_proj.weight"),
        cfg.num_attention_heads,
        cfg.qk_nope_head_dim,
        cfg.v_head_dim,
        act,
    )?;
    let attn = Attention {
        q,
        kv_a: up.linear(&format!("{a}kv_a_proj_with_mqa.weight"))?,
        kv_norm: up.float(&format!("{a}kv_a_layernorm.weight"))?,
        w_uk_t,
        w_uv,
        o: up.linear(&format!("{a}o_proj.weight"))?,
    };
    let mlp = |up: &mut Uploader, prefix: &str| -> Result<Mlp> {
        Ok(Mlp {
            gate: up.linear(&format!("{prefix}gate_proj.weight"))?,
            up: up.linear(&format!("{prefix}up_proj.weight"))?,
            down: up.linear(&format!("{prefix}down_proj.weight"))?,
        })
    };
    let ffn = match cfg.moe.filter(|_| cfg.is_moe_layer(i)) {
        None => Ffn::Dense(Box::new(mlp(up, &format!("{p}mlp."))?)),
        Some(moe) => {
            let names = |proj: &str| -> Vec<String> {
                (0..moe.n_routed_experts).map(|j| format!("{p}mlp.experts.{j}.{proj}.weight")).collect()
            };
            let bias_name = format!("{p}mlp.gate.e_score_correction_bias");
            let bias = match moe.route.method {
                dsv3_core::ops::moe::TopkMethod::NoAuxTc => {
                    // moe_route selects with the bias in f32; older checkpoints store it in bf16.
                    Some(up.float_f32(&bias_name)?)
                }
                _ => None,
            };
            Ffn::Moe(Box::new(MoeBlock {
                config: moe,
                router: up.linear(&format!("{p}mlp.gate.weight"))?,
                bias,
                experts: Mlp {
                    gate: up.stacked(&names("gate_proj"))?,
                    up: up.stacked(&names("up_proj"))?,
                    down: up.stacked(&names("down_proj"))?,
                },
                shared: if moe.n_shared_experts > 0 {
                    Some(mlp(up, &format!("{p}mlp.shared_experts."))?)
                } else {
                    None
                },
            }))
        }
    };
    Ok(Layer {
        attn_norm: up.float(&format!("{p}input_layernorm.weight"))?,
        ffn_norm: up.float(&format!("{p}post_attention_layernorm.weight"))?,
        attn,
        ffn,
    })
}

/// How the device runs the W8A8 GEMM (FP8 activations × block-FP8 weights) and its activation
/// quantization, asked with minimal ops: the weaker of the two answers.
fn w8a8_support(device: &dyn Device, scales: ScaleFormat) -> Result<Support> {
    let k = 128;
    let t = |shape: &[usize], dtype: DType| -> Result<Tensor> {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        Ok(Tensor::contiguous(device.alloc(bytes)?, 0, shape, dtype))
    };
    let x = t(&[1, k], DType::BF16)?;
    let codes = t(&[1, k], DType::F8E4M3Fn)?;
    let a_scales = t(&[1, 1], DType::F32)?;
    let quant =
        Op::ActQuant(ActQuant { x, codes: codes.clone(), scales: a_scales.clone(), scale_format: scales });
    let gemm = Op::Gemm(Gemm {
        a: Activations::Fp8 { codes, scales: a_scales },
        b: Weights::BlockFp8 { codes: t(&[k, k], DType::F8E4M3Fn)?, scales: t(&[1, 1], DType::F32)? },
        c: t(&[1, k], DType::BF16)?,
    });
    let answers = [device.supports(&quant), device.supports(&gemm)];
    let weakest =
        answers.iter().find(|s| !s.is_runnable()).or(answers.iter().find(|s| !matches!(s, Support::Native)));
    Ok(weakest.unwrap_or(&answers[0]).clone())
}

/// A strided view of `t`'s buffer starting `offset` elements past `t`'s start.
fn view(t: &Tensor, offset: usize, shape: &[usize], strides: &[usize]) -> Tensor {
    Tensor {
        buffer: t.buffer.clone(),
        offset: t.offset + offset * t.dtype.size(),
        shape: shape.to_vec(),
        strides: strides.to_vec(),
        dtype: t.dtype,
    }
}

/// One forward step's fixed inputs.
struct Step<'a> {
    model: &'a Model,
    /// Token rows, `batch · t`, sequence-major.
    rows: usize,
    batch: usize,
    t: usize,
    /// Cache position of each sequence's first new token.
    starts: &'a [usize],
    ids: Tensor,
    positions: Tensor,
    kv_lens: Tensor,
}

impl Step<'_> {
    fn launch(&self, op: Op) -> Result<()> {
        self.model.stream.launch(&op)
    }

    fn tmp(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        Ok(Tensor::contiguous(self.model.device.alloc(bytes.max(1))?, 0, shape, dtype))
    }

    fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let out = self.tmp(&x.shape, self.model.act)?;
        let eps = self.model.config.rms_norm_eps;
        self.launch(Op::RmsNorm(RmsNorm { x: x.clone(), weight: weight.clone(), eps, out: out.clone() }))?;
        Ok(out)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let out = self.tmp(&a.shape, self.model.act)?;
        self.launch(Op::Add(Add { a: a.clone(), b: b.clone(), out: out.clone() }))?;
        Ok(out)
    }

    /// FP8-quantized activations when the model runs W8A8 against FP8 weights, else `x` as it is.
    fn activations(&self, x: &Tensor, w: &Weights) -> Result<Activations> {
        let (Some(format), Weights::BlockFp8 { codes: wq, .. }) = (self.model.w8a8, w) else {
            return Ok(Activations::Dense(x.clone()));
        };
        let (m, k) = (x.shape[0], x.shape[1]);
        let codes = self.tmp(&[m, k], wq.dtype)?;
        let scales = self.tmp(&[m, blocks(k)], DType::F32)?;
        let op =
            ActQuant { x: x.clone(), codes: codes.clone(), scales: scales.clone(), scale_format: format };
        self.launch(Op::ActQuant(op))?;
        Ok(Activations::Fp8 { codes, scales })
    }

    fn linear(&self, x: &Tensor, w: &Weights, out_dtype: DType) -> Result<Tensor> {
        let c = self.tmp(&[x.shape[0], w.values().shape[0]], out_dtype)?;
        self.launch(Op::Gemm(Gemm { a: self.activations(x, w)?, b: w.clone(), c: c.clone() }))?;
        Ok(c)
    }

    fn grouped(&self, x: &Tensor, w: &Weights, offsets: &Tensor) -> Result<Tensor> {
        let c = self.tmp(&[x.shape[0], w.values().shape[1]], self.model.act)?;
        let op = GroupedGemm {
            a: self.activations(x, w)?,
            b: w.clone(),
            expert_offsets: offsets.clone(),
            c: c.clone(),
        };
        self.launch(Op::GroupedGemm(op))?;
        Ok(c)
    }

    fn silu_mul(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        let out = self.tmp(&gate.shape, self.model.act)?;
        self.launch(Op::SiluMul(SiluMul { gate: gate.clone(), up: up.clone(), out: out.clone() }))?;
        Ok(out)
    }

    fn mlp(&self, x: &Tensor, mlp: &Mlp) -> Result<Tensor> {
        let act = self.model.act;
        let hidden = self.silu_mul(&self.linear(x, &mlp.gate, act)?, &self.linear(x, &mlp.up, act)?)?;
        self.linear(&hidden, &mlp.down, act)
    }

    fn layer(&self, layer: &Layer, cache: &Tensor, h: Tensor) -> Result<Tensor> {
        let x = self.rms_norm(&h, &layer.attn_norm)?;
        let h = self.add(&h, &self.attention(&layer.attn, cache, &x)?)?;
        let x = self.rms_norm(&h, &layer.ffn_norm)?;
        let y = match &layer.ffn {
            Ffn::Dense(mlp) => self.mlp(&x, mlp)?,
            Ffn::Moe(moe) => self.moe(moe, &x)?,
        };
        self.add(&h, &y)
    }

    fn attention(&self, attn: &Attention, cache: &Tensor, x: &Tensor) -> Result<Tensor> {
        let cfg = &self.model.config;
        let act = self.model.act;
        let (rows, heads) = (self.rows, cfg.num_attention_heads);
        let (dn, dr, dc) = (cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.kv_lora_rank);
        let qk = dn + dr;
        let q = match &attn.q {
            QProj::Lora(lora) => {
                let (a, norm, b) = lora.as_ref();
                self.linear(&self.rms_norm(&self.linear(x, a, act)?, norm)?, b, act)?
            }
            QProj::Direct(w) => self.linear(x, w, act)?,
        };
        // The new tokens' latents go straight into the cache: c_kv normalized, k_pe rotated.
        let kv = self.linear(x, &attn.kv_a, act)?;
        let width = dc + dr;
        let capacity = cache.shape[1];
        for (b, &start) in self.starts.iter().enumerate() {
            let src = b * self.t * width;
            let dst = (b * capacity + start) * width;
            let norm = RmsNorm {
                x: view(&kv, src, &[self.t, dc], &[width, 1]),
                weight: attn.kv_norm.clone(),
                eps: cfg.rms_norm_eps,
                out: view(cache, dst, &[self.t, dc], &[width, 1]),
            };
            self.launch(Op::RmsNorm(norm))?;
            let rope = Rope {
                x: view(&kv, src + dc, &[self.t, 1, dr], &[width, dr, 1]),
                positions: view(&self.positions, b * self.t, &[self.t], &[1]),
                params: cfg.rope(),
                out: view(cache, dst + dc, &[self.t, 1, dr], &[width, dr, 1]),
            };
            self.launch(Op::Rope(rope))?;
        }
        let q_pe = self.tmp(&[rows, heads, dr], act)?;
        let rope = Rope {
            x: view(&q, dn, &[rows, heads, dr], &[heads * qk, qk, 1]),
            positions: self.positions.clone(),
            params: cfg.rope(),
            out: q_pe.clone(),
        };
        self.launch(Op::Rope(rope))?;
        // Absorb W_UK into the query, one head at a time: q̃_h = q_nope_h · W_UK[h].
        let q_latent = self.per_head(&q, qk, dn, &attn.w_uk_t)?;
        let (b, t) = (self.batch, self.t);
        let latent_out = self.tmp(&[b, t, heads, dc], act)?;
        let mla = MlaAttention {
            q_latent: q_latent.reshape(&[b, t, heads, dc])?,
            q_pe: q_pe.reshape(&[b, t, heads, dr])?,
            kv_cache: cache.clone(),
            kv_lens: self.kv_lens.clone(),
            softmax_scale: cfg.softmax_scale(),
            causal: true,
            out: latent_out.clone(),
        };
        self.launch(Op::MlaAttention(mla))?;
        // Back out of the latent space per head, o_h = õ_h · W_UV[h]ᵀ, then the output projection.
        let heads_out = self.per_head(&latent_out.reshape(&[rows, heads * dc])?, dc, dc, &attn.w_uv)?;
        self.linear(&heads_out, &attn.o, act)
    }

    /// One GEMM per head: `out[:, h] = x[:, h, 0..k] · w[h]ᵀ`, where each row of `x` holds the heads'
    /// operands `stride` values apart and `w` is `[H, N, K]`; `out` is `[rows, H·N]`. (A batched GEMM op
    /// would make this one launch.)
    fn per_head(&self, x: &Tensor, stride: usize, k: usize, w: &Tensor) -> Result<Tensor> {
        let (heads, n) = (w.shape[0], w.shape[1]);
        let rows = x.shape[0];
        let out = self.tmp(&[rows, heads * n], self.model.act)?;
        for h in 0..heads {
            let gemm = Gemm {
                a: Activations::Dense(view(x, h * stride, &[rows, k], &[heads * stride, 1])),
                b: Weights::Dense(view(w, h * n * k, &[n, k], &[k, 1])),
                c: view(&out, h * n, &[rows, n], &[heads * n, 1]),
            };
            self.launch(Op::Gemm(gemm))?;
        }
        Ok(out)
    }

    fn moe(&self, moe: &MoeBlock, x: &Tensor) -> Result<Tensor> {
        let cfg = &moe.config;
        let (rows, k, e) = (self.rows, cfg.route.top_k, cfg.n_routed_experts);
        let logits = self.linear(x, &moe.router, DType::F32)?;
        let ids = self.tmp(&[rows, k], DType::I32)?;
        let weights = self.tmp(&[rows, k], DType::F32)?;
        let route = MoeRoute {
            logits,
            bias: moe.bias.clone(),
            config: cfg.route,
            ids: ids.clone(),
            weights: weights.clone(),
        };
        self.launch(Op::MoeRoute(route))?;
        if let Some(routes) = self.model.routes.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            let mut bytes = vec![0u8; rows * k * 4];
            self.model.stream.download(&ids.buffer, ids.offset, &mut bytes)?;
            routes
                .push(bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect());
        }
        let d = x.shape[1];
        let slots = self.tmp(&[rows * k, d], self.model.act)?;
        let offsets = self.tmp(&[e + 1], DType::I32)?;
        let slot_rows = self.tmp(&[rows * k], DType::I32)?;
        let dispatch = MoeDispatch {
            x: x.clone(),
            ids,
            n_experts: e,
            rows: slots.clone(),
            expert_offsets: offsets.clone(),
            slot_rows: slot_rows.clone(),
        };
        self.launch(Op::MoeDispatch(dispatch))?;
        let gate = self.grouped(&slots, &moe.experts.gate, &offsets)?;
        let up = self.grouped(&slots, &moe.experts.up, &offsets)?;
        let expert_out = self.grouped(&self.silu_mul(&gate, &up)?, &moe.experts.down, &offsets)?;
        let routed = self.tmp(&[rows, d], self.model.act)?;
        self.launch(Op::MoeCombine(MoeCombine { expert_out, slot_rows, weights, out: routed.clone() }))?;
        match &moe.shared {
            Some(shared) => self.add(&routed, &self.mlp(x, shared)?),
            None => Ok(routed),
        }
    }
}
