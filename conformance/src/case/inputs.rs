//! A case's inputs, generated on the host from its seed.

use super::{Case, CastSpec, IdPattern, Inputs, Operand, Spec};
use crate::gen::{self, derive, normals, HostTensor, Rng};
use dsv3_core::fp8::Fp8Format;
use dsv3_core::ops::{RowSampling, TopkMethod};
use dsv3_core::DType;

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

/// Rows of attention caches at or past a sequence's length hold NaN: the contract says they are ignored,
/// so a kernel that reads one anyway turns its output into NaN, which fails the case.
const POISON: f64 = f64::NAN;

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
            Spec::BatchedGemm(g) => {
                let a = normals(g.batch * g.m * g.k, derive(s, 1), 1.0);
                let a = HostTensor::from_f64(g.a, &[g.batch, g.m, g.k], &a);
                inp.push("a", a.restrided(&g.a_strides()));
                let stored = if g.shared_b { 1 } else { g.batch };
                let b = normals(stored * g.n * g.k, derive(s, 2), 1.0 / (g.k as f64).sqrt());
                let b = HostTensor::from_f64(g.b, &[stored, g.n, g.k], &b);
                let b = if g.shared_b {
                    HostTensor { shape: vec![g.batch, g.n, g.k], strides: g.b_strides(), ..b }
                } else {
                    b
                };
                inp.push("b", b);
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
                if a.page > 0 {
                    // The first two sequences share their first page when both hold it whole.
                    let share = a.kv_lens.len() >= 2 && a.kv_lens[..2].iter().all(|&n| n >= a.page);
                    let (pool, table) =
                        paged_cache(a.dtype, &a.kv_lens, a.l, a.d1 + a.d2, a.page, share, true, derive(s, 3));
                    inp.push("kv_cache", pool);
                    inp.push("block_table", table);
                } else {
                    inp.push("kv_cache", cache(a.dtype, a.b, a.l, 1, a.d1 + a.d2, &a.kv_lens, derive(s, 3)));
                }
                inp.push("kv_lens", lens(&a.kv_lens));
            }
            Spec::MhaAttention(a) => {
                inp.push("q", dense(a.dtype, &[a.b, a.t, a.h, a.d1], derive(s, 1), 1.0));
                inp.push("k", cache(a.dtype, a.b, a.l, a.h, a.d1, &a.kv_lens, derive(s, 2)));
                inp.push("v", cache(a.dtype, a.b, a.l, a.h, a.d2, &a.kv_lens, derive(s, 3)));
                inp.push("kv_lens", lens(&a.kv_lens));
            }
            Spec::CacheAppend(a) => {
                inp.push("rows", dense(a.dtype, &[a.b, a.t, a.w], derive(s, 1), 1.0));
                inp.push("kv_lens", lens(&a.kv_lens));
                // What the cache holds before: every position the op does not name must keep it.
                if a.page > 0 {
                    // A shared first page is read-only: only where neither sequence writes into it.
                    let share = a.kv_lens.len() >= 2 && a.kv_lens[..2].iter().all(|&n| n >= a.page + a.t);
                    let (pool, table) =
                        paged_cache(a.dtype, &a.kv_lens, a.l, a.w, a.page, share, false, derive(s, 2));
                    inp.push("cache", pool);
                    inp.push("block_table", table);
                } else {
                    inp.push("cache", dense(a.dtype, &[a.b, a.l, a.w], derive(s, 2), 1.0));
                }
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
            Spec::Sample(t) => {
                inp.push("logits", dense(t.x, &[t.r, t.v], derive(s, 1), 3.0));
                if let Some(rows) = &t.per_row {
                    inp.push(
                        "row_params",
                        HostTensor::from_i32(&[t.r, RowSampling::WORDS], &RowSampling::encode(rows)),
                    );
                }
            }
        }
        inp
    }
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

/// A page pool and block table for sequences of `lens` positions (at most `l` each), rows `w` wide, pages
/// of `page` positions: every sequence's pages shuffled through a pool with two spare pages, its block
/// table naming them in order and −1 past its length (never read). With `share`, the second sequence's
/// first page is the first sequence's (a shared prefix; its own first page is left unused). With
/// `poison`, rows that hold no position below a sequence's length are NaN (attention must not read them).
#[allow(clippy::too_many_arguments)]
fn paged_cache(
    dtype: DType,
    lens: &[usize],
    l: usize,
    w: usize,
    page: usize,
    share: bool,
    poison: bool,
    seed: u64,
) -> (HostTensor, HostTensor) {
    let per_seq = l.div_ceil(page);
    let pool = lens.len() * per_seq + 2;
    let order = Rng::new(derive(seed, 1)).permutation(pool);
    let mut table: Vec<i32> = vec![-1; lens.len() * per_seq];
    for (b, &len) in lens.iter().enumerate() {
        for j in 0..len.div_ceil(page) {
            table[b * per_seq + j] = order[b * per_seq + j] as i32;
        }
    }
    if share {
        table[per_seq] = table[0];
    }
    let mut v = normals(pool * page * w, seed, 1.0);
    if poison {
        let mut live = vec![false; pool * page];
        for (b, &len) in lens.iter().enumerate() {
            for u in 0..len {
                live[table[b * per_seq + u / page] as usize * page + u % page] = true;
            }
        }
        for (row, _) in live.iter().enumerate().filter(|(_, &live)| !live) {
            v[row * w..(row + 1) * w].iter_mut().for_each(|x| *x = POISON);
        }
    }
    (HostTensor::from_f64(dtype, &[pool, page, w], &v), HostTensor::from_i32(&[lens.len(), per_seq], &table))
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
