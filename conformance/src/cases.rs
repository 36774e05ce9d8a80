//! The case sets. [`quick`] covers every op in `OP_NAMES` with small and edge shapes (M = 1, sizes that
//! are not multiples of 128 or of SIMD / GPU tiles, partial 128-blocks, strided views, empty experts,
//! all tokens to one expert, decode and chunked prefill) and runs in seconds in a dev build. [`full`]
//! adds DeepSeek-V3's real per-layer shapes, at least one full-size case per op.

use crate::case::*;
use crate::gen::ScaleStore;
use dsv3_core::fp8::Fp8Format::{self, E4M3Fn, E4M3Fnuz, E5M2};
use dsv3_core::ops::{RouteConfig, RowSampling, ScaleFormat, Scoring, TopkMethod};
use dsv3_core::rope::RopeParams;
use dsv3_core::DType::{self, F8E4M3Fn, F8E4M3Fnuz, Ue8m0, BF16, F16, F32, F8E5M2};

/// A stable seed from the case name (FNV-1a), so that inserting a case never changes another's data.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

fn make(op: &'static str, params: &[(&str, String)], dtypes: String, spec: Spec) -> Case {
    let kv: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let name = format!("{op}({})", kv.join(","));
    Case { op, seed: seed_of(&name), name, dtypes, tolerance: spec.tolerance(), spec }
}

fn p(k: &str, v: impl ToString) -> (&str, String) {
    (k, v.to_string())
}

const A_F32: Operand = Operand::Dense(F32);
const A_BF16: Operand = Operand::Dense(BF16);
const FP8: Operand = Operand::Fp8(E4M3Fn, ScaleStore::F32);
const FP8_UE8M0: Operand = Operand::Fp8(E4M3Fn, ScaleStore::Ue8m0);
const FNUZ: Operand = Operand::Fp8(E4M3Fnuz, ScaleStore::F32);

pub fn gemm(m: usize, n: usize, k: usize, a: Operand, b: Operand, c: DType) -> Case {
    gemm_strided(m, n, k, a, b, c, 0, 0)
}

#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    c: DType,
    lda: usize,
    ldc: usize,
) -> Case {
    let dtypes = format!("a={},b={},c={}", a.label(), b.label(), c);
    let mut params = vec![p("m", m), p("n", n), p("k", k), p("a", a.label()), p("b", b.label()), p("c", c)];
    if lda > 0 {
        params.push(p("lda", lda));
    }
    if ldc > 0 {
        params.push(p("ldc", ldc));
    }
    let spec = GemmSpec { m, n, k, a, b, c, a_pitch: lda, c_pitch: ldc };
    make("gemm", &params, dtypes, Spec::Gemm(spec))
}

pub fn grouped_gemm(
    counts: &[usize],
    n: usize,
    k: usize,
    a: Operand,
    b: Operand,
    c: DType,
    label: &str,
) -> Case {
    let rows: usize = counts.iter().sum();
    let dtypes = format!("a={},b={},c={}", a.label(), b.label(), c);
    let params = [
        p("experts", counts.len()),
        p("rows", rows),
        p("tokens", label),
        p("n", n),
        p("k", k),
        p("a", a.label()),
        p("b", b.label()),
        p("c", c),
    ];
    let spec = GroupedGemmSpec { counts: counts.to_vec(), n, k, a, b, c };
    make("grouped_gemm", &params, dtypes, Spec::GroupedGemm(spec))
}

/// `layout`: "heads" (a and c as interleaved per-head slices of rows, as absorbed MLA has them),
/// "shared_b" (one b for every batch), or "contiguous".
#[allow(clippy::too_many_arguments)]
pub fn batched_gemm(
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    a: DType,
    b: DType,
    c: DType,
    layout: &str,
) -> Case {
    let spec =
        BatchedGemmSpec { batch, m, n, k, a, b, c, heads: layout == "heads", shared_b: layout == "shared_b" };
    let params = [
        p("batch", batch),
        p("m", m),
        p("n", n),
        p("k", k),
        p("a", a),
        p("b", b),
        p("c", c),
        p("layout", layout),
    ];
    make("batched_gemm", &params, format!("a={a},b={b},c={c}"), Spec::BatchedGemm(spec))
}

pub(crate) fn cache_append(b: usize, t: usize, l: usize, w: usize, kv_lens: &[usize], dtype: DType) -> Case {
    cache_append_paged(b, t, l, w, kv_lens, dtype, 0)
}

/// cache_append into a page pool of `page`-position pages (0: contiguous).
pub(crate) fn cache_append_paged(
    b: usize,
    t: usize,
    l: usize,
    w: usize,
    kv_lens: &[usize],
    dtype: DType,
    page: usize,
) -> Case {
    let spec = CacheAppendSpec { b, t, l, w, kv_lens: kv_lens.to_vec(), dtype, page };
    let lens: Vec<String> = kv_lens.iter().map(|l| l.to_string()).collect();
    let mut params =
        vec![p("b", b), p("t", t), p("l", l), p("w", w), p("lens", lens.join("/")), p("dtype", dtype)];
    if page > 0 {
        params.push(p("page", page));
    }
    let layout = if page > 0 { ",paged" } else { "" };
    make("cache_append", &params, format!("{dtype}{layout}"), Spec::CacheAppend(spec))
}

fn act_quant(
    m: usize,
    k: usize,
    x: DType,
    format: Fp8Format,
    scale_format: ScaleFormat,
    scales: DType,
) -> Case {
    let fmt = match scale_format {
        ScaleFormat::F32 => "f32",
        ScaleFormat::Ue8m0 => "ue8m0",
    };
    let dtypes = format!("x={x},codes={},scales={scales}", DType::from_fp8(format));
    let params = [
        p("m", m),
        p("k", k),
        p("x", x),
        p("codes", DType::from_fp8(format)),
        p("scale_fmt", fmt),
        p("scales", scales),
    ];
    let spec = ActQuantSpec { m, k, x, format, scale_format, scales };
    make("act_quant", &params, dtypes, Spec::ActQuant(spec))
}

fn dequantize(shape: &[usize], format: Fp8Format, scales: ScaleStore, out: DType) -> Case {
    let dtypes = format!("codes={},scales={},out={out}", DType::from_fp8(format), scales.dtype());
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let params = [
        p("shape", dims.join("x")),
        p("codes", DType::from_fp8(format)),
        p("scales", scales.dtype()),
        p("out", out),
    ];
    let spec = DequantSpec { shape: shape.to_vec(), format, scales, out };
    make("dequantize", &params, dtypes, Spec::Dequantize(spec))
}

pub(crate) fn route(label: &str, t: usize, e: usize, config: RouteConfig) -> Case {
    let max_bias = if config.method == TopkMethod::NoAuxTc { 0.1 } else { 0.0 };
    let params = [
        p("kind", label),
        p("t", t),
        p("e", e),
        p("n_group", config.n_group),
        p("topk_group", config.topk_group),
        p("top_k", config.top_k),
        p("scale", config.routed_scaling_factor),
    ];
    make("moe_route", &params, "logits=f32".into(), Spec::MoeRoute(RouteSpec { t, e, config, max_bias }))
}

fn v3_route(t: usize, e: usize, n_group: usize, topk_group: usize, top_k: usize) -> Case {
    let config = RouteConfig {
        scoring: Scoring::Sigmoid,
        method: TopkMethod::NoAuxTc,
        n_group,
        topk_group,
        top_k,
        norm_topk_prob: true,
        routed_scaling_factor: 2.5,
    };
    route("v3_noaux_tc", t, e, config)
}

pub(crate) fn dispatch(t: usize, d: usize, k: usize, experts: usize, x: DType, ids: IdPattern) -> Case {
    let pattern = match ids {
        IdPattern::Random => "random".to_string(),
        IdPattern::EvenOnly => "even_only".to_string(),
        IdPattern::One(e) => format!("all_to_{e}"),
    };
    let params = [p("t", t), p("d", d), p("k", k), p("experts", experts), p("ids", pattern), p("x", x)];
    let spec = DispatchSpec { t, d, k, experts, x, ids };
    make("moe_dispatch", &params, format!("x={x}"), Spec::MoeDispatch(spec))
}

pub(crate) fn combine(t: usize, k: usize, n: usize, x: DType, out: DType) -> Case {
    let params = [p("t", t), p("k", k), p("n", n), p("x", x), p("out", out)];
    let spec = CombineSpec { t, k, n, x, out };
    make("moe_combine", &params, format!("x={x},out={out}"), Spec::MoeCombine(spec))
}

/// The two attention forms share everything but their names, their head dims and what the score
/// reduction runs over: MLA scores over `dc + dr` and outputs `dc`; MHA scores over `dk` and outputs `dv`.
#[derive(Clone, Copy)]
enum Form {
    Mla,
    Mha,
}

#[allow(clippy::too_many_arguments)]
fn attention(
    form: Form,
    b: usize,
    t: usize,
    h: usize,
    d1: usize,
    d2: usize,
    l: usize,
    kv_lens: &[usize],
    causal: bool,
    dtype: DType,
    out: DType,
    page: usize,
) -> Case {
    let scale = v3_softmax_scale();
    let lens: Vec<String> = kv_lens.iter().map(|v| v.to_string()).collect();
    let (op, names) = match form {
        Form::Mla => ("mla_attention", ["dc", "dr"]),
        Form::Mha => ("mha_attention", ["dk", "dv"]),
    };
    let mut params = vec![
        p("b", b),
        p("t", t),
        p("h", h),
        p(names[0], d1),
        p(names[1], d2),
        p("l", l),
        p("kv_lens", lens.join("/")),
        p("causal", causal),
        p("dtype", dtype),
        p("out", out),
    ];
    if page > 0 {
        params.push(p("page", page));
    }
    let spec =
        AttentionSpec { b, t, h, d1, d2, l, kv_lens: kv_lens.to_vec(), causal, dtype, out, scale, page };
    let spec = match form {
        Form::Mla => Spec::MlaAttention(spec),
        Form::Mha => Spec::MhaAttention(spec),
    };
    // Paged cases get their own rows in the support matrices.
    let layout = if page > 0 { ",paged" } else { "" };
    make(op, &params, format!("io={dtype},out={out}{layout}"), spec)
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn mla(
    b: usize,
    t: usize,
    h: usize,
    dc: usize,
    dr: usize,
    l: usize,
    lens: &[usize],
    causal: bool,
    dtype: DType,
    out: DType,
) -> Case {
    attention(Form::Mla, b, t, h, dc, dr, l, lens, causal, dtype, out, 0)
}

/// MLA over a page pool of `page`-position pages holding `l` positions per sequence.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mla_paged(
    b: usize,
    t: usize,
    h: usize,
    dc: usize,
    dr: usize,
    l: usize,
    lens: &[usize],
    dtype: DType,
    page: usize,
) -> Case {
    attention(Form::Mla, b, t, h, dc, dr, l, lens, true, dtype, dtype, page)
}

#[allow(clippy::too_many_arguments)]
fn mha(
    b: usize,
    t: usize,
    h: usize,
    dk: usize,
    dv: usize,
    l: usize,
    lens: &[usize],
    causal: bool,
    dtype: DType,
    out: DType,
) -> Case {
    attention(Form::Mha, b, t, h, dk, dv, l, lens, causal, dtype, out, 0)
}

pub(crate) fn rms_norm(r: usize, d: usize, x: DType, w: DType, out: DType) -> Case {
    let params = [p("r", r), p("d", d), p("x", x), p("w", w), p("out", out)];
    let spec = RmsNormSpec { r, d, x, w, out, eps: 1e-6 };
    make("rms_norm", &params, format!("x={x},w={w},out={out}"), Spec::RmsNorm(spec))
}

pub(crate) fn rope(
    t: usize,
    h: usize,
    params: RopeParams,
    x: DType,
    out: DType,
    max_pos: usize,
    head_pitch: usize,
) -> Case {
    let mut kv = vec![
        p("t", t),
        p("h", h),
        p("d", params.dim),
        p("yarn", params.yarn.is_some()),
        p("max_pos", max_pos),
        p("x", x),
        p("out", out),
    ];
    if head_pitch > 0 {
        kv.push(p("head_pitch", head_pitch));
    }
    let spec = RopeSpec { t, h, params, x, out, max_pos, head_pitch };
    make("rope", &kv, format!("x={x},out={out}"), Spec::Rope(spec))
}

fn rows_spec(r: usize, n: usize, a: DType, b: DType, out: DType, std: f64) -> RowsSpec {
    RowsSpec { r, n, a, b, out, std }
}

pub(crate) fn silu_mul(r: usize, n: usize, a: DType, out: DType, std: f64) -> Case {
    let params = [p("r", r), p("n", n), p("in", a), p("out", out), p("std", std)];
    let spec = rows_spec(r, n, a, a, out, std);
    make("silu_mul", &params, format!("in={a},out={out}"), Spec::SiluMul(spec))
}

pub(crate) fn add(r: usize, n: usize, a: DType, b: DType, out: DType) -> Case {
    let params = [p("r", r), p("n", n), p("a", a), p("b", b), p("out", out)];
    let spec = rows_spec(r, n, a, b, out, 1.0);
    make("add", &params, format!("a={a},b={b},out={out}"), Spec::Add(spec))
}

fn softmax(r: usize, n: usize, x: DType, out: DType) -> Case {
    let params = [p("r", r), p("n", n), p("x", x), p("out", out)];
    let spec = rows_spec(r, n, x, x, out, 2.0);
    make("softmax", &params, format!("x={x},out={out}"), Spec::Softmax(spec))
}

fn argmax(r: usize, n: usize, x: DType) -> Case {
    let params = [p("r", r), p("n", n), p("x", x)];
    make("argmax", &params, format!("x={x}"), Spec::Argmax(rows_spec(r, n, x, x, DType::I32, 1.0)))
}

pub(crate) fn embedding(v: usize, d: usize, t: usize, table: DType, out: DType) -> Case {
    let params = [p("v", v), p("d", d), p("t", t), p("table", table), p("out", out)];
    let spec = EmbeddingSpec { v, d, t, table, out };
    make("embedding", &params, format!("table={table},out={out}"), Spec::Embedding(spec))
}

fn cast(shape: &[usize], from: DType, to: DType) -> Case {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let params = [p("shape", dims.join("x")), p("from", from), p("to", to)];
    let spec = CastSpec { shape: shape.to_vec(), from, to };
    make("cast", &params, format!("{from}->{to}"), Spec::Cast(spec))
}

fn topk(r: usize, n: usize, k: usize, x: DType) -> Case {
    let params = [p("r", r), p("n", n), p("k", k), p("x", x)];
    make("topk", &params, format!("x={x}"), Spec::TopK(TopKSpec { r, n, k, x }))
}

pub(crate) fn sample(r: usize, v: usize, x: DType, temperature: f32, top_p: f32, sample_seed: u64) -> Case {
    let params = [
        p("r", r),
        p("v", v),
        p("x", x),
        p("temperature", temperature),
        p("top_p", top_p),
        p("seed", sample_seed),
    ];
    let spec = SampleSpec { r, v, x, temperature, top_p, sample_seed, per_row: None };
    make("sample", &params, format!("x={x}"), Spec::Sample(spec))
}

/// Sampling with each row's own parameters (the op's `row_params`): rows of a server's batch, a greedy
/// one among them, a narrow and a full nucleus, two with one seed (their draws must still follow their
/// own logits), cycled over `r` rows with the row's index mixed into the seed.
pub fn sample_per_row(r: usize, v: usize, x: DType, sample_seed: u64) -> Case {
    let kinds = [(0.8, 0.9), (0.0, 1.0), (1.3, 0.5), (0.6, 1.0), (0.8, 0.9)];
    let rows: Vec<RowSampling> = (0..r)
        .map(|i| {
            let (temperature, top_p) = kinds[i % kinds.len()];
            // Rows 0 and 4 share a seed: the key is the seed, not the row.
            let seed = sample_seed.wrapping_mul(31).wrapping_add((i % 4) as u64);
            RowSampling { temperature, top_p, seed }
        })
        .collect();
    let params = [p("r", r), p("v", v), p("x", x), p("row_params", "mixed"), p("seed", sample_seed)];
    let spec = SampleSpec { r, v, x, temperature: 1.0, top_p: 1.0, sample_seed, per_row: Some(rows) };
    make("sample", &params, format!("x={x},per-row"), Spec::Sample(spec))
}

fn small_rope(dim: usize) -> RopeParams {
    RopeParams { dim, theta: 10000.0, yarn: None }
}

/// Small and edge shapes for every op; seconds in a dev build.
pub fn quick() -> Vec<Case> {
    let mut c = Vec::new();

    // gemm: every A × B × C combination, at M = 1 with a partial N block (200 = 128 + 72) over whole
    // K blocks, and at M = 7 with partial N and K blocks (130, 200).
    for a in [A_F32, A_BF16, FP8, FP8_UE8M0] {
        for b in [A_F32, A_BF16, FP8, FP8_UE8M0] {
            for out in [F32, BF16] {
                c.push(gemm(1, 200, 384, a, b, out));
                c.push(gemm(7, 130, 200, a, b, out));
            }
        }
    }
    // The other FP8 formats (AMD's fnuz, e5m2), A and B in the same format.
    for f in [E4M3Fnuz, E5M2] {
        for s in [ScaleStore::F32, ScaleStore::Ue8m0] {
            c.push(gemm(3, 200, 384, Operand::Fp8(f, s), Operand::Fp8(f, s), BF16));
        }
    }
    c.push(gemm(17, 33, 1, A_F32, A_F32, F32)); // K = 1
    c.push(gemm(33, 257, 129, A_BF16, A_BF16, F32)); // odd tile edges everywhere
    c.push(gemm(64, 576, 256, A_BF16, FP8, BF16)); // kv_a_proj_with_mqa's 576 rows (4.5 blocks), K scaled down
    c.push(gemm(64, 576, 256, FP8, FP8, BF16));
    c.push(gemm_strided(5, 96, 160, A_BF16, A_BF16, F32, 200, 100)); // strided A and C rows
    c.push(gemm_strided(5, 96, 160, FP8, FP8, BF16, 192, 104));
    c.push(gemm(16, 72, 300, FP8, FP8, BF16)); // 16 decode rows (GPU: the largest decode row bucket)

    // grouped_gemm: empty experts, all tokens to one expert, a single row.
    let uneven = [3, 0, 7, 0, 2];
    c.push(grouped_gemm(&uneven, 72, 160, A_BF16, FP8, BF16, "uneven"));
    c.push(grouped_gemm(&uneven, 72, 160, FP8, FP8, F32, "uneven"));
    c.push(grouped_gemm(&uneven, 72, 160, FP8_UE8M0, FP8_UE8M0, BF16, "uneven"));
    c.push(grouped_gemm(&uneven, 72, 160, A_F32, A_BF16, F32, "uneven"));
    c.push(grouped_gemm(&uneven, 72, 160, A_BF16, A_BF16, BF16, "uneven"));
    c.push(grouped_gemm(&[0, 0, 9], 40, 300, A_BF16, FP8, F32, "all_to_2"));
    c.push(grouped_gemm(&[9, 0, 0], 40, 300, FP8, FP8, BF16, "all_to_0"));
    c.push(grouped_gemm(&[1], 200, 384, FP8_UE8M0, FP8_UE8M0, BF16, "one_row"));
    c.push(grouped_gemm(&[1, 2, 0, 3, 1, 1], 72, 256, FP8, FP8, BF16, "rows_1_3")); // decode: few rows each

    // batched_gemm: absorbed MLA's per-head layout at decode (M = 1) and prefill sizes, every dtype pair,
    // one shared b, a single batch, K = 1, and tile edges (N, K not multiples of anything).
    c.push(batched_gemm(4, 1, 40, 72, BF16, BF16, BF16, "heads"));
    c.push(batched_gemm(4, 3, 40, 72, F32, BF16, F32, "heads"));
    c.push(batched_gemm(3, 33, 65, 130, BF16, BF16, F32, "heads"));
    c.push(batched_gemm(5, 2, 24, 48, F32, F32, BF16, "contiguous"));
    c.push(batched_gemm(3, 4, 24, 40, BF16, F32, BF16, "shared_b"));
    c.push(batched_gemm(1, 1, 200, 384, BF16, BF16, BF16, "contiguous"));
    c.push(batched_gemm(6, 5, 17, 1, F32, F32, F32, "heads"));

    // act_quant: every format, f32 and power-of-two scales, stored as f32 or ue8m0; K = 200 (partial group).
    for x in [F32, BF16] {
        for f in [E4M3Fn, E4M3Fnuz, E5M2] {
            c.push(act_quant(4, 200, x, f, ScaleFormat::F32, F32));
            c.push(act_quant(4, 200, x, f, ScaleFormat::Ue8m0, Ue8m0));
        }
    }
    c.push(act_quant(3, 300, BF16, E4M3Fn, ScaleFormat::Ue8m0, F32));
    c.push(act_quant(1, 128, F32, E4M3Fn, ScaleFormat::F32, F32));

    // dequantize: partial blocks, stacked experts, every format and scale storage.
    c.push(dequantize(&[200, 384], E4M3Fn, ScaleStore::F32, F32));
    c.push(dequantize(&[200, 384], E4M3Fn, ScaleStore::F32, BF16));
    c.push(dequantize(&[200, 384], E4M3Fn, ScaleStore::Ue8m0, F32));
    c.push(dequantize(&[3, 130, 200], E4M3Fnuz, ScaleStore::F32, BF16));
    c.push(dequantize(&[130, 129], E5M2, ScaleStore::F32, F32));

    // moe_route: V3 noaux_tc (two group sizes), V2 greedy and group-limited greedy.
    c.push(v3_route(5, 32, 4, 2, 4));
    c.push(v3_route(3, 16, 8, 4, 6));
    c.push(route(
        "v2_greedy",
        4,
        64,
        RouteConfig {
            scoring: Scoring::Softmax,
            method: TopkMethod::Greedy,
            n_group: 1,
            topk_group: 1,
            top_k: 6,
            norm_topk_prob: false,
            routed_scaling_factor: 1.0,
        },
    ));
    c.push(route(
        "v2_group_limited",
        4,
        32,
        RouteConfig {
            scoring: Scoring::Softmax,
            method: TopkMethod::GroupLimitedGreedy,
            n_group: 8,
            topk_group: 3,
            top_k: 6,
            norm_topk_prob: false,
            routed_scaling_factor: 16.0,
        },
    ));

    // moe_dispatch / moe_combine.
    c.push(dispatch(5, 72, 3, 8, F32, IdPattern::Random));
    c.push(dispatch(6, 40, 2, 9, BF16, IdPattern::EvenOnly));
    c.push(dispatch(7, 24, 1, 4, F32, IdPattern::One(2)));
    c.push(combine(5, 3, 72, F32, F32));
    c.push(combine(5, 3, 72, BF16, BF16));
    c.push(combine(1, 8, 200, BF16, F32));

    // mla_attention: decode (T = 1) and prefill with a position offset (kv_len > T), B = 2 with
    // different lengths, rows past each length poisoned; small latent dims and V3's 512 + 64.
    for (dt, out) in [(F32, F32), (BF16, BF16)] {
        c.push(mla(2, 1, 3, 32, 16, 37, &[37, 20], true, dt, out));
        c.push(mla(2, 5, 3, 32, 16, 24, &[24, 9], true, dt, out));
    }
    c.push(mla(1, 6, 2, 32, 16, 8, &[6], true, BF16, F32)); // prefill from position 0
                                                            // cache_append: decode rows at the first, a middle and the last position; a prefill chunk at the
                                                            // start and one ending at the capacity.
    c.push(cache_append(3, 1, 9, 40, &[1, 5, 9], BF16));
    c.push(cache_append(2, 4, 11, 24, &[4, 11], F32));
    c.push(cache_append(1, 1, 1, 576, &[1], BF16));
    c.push(mla(2, 4, 2, 32, 16, 12, &[10, 4], false, F32, F32)); // non-causal
    c.push(mla(2, 1, 2, 512, 64, 19, &[19, 5], true, BF16, BF16)); // V3 head dims
                                                                   // Paged caches: pages shuffled through a pool, the first two sequences sharing their first page,
                                                                   // block table entries past each length −1. Decode with a partial last page; a prefill chunk over
                                                                   // pages of 4 (chunks of keys cross pages); V3's dims in the server's 64-token pages.
    c.push(mla_paged(3, 1, 3, 32, 16, 40, &[37, 20, 9], BF16, 8));
    c.push(mla_paged(2, 5, 2, 32, 16, 24, &[24, 17], F32, 4));
    c.push(mla_paged(2, 1, 2, 512, 64, 130, &[130, 70], BF16, 64));
    c.push(cache_append_paged(3, 1, 24, 40, &[17, 13, 1], BF16, 8));
    c.push(cache_append_paged(2, 4, 16, 24, &[16, 9], F32, 4));

    // mha_attention.
    for (dt, out) in [(F32, F32), (BF16, BF16)] {
        c.push(mha(2, 1, 2, 24, 16, 21, &[21, 7], true, dt, out));
        c.push(mha(2, 4, 2, 24, 16, 12, &[12, 4], true, dt, out));
    }
    c.push(mha(1, 3, 2, 192, 128, 9, &[9], true, BF16, BF16)); // V3 naive head dims

    // Row-wise ops.
    c.push(rms_norm(3, 200, F32, F32, F32));
    c.push(rms_norm(3, 200, BF16, BF16, BF16));
    c.push(rms_norm(2, 512, BF16, F32, F32));
    c.push(rms_norm(1, 7, F32, BF16, BF16));
    c.push(rope(6, 3, v3_rope(), F32, F32, 8192, 0));
    c.push(rope(6, 3, v3_rope(), BF16, BF16, 8192, 0));
    c.push(rope(5, 2, v3_rope(), BF16, F32, 163840, 192)); // q_pe as a view into q, V3 max position
    c.push(rope(4, 1, small_rope(16), F32, F32, 4096, 0));
    c.push(silu_mul(3, 200, F32, F32, 2.0));
    c.push(silu_mul(3, 200, BF16, BF16, 2.0));
    c.push(silu_mul(1, 1, F32, F32, 4.0));
    c.push(add(3, 200, F32, F32, F32));
    c.push(add(3, 200, BF16, BF16, BF16));
    c.push(add(2, 33, BF16, F32, F32));
    c.push(embedding(100, 72, 7, F32, F32));
    c.push(embedding(100, 72, 7, BF16, BF16));
    c.push(embedding(100, 72, 7, BF16, F32));
    c.push(softmax(4, 129, F32, F32));
    c.push(softmax(4, 129, BF16, BF16));
    c.push(softmax(2, 1, F32, F32));

    // cast.
    for (from, to) in [
        (F32, BF16),
        (F32, F16),
        (F32, F8E4M3Fn),
        (F32, F8E4M3Fnuz),
        (F32, F8E5M2),
        (BF16, F32),
        (BF16, F8E4M3Fn),
        (F16, F32),
        (F8E4M3Fn, F32),
        (F8E4M3Fnuz, BF16),
        (F8E5M2, F32),
    ] {
        c.push(cast(&[3, 200], from, to));
    }

    // Choosing tokens.
    c.push(argmax(4, 1000, F32));
    c.push(argmax(4, 1000, BF16)); // bf16 repeats values: ties to the lowest index
    c.push(argmax(3, 1, F32));
    c.push(topk(3, 500, 8, F32));
    c.push(topk(3, 500, 8, BF16));
    c.push(topk(2, 8, 8, F32)); // k = n
    c.push(sample(4, 1000, F32, 0.0, 1.0, 1));
    c.push(sample(4, 1000, F32, 0.8, 0.9, 2));
    c.push(sample(4, 1000, BF16, 0.8, 0.9, 3));
    c.push(sample(3, 777, F32, 1.0, 1.0, 4));
    c.push(sample_per_row(5, 1000, BF16, 7));
    c
}

/// [`quick`] plus DeepSeek-V3's real per-layer shapes. Run it in a release build.
pub fn full() -> Vec<Case> {
    let mut c = quick();
    // gemm: (N, K) of q_a, q_b, kv_a_proj_with_mqa, o_proj, fused q_a + kv_a, and the dense MLP's gate.
    let shapes = [(1536, 7168), (24576, 1536), (576, 7168), (7168, 16384), (2112, 7168), (18432, 7168)];
    for (n, k) in shapes {
        c.push(gemm(4, n, k, A_BF16, FP8, BF16));
        c.push(gemm(4, n, k, FP8, FP8, BF16));
    }
    // M = 128 (prefill chunk) on the four cheaper shapes; the two largest stay at M = 4 so the oracle
    // finishes in minutes.
    for (n, k) in [(1536, 7168), (576, 7168), (2112, 7168), (24576, 1536)] {
        c.push(gemm(128, n, k, FP8, FP8, BF16));
    }
    c.push(gemm(128, 2112, 7168, FP8_UE8M0, FP8_UE8M0, BF16));
    // bf16 activations at a prefill chunk (the bf16 path's prefill; the CPU's AMX / vdpbf16ps kernels)
    // over V3's K: block-FP8 weights (scales per 128-wide K block) and bf16 weights.
    c.push(gemm(128, 2112, 7168, A_BF16, FP8, BF16));
    c.push(gemm(128, 1536, 7168, A_BF16, A_BF16, F32));

    // grouped_gemm: a routed expert's real shape (N = 2048, K = 7168) for 64 tokens × top-8 = 512 rows.
    // The rows go to 32 experts (some empty): the full 256-expert stack is 3.8 GB of FP8 and 30 GB as
    // the oracle's f64, more than the machines running this hold.
    let mut counts = vec![0usize; 32];
    for i in 0..512usize {
        counts[(i * 7 + i / 5) % 29] += 1; // uneven, experts 29..32 empty
    }
    c.push(grouped_gemm(&counts, 2048, 7168, FP8, FP8, BF16, "64x8"));
    // A decode batch: 32 tokens × top-8 of 64 experts (256 rows, 4 per expert on average: GPU backends'
    // 16-row tensor-core tile), each token's experts distinct, experts 7, 23, 39, 55 empty between full
    // ones; the down projection's K (2048) with N cut to 256 so that the emulators finish in seconds.
    let mut decode = vec![0usize; 64];
    for t in 0..32usize {
        let mut picked = [usize::MAX; 8];
        let mut e = (t * 29) % 64;
        for slot in 0..8 {
            while picked.contains(&e) || e % 16 == 7 {
                e = (e * 5 + 17) % 64;
            }
            picked[slot] = e;
            decode[e] += 1;
            e = (e * 5 + 17) % 64;
        }
    }
    c.push(grouped_gemm(&decode, 256, 2048, FP8, FP8, BF16, "32x8_of_64"));
    c.push(grouped_gemm(&decode, 256, 2048, A_BF16, FP8, BF16, "32x8_of_64"));
    c.push(grouped_gemm(
        &[8, 0, 0, 0, 0, 0, 0, 0],
        7168,
        2048,
        A_BF16,
        FP8,
        BF16,
        "down_8_tokens_one_expert",
    ));
    // MI300's W8A8: e4m3fnuz activations and weights (the loader converts weights to it on such a device;
    // AMD's tensor-core path, gfx94x's FP8 MFMA), scales per 128 block, at kv_a_proj's shape for a prefill
    // chunk, the decode batch above and expert tiles of 64 rows (K = 2048, N cut to 256).
    c.push(gemm(128, 576, 7168, FNUZ, FNUZ, BF16));
    c.push(grouped_gemm(&decode, 256, 2048, FNUZ, FNUZ, BF16, "32x8_of_64"));
    c.push(grouped_gemm(&[70, 0, 130, 56], 256, 2048, FNUZ, FNUZ, BF16, "prefill_4_experts"));
    c.push(grouped_gemm(&[70, 0, 130, 56], 256, 2048, A_BF16, FNUZ, BF16, "prefill_4_experts"));

    // batched_gemm: DeepSeek-V3's absorbed products over 128 heads, W_UK (N = 512, K = 128) and W_UV
    // (N = 128, K = 512), at decode (4 tokens) and a prefill chunk (64 tokens).
    for m in [4, 64] {
        c.push(batched_gemm(128, m, 512, 128, BF16, BF16, BF16, "heads"));
        c.push(batched_gemm(128, m, 128, 512, BF16, BF16, BF16, "heads"));
    }

    c.push(act_quant(128, 7168, BF16, E4M3Fn, ScaleFormat::F32, F32));
    c.push(act_quant(128, 7168, BF16, E4M3Fn, ScaleFormat::Ue8m0, Ue8m0));
    c.push(dequantize(&[576, 7168], E4M3Fn, ScaleStore::F32, BF16));

    c.push(v3_route(64, 256, 8, 4, 8));
    c.push(dispatch(64, 7168, 8, 256, BF16, IdPattern::Random));
    c.push(combine(64, 8, 7168, BF16, BF16));

    // MLA with V3's dimensions: 128 heads, 512 + 64, decode over 4k (B = 2, different lengths), prefill.
    c.push(mla(2, 1, 128, 512, 64, 4096, &[4096, 3001], true, BF16, BF16));
    c.push(mla(1, 128, 128, 512, 64, 128, &[128], true, BF16, BF16));
    // cache_append: V3's latent width (512 + 64) for a decode batch over a 4K cache.
    c.push(cache_append(8, 1, 4096, 576, &[4096, 1, 3001, 17, 2048, 4095, 512, 9], BF16));
    c.push(mla_paged(2, 1, 128, 512, 64, 4096, &[4096, 3001], BF16, 64));
    c.push(cache_append_paged(8, 1, 4096, 576, &[4096, 1, 3001, 17, 2048, 4095, 512, 9], BF16, 64));
    c.push(mha(1, 128, 128, 192, 128, 128, &[128], true, BF16, BF16));

    c.push(rms_norm(64, 7168, BF16, BF16, BF16));
    c.push(rms_norm(64, 1536, BF16, BF16, BF16));
    c.push(rms_norm(64, 512, BF16, BF16, BF16));
    c.push(rope(128, 128, v3_rope(), BF16, BF16, 163840, 192));
    c.push(rope(128, 1, v3_rope(), BF16, BF16, 163840, 0));
    c.push(silu_mul(64, 18432, BF16, BF16, 2.0));
    c.push(silu_mul(512, 2048, BF16, BF16, 2.0));
    c.push(add(64, 7168, BF16, BF16, BF16));
    c.push(add(64, 7168, F32, F32, F32));
    c.push(embedding(129280, 7168, 64, BF16, BF16));
    c.push(softmax(4, 129280, F32, F32));
    c.push(cast(&[64, 7168], F32, BF16));
    c.push(cast(&[64, 7168], BF16, F8E4M3Fn));
    c.push(argmax(4, 129280, F32));
    c.push(topk(64, 256, 8, F32));
    c.push(topk(4, 129280, 8, F32)); // the vocabulary: GPUs spread each row over many blocks
    c.push(sample(4, 129280, F32, 0.8, 0.9, 5));
    c.push(sample(4, 129280, F32, 0.0, 1.0, 6));
    c.push(sample_per_row(5, 129280, F32, 8)); // long rows: GPUs' split path, a greedy row in it
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_covers_every_op_with_unique_names() {
        let q = quick();
        for op in dsv3_core::ops::OP_NAMES {
            assert!(q.iter().any(|c| c.op == *op), "no quick case for {op}");
        }
        let mut names: Vec<&str> = q.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate case names");
        let f = full();
        let mut names: Vec<&str> = f.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "duplicate case names in full");
    }
}
