//! The model-level oracle: a fixture checkpoint with logits from HuggingFace transformers (float32, eager),
//! run through the same loading code a user's checkpoint takes, on any device, on any numeric path.
//! Used by the tests (every backend) and by `dsv3 golden` (the GPU device checks).
//!
//! Bounds, per path:
//! * f32: max |Δ| ≤ 1e-3 and relative L2 ≤ 1e-4 (the project's requirement; f32 accumulation-order noise
//!   is ~1e-6 here), greedy ids identical.
//! * bf16 and W8A8: every rounding to a low-precision format on the path from embedding to logits adds a
//!   relative error of at most the format's unit roundoff u (bf16: 2⁻⁸, e4m3: 2⁻⁴). Assuming those errors
//!   are independent and neither amplified nor damped across a layer (RMSNorm renormalises the residual
//!   stream), they add as a random walk: rel L2 ≤ sqrt(Σ u²) over the roundings, counted per layer in
//!   [`roundings`]. A Gaussian error of that RMS stays below 6σ over ≤ 10⁶ logits, so max |Δ| ≤ 6 · rel ·
//!   rms(reference logits). Greedy ids must match for bf16. W8A8 quantizes every projection's input to
//!   e4m3 (~2.5 % per GEMM, measured) while the fixtures' smallest routing margin is 2e-3: expert choices
//!   flip, the error is not Gaussian, so only the rel L2 bound holds and greedy ids are reported, not
//!   required.
//! * Routing flips, on every low-precision path: a token whose expert choice has a margin below the
//!   path's noise may pick another expert than the float32 run — a correct implementation's behaviour,
//!   not an error the random-walk bound describes (on an FP8 V3-style checkpoint such rows reach 16–25 %
//!   relative error while the others stay near 1 %; transformers' own bf16 run shows the same). So the
//!   fixture also runs the f32 path on the same device, compares every logit row's routing (each MoE
//!   layer's chosen experts), and reports the rows where it differs with their own error; those rows are
//!   left out of the bounds and of the greedy comparison, every other row is held to the bound.

use std::path::Path;
use std::sync::Arc;

use dsv3_core::{Device, Error, Result};

use crate::cache::KvCache;
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::graph::{Logits, Model, NumericPath};
use crate::placement::Rules;

/// Agreement of computed logits with the reference.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Diff {
    pub max_abs: f64,
    pub rel_l2: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    pub max_abs: Option<f64>,
    pub rel_l2: f64,
    pub greedy_required: bool,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub fixture: String,
    pub backend: String,
    pub path: NumericPath,
    pub numerics: String,
    pub prefill: Diff,
    pub decode: Diff,
    pub prompt_len: usize,
    pub greedy_expected: Vec<u32>,
    pub greedy_got: Vec<u32>,
    pub bound: Bound,
    /// Low-precision paths: the logit rows (prefill positions 0..T, then decode steps T..T+N) whose MoE
    /// routing differs from the f32 path's on the same device, with each row's relative L2 error. They
    /// are reported and left out of `prefill` / `decode` and of the greedy comparison (see the module docs).
    pub excused: Vec<(usize, f64)>,
}

impl Report {
    pub fn within(&self, d: &Diff) -> bool {
        d.rel_l2 <= self.bound.rel_l2 && self.bound.max_abs.is_none_or(|m| d.max_abs <= m)
    }

    /// Greedy ids agree wherever the row they are chosen from is not excused (step 0 reads the last
    /// prefill row, step i the decode row i − 1).
    pub fn greedy_match(&self) -> bool {
        let t = self.prompt_len;
        let excused = |row: usize| self.excused.iter().any(|&(r, _)| r == row);
        self.greedy_expected.len() == self.greedy_got.len()
            && (0..self.greedy_got.len()).all(|i| {
                self.greedy_expected[i] == self.greedy_got[i]
                    || excused(if i == 0 { t - 1 } else { t + i - 1 })
            })
    }

    pub fn pass(&self) -> bool {
        self.within(&self.prefill)
            && self.within(&self.decode)
            && (self.greedy_match() || !self.bound.greedy_required)
    }

    pub fn line(&self) -> String {
        let show = |d: &Diff| format!("max|Δ| {:.2e} relL2 {:.2e}", d.max_abs, d.rel_l2);
        let max = self.bound.max_abs.map_or("—".to_string(), |m| format!("{m:.2e}"));
        format!(
            "{:<5} {:<16} {:<8} {:<6} prefill {} | decode {} | bound max {} rel {:.2e} | greedy {}{}",
            if self.pass() { "pass" } else { "FAIL" },
            self.fixture,
            self.backend,
            format!("{:?}", self.path).to_lowercase(),
            show(&self.prefill),
            show(&self.decode),
            max,
            self.bound.rel_l2,
            if self.greedy_match() { "identical" } else { "DIFFER" },
            if self.greedy_match() || self.bound.greedy_required {
                ""
            } else {
                " (not required on this path)"
            },
        ) + &self.excused_note()
    }

    fn excused_note(&self) -> String {
        if self.excused.is_empty() {
            return String::new();
        }
        let rows: Vec<String> = self.excused.iter().map(|(r, e)| format!("{r} ({e:.1e})")).collect();
        format!(" | routing differs from f32 on {} row(s), excused: {}", self.excused.len(), rows.join(", "))
    }
}

/// Low-precision roundings on the path from embedding to logits, by format: (bf16, e4m3).
pub fn roundings(cfg: &ModelConfig, path: NumericPath) -> (usize, usize) {
    if path == NumericPath::F32 {
        return (0, 0);
    }
    let q_lora = cfg.q_lora_rank.is_some() as usize;
    let mut bf16 = 1; // embedding output
    let mut e4m3 = 0;
    for layer in 0..cfg.num_hidden_layers {
        // attn norm, [q_a, q_a norm], q, kv_a, cached c_kv and k_pe, q_pe, q̃, attention, W_UK/W_UV weights,
        // W_UV output, o_proj, residual add, ffn norm
        bf16 += 1 + 2 * q_lora + 1 + 1 + 2 + 1 + 1 + 1 + 2 + 1 + 1 + 1 + 1;
        // projections whose inputs W8A8 quantizes: [q_a, q_b] or q, kv_a, o_proj
        let mut quantized = 2 * q_lora + (1 - q_lora) + 1 + 1;
        // gate and up, SiLU·up, down, residual add; MoE adds expert combine and the shared-expert add
        match cfg.moe.filter(|_| cfg.is_moe_layer(layer)) {
            None => bf16 += 4,
            Some(_) => bf16 += 6,
        }
        quantized += 2; // the gate/up input and the down input (routed and shared experts in parallel)
        if path == NumericPath::W8A8 {
            e4m3 += quantized;
        }
    }
    (bf16 + 1, e4m3) // final norm
}

pub fn bound(cfg: &ModelConfig, path: NumericPath, reference_rms: f64) -> Bound {
    if path == NumericPath::F32 {
        return Bound { max_abs: Some(1e-3), rel_l2: 1e-4, greedy_required: true };
    }
    let (bf16, e4m3) = roundings(cfg, path);
    let rel_l2 = (bf16 as f64 * 2f64.powi(-16) + e4m3 as f64 * 2f64.powi(-8)).sqrt();
    let gaussian = path == NumericPath::Bf16;
    Bound { max_abs: gaussian.then_some(6.0 * rel_l2 * reference_rms), rel_l2, greedy_required: gaussian }
}

fn compare(got: &[f32], want: &[f32], diff: &mut (f64, f64, f64)) {
    for (a, b) in got.iter().zip(want) {
        let d = (*a as f64 - *b as f64).abs();
        diff.0 = diff.0.max(d);
        diff.1 += d * d;
        diff.2 += (*b as f64) * (*b as f64);
    }
}

fn finish(d: (f64, f64, f64)) -> Diff {
    Diff { max_abs: d.0, rel_l2: (d.1 / d.2).sqrt() }
}

fn golden_tensor<T: Copy>(
    file: &Path,
    st: &safetensors::SafeTensors,
    name: &str,
    dtype: safetensors::Dtype,
    shape: &[Option<usize>],
    read: fn(&[u8]) -> T,
) -> Result<Vec<T>> {
    let err = |reason: String| Error::Data { file: file.display().to_string(), field: name.into(), reason };
    let t = st.tensor(name).map_err(|e| err(e.to_string()))?;
    if t.dtype() != dtype {
        return Err(err(format!("expected {dtype:?}, got {:?}", t.dtype())));
    }
    // `None` is a dimension of any size.
    let fits =
        t.shape().len() == shape.len() && t.shape().iter().zip(shape).all(|(&d, s)| s.is_none_or(|s| s == d));
    if !fits {
        let want: Vec<String> = shape.iter().map(|s| s.map_or("*".into(), |s| s.to_string())).collect();
        return Err(err(format!("shape {:?}, expected [{}]", t.shape(), want.join(", "))));
    }
    Ok(t.data().chunks_exact(dtype.bitsize() / 8).map(read).collect())
}

/// Downloads f32 logits.
pub fn download_f32(model: &Model, logits: &dsv3_core::Tensor) -> Result<Vec<f32>> {
    let mut host = vec![0u8; logits.span_bytes()];
    model.stream().download(&logits.buffer, logits.offset, &mut host)?;
    Ok(host.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] {
            best = i;
        }
    }
    best as u32
}

/// Runs the fixture in `dir` (config.json, model.safetensors, golden.safetensors) on `device`.
pub fn check(dir: &Path, device: Arc<dyn Device>, path: NumericPath) -> Result<Report> {
    let name = device.id().to_string();
    check_placed(dir, &Rules::default(), &name, &mut |_| Ok(device.clone()), path)
}

/// Runs the fixture with its parts placed by `rules` (the rest on `default`); `open` turns each device name
/// into a device, once per name.
pub fn check_placed(
    dir: &Path,
    rules: &Rules,
    default: &str,
    open: &mut dyn FnMut(&str) -> Result<Arc<dyn Device>>,
    path: NumericPath,
) -> Result<Report> {
    let cfg = ModelConfig::from_file(&dir.join("config.json"))?;
    let assignment = rules.assign(&cfg, default)?;
    let checkpoint = Checkpoint::open(dir)?;
    checkpoint.validate(&cfg, false)?;
    let golden_path = dir.join("golden.safetensors");
    let bytes = std::fs::read(&golden_path)
        .map_err(|source| Error::Io { context: format!("reading {}", golden_path.display()), source })?;
    let golden = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Data {
        file: golden_path.display().to_string(),
        field: "(header)".into(),
        reason: e.to_string(),
    })?;
    let v = cfg.vocab_size;
    // Token ids are stored as i64: each must be a row of the embedding (no `as u32` wrap-around).
    let ids = |name: &str| -> Result<Vec<u32>> {
        let values = golden_tensor(&golden_path, &golden, name, safetensors::Dtype::I64, &[None], |c| {
            i64::from_le_bytes(c.try_into().unwrap_or_default())
        })?;
        values
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                u32::try_from(x).ok().filter(|&id| (id as usize) < v).ok_or_else(|| Error::Data {
                    file: golden_path.display().to_string(),
                    field: name.into(),
                    reason: format!("element {i} is {x}, not a token id of the {v}-row vocabulary"),
                })
            })
            .collect()
    };
    let f32s = |name, rows| {
        golden_tensor(&golden_path, &golden, name, safetensors::Dtype::F32, &[Some(rows), Some(v)], |c| {
            f32::from_le_bytes(c.try_into().unwrap_or_default())
        })
    };
    let prompt = ids("prompt_ids")?;
    let greedy_expected = ids("greedy_ids")?;
    let steps = greedy_expected.len();
    let prefill_want = f32s("prefill_logits", prompt.len())?;
    let decode_want = f32s("decode_logits", steps)?;
    let reference_rms =
        (prefill_want.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / prefill_want.len() as f64).sqrt();
    // Low-precision paths: the f32 path's routing on the same devices is the yardstick for routing flips.
    let reference_routes = if path == NumericPath::F32 {
        None
    } else {
        let f32_model =
            Model::load_placed(cfg.clone(), &checkpoint, &assignment, open, NumericPath::F32, |_| {})?;
        Some(run(&f32_model, &prompt, &greedy_expected)?.routes)
    };
    let model = Model::load_placed(cfg.clone(), &checkpoint, &assignment, open, path, |_| {})?;
    let backend = match model.devices().as_slice() {
        [_] => model.device.info().backend.to_string(),
        several => several.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join("+"),
    };
    let got = run(&model, &prompt, &greedy_expected)?;
    let t = prompt.len();
    let flipped = |row: usize| reference_routes.as_ref().is_some_and(|r| r[row] != got.routes[row]);
    let mut excused = Vec::new();
    let mut diff = |rows: std::ops::Range<usize>, got_rows: &[f32], want: &[f32], first_row: usize| {
        let mut acc = (0.0, 0.0, 0.0);
        for r in rows {
            let (a, b) = (&got_rows[r * v..(r + 1) * v], &want[r * v..(r + 1) * v]);
            if flipped(first_row + r) {
                let mut own = (0.0, 0.0, 0.0);
                compare(a, b, &mut own);
                excused.push((first_row + r, finish(own).rel_l2));
            } else {
                compare(a, b, &mut acc);
            }
        }
        finish(acc)
    };
    let prefill_diff = diff(0..t, &got.prefill, &prefill_want, 0);
    let decode_diff = diff(0..steps, &got.decode, &decode_want, t);
    Ok(Report {
        fixture: dir
            .file_name()
            .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
        backend,
        path,
        numerics: model.describe_numerics(),
        prefill: prefill_diff,
        decode: decode_diff,
        prompt_len: t,
        greedy_expected,
        greedy_got: got.greedy,
        bound: bound(&cfg, path, reference_rms),
        excused,
    })
}

/// One run of a fixture: prefill logits `[T, V]`, decode logits `[N, V]`, our greedy choices, and each
/// logit row's routing (every MoE layer's chosen experts, sorted per layer, concatenated).
struct Run {
    prefill: Vec<f32>,
    decode: Vec<f32>,
    greedy: Vec<u32>,
    routes: Vec<Vec<i32>>,
}

/// Prefill, then greedy decoding: our own argmax picks each next token; the reference's token is fed
/// regardless, so every decode step is compared against the same reference context.
fn run(model: &Model, prompt: &[u32], reference_tokens: &[u32]) -> Result<Run> {
    let v = model.config.vocab_size;
    let mut cache = KvCache::new(model, 1, prompt.len() + reference_tokens.len())?;
    model.record_routes();
    let prefill = download_f32(model, &model.forward(&mut cache, prompt, prompt.len(), Logits::All)?)?;
    let mut routes = row_routes(model.take_routes(), prompt.len());
    let mut greedy = Vec::with_capacity(reference_tokens.len());
    let mut decode = Vec::with_capacity(reference_tokens.len() * v);
    let mut last = prefill[(prompt.len() - 1) * v..].to_vec();
    for &token in reference_tokens {
        greedy.push(argmax(&last));
        last = download_f32(model, &model.forward(&mut cache, &[token], 1, Logits::Last)?)?;
        decode.extend_from_slice(&last);
        routes.extend(row_routes(model.take_routes(), 1));
    }
    Ok(Run { prefill, decode, greedy, routes })
}

/// Per-row routing signatures from one forward pass's MoE layers (each `[rows, k]`).
fn row_routes(layers: Vec<Vec<i32>>, rows: usize) -> Vec<Vec<i32>> {
    (0..rows)
        .map(|r| {
            layers
                .iter()
                .flat_map(|ids| {
                    let k = ids.len() / rows;
                    let mut chosen = ids[r * k..(r + 1) * k].to_vec();
                    chosen.sort_unstable();
                    chosen
                })
                .collect()
        })
        .collect()
}
