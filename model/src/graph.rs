//! The DeepSeek-V3 / V2 forward pass over the model's blocks, each on the device its part is placed on.
//! Nothing here knows which backend runs a block; within a device everything between the token upload
//! and the logits stays on it (routing, expert permutation and combine included), so a step has no host
//! synchronisation inside a layer unless the placement puts consecutive blocks on different devices, where
//! only the hidden state (and a MoE layer's routing) moves (`crate::exec::Step::to`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dsv3_core::ops::gemm::Weights;
use dsv3_core::{DType, Device, Error, Op, Result, Stream, Tensor};

mod capture;

pub use capture::GraphStats;
use capture::StepGraphs;

use crate::blocks::attention::Attention;
use crate::blocks::moe::Ffn;
use crate::cache::KvCache;
use crate::config::ModelConfig;
use crate::exec::{view, DeviceInputs, Exec, Loader, Step};
use crate::numeric::w8a8_support;
pub use crate::numeric::NumericPath;
use crate::placement::{Assignment, Part};
use crate::weights::{Uploader, WeightSource};
use crate::workspace::Workspace;

struct Layer {
    attn: Attention,
    ffn: Ffn,
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Logits {
    /// Every new token (`dsv3 logits`, tests).
    All,
    /// The last new token of each sequence (generation).
    Last,
}

/// What one device of a model holds, and what it did since loading.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceShare {
    /// `backend:ordinal`.
    pub name: String,
    pub parts: Vec<Part>,
    pub weight_bytes: u64,
    /// Host seconds inside this device's launches: its compute time where launches run to completion
    /// (the CPU backends), the time to enqueue them where they are asynchronous (GPUs).
    pub launch_secs: f64,
    /// Activation bytes copied onto and off this device at device boundaries.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Host seconds waiting for this device's shared experts after the routed experts (elsewhere) were
    /// done: the shared experts' time that the overlap did not hide.
    pub join_wait_secs: f64,
}

pub struct Model {
    pub config: ModelConfig,
    pub path: NumericPath,
    /// The device the logits come out on (the head's).
    pub device: Arc<dyn Device>,
    /// Activation and cache dtype.
    pub act: DType,
    execs: Vec<Exec>,
    assignment: Assignment,
    embed: (usize, Tensor),
    layers: Vec<Layer>,
    norm: (usize, Tensor),
    head: (usize, Weights),
    /// Bytes of weights over all devices.
    pub weight_bytes: u64,
    weight_bytes_per_exec: Vec<u64>,
    /// When `Some`, every MoE layer's routing ids `[rows, k]` of every forward pass, in order (the golden
    /// comparison of low-precision paths; downloading them synchronises the router's stream).
    routes: Mutex<Option<Vec<Vec<i32>>>>,
    /// Whether decode steps may run as captured graphs (`DSV3_GRAPH=0` or [`Model::set_graph_capture`]
    /// turn it off).
    graph_capture: AtomicBool,
    graphs: Mutex<StepGraphs>,
    /// Whether the reason decode steps run eagerly has been logged (once per model).
    eager_said: AtomicBool,
    captures: AtomicU64,
    replays: AtomicU64,
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
        let name = device.id().to_string();
        let assignment = Assignment::single(&config, &name);
        Model::load_placed(config, source, &assignment, &mut |_| Ok(device.clone()), path, on_tensor)
    }

    /// Uploads every part of the model to the device `assignment` gives it; `open` turns each distinct
    /// device name into a device (called once per name).
    pub fn load_placed(
        config: ModelConfig,
        source: &dyn WeightSource,
        assignment: &Assignment,
        open: &mut dyn FnMut(&str) -> Result<Arc<dyn Device>>,
        path: NumericPath,
        on_tensor: impl FnMut(u64),
    ) -> Result<Model> {
        let act = path.act();
        let names = assignment.device_names();
        let devices = names.iter().map(|n| open(n)).collect::<Result<Vec<_>>>()?;
        let w8a8 = match (path, config.quantization) {
            (NumericPath::W8A8, Some(q)) => {
                for d in &devices {
                    if !w8a8_support(d.as_ref(), q.activation_scales).is_runnable() {
                        let why = "the W8A8 path needs act_quant and an FP8 × block-FP8 gemm, which this device does not run";
                        return Err(Error::unsupported(d.info().backend, "gemm", why));
                    }
                }
                Some(q.activation_scales)
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
        let execs: Vec<Exec> = names
            .iter()
            .zip(&devices)
            .map(|(name, device)| {
                Ok(Exec {
                    name: name.to_string(),
                    device: device.clone(),
                    stream: device.default_stream(),
                    side: device.new_stream()?,
                    stats: Default::default(),
                    workspace: Arc::new(Workspace::new(device.clone())),
                    side_workspace: Arc::new(Workspace::new(device.clone())),
                    act,
                    w8a8,
                    eps: config.rms_norm_eps,
                })
            })
            .collect::<Result<_>>()?;
        let exec_of: HashMap<Part, usize> = assignment
            .iter()
            .map(|(part, name)| (part, names.iter().position(|n| *n == name).unwrap_or(0)))
            .collect();
        let up = Uploader::new(devices[0].clone(), source, on_tensor);
        let mut ld = Loader::new(up, devices.clone(), assignment, exec_of);

        let embed_exec = ld.part(Part::Embed)?;
        let embed = ld.up.float("model.embed_tokens.weight")?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let attn = Attention::load(&config, &mut ld, i, act)?;
            let ffn = Ffn::load(&config, &mut ld, i)?;
            layers.push(Layer { attn, ffn });
        }
        let norm_exec = ld.part(Part::Norm)?;
        let norm = ld.up.float("model.norm.weight")?;
        let head_exec = ld.part(Part::Head)?;
        let head = match (config.tie_word_embeddings, head_exec == embed_exec) {
            (true, true) => Weights::Dense(embed.clone()),
            // Tied, but the head lives elsewhere: a second copy of the table on the head's device.
            (true, false) => Weights::Dense(ld.up.float("model.embed_tokens.weight")?),
            (false, _) => ld.up.linear("lm_head.weight")?,
        };
        let per_device = ld.up.bytes.clone();
        let weight_bytes_per_exec: Vec<u64> =
            devices.iter().map(|d| per_device.get(&d.id()).copied().unwrap_or(0)).collect();
        Ok(Model {
            path,
            device: devices[head_exec].clone(),
            act,
            weight_bytes: weight_bytes_per_exec.iter().sum(),
            weight_bytes_per_exec,
            execs,
            assignment: assignment.clone(),
            embed: (embed_exec, embed),
            layers,
            norm: (norm_exec, norm),
            head: (head_exec, head),
            routes: Mutex::new(None),
            graph_capture: AtomicBool::new(std::env::var("DSV3_GRAPH").as_deref() != Ok("0")),
            graphs: Mutex::new(StepGraphs::default()),
            eager_said: AtomicBool::new(false),
            captures: AtomicU64::new(0),
            replays: AtomicU64::new(0),
            config,
        })
    }

    /// A human-readable line on the arithmetic in use.
    pub fn describe_numerics(&self) -> String {
        match self.path {
            NumericPath::F32 => "f32 activations, exactly decoded weights".into(),
            NumericPath::Bf16 => "bf16 activations, weights as stored".into(),
            NumericPath::W8A8 => "bf16 activations, W8A8 block-FP8 GEMMs".into(),
        }
    }

    /// The stream the logits are produced on.
    pub fn stream(&self) -> &Arc<dyn Stream> {
        &self.execs[self.head.0].stream
    }

    /// Launches `op` on the head device's stream (where the logits are), counted with the model's.
    pub(crate) fn launch_on_head(&self, op: Op) -> Result<()> {
        self.execs[self.head.0].launch(op)
    }

    /// Op launches since loading, over every device.
    pub fn launches(&self) -> u64 {
        self.execs.iter().map(|e| e.stats.launches.load(Ordering::Relaxed)).sum()
    }

    /// A tensor from the head device's workspace (where the logits are), for work on the logits.
    pub(crate) fn scratch(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        self.execs[self.head.0].tmp(shape, dtype)
    }

    /// The device layer `layer`'s attention and latent cache live on.
    pub fn attn_device(&self, layer: usize) -> &Arc<dyn Device> {
        &self.execs[self.layers[layer].attn.exec].device
    }

    /// Every device the model runs on, with its parts and weight bytes, in forward order.
    pub fn devices(&self) -> Vec<DeviceShare> {
        self.execs
            .iter()
            .zip(&self.weight_bytes_per_exec)
            .map(|(e, &bytes)| DeviceShare {
                name: e.name.clone(),
                parts: self.assignment.parts_on(&e.name),
                weight_bytes: bytes,
                launch_secs: e.stats.launch_ns.load(Ordering::Relaxed) as f64 * 1e-9,
                bytes_in: e.stats.bytes_in.load(Ordering::Relaxed),
                bytes_out: e.stats.bytes_out.load(Ordering::Relaxed),
                join_wait_secs: e.stats.join_wait_ns.load(Ordering::Relaxed) as f64 * 1e-9,
            })
            .collect()
    }

    /// `layers.0-2.attn, layers.3.experts.0-31, …`: `parts` (of [`Model::devices`]) described compactly.
    pub fn describe_parts(&self, parts: &[Part]) -> String {
        self.assignment.describe_parts(parts)
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

    /// Bytes of activations moved between devices since loading.
    pub fn bytes_moved(&self) -> u64 {
        self.execs.iter().map(|e| e.stats.bytes_in.load(Ordering::Relaxed)).sum()
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
        let starts = cache.reserve(self, t)?;
        let block_table = cache.block_table();
        let positions: Vec<i32> = starts.iter().flat_map(|&s| (s..s + t).map(|p| p as i32)).collect();
        let kv_lens: Vec<i32> = starts.iter().map(|&s| (s + t) as i32).collect();
        let ids: Vec<i32> = tokens.iter().map(|&id| id as i32).collect();
        match self.eager_reason(t) {
            None => {
                let inputs = [&ids[..], &positions, &kv_lens, &block_table];
                if let Some(logits) = self.forward_graph(cache, inputs, which)? {
                    return Ok(logits);
                }
            }
            Some(why) if !why.is_empty() && !self.eager_said.swap(true, Ordering::Relaxed) => {
                tracing::debug!("decode steps run eagerly, not as graphs: {why}");
            }
            Some(_) => {}
        }
        let inputs = self
            .execs
            .iter()
            .map(|e| {
                // One upload per device: positions, lengths and block tables side by side.
                let all = e.upload_i32(&[&positions[..], &kv_lens, &block_table].concat())?;
                let (n, b) = (positions.len(), kv_lens.len());
                Ok(DeviceInputs {
                    positions: all.narrow(0, 0, n)?,
                    kv_lens: all.narrow(0, n, b)?,
                    block_table: all
                        .narrow(0, n + b, block_table.len())?
                        .reshape(&[b, cache.pages_per_seq()])?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let s = Step { execs: &self.execs, rows: batch * t, batch, t, inputs, routes: &self.routes };
        let e = s.exec(self.embed.0);
        let logits = self.body(&s, cache, &e.upload_i32(&ids)?, which)?;
        self.sync_all()?;
        Ok(logits)
    }

    /// Every stream waits for its step here: asynchronous backends surface the errors their kernels'
    /// device-side checks found and release the step's buffers only at a sync, and with device-side events
    /// and peer copies nothing else makes one. The logits are waited for by the caller anyway.
    fn sync_all(&self) -> Result<()> {
        for e in &self.execs {
            e.stream.sync()?;
            e.side.sync()?;
        }
        Ok(())
    }

    /// The step from the token ids (on the embedding's device) to the logits, without the final sync.
    fn body(&self, s: &Step, cache: &KvCache, ids: &Tensor, which: Logits) -> Result<Tensor> {
        let cfg = &self.config;
        let (batch, t) = (s.batch, s.t);
        let (mut at, table) = (self.embed.0, &self.embed.1);
        let e = s.exec(at);
        let mut h = e.gather(table, ids)?;
        for (i, layer) in self.layers.iter().enumerate() {
            let home = layer.attn.exec;
            h = s.to(&h, at, home)?;
            let (residual, x) = layer.attn.forward(s, cfg, &cache.layers[i], &h)?;
            let y = layer.ffn.forward(s, &x, home)?;
            h = s.exec(home).add(&residual, &y)?;
            at = home;
        }
        let d = cfg.hidden_size;
        let last = match which {
            Logits::All => h,
            Logits::Last => view(&h, (t - 1) * d, &[batch, d], &[t * d, 1]),
        };
        let normed = s.exec(self.norm.0).rms_norm(&s.to(&last, at, self.norm.0)?, &self.norm.1)?;
        let (head, w) = (self.head.0, &self.head.1);
        s.exec(head).linear(&s.to(&normed, self.norm.0, head)?, w, DType::F32)
    }
}
