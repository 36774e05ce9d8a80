//! A conformance case is data: an op, its parameters and dtypes, a seed and a tolerance. From that it
//! (1) generates its inputs on the host, deterministically (`inputs`); (2) allocates and uploads them
//! on any device and builds the [`Op`](dsv3_core::Op) there, with every output surrounded by guard bytes
//! and pre-filled with NaN-like garbage; (3) downloads the outputs and checks the guards after the
//! launch (`bind`); and (4) compares a device's outputs with the oracle's (see [`Case::compare`],
//! `compare`).

mod bind;
mod compare;
mod inputs;

pub use bind::Bound;
pub use compare::{group_scores, route_scores, Verdict};

use crate::gen::{HostTensor, ScaleStore};
use crate::metrics;
use crate::tolerance::{self as tol, Tolerance};
use dsv3_core::fp8::Fp8Format;
use dsv3_core::ops::{RouteConfig, RowSampling, ScaleFormat};
use dsv3_core::rope::RopeParams;
use dsv3_core::DType;

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

/// batched_gemm: `c[i] = a[i] · b[i]ᵀ` over `batch` dense products.
#[derive(Clone, Debug)]
pub struct BatchedGemmSpec {
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: DType,
    pub b: DType,
    pub c: DType,
    /// The absorbed-MLA layout: a's batches are `pitch`-apart slices of each row (`[M, B·pitch]`, pitch
    /// > K) and c's batches interleave the same way (`[M, B·N]`); otherwise a and c are contiguous.
    pub heads: bool,
    /// One b for every batch (batch stride 0).
    pub shared_b: bool,
}

impl BatchedGemmSpec {
    /// Elements between a's batches in the heads layout: K plus a rope part's worth of other values.
    pub fn a_pitch(&self) -> usize {
        self.k + 3
    }

    pub fn a_strides(&self) -> Vec<usize> {
        let p = self.a_pitch();
        if self.heads {
            vec![p, self.batch * p, 1]
        } else {
            vec![self.m * self.k, self.k, 1]
        }
    }

    pub fn b_strides(&self) -> Vec<usize> {
        vec![if self.shared_b { 0 } else { self.n * self.k }, self.k, 1]
    }

    pub fn c_strides(&self) -> Vec<usize> {
        if self.heads {
            vec![self.n, self.batch * self.n, 1]
        } else {
            vec![self.m * self.n, self.n, 1]
        }
    }
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
    /// MLA only: positions per page of a paged cache (a shuffled page pool and a block table, see
    /// `dsv3_core::ops::CachePages`); 0: one block of `l` rows per sequence.
    pub page: usize,
}

/// cache_append: `t` rows per sequence into a `[b, l, w]` cache (or a page pool holding `l` positions per
/// sequence) that starts with other values.
#[derive(Clone, Debug)]
pub struct CacheAppendSpec {
    pub b: usize,
    pub t: usize,
    pub l: usize,
    pub w: usize,
    pub kv_lens: Vec<usize>,
    pub dtype: DType,
    /// Positions per page of a paged cache; 0: contiguous.
    pub page: usize,
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
    /// Each row's own parameters (the op's `row_params`), which replace the three above.
    pub per_row: Option<Vec<RowSampling>>,
}

impl SampleSpec {
    /// Row `r`'s parameters and the key of its uniforms, as the op defines them.
    pub fn row(&self, r: usize) -> (RowSampling, u64) {
        match &self.per_row {
            Some(rows) => (rows[r], 0),
            None => (
                RowSampling { temperature: self.temperature, top_p: self.top_p, seed: self.sample_seed },
                r as u64,
            ),
        }
    }
}

/// Parameters of a case, one variant per op.
#[derive(Clone, Debug)]
pub enum Spec {
    Gemm(GemmSpec),
    GroupedGemm(GroupedGemmSpec),
    BatchedGemm(BatchedGemmSpec),
    ActQuant(ActQuantSpec),
    Dequantize(DequantSpec),
    MoeRoute(RouteSpec),
    MoeDispatch(DispatchSpec),
    MoeCombine(CombineSpec),
    MlaAttention(AttentionSpec),
    MhaAttention(AttentionSpec),
    CacheAppend(CacheAppendSpec),
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

impl Spec {
    /// The case's bound from the tolerance table, from its shapes and output dtypes: the one place that
    /// maps an op's parameters onto the table's formulas (generated cases and case files alike).
    pub fn tolerance(&self) -> Tolerance {
        match self {
            Spec::Gemm(g) => tol::gemm(g.k, g.c, g.m * g.n),
            Spec::GroupedGemm(g) => tol::grouped_gemm(g.k, g.c, g.counts.iter().sum::<usize>() * g.n),
            Spec::BatchedGemm(g) => tol::batched_gemm(g.k, g.c, g.batch * g.m * g.n),
            Spec::ActQuant(_)
            | Spec::Dequantize(_)
            | Spec::MoeDispatch(_)
            | Spec::Embedding(_)
            | Spec::CacheAppend(_)
            | Spec::Cast(_) => tol::exact(),
            Spec::MoeRoute(r) => tol::moe_route(r.e, r.config.top_k, r.max_bias, r.t * r.config.top_k),
            Spec::MoeCombine(c) => tol::moe_combine(c.k, c.out, c.t * c.n),
            Spec::MlaAttention(a) => {
                tol::attention(a.d1 + a.d2, a.l, a.scale as f64, a.out, a.b * a.t * a.h * a.d1)
            }
            Spec::MhaAttention(a) => tol::attention(a.d1, a.l, a.scale as f64, a.out, a.b * a.t * a.h * a.d2),
            Spec::RmsNorm(n) => tol::rms_norm(n.d, n.out, n.r * n.d),
            Spec::Rope(r) => tol::rope(r.out, r.t * r.h * r.params.dim),
            Spec::SiluMul(e) => tol::silu_mul(e.out, e.r * e.n),
            Spec::Add(e) => tol::add(e.out, e.r * e.n),
            Spec::Softmax(e) => tol::softmax(e.n, e.out, e.r * e.n),
            Spec::Argmax(_) => tol::argmax(),
            Spec::TopK(_) => tol::topk(),
            Spec::Sample(s) => tol::sample(s.v),
        }
    }
}

impl Spec {
    /// The bound when a vendor library computes the case (`Support::Library`): gemm's tensor-core rule;
    /// `None` for ops no library is offered, which keep their contract's rule.
    pub fn library_tolerance(&self) -> Option<Tolerance> {
        match self {
            Spec::Gemm(g) => {
                let block_fp8 = matches!(g.a, Operand::Fp8(..)) && matches!(g.b, Operand::Fp8(..));
                Some(tol::gemm_tensor_core(g.k, block_fp8, g.c, g.m * g.n))
            }
            _ => None,
        }
    }

    /// The bound when a dsv3 kernel on tensor cores rounds beyond the op's contract
    /// (`Support::TensorCore`): attention's tensor-core rule; `None` for other ops, which keep theirs.
    pub fn tensor_core_tolerance(&self) -> Option<Tolerance> {
        match self {
            Spec::MlaAttention(a) => Some(tol::attention_tensor_core(
                a.d1 + a.d2,
                a.l,
                a.scale as f64,
                a.out,
                a.b * a.t * a.h * a.d1,
            )),
            _ => None,
        }
    }
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
    pub(crate) fn push(&mut self, name: &'static str, t: HostTensor) {
        self.tensors.push((name, t));
    }

    pub fn get(&self, name: &str) -> &HostTensor {
        self.find(name).unwrap_or_else(|| panic!("case has no input `{name}`"))
    }

    /// An input some cases of an op have and others not (a paged cache's block table).
    pub fn find(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|(n, _)| *n == name).map(|(_, t)| t)
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
