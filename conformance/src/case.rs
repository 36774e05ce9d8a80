//! A conformance case is data: an op, its parameters and dtypes, a seed and a tolerance. From that it
//! (1) generates its inputs on the host, deterministically; (2) allocates and uploads them on any
//! device and builds the [`Op`] there, with every output surrounded by guard bytes and pre-filled with
//! NaN-like garbage; (3) downloads the outputs and checks the guards after the launch; and (4) compares
//! a device's outputs with the oracle's (see [`Case::compare`]).

use crate::gen::{self, derive, element_offsets, garbage_element, normals, HostTensor, Rng, ScaleStore};
use crate::metrics::{self, Metrics};
use crate::tolerance::Tolerance;
use dsv3_core::fp8::Fp8Format;
use dsv3_core::ops::sampling::uniform;
use dsv3_core::ops::{self, Activations, RouteConfig, ScaleFormat, Scoring, TopkMethod, Weights};
use dsv3_core::rope::RopeParams;
use dsv3_core::{Buffer, DType, Device, Op, Result, Stream, Tensor};
use std::sync::Arc;

/// Bytes of guard before and after every output view.
pub const GUARD: usize = 256;
/// The guard pattern.
pub const SENTINEL: u8 = 0xA5;
/// Bytes of NaN padding before and after every input view (a kernel ignoring the view's offset or
/// reading past its end reads NaN).
pub const INPUT_PAD: usize = 64;

/// A GEMM operand.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    /// f32 / bf16 values.
    Dense(DType),
    /// FP8 codes with scales: per token per 128 channels for activations, per 128×128 block for weights.
    Fp8(Fp8Format, ScaleStore),
}

impl Operand {
    pub fn label(&self) -> String {
        match self {
            Operand::Dense(d) => d.to_string(),
            Operand::Fp8(f, s) => format!("{}/{}", DType::from_fp8(*f), s.dtype()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct GemmSpec {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Operand,
    pub b: Operand,
    pub c: DType,
    /// Row pitch of A / C in elements (0: contiguous).
    pub a_pitch: usize,
    pub c_pitch: usize,
}

#[derive(Clone, Debug)]
pub struct GroupedGemmSpec {
    /// Rows per expert (zeros are empty experts).
    pub counts: Vec<usize>,
    pub n: usize,
    pub k: usize,
    pub a: Operand,
    pub b: Operand,
    pub c: DType,
}

#[derive(Clone, Debug)]
pub struct ActQuantSpec {
    pub m: usize,
    pub k: usize,
    pub x: DType,
    pub format: Fp8Format,
    pub scale_format: ScaleFormat,
    pub scales: DType,
}

#[derive(Clone, Debug)]
pub struct DequantSpec {
    pub shape: Vec<usize>,
    pub format: Fp8Format,
    pub scales: ScaleStore,
    pub out: DType,
}

#[derive(Clone, Debug)]
pub struct RouteSpec {
    pub t: usize,
    pub e: usize,
    pub config: RouteConfig,
    /// Bound on |e_score_correction_bias| (NoAuxTc only).
    pub max_bias: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum IdPattern {
    /// k distinct random experts per token.
    Random,
    /// Only even experts (odd ones stay empty).
    EvenOnly,
    /// Every token to this one expert (k must be 1).
    One(usize),
}

#[derive(Clone, Debug)]
pub struct DispatchSpec {
    pub t: usize,
    pub d: usize,
    pub k: usize,
    pub experts: usize,
    pub x: DType,
    pub ids: IdPattern,
}

#[derive(Clone, Debug)]
pub struct CombineSpec {
    pub t: usize,
    pub k: usize,
    pub n: usize,
    pub x: DType,
    pub out: DType,
}

#[derive(Clone, Debug)]
pub struct AttentionSpec {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    /// MLA: (Dc, Dr); MHA: (Dk, Dv).
    pub d1: usize,
    pub d2: usize,
    pub l: usize,
    pub kv_lens: Vec<usize>,
    pub causal: bool,
    pub dtype: DType,
    pub out: DType,
    pub scale: f32,
}

#[derive(Clone, Debug)]
pub struct RmsNormSpec {
    pub r: usize,
    pub d: usize,
    pub x: DType,
    pub w: DType,
    pub out: DType,
    pub eps: f32,
}

#[derive(Clone, Debug)]
pub struct RopeSpec {
    pub t: usize,
    pub h: usize,
    pub params: RopeParams,
    pub x: DType,
    pub out: DType,
    pub max_pos: usize,
    /// Head pitch of x (elements; 0: contiguous): x as the rope part of a wider q.
    pub head_pitch: usize,
}

/// Row-wise ops on `[r, n]`: silu_mul (a = gate, b = up), add (a, b), softmax (a), argmax (a).
#[derive(Clone, Debug)]
pub struct RowsSpec {
    pub r: usize,
    pub n: usize,
    pub a: DType,
    pub b: DType,
    pub out: DType,
    /// Standard deviation of the inputs.
    pub std: f64,
}

#[derive(Clone, Debug)]
pub struct EmbeddingSpec {
    pub v: usize,
    pub d: usize,
    pub t: usize,
    pub table: DType,
    pub out: DType,
}

#[derive(Clone, Debug)]
pub struct CastSpec {
    pub shape: Vec<usize>,
    pub from: DType,
    pub to: DType,
}

#[derive(Clone, Debug)]
pub struct TopKSpec {
    pub r: usize,
    pub n: usize,
    pub k: usize,
    pub x: DType,
}

#[derive(Clone, Debug)]
pub struct SampleSpec {
    pub r: usize,
    pub v: usize,
    pub x: DType,
    pub temperature: f32,
    pub top_p: f32,
    pub sample_seed: u64,
}

/// Parameters of a case, one variant per op.
#[derive(Clone, Debug)]
pub enum Spec {
    Gemm(GemmSpec),
    GroupedGemm(GroupedGemmSpec),
    ActQuant(ActQuantSpec),
    Dequantize(DequantSpec),
    MoeRoute(RouteSpec),
    MoeDispatch(DispatchSpec),
    MoeCombine(CombineSpec),
    MlaAttention(AttentionSpec),
    MhaAttention(AttentionSpec),
    RmsNorm(RmsNormSpec),
    Rope(RopeSpec),
    SiluMul(RowsSpec),
    Add(RowsSpec),
    Embedding(EmbeddingSpec),
    Softmax(RowsSpec),
    Cast(CastSpec),
    Argmax(RowsSpec),
    TopK(TopKSpec),
    Sample(SampleSpec),
}

#[derive(Clone, Debug)]
pub struct Case {
    /// One of `dsv3_core::ops::OP_NAMES`.
    pub op: &'static str,
    /// `OP(k=v,...)`, unique within a set; filters match it.
    pub name: String,
    /// The dtypes, as the support matrix groups them (`a=bf16,b=f8e4m3fn/f32,c=bf16`).
    pub dtypes: String,
    pub seed: u64,
    pub tolerance: Tolerance,
    pub spec: Spec,
}

/// The host-side inputs of one case, by argument name.
#[derive(Clone, Debug, Default)]
pub struct Inputs {
    pub tensors: Vec<(&'static str, HostTensor)>,
}

impl Inputs {
    fn push(&mut self, name: &'static str, t: HostTensor) {
        self.tensors.push((name, t));
    }

    pub fn get(&self, name: &str) -> &HostTensor {
        &self
            .tensors
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("case has no input `{name}`"))
            .1
    }
}

/// One downloaded output.
#[derive(Clone, Debug)]
pub struct Output {
    pub arg: &'static str,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// The view's elements, packed in row-major order.
    pub elements: Vec<u8>,
    pub guard: metrics::GuardReport,
}

impl Output {
    pub fn values(&self) -> Vec<f64> {
        (0..self.elements.len() / self.dtype.size()).map(|i| self.dtype.read_f64(&self.elements, i)).collect()
    }

    pub fn i32s(&self) -> Vec<i32> {
        self.elements.chunks(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Outputs(pub Vec<Output>);

impl Outputs {
    pub fn get(&self, arg: &str) -> &Output {
        self.0.iter().find(|o| o.arg == arg).unwrap_or_else(|| panic!("no output `{arg}`"))
    }
}

struct OutSlot {
    arg: &'static str,
    tensor: Tensor,
    before: Vec<u8>,
    is_element: Vec<bool>,
    elements: Vec<usize>,
}

/// A case's op built on one device, holding its buffers.
pub struct Bound {
    pub op: Op,
    outputs: Vec<OutSlot>,
}

struct Binder<'d> {
    device: &'d Arc<dyn Device>,
    stream: Arc<dyn Stream>,
    upload: bool,
    outputs: Vec<OutSlot>,
}

impl Binder<'_> {
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.device.alloc(bytes)
    }

    /// The input at byte offset [`INPUT_PAD`] of its own buffer, NaN padding around it.
    fn input(&mut self, h: &HostTensor) -> Result<Tensor> {
        let total = INPUT_PAD + h.bytes.len() + INPUT_PAD;
        let buffer = self.alloc(total)?;
        if self.upload {
            let pad: Vec<u8> = garbage_element(h.dtype).into_iter().cycle().take(INPUT_PAD).collect();
            let mut bytes = Vec::with_capacity(total);
            bytes.extend_from_slice(&pad);
            bytes.extend_from_slice(&h.bytes);
            bytes.extend_from_slice(&pad);
            self.stream.upload(&buffer, 0, &bytes)?;
        }
        Ok(Tensor {
            buffer,
            offset: INPUT_PAD,
            shape: h.shape.clone(),
            strides: h.strides.clone(),
            dtype: h.dtype,
        })
    }

    /// An output view with [`GUARD`] sentinel bytes on both sides (and in any gaps between strided rows)
    /// and its elements pre-filled with the dtype's garbage pattern.
    fn output(
        &mut self,
        arg: &'static str,
        dtype: DType,
        shape: &[usize],
        strides: Option<Vec<usize>>,
    ) -> Result<Tensor> {
        let strides = strides.unwrap_or_else(|| dsv3_core::tensor::contiguous_strides(shape));
        let span = gen::span_bytes(dtype, shape, &strides);
        let total = GUARD + span + GUARD;
        let buffer = self.alloc(total)?;
        let size = dtype.size();
        let elements: Vec<usize> =
            element_offsets(shape, &strides).into_iter().map(|e| GUARD + e * size).collect();
        let mut before = vec![SENTINEL; total];
        let mut is_element = vec![false; total];
        let garbage = garbage_element(dtype);
        for &e in &elements {
            before[e..e + size].copy_from_slice(&garbage);
            is_element[e..e + size].iter_mut().for_each(|b| *b = true);
        }
        if self.upload {
            self.stream.upload(&buffer, 0, &before)?;
        }
        let tensor = Tensor { buffer, offset: GUARD, shape: shape.to_vec(), strides, dtype };
        self.outputs.push(OutSlot { arg, tensor: tensor.clone(), before, is_element, elements });
        Ok(tensor)
    }
}

impl Bound {
    /// Downloads every output and checks its guard bytes.
    pub fn download(&self, stream: &dyn Stream) -> Result<Outputs> {
        let mut outs = Vec::new();
        for slot in &self.outputs {
            let mut after = vec![0u8; slot.before.len()];
            stream.download(&slot.tensor.buffer, 0, &mut after)?;
            let guard = metrics::check_guards(&after, &slot.before, &slot.is_element);
            let size = slot.tensor.dtype.size();
            let mut elements = Vec::with_capacity(slot.elements.len() * size);
            for &e in &slot.elements {
                elements.extend_from_slice(&after[e..e + size]);
            }
            outs.push(Output {
                arg: slot.arg,
                dtype: slot.tensor.dtype,
                shape: slot.tensor.shape.clone(),
                elements,
                guard,
            });
        }
        Ok(Outputs(outs))
    }
}

fn v3_yarn() -> dsv3_core::rope::Yarn {
    dsv3_core::rope::Yarn {
        factor: 40.0,
        original_max_position: 4096.0,
        beta_fast: 32.0,
        beta_slow: 1.0,
        mscale_all_dim: 1.0,
    }
}

/// DeepSeek-V3's rope parameters (dim 64, θ 10000, YaRN factor 40 over 4096).
pub fn v3_rope() -> RopeParams {
    RopeParams { dim: 64, theta: 10000.0, yarn: Some(v3_yarn()) }
}

/// DeepSeek-V3's attention logit scale: (128 + 64)^-½ · mscale².
pub fn v3_softmax_scale() -> f32 {
    dsv3_core::rope::softmax_scale(192, Some(&v3_yarn()))
}

fn dense(dtype: DType, shape: &[usize], seed: u64, std: f64) -> HostTensor {
    gen::normal_tensor(dtype, shape, seed, std)
}

/// An operand `[rows, k]` (activations) or `[lead.., n, k]` (weights) from real values.
fn operand(op: Operand, shape: &[usize], values: &[f64], weights: bool) -> (HostTensor, Option<HostTensor>) {
    match op {
        Operand::Dense(d) => (HostTensor::from_f64(d, shape, values), None),
        Operand::Fp8(format, store) if weights => {
            let (c, s) = gen::quantize_blocks(values, shape, format, store);
            (c, Some(s))
        }
        Operand::Fp8(format, store) => {
            let (c, s) = gen::quantize_activations(values, shape[0], shape[1], format, store);
            (c, Some(s))
        }
    }
}

/// Rows of attention caches at or past a sequence's length hold this: a kernel that reads them gets
/// scores that swamp the real ones. (Not NaN: inputs are checked to be finite.)
const POISON: f64 = 1.0e4;

impl Case {
    /// Generates the inputs from the seed.
    pub fn inputs(&self) -> Inputs {
        let s = self.seed;
        let mut inp = Inputs::default();
        match &self.spec {
            Spec::Gemm(g) => {
                let a = normals(g.m * g.k, derive(s, 1), 1.0);
                let (mut codes, scales) = operand(g.a, &[g.m, g.k], &a, false);
                if g.a_pitch > 0 {
                    codes = codes.with_row_pitch(g.a_pitch);
                }
                inp.push("a", codes);
                if let Some(sc) = scales {
                    inp.push("a_scales", sc);
                }
                let b = normals(g.n * g.k, derive(s, 2), 1.0 / (g.k as f64).sqrt());
                let (codes, scales) = operand(g.b, &[g.n, g.k], &b, true);
                inp.push("b", codes);
                if let Some(sc) = scales {
                    inp.push("b_scales", sc);
                }
            }
            Spec::GroupedGemm(g) => {
                let rows: usize = g.counts.iter().sum();
                let e = g.counts.len();
                let a = normals(rows * g.k, derive(s, 1), 1.0);
                let (codes, scales) = operand(g.a, &[rows, g.k], &a, false);
                inp.push("a", codes);
                if let Some(sc) = scales {
                    inp.push("a_scales", sc);
                }
                let b = normals(e * g.n * g.k, derive(s, 2), 1.0 / (g.k as f64).sqrt());
                let (codes, scales) = operand(g.b, &[e, g.n, g.k], &b, true);
                inp.push("b", codes);
                if let Some(sc) = scales {
                    inp.push("b_scales", sc);
                }
                let mut offsets = vec![0i32];
                for c in &g.counts {
                    offsets.push(offsets.last().unwrap() + *c as i32);
                }
                inp.push("expert_offsets", HostTensor::from_i32(&[e + 1], &offsets));
            }
            Spec::ActQuant(q) => {
                let mut x = normals(q.m * q.k, derive(s, 1), 1.0);
                for (r, row) in x.chunks_mut(q.k.max(1)).enumerate() {
                    // Rows over six decades, and an all-zero row (the amax floor) when there are three or more.
                    let scale = if q.m >= 3 && r == 1 { 0.0 } else { 10f64.powi(r as i32 % 6 - 3) };
                    row.iter_mut().for_each(|v| *v *= scale);
                }
                inp.push("x", HostTensor::from_f64(q.x, &[q.m, q.k], &x));
            }
            Spec::Dequantize(d) => {
                let k = *d.shape.last().unwrap();
                let w = normals(d.shape.iter().product(), derive(s, 1), 1.0 / (k as f64).sqrt());
                let (codes, scales) = gen::quantize_blocks(&w, &d.shape, d.format, d.scales);
                inp.push("codes", codes);
                inp.push("scales", scales);
            }
            Spec::MoeRoute(r) => {
                // Well-separated logits: a shuffled even grid over [-4, 4] plus small noise.
                let mut rng = Rng::new(derive(s, 1));
                let mut logits = Vec::with_capacity(r.t * r.e);
                for _ in 0..r.t {
                    let perm = rng.permutation(r.e);
                    for p in perm {
                        let grid = -4.0 + 8.0 * p as f64 / (r.e.max(2) - 1) as f64;
                        logits.push(grid + 0.01 * rng.normal());
                    }
                }
                inp.push("logits", HostTensor::from_f64(DType::F32, &[r.t, r.e], &logits));
                if r.config.method == TopkMethod::NoAuxTc {
                    let bias: Vec<f64> = (0..r.e).map(|_| rng.range(-r.max_bias, r.max_bias)).collect();
                    inp.push("bias", HostTensor::from_f64(DType::F32, &[r.e], &bias));
                }
            }
            Spec::MoeDispatch(d) => {
                inp.push("x", dense(d.x, &[d.t, d.d], derive(s, 1), 1.0));
                let mut rng = Rng::new(derive(s, 2));
                let mut ids = Vec::with_capacity(d.t * d.k);
                for _ in 0..d.t {
                    match d.ids {
                        IdPattern::Random => {
                            ids.extend(rng.permutation(d.experts)[..d.k].iter().map(|&e| e as i32))
                        }
                        IdPattern::EvenOnly => ids.extend(
                            rng.permutation(d.experts.div_ceil(2))[..d.k].iter().map(|&e| 2 * e as i32),
                        ),
                        IdPattern::One(e) => ids.extend(std::iter::repeat_n(e as i32, d.k)),
                    }
                }
                inp.push("ids", HostTensor::from_i32(&[d.t, d.k], &ids));
            }
            Spec::MoeCombine(c) => {
                inp.push("expert_out", dense(c.x, &[c.t * c.k, c.n], derive(s, 1), 1.0));
                let mut rng = Rng::new(derive(s, 2));
                let slots: Vec<i32> = rng.permutation(c.t * c.k).into_iter().map(|v| v as i32).collect();
                inp.push("slot_rows", HostTensor::from_i32(&[c.t * c.k], &slots));
                let w: Vec<f64> = (0..c.t * c.k).map(|_| rng.range(0.0, 2.5 / c.k as f64)).collect();
                inp.push("weights", HostTensor::from_f64(DType::F32, &[c.t, c.k], &w));
            }
            Spec::MlaAttention(a) => {
                inp.push("q_latent", dense(a.dtype, &[a.b, a.t, a.h, a.d1], derive(s, 1), 1.0));
                inp.push("q_pe", dense(a.dtype, &[a.b, a.t, a.h, a.d2], derive(s, 2), 1.0));
                inp.push("kv_cache", cache(a.dtype, a.b, a.l, 1, a.d1 + a.d2, &a.kv_lens, derive(s, 3)));
                inp.push("kv_lens", lens(&a.kv_lens));
            }
            Spec::MhaAttention(a) => {
                inp.push("q", dense(a.dtype, &[a.b, a.t, a.h, a.d1], derive(s, 1), 1.0));
                inp.push("k", cache(a.dtype, a.b, a.l, a.h, a.d1, &a.kv_lens, derive(s, 2)));
                inp.push("v", cache(a.dtype, a.b, a.l, a.h, a.d2, &a.kv_lens, derive(s, 3)));
                inp.push("kv_lens", lens(&a.kv_lens));
            }
            Spec::RmsNorm(n) => {
                inp.push("x", dense(n.x, &[n.r, n.d], derive(s, 1), 1.0));
                let w: Vec<f64> = normals(n.d, derive(s, 2), 0.1).iter().map(|v| 1.0 + v).collect();
                inp.push("weight", HostTensor::from_f64(n.w, &[n.d], &w));
            }
            Spec::Rope(r) => {
                let d = r.params.dim;
                let mut x = dense(r.x, &[r.t, r.h, d], derive(s, 1), 1.0);
                if r.head_pitch > 0 {
                    x = x.restrided(&[r.h * r.head_pitch, r.head_pitch, 1]);
                }
                inp.push("x", x);
                let mut rng = Rng::new(derive(s, 2));
                let pos: Vec<i32> = (0..r.t)
                    .map(|i| match i {
                        0 => 0,
                        1 => r.max_pos as i32 - 1,
                        _ => rng.below(r.max_pos) as i32,
                    })
                    .collect();
                inp.push("positions", HostTensor::from_i32(&[r.t], &pos));
            }
            Spec::SiluMul(e) => {
                inp.push("gate", dense(e.a, &[e.r, e.n], derive(s, 1), e.std));
                inp.push("up", dense(e.b, &[e.r, e.n], derive(s, 2), e.std));
            }
            Spec::Add(e) => {
                inp.push("a", dense(e.a, &[e.r, e.n], derive(s, 1), e.std));
                inp.push("b", dense(e.b, &[e.r, e.n], derive(s, 2), e.std));
            }
            Spec::Softmax(e) => {
                let mut x = normals(e.r * e.n, derive(s, 1), e.std);
                // The last row ×30: exp arguments far below zero, testing the max subtraction.
                if e.r > 1 {
                    x[(e.r - 1) * e.n..].iter_mut().for_each(|v| *v *= 30.0);
                }
                inp.push("x", HostTensor::from_f64(e.a, &[e.r, e.n], &x));
            }
            Spec::Argmax(e) => inp.push("x", dense(e.a, &[e.r, e.n], derive(s, 1), e.std)),
            Spec::Embedding(e) => {
                inp.push("table", dense(e.table, &[e.v, e.d], derive(s, 1), 1.0));
                let mut rng = Rng::new(derive(s, 2));
                let ids: Vec<i32> = (0..e.t)
                    .map(|i| match i {
                        0 => 0,
                        1 => e.v as i32 - 1,
                        2 => 0, // a repeat
                        _ => rng.below(e.v) as i32,
                    })
                    .collect();
                inp.push("ids", HostTensor::from_i32(&[e.t], &ids));
            }
            Spec::Cast(c) => inp.push("x", cast_input(c, derive(s, 1))),
            Spec::TopK(t) => inp.push("x", dense(t.x, &[t.r, t.n], derive(s, 1), 1.0)),
            Spec::Sample(t) => inp.push("logits", dense(t.x, &[t.r, t.v], derive(s, 1), 3.0)),
        }
        inp
    }

    /// Allocates the inputs and outputs on `device` (uploading when `upload`) and builds the op.
    pub fn bind(&self, device: &Arc<dyn Device>, inputs: &Inputs, upload: bool) -> Result<Bound> {
        let mut b = Binder { device, stream: device.default_stream(), upload, outputs: Vec::new() };
        let op = self.build(&mut b, inputs)?;
        Ok(Bound { op, outputs: b.outputs })
    }

    fn build(&self, b: &mut Binder, inp: &Inputs) -> Result<Op> {
        let mut input = |name: &str| b.input(inp.get(name));
        let op = match &self.spec {
            Spec::Gemm(g) => {
                let a = activations(g.a, &mut input)?;
                let w = weights(g.b, &mut input)?;
                let strides = (g.c_pitch > 0).then(|| vec![g.c_pitch, 1]);
                let c = b.output("c", g.c, &[g.m, g.n], strides)?;
                Op::Gemm(ops::Gemm { a, b: w, c })
            }
            Spec::GroupedGemm(g) => {
                let a = activations(g.a, &mut input)?;
                let w = weights(g.b, &mut input)?;
                let expert_offsets = input("expert_offsets")?;
                let rows: usize = g.counts.iter().sum();
                let c = b.output("c", g.c, &[rows, g.n], None)?;
                Op::GroupedGemm(ops::GroupedGemm { a, b: w, expert_offsets, c })
            }
            Spec::ActQuant(q) => {
                let x = input("x")?;
                let codes = b.output("codes", DType::from_fp8(q.format), &[q.m, q.k], None)?;
                let scales = b.output("scales", q.scales, &[q.m, ops::gemm::blocks(q.k)], None)?;
                Op::ActQuant(ops::ActQuant { x, codes, scales, scale_format: q.scale_format })
            }
            Spec::Dequantize(d) => {
                let (codes, scales) = (input("codes")?, input("scales")?);
                let out = b.output("out", d.out, &d.shape, None)?;
                Op::Dequantize(ops::Dequantize { codes, scales, out })
            }
            Spec::MoeRoute(r) => {
                let logits = input("logits")?;
                let bias = if r.config.method == TopkMethod::NoAuxTc { Some(input("bias")?) } else { None };
                let ids = b.output("ids", DType::I32, &[r.t, r.config.top_k], None)?;
                let weights = b.output("weights", DType::F32, &[r.t, r.config.top_k], None)?;
                Op::MoeRoute(ops::MoeRoute { logits, bias, config: r.config, ids, weights })
            }
            Spec::MoeDispatch(d) => {
                let (x, ids) = (input("x")?, input("ids")?);
                let rows = b.output("rows", d.x, &[d.t * d.k, d.d], None)?;
                let expert_offsets = b.output("expert_offsets", DType::I32, &[d.experts + 1], None)?;
                let slot_rows = b.output("slot_rows", DType::I32, &[d.t * d.k], None)?;
                Op::MoeDispatch(ops::MoeDispatch {
                    x,
                    ids,
                    n_experts: d.experts,
                    rows,
                    expert_offsets,
                    slot_rows,
                })
            }
            Spec::MoeCombine(c) => {
                let (expert_out, slot_rows, weights) =
                    (input("expert_out")?, input("slot_rows")?, input("weights")?);
                let out = b.output("out", c.out, &[c.t, c.n], None)?;
                Op::MoeCombine(ops::MoeCombine { expert_out, slot_rows, weights, out })
            }
            Spec::MlaAttention(a) => {
                let (q_latent, q_pe) = (input("q_latent")?, input("q_pe")?);
                let (kv_cache, kv_lens) = (input("kv_cache")?, input("kv_lens")?);
                let out = b.output("out", a.out, &[a.b, a.t, a.h, a.d1], None)?;
                Op::MlaAttention(ops::MlaAttention {
                    q_latent,
                    q_pe,
                    kv_cache,
                    kv_lens,
                    softmax_scale: a.scale,
                    causal: a.causal,
                    out,
                })
            }
            Spec::MhaAttention(a) => {
                let (q, k, v, kv_lens) = (input("q")?, input("k")?, input("v")?, input("kv_lens")?);
                let out = b.output("out", a.out, &[a.b, a.t, a.h, a.d2], None)?;
                Op::MhaAttention(ops::MhaAttention {
                    q,
                    k,
                    v,
                    kv_lens,
                    softmax_scale: a.scale,
                    causal: a.causal,
                    out,
                })
            }
            Spec::RmsNorm(n) => {
                let (x, weight) = (input("x")?, input("weight")?);
                let out = b.output("out", n.out, &[n.r, n.d], None)?;
                Op::RmsNorm(ops::RmsNorm { x, weight, eps: n.eps, out })
            }
            Spec::Rope(r) => {
                let (x, positions) = (input("x")?, input("positions")?);
                let out = b.output("out", r.out, &[r.t, r.h, r.params.dim], None)?;
                Op::Rope(ops::Rope { x, positions, params: r.params, out })
            }
            Spec::SiluMul(e) => {
                let (gate, up) = (input("gate")?, input("up")?);
                Op::SiluMul(ops::SiluMul { gate, up, out: b.output("out", e.out, &[e.r, e.n], None)? })
            }
            Spec::Add(e) => {
                let (a, bb) = (input("a")?, input("b")?);
                Op::Add(ops::Add { a, b: bb, out: b.output("out", e.out, &[e.r, e.n], None)? })
            }
            Spec::Softmax(e) => {
                let x = input("x")?;
                Op::Softmax(ops::Softmax { x, out: b.output("out", e.out, &[e.r, e.n], None)? })
            }
            Spec::Argmax(e) => {
                let x = input("x")?;
                Op::Argmax(ops::Argmax { x, out: b.output("out", DType::I32, &[e.r], None)? })
            }
            Spec::Embedding(e) => {
                let (table, ids) = (input("table")?, input("ids")?);
                Op::Embedding(ops::Embedding { table, ids, out: b.output("out", e.out, &[e.t, e.d], None)? })
            }
            Spec::Cast(c) => {
                let x = input("x")?;
                Op::Cast(ops::Cast { x, out: b.output("out", c.to, &c.shape, None)? })
            }
            Spec::TopK(t) => {
                let x = input("x")?;
                let values = b.output("values", DType::F32, &[t.r, t.k], None)?;
                let ids = b.output("ids", DType::I32, &[t.r, t.k], None)?;
                Op::TopK(ops::TopK { x, k: t.k, values, ids })
            }
            Spec::Sample(t) => {
                let logits = input("logits")?;
                Op::Sample(ops::Sample {
                    logits,
                    temperature: t.temperature,
                    top_p: t.top_p,
                    seed: t.sample_seed,
                    out: b.output("out", DType::I32, &[t.r], None)?,
                })
            }
        };
        debug_assert_eq!(op.name(), self.op);
        Ok(op)
    }

    /// Compares the device's outputs with the oracle's.
    pub fn compare(&self, inputs: &Inputs, oracle: &Outputs, dut: &Outputs) -> Verdict {
        let mut v = Verdict::default();
        for (who, outs) in [("oracle", oracle), ("device", dut)] {
            for o in &outs.0 {
                if o.guard.corrupted > 0 {
                    let at = o.guard.first.unwrap() as isize - GUARD as isize;
                    v.fail(format!(
                        "{who} wrote {} guard byte(s) outside `{}` (first at byte {at} relative to the view)",
                        o.guard.corrupted, o.arg
                    ));
                }
            }
        }
        let t = &self.tolerance;
        match &self.spec {
            Spec::MoeRoute(r) => self.compare_route(r, inputs, oracle, dut, &mut v),
            Spec::TopK(k) => {
                exact_output(oracle.get("values"), dut.get("values"), &mut v);
                let x = inputs.get("x").values();
                let all = vec![true; k.n];
                let c = metrics::compare_choices(
                    &dut.get("ids").i32s(),
                    &oracle.get("ids").i32s(),
                    k.k,
                    |r, ids| metrics::is_near_topk(ids, &x[r * k.n..(r + 1) * k.n], &all, t.tie_gap),
                );
                v.choices(c);
            }
            Spec::Argmax(a) => {
                let x = inputs.get("x").values();
                let c = metrics::compare_choices(
                    &dut.get("out").i32s(),
                    &oracle.get("out").i32s(),
                    1,
                    |r, ids| {
                        metrics::is_near_topk(ids, &x[r * a.n..(r + 1) * a.n], &vec![true; a.n], t.tie_gap)
                    },
                );
                v.choices(c);
            }
            Spec::Sample(sp) => {
                let logits = inputs.get("logits").values();
                let c = metrics::compare_choices(
                    &dut.get("out").i32s(),
                    &oracle.get("out").i32s(),
                    1,
                    |r, ids| sample_tie(sp, &logits[r * sp.v..(r + 1) * sp.v], r, ids[0], t.tie_gap),
                );
                v.choices(c);
            }
            _ if t.exact => {
                for o in &oracle.0 {
                    exact_output(o, dut.get(o.arg), &mut v);
                }
            }
            _ => {
                for o in &oracle.0 {
                    let d = dut.get(o.arg);
                    if !o.dtype.is_float() {
                        exact_output(o, d, &mut v);
                        continue;
                    }
                    let m = metrics::compare(&d.values(), &o.values());
                    v.float_metrics(o.arg, m, t.nmse);
                }
            }
        }
        v
    }

    fn compare_route(
        &self,
        r: &RouteSpec,
        inputs: &Inputs,
        oracle: &Outputs,
        dut: &Outputs,
        v: &mut Verdict,
    ) {
        let c = &r.config;
        let k = c.top_k;
        let logits = inputs.get("logits").values();
        let bias = (c.method == TopkMethod::NoAuxTc).then(|| inputs.get("bias").values());
        let (ids_d, ids_o) = (dut.get("ids").i32s(), oracle.get("ids").i32s());
        let choice = metrics::compare_choices(&ids_d, &ids_o, k, |row, ids| {
            let (_, selection) = route_scores(c, &logits[row * r.e..(row + 1) * r.e], bias.as_deref());
            let groups = match c.method {
                TopkMethod::Greedy => None,
                _ => Some(group_scores(c, &selection)),
            };
            metrics::route_near_topk(ids, &selection, groups.as_deref(), c.topk_group, self.tolerance.tie_gap)
        });
        // Weights of rows whose sets agree, matched by expert id.
        let (w_d, w_o) = (dut.get("weights").values(), oracle.get("weights").values());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for row in (0..r.t).filter(|&row| choice.agree[row]) {
            for j in 0..k {
                let id = ids_o[row * k + j];
                let jd = (0..k).find(|&x| ids_d[row * k + x] == id).unwrap();
                b.push(w_o[row * k + j]);
                a.push(w_d[row * k + jd]);
            }
        }
        v.choices(choice);
        if !a.is_empty() {
            v.float_metrics("weights", metrics::compare(&a, &b), self.tolerance.nmse);
        }
    }
}

fn activations(op: Operand, input: &mut impl FnMut(&str) -> Result<Tensor>) -> Result<Activations> {
    Ok(match op {
        Operand::Dense(_) => Activations::Dense(input("a")?),
        Operand::Fp8(..) => Activations::Fp8 { codes: input("a")?, scales: input("a_scales")? },
    })
}

fn weights(op: Operand, input: &mut impl FnMut(&str) -> Result<Tensor>) -> Result<Weights> {
    Ok(match op {
        Operand::Dense(_) => Weights::Dense(input("b")?),
        Operand::Fp8(..) => Weights::BlockFp8 { codes: input("b")?, scales: input("b_scales")? },
    })
}

/// A cache `[B, L, H, D]` (H = 1 drops to `[B, L, D]`): rows below each sequence's length N(0,1), rows
/// at or past it [`POISON`].
fn cache(dtype: DType, b: usize, l: usize, h: usize, d: usize, lens: &[usize], seed: u64) -> HostTensor {
    let mut v = normals(b * l * h * d, seed, 1.0);
    for (seq, &len) in lens.iter().enumerate() {
        v[(seq * l + len) * h * d..(seq + 1) * l * h * d].iter_mut().for_each(|x| *x = POISON);
    }
    let shape: Vec<usize> = if h == 1 { vec![b, l, d] } else { vec![b, l, h, d] };
    HostTensor::from_f64(dtype, &shape, &v)
}

fn lens(lens: &[usize]) -> HostTensor {
    HostTensor::from_i32(&[lens.len()], &lens.iter().map(|&l| l as i32).collect::<Vec<_>>())
}

/// Values that exercise a conversion: ordinary values, values near and past the target's range
/// (FP8 saturation), subnormals of the target, zeros of both signs.
fn cast_input(c: &CastSpec, seed: u64) -> HostTensor {
    let n: usize = c.shape.iter().product();
    let mut rng = Rng::new(seed);
    if let Some(f) = c.from.fp8_format() {
        // Every code but NaN, cycled.
        let codes: Vec<u8> = (0..n)
            .map(|i| {
                let mut code = (i % 256) as u8;
                while f.is_nan_code(code) || f.decode(code).is_infinite() {
                    code = rng.below(256) as u8;
                }
                code
            })
            .collect();
        return HostTensor::from_codes(c.from, &c.shape, codes);
    }
    let max = c.to.fp8_format().map(|f| f.max() as f64).unwrap_or(1.0e4);
    let tiny = match c.to.fp8_format() {
        Some(Fp8Format::E4M3Fn) => 2f64.powi(-9),
        Some(Fp8Format::E4M3Fnuz) => 2f64.powi(-10),
        Some(Fp8Format::E5M2) => 2f64.powi(-16),
        None => 2f64.powi(-24),
    };
    let v: Vec<f64> = (0..n)
        .map(|i| match i % 8 {
            0 | 1 => rng.normal(),
            2 => rng.normal() * max * 0.5,
            3 if c.to.fp8_format().is_some() => {
                rng.range(1.0, 2.0) * max * if rng.below(2) == 0 { 1.0 } else { -1.0 }
            }
            4 => rng.range(0.0, 4.0) * tiny * if rng.below(2) == 0 { 1.0 } else { -1.0 },
            5 => exact_tie(rng.normal() as f32, c.to, rng.below(3) as i32 - 1),
            6 => {
                if rng.below(2) == 0 {
                    0.0
                } else {
                    -0.0
                }
            }
            _ => rng.normal() * 1e-2,
        })
        .collect();
    HostTensor::from_f64(c.from, &c.shape, &v)
}

/// `x` moved to exactly halfway between two neighbouring values of `to` (its mantissa truncated to
/// the target's width, then the next bit set), so round-to-nearest-*even* is what decides the result;
/// then `nudge` f32 ulps off the midpoint (−1, 0, +1), where only a correctly rounding conversion gets
/// the direction right (`half`'s `bf16::from_f64` does not, for example).
fn exact_tie(x: f32, to: DType, nudge: i32) -> f64 {
    let mantissa = match to {
        DType::BF16 => 7,
        DType::F16 => 10,
        DType::F8E4M3Fn | DType::F8E4M3Fnuz => 3,
        DType::F8E5M2 => 2,
        _ => return x as f64,
    };
    let drop = 23 - mantissa;
    let tie = (x.to_bits() & !((1u32 << drop) - 1)) | (1u32 << (drop - 1));
    f32::from_bits(tie.wrapping_add_signed(nudge)) as f64
}

/// (scores, selection scores) of one routing row, in f64 from the f32 inputs.
pub fn route_scores(c: &RouteConfig, logits: &[f64], bias: Option<&[f64]>) -> (Vec<f64>, Vec<f64>) {
    let scores: Vec<f64> = match c.scoring {
        Scoring::Sigmoid => logits.iter().map(|l| 1.0 / (1.0 + (-l).exp())).collect(),
        Scoring::Softmax => {
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.iter().map(|x| x / sum).collect()
        }
    };
    let selection = match bias {
        Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
        None => scores.clone(),
    };
    (scores, selection)
}

/// Per-group scores: sum of the top two (noaux_tc) or the max (group_limited_greedy).
pub fn group_scores(c: &RouteConfig, selection: &[f64]) -> Vec<f64> {
    let per = selection.len() / c.n_group;
    selection
        .chunks(per)
        .map(|g| {
            let mut s = g.to_vec();
            s.sort_by(|a, b| b.total_cmp(a));
            match c.method {
                TopkMethod::NoAuxTc => s[0] + s[1],
                _ => s[0],
            }
        })
        .collect()
}

/// Whether the device's sample `got` is a near-tie with the oracle's in row `r`: inside the nucleus up
/// to a relative mass gap, and its race key within a relative gap of the best key.
fn sample_tie(
    sp: &SampleSpec,
    logits: &[f64],
    r: usize,
    got: i32,
    gap: f64,
) -> std::result::Result<(), String> {
    let v = logits.len();
    if got < 0 || got as usize >= v {
        return Err(format!("id {got} outside 0..{v}"));
    }
    let got = got as usize;
    if sp.temperature == 0.0 {
        let all = vec![true; v];
        return metrics::is_near_topk(&[got as i32], logits, &all, 0.0);
    }
    let t = sp.temperature as f64;
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|l| ((l - max) / t).exp()).collect();
    let sum: f64 = e.iter().sum();
    let p: Vec<f64> = e.iter().map(|x| x / sum).collect();
    let mut order: Vec<usize> = (0..v).collect();
    order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
    // Loose nucleus: tokens whose preceding mass is below top_p (1 + gap).
    let mut mass = 0.0;
    let mut nucleus = Vec::new();
    let mut strict_len = None;
    for &i in &order {
        if mass >= sp.top_p as f64 * (1.0 + gap) {
            break;
        }
        nucleus.push(i);
        mass += p[i];
        if strict_len.is_none() && mass >= sp.top_p as f64 {
            strict_len = Some(nucleus.len());
        }
    }
    if !nucleus.contains(&got) {
        return Err(format!("token {got} (p = {:.3e}) is outside the nucleus", p[got]));
    }
    let key = |i: usize| p[i] / -uniform(sp.sample_seed, r as u64, i as u64).ln();
    let strict = &nucleus[..strict_len.unwrap_or(nucleus.len())];
    let best = strict.iter().map(|&i| key(i)).fold(0.0, f64::max);
    if key(got) < best * (1.0 - gap) {
        return Err(format!(
            "race key {:.9e} of token {got} is below the best {best:.9e} by more than {gap:.1e}",
            key(got)
        ));
    }
    Ok(())
}

fn exact_output(o: &Output, d: &Output, v: &mut Verdict) {
    let size = o.dtype.size();
    let e = metrics::exact(&d.elements, &o.elements, size);
    if e.mismatches > 0 {
        let i = e.first.unwrap();
        v.fail(format!(
            "`{}`: {} of {} elements differ (first at {i}: got {}, oracle {})",
            o.arg,
            e.mismatches,
            o.elements.len() / size,
            o.dtype.read_f64(&d.elements, i),
            o.dtype.read_f64(&o.elements, i)
        ));
    }
}

/// The outcome of comparing one case.
#[derive(Clone, Debug, Default)]
pub struct Verdict {
    pub failures: Vec<String>,
    pub notes: Vec<String>,
    /// The metrics of the float output with the largest NMSE relative to its bound.
    pub metrics: Option<Metrics>,
    worst: f64,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    fn fail(&mut self, why: String) {
        self.failures.push(why);
    }

    fn float_metrics(&mut self, arg: &str, m: Metrics, bound: f64) {
        if m.non_finite > 0 {
            self.fail(format!(
                "`{arg}`: {} non-finite element(s) where the oracle is finite (first at {})",
                m.non_finite,
                m.first_non_finite.unwrap()
            ));
        }
        if m.nmse.is_nan() || m.nmse > bound {
            self.fail(format!("`{arg}`: nmse {:.3e} > bound {bound:.3e}", m.nmse));
        }
        let ratio = if bound > 0.0 { m.nmse / bound } else { m.nmse };
        if self.metrics.is_none() || ratio > self.worst {
            self.metrics = Some(m);
            self.worst = ratio;
        }
    }

    fn choices(&mut self, c: metrics::Choice) {
        if !c.ties.is_empty() {
            self.notes.push(format!("{} near-tie row(s) {:?} chose differently", c.ties.len(), c.ties));
        }
        let total = c.mismatches.len();
        for (_, why) in c.mismatches.into_iter().take(3) {
            self.fail(why);
        }
        if total > 3 {
            self.fail(format!("{} more row(s) differ", total - 3));
        }
    }
}
