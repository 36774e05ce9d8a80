//! Case files: op cases brought from outside — inputs, expected outputs and scalar parameters in one
//! safetensors file, written by PyTorch or any safetensors writer, in the format of
//! `conformance/fixtures/CASES.md` (`dsv3 op --cases FILE`).
//!
//! Each case becomes an ordinary [`Case`] (its [`Spec`] read from the tensors' shapes and dtypes and the
//! JSON parameters, its bound from the same tolerance table) with given [`Inputs`] and expected
//! [`Outputs`], so it runs and is compared exactly like a generated case — only the reference differs.
//! A file that does not follow the format is an [`Error::Data`] naming the file, the case and the tensor
//! or field, never a panic.
//!
//! Adding an op: one builder (read its tensors and scalars, check their shapes against each other, return
//! the [`Spec`]) and one line in [`OPS`].

use crate::case::{
    ActQuantSpec, AttentionSpec, BatchedGemmSpec, Case, EmbeddingSpec, GemmSpec, GroupedGemmSpec, Inputs,
    Operand, Output, Outputs, RmsNormSpec, RopeSpec, RouteSpec, RowsSpec, Spec, TopKSpec,
};
use crate::gen::{HostTensor, ScaleStore};
use crate::metrics::GuardReport;
use crate::report::Report;
use crate::runner::{run_given, Given, Options};
use dsv3_core::ops::gemm::blocks;
use dsv3_core::ops::{RouteConfig, ScaleFormat, Scoring, TopkMethod};
use dsv3_core::rope::{RopeParams, Yarn};
use dsv3_core::tensor::contiguous_strides;
use dsv3_core::{Backend, DType, Error, Result};
use safetensors::tensor::TensorView;
use safetensors::{Dtype as StDtype, SafeTensors};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The metadata key holding the format version, and the version this reader implements.
pub const VERSION_KEY: &str = "dsv3-op-cases";
pub const VERSION: &str = "1";

/// One case of a file, ready to run.
#[derive(Clone, Debug)]
pub struct FileCase {
    pub case: Case,
    pub inputs: Inputs,
    pub expected: Outputs,
    /// The case's free-text `note`.
    pub note: Option<String>,
}

impl FileCase {
    /// The case as the runner takes it.
    pub fn given(&self) -> Given<'_> {
        Given { case: &self.case, inputs: &self.inputs, expected: &self.expected }
    }
}

#[derive(Clone, Debug)]
pub struct CaseFile {
    /// Cases in name order.
    pub cases: Vec<FileCase>,
    /// The file's informative `reference` metadata (what computed the expected outputs).
    pub reference: Option<String>,
}

type Builder = fn(&mut Reader) -> Result<Spec>;

/// The ops a case file may name, by their `dsv3 conformance --op` names, with their builders.
const OPS: &[(&str, Builder)] = &[
    ("gemm", gemm),
    ("grouped_gemm", grouped_gemm),
    ("batched_gemm", batched_gemm),
    ("act_quant", act_quant),
    ("rms_norm", rms_norm),
    ("rope", rope),
    ("silu_mul", silu_mul),
    ("softmax", softmax),
    ("embedding", embedding),
    ("mla_attention", mla_attention),
    ("mha_attention", mha_attention),
    ("moe_route", moe_route),
    ("argmax", argmax),
    ("topk", topk),
];

/// The ops a case file may name.
pub fn op_names() -> Vec<&'static str> {
    OPS.iter().map(|(op, _)| *op).collect()
}

/// Case-JSON keys every op accepts besides its own parameters.
const COMMON_KEYS: &[&str] = &["op", "note", "fp8", "scale_format"];

/// PyTorch's cases for every op but sampling, shipped with this crate (see `fixtures/CASES.md`).
pub const TORCH_OP_CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/torch-op-cases.safetensors");

/// numpy's cases for the ops PyTorch's file does not cover (`fixtures/make_numpy_cases.py` writes it).
pub const NUMPY_OP_CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/numpy-op-cases.safetensors");

/// Every shipped case file whose expected outputs come from outside the project; together they cover
/// every op a case file can name.
pub const OUTSIDE_CASE_FILES: &[&str] = &[TORCH_OP_CASES, NUMPY_OP_CASES];

/// Runs every case of the case file at `path` on `backend` (test mode) and reports one row per case.
pub fn run_file(backend: &dyn Backend, path: &Path) -> Result<Report> {
    let file = read(path)?;
    let given: Vec<Given> = file.cases.iter().map(FileCase::given).collect();
    Ok(run_given(&[backend], &given, &Options::default()).0)
}

/// Reads a case file.
pub fn read(path: &Path) -> Result<CaseFile> {
    let bytes = std::fs::read(path)
        .map_err(|source| Error::Io { context: format!("reading case file {}", path.display()), source })?;
    parse(&bytes, &path.display().to_string())
}

fn data(file: &str, field: &str, reason: impl ToString) -> Error {
    Error::Data { file: file.into(), field: field.into(), reason: reason.to_string() }
}

/// Parses the bytes of a case file; `file` names it in errors.
pub fn parse(bytes: &[u8], file: &str) -> Result<CaseFile> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| data(file, "header", e))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| data(file, "header", e))?;
    let meta: HashMap<String, String> = header.metadata().clone().unwrap_or_default();
    match meta.get(VERSION_KEY).map(String::as_str) {
        Some(VERSION) => {}
        Some(v) => {
            return Err(data(
                file,
                VERSION_KEY,
                format!("format version {v:?}; this reader knows {VERSION:?}"),
            ))
        }
        None => return Err(data(file, VERSION_KEY, "missing from the metadata: not a dsv3 op case file")),
    }
    // Tensors by case, then by argument (`CASE.ARG`, `CASE.expect.ARG`).
    let mut by_case: BTreeMap<String, BTreeMap<String, TensorView>> = BTreeMap::new();
    for (name, view) in st.tensors() {
        let Some((case, arg)) = name.split_once('.') else {
            return Err(data(file, &name, "tensor name is not CASE.ARG"));
        };
        by_case.entry(case.to_string()).or_default().insert(arg.to_string(), view);
    }
    // Case entries: metadata values that are JSON objects; every tensor prefix must be one.
    let mut entries: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (key, value) in &meta {
        if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(value) {
            entries.insert(key.clone(), obj);
        } else if by_case.contains_key(key) {
            return Err(data(file, key, "the case's metadata entry is not a JSON object"));
        }
    }
    if let Some(case) = by_case.keys().find(|c| !entries.contains_key(*c)) {
        return Err(data(file, case, "tensors named after this case, but no metadata entry for it"));
    }
    let empty = BTreeMap::new();
    let mut cases = Vec::new();
    // Each case's op is built (without uploading) on the oracle and validated against the op's contract,
    // so what the builders do not check themselves (groups that do not divide the experts, a top-k past
    // the row, …) is an error here, naming the case, rather than a failing row later.
    let oracle = crate::runner::oracle()?;
    for (name, params) in &entries {
        let tensors = by_case.get(name).unwrap_or(&empty);
        let fc = read_case(file, name, params, tensors)?;
        fc.case
            .bind(&oracle, &fc.inputs, false)
            .and_then(|b| b.op.validate())
            .map_err(|e| data(file, name, e))?;
        cases.push(fc);
    }
    if cases.is_empty() {
        return Err(data(file, "__metadata__", "no cases"));
    }
    Ok(CaseFile { cases, reference: meta.get("reference").cloned() })
}

fn read_case(
    file: &str,
    name: &str,
    params: &Map<String, Value>,
    tensors: &BTreeMap<String, TensorView>,
) -> Result<FileCase> {
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(data(file, name, "case names are letters, digits, `_` and `-`"));
    }
    let op_name = match params.get("op") {
        Some(Value::String(op)) => op.as_str(),
        _ => return Err(data(file, &format!("{name}.op"), "missing or not a string")),
    };
    let Some(&(op, build)) = OPS.iter().find(|(o, _)| *o == op_name) else {
        let known = op_names().join(", ");
        return Err(data(
            file,
            &format!("{name}.op"),
            format!("unknown op `{op_name}` (case files know {known})"),
        ));
    };
    let mut r = Reader {
        file,
        case: name,
        params,
        tensors,
        used: Vec::new(),
        keys: Vec::new(),
        inputs: Inputs::default(),
        expected: Vec::new(),
    };
    let spec = build(&mut r)?;
    if let Some(arg) = tensors.keys().find(|a| !r.used.contains(a)) {
        return Err(r.err(arg, format!("not an argument of `{op}`")));
    }
    if let Some(key) = params.keys().find(|k| !COMMON_KEYS.contains(&k.as_str()) && !r.keys.contains(k)) {
        return Err(r.err(key, format!("not a parameter of `{op}`")));
    }
    let dtypes: Vec<String> = r
        .inputs
        .tensors
        .iter()
        .map(|(arg, t)| format!("{arg}={}", t.dtype))
        .chain(r.expected.iter().map(|o| format!("{}={}", o.arg, o.dtype)))
        .collect();
    let note = params.get("note").and_then(Value::as_str).map(str::to_string);
    let case = Case {
        op,
        name: name.to_string(),
        dtypes: dtypes.join(","),
        seed: 0,
        tolerance: spec.tolerance(),
        spec,
    };
    Ok(FileCase { case, inputs: r.inputs, expected: Outputs(r.expected), note })
}

/// What a tensor may hold.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// f32, bf16 or f16 values.
    Float,
    /// f32 only.
    F32,
    /// FP8 codes: F8_E4M3 (e4m3fn), F8_E5M2, or U8 with the case's `"fp8"` naming the format.
    Codes,
    /// A scale grid: F32, or U8 with `"scale_format": "ue8m0"`.
    Scales,
    I32,
}

/// Reads one case's tensors and parameters, recording what it used and what it built.
struct Reader<'a> {
    file: &'a str,
    case: &'a str,
    params: &'a Map<String, Value>,
    tensors: &'a BTreeMap<String, TensorView<'a>>,
    used: Vec<String>,
    keys: Vec<String>,
    inputs: Inputs,
    expected: Vec<Output>,
}

impl<'a> Reader<'a> {
    /// An error about `CASE.what` (a tensor's argument or a parameter).
    fn err(&self, what: &str, reason: impl ToString) -> Error {
        data(self.file, &format!("{}.{what}", self.case), reason)
    }

    fn has(&self, arg: &str) -> bool {
        self.tensors.contains_key(arg)
    }

    fn param(&mut self, key: &str) -> Result<&'a Value> {
        self.keys.push(key.to_string());
        let params = self.params;
        params.get(key).ok_or_else(|| self.err(key, "missing parameter"))
    }

    fn number(&mut self, key: &str) -> Result<f64> {
        let v = self.param(key)?;
        v.as_f64().ok_or_else(|| self.err(key, format!("expected a number, got {v}")))
    }

    fn count(&mut self, key: &str) -> Result<usize> {
        let v = self.param(key)?;
        v.as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| self.err(key, format!("expected a non-negative integer, got {v}")))
    }

    fn flag(&mut self, key: &str) -> Result<bool> {
        let v = self.param(key)?;
        v.as_bool().ok_or_else(|| self.err(key, format!("expected true or false, got {v}")))
    }

    fn word<T: Copy>(&mut self, key: &str, choices: &[(&str, T)]) -> Result<T> {
        let v = self.param(key)?;
        let found = v.as_str().and_then(|s| choices.iter().find(|(n, _)| *n == s));
        found.map(|(_, t)| *t).ok_or_else(|| {
            let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
            self.err(key, format!("expected one of {}, got {v}", names.join(", ")))
        })
    }

    /// The dsv3 dtype of tensor `key` as `kind` allows it.
    fn dtype(&self, key: &str, view: &TensorView, kind: Kind) -> Result<DType> {
        let format = |field: &str| self.params.get(field).and_then(Value::as_str);
        let got = view.dtype();
        let dtype = match (kind, got) {
            (Kind::Float, StDtype::F32 | StDtype::BF16 | StDtype::F16)
            | (Kind::F32 | Kind::Scales, StDtype::F32) => DType::parse(&got.to_string().to_lowercase()),
            (Kind::Codes, StDtype::F8_E4M3) if matches!(format("fp8"), None | Some("e4m3fn")) => {
                Some(DType::F8E4M3Fn)
            }
            (Kind::Codes, StDtype::F8_E5M2) if matches!(format("fp8"), None | Some("e5m2")) => {
                Some(DType::F8E5M2)
            }
            (Kind::Codes, StDtype::U8) => match format("fp8") {
                Some("e4m3fn") => Some(DType::F8E4M3Fn),
                Some("e4m3fnuz") => Some(DType::F8E4M3Fnuz),
                Some("e5m2") => Some(DType::F8E5M2),
                _ => None,
            },
            (Kind::Scales, StDtype::U8) if format("scale_format") == Some("ue8m0") => Some(DType::Ue8m0),
            (Kind::I32, StDtype::I32) => Some(DType::I32),
            _ => None,
        };
        dtype.ok_or_else(|| {
            let want = match kind {
                Kind::Float => "F32, BF16 or F16",
                Kind::F32 => "F32",
                Kind::Codes => "F8_E4M3, F8_E5M2, or U8 with the case's \"fp8\" naming the format",
                Kind::Scales => "F32, or U8 with \"scale_format\": \"ue8m0\"",
                Kind::I32 => "I32",
            };
            self.err(key, format!("dtype {got}; expected {want}"))
        })
    }

    fn view(&mut self, key: &str) -> Result<&'a TensorView<'a>> {
        self.used.push(key.to_string());
        let tensors = self.tensors;
        tensors.get(key).ok_or_else(|| self.err(key, "missing tensor"))
    }

    /// Input `arg`: its shape, after storing it.
    fn input(&mut self, arg: &'static str, kind: Kind) -> Result<Vec<usize>> {
        let view = self.view(arg)?;
        let dtype = self.dtype(arg, view, kind)?;
        let shape = view.shape().to_vec();
        let t = HostTensor {
            dtype,
            strides: contiguous_strides(&shape),
            shape: shape.clone(),
            bytes: view.data().to_vec(),
        };
        self.inputs.push(arg, t);
        Ok(shape)
    }

    /// Input `arg` of rank `R`: its dimensions.
    fn input_dims<const R: usize>(&mut self, arg: &'static str, kind: Kind) -> Result<[usize; R]> {
        let shape = self.input(arg, kind)?;
        shape
            .as_slice()
            .try_into()
            .map_err(|_| self.err(arg, format!("shape {shape:?}: expected {R} dimensions")))
    }

    /// The i32 values of input `arg`, after storing it.
    fn input_i32s(&mut self, arg: &'static str, rank: usize) -> Result<Vec<i32>> {
        let shape = self.input(arg, Kind::I32)?;
        if shape.len() != rank {
            return Err(self.err(arg, format!("shape {shape:?}: expected {rank} dimension(s)")));
        }
        Ok(self.inputs.get(arg).i32s())
    }

    /// Expected output `arg` (tensor `expect.ARG`), which must have `shape`: its dtype.
    fn expect(&mut self, arg: &'static str, kind: Kind, shape: &[usize]) -> Result<DType> {
        let key = format!("expect.{arg}");
        let view = self.view(&key)?;
        let dtype = self.dtype(&key, view, kind)?;
        if view.shape() != shape {
            return Err(
                self.err(&key, format!("shape {:?}; the op's inputs make it {shape:?}", view.shape()))
            );
        }
        let elements = view.data().to_vec();
        self.expected.push(Output {
            arg,
            dtype,
            shape: shape.to_vec(),
            elements,
            guard: GuardReport::default(),
        });
        Ok(dtype)
    }

    fn same(&self, arg: &str, what: &str, got: usize, want: usize) -> Result<()> {
        if got == want {
            return Ok(());
        }
        Err(self.err(arg, format!("{what} is {got}; the other arguments make it {want}")))
    }

    /// A GEMM operand: dense, or FP8 codes with `SCALES` when that tensor is present (activations
    /// `[M, ceil(K/128)]`, weights `[lead.., ceil(N/128), ceil(K/128)]`). Returns the operand and the
    /// codes' shape.
    fn operand(&mut self, arg: &'static str, scales: &'static str) -> Result<(Operand, Vec<usize>)> {
        let coded = self
            .tensors
            .get(arg)
            .is_some_and(|v| matches!(v.dtype(), StDtype::F8_E4M3 | StDtype::F8_E5M2 | StDtype::U8));
        if coded && !self.has(scales) {
            return Err(
                self.err(scales, format!("missing tensor: the FP8 codes `{arg}` need their scale grid"))
            );
        }
        if !self.has(scales) {
            let shape = self.input(arg, Kind::Float)?;
            let dtype = self.inputs.get(arg).dtype;
            return Ok((Operand::Dense(dtype), shape));
        }
        let shape = self.input(arg, Kind::Codes)?;
        let format = self.inputs.get(arg).dtype.fp8_format().expect("Kind::Codes is FP8");
        let grid = self.input(scales, Kind::Scales)?;
        let store =
            if self.inputs.get(scales).dtype == DType::Ue8m0 { ScaleStore::Ue8m0 } else { ScaleStore::F32 };
        if shape.len() < 2 {
            return Err(self.err(arg, format!("shape {shape:?}: expected at least 2 dimensions")));
        }
        let (lead, [n, k]) = (&shape[..shape.len() - 2], [shape[shape.len() - 2], shape[shape.len() - 1]]);
        let want: Vec<usize> = if arg == "a" {
            vec![n, blocks(k)]
        } else {
            lead.iter().copied().chain([blocks(n), blocks(k)]).collect()
        };
        if grid != want {
            return Err(
                self.err(scales, format!("shape {grid:?}; the codes' shape {shape:?} makes it {want:?}"))
            );
        }
        Ok((Operand::Fp8(format, store), shape))
    }
}

fn rank<const R: usize>(r: &Reader, arg: &str, shape: &[usize]) -> Result<[usize; R]> {
    shape.try_into().map_err(|_| r.err(arg, format!("shape {shape:?}: expected {R} dimensions")))
}

fn gemm(r: &mut Reader) -> Result<Spec> {
    let (a, a_shape) = r.operand("a", "a_scales")?;
    let [m, k] = rank(r, "a", &a_shape)?;
    let (b, b_shape) = r.operand("b", "b_scales")?;
    let [n, kb] = rank(r, "b", &b_shape)?;
    r.same("b", "K (last dimension)", kb, k)?;
    let c = r.expect("c", Kind::Float, &[m, n])?;
    Ok(Spec::Gemm(GemmSpec { m, n, k, a, b, c, a_pitch: 0, c_pitch: 0 }))
}

fn grouped_gemm(r: &mut Reader) -> Result<Spec> {
    let (a, a_shape) = r.operand("a", "a_scales")?;
    let [rows, k] = rank(r, "a", &a_shape)?;
    let (b, b_shape) = r.operand("b", "b_scales")?;
    let [e, n, kb] = rank(r, "b", &b_shape)?;
    r.same("b", "K (last dimension)", kb, k)?;
    let offsets = r.input_i32s("expert_offsets", 1)?;
    r.same("expert_offsets", "length", offsets.len(), e + 1)?;
    let ordered = offsets.first() == Some(&0) && offsets.windows(2).all(|w| w[0] <= w[1]);
    if !ordered || offsets[e] as usize != rows {
        return Err(
            r.err("expert_offsets", format!("{offsets:?}: must rise from 0 to the {rows} rows of `a`"))
        );
    }
    let counts = offsets.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
    let c = r.expect("c", Kind::Float, &[rows, n])?;
    Ok(Spec::GroupedGemm(GroupedGemmSpec { counts, n, k, a, b, c }))
}

fn batched_gemm(r: &mut Reader) -> Result<Spec> {
    let [batch, m, k] = r.input_dims("a", Kind::Float)?;
    let [bb, n, kb] = r.input_dims("b", Kind::Float)?;
    r.same("b", "batch (first dimension)", bb, batch)?;
    r.same("b", "K (last dimension)", kb, k)?;
    let (a, b) = (r.inputs.get("a").dtype, r.inputs.get("b").dtype);
    let c = r.expect("c", Kind::Float, &[batch, m, n])?;
    Ok(Spec::BatchedGemm(BatchedGemmSpec { batch, m, n, k, a, b, c, heads: false, shared_b: false }))
}

fn act_quant(r: &mut Reader) -> Result<Spec> {
    let [m, k] = r.input_dims("x", Kind::Float)?;
    let x = r.inputs.get("x").dtype;
    let scale_format = r.word("scale_format", &[("f32", ScaleFormat::F32), ("ue8m0", ScaleFormat::Ue8m0)])?;
    let codes = r.expect("codes", Kind::Codes, &[m, k])?;
    let scales = r.expect("scales", Kind::Scales, &[m, blocks(k)])?;
    let format = codes.fp8_format().expect("Kind::Codes is FP8");
    Ok(Spec::ActQuant(ActQuantSpec { m, k, x, format, scale_format, scales }))
}

fn rms_norm(r: &mut Reader) -> Result<Spec> {
    let [rows, d] = r.input_dims("x", Kind::Float)?;
    let [dw] = r.input_dims("weight", Kind::Float)?;
    r.same("weight", "length", dw, d)?;
    let eps = r.number("eps")? as f32;
    let out = r.expect("out", Kind::Float, &[rows, d])?;
    let (x, w) = (r.inputs.get("x").dtype, r.inputs.get("weight").dtype);
    Ok(Spec::RmsNorm(RmsNormSpec { r: rows, d, x, w, out, eps }))
}

fn rope(r: &mut Reader) -> Result<Spec> {
    let [t, h, d] = r.input_dims("x", Kind::Float)?;
    let positions = r.input_i32s("positions", 1)?;
    r.same("positions", "length", positions.len(), t)?;
    if let Some(p) = positions.iter().find(|&&p| p < 0) {
        return Err(r.err("positions", format!("negative position {p}")));
    }
    let dim = r.count("dim")?;
    r.same("x", "last dimension", d, dim)?;
    let theta = r.number("theta")?;
    let yarn = match r.param("yarn")?.clone() {
        Value::Null => None,
        Value::Object(y) => {
            let field = |name: &str| {
                y.get(name)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| r.err(&format!("yarn.{name}"), "missing or not a number"))
            };
            Some(Yarn {
                factor: field("factor")?,
                original_max_position: field("original_max_position")?,
                beta_fast: field("beta_fast")?,
                beta_slow: field("beta_slow")?,
                mscale_all_dim: field("mscale_all_dim")?,
            })
        }
        other => return Err(r.err("yarn", format!("expected null or an object, got {other}"))),
    };
    let out = r.expect("out", Kind::Float, &[t, h, d])?;
    let x = r.inputs.get("x").dtype;
    let max_pos = positions.iter().max().map_or(1, |&p| p as usize + 1);
    let params = RopeParams { dim, theta, yarn };
    Ok(Spec::Rope(RopeSpec { t, h, params, x, out, max_pos, head_pitch: 0 }))
}

/// Row-wise ops over `[R, N]`: inputs `first` (and `second`), output `out` of the same shape.
fn rows(r: &mut Reader, first: &'static str, second: Option<&'static str>) -> Result<RowsSpec> {
    let [rows, n] = r.input_dims(first, Kind::Float)?;
    let a = r.inputs.get(first).dtype;
    let b = match second {
        Some(arg) => {
            let shape = r.input(arg, Kind::Float)?;
            if shape != [rows, n] {
                return Err(r.err(arg, format!("shape {shape:?}; `{first}` makes it {:?}", [rows, n])));
            }
            r.inputs.get(arg).dtype
        }
        None => a,
    };
    let out = r.expect("out", Kind::Float, &[rows, n])?;
    Ok(RowsSpec { r: rows, n, a, b, out, std: 1.0 })
}

fn silu_mul(r: &mut Reader) -> Result<Spec> {
    Ok(Spec::SiluMul(rows(r, "gate", Some("up"))?))
}

fn softmax(r: &mut Reader) -> Result<Spec> {
    Ok(Spec::Softmax(rows(r, "x", None)?))
}

fn embedding(r: &mut Reader) -> Result<Spec> {
    let [v, d] = r.input_dims("table", Kind::Float)?;
    let ids = r.input_i32s("ids", 1)?;
    if let Some(id) = ids.iter().find(|&&id| id < 0 || id as usize >= v) {
        return Err(r.err("ids", format!("id {id} outside the table's {v} rows")));
    }
    let out = r.expect("out", Kind::Float, &[ids.len(), d])?;
    let table = r.inputs.get("table").dtype;
    Ok(Spec::Embedding(EmbeddingSpec { v, d, t: ids.len(), table, out }))
}

/// `kv_lens` i32 `[B]`, each in 0..=L.
fn kv_lens(r: &mut Reader, b: usize, l: usize) -> Result<Vec<usize>> {
    let lens = r.input_i32s("kv_lens", 1)?;
    r.same("kv_lens", "length", lens.len(), b)?;
    if let Some(len) = lens.iter().find(|&&len| len < 0 || len as usize > l) {
        return Err(r.err("kv_lens", format!("length {len} outside 0..={l} (the cache's rows)")));
    }
    Ok(lens.into_iter().map(|len| len as usize).collect())
}

fn mla_attention(r: &mut Reader) -> Result<Spec> {
    let [b, t, h, dc] = r.input_dims("q_latent", Kind::Float)?;
    let [bp, tp, hp, dr] = r.input_dims("q_pe", Kind::Float)?;
    r.same("q_pe", "batch", bp, b)?;
    r.same("q_pe", "tokens", tp, t)?;
    r.same("q_pe", "heads", hp, h)?;
    let [bc, l, dkv] = r.input_dims("kv_cache", Kind::Float)?;
    r.same("kv_cache", "batch", bc, b)?;
    r.same("kv_cache", "last dimension", dkv, dc + dr)?;
    let kv_lens = kv_lens(r, b, l)?;
    let (scale, causal) = (r.number("softmax_scale")? as f32, r.flag("causal")?);
    let out = r.expect("out", Kind::Float, &[b, t, h, dc])?;
    let dtype = r.inputs.get("q_latent").dtype;
    Ok(Spec::MlaAttention(AttentionSpec {
        b,
        t,
        h,
        d1: dc,
        d2: dr,
        l,
        kv_lens,
        causal,
        dtype,
        out,
        scale,
        page: 0,
    }))
}

fn mha_attention(r: &mut Reader) -> Result<Spec> {
    let [b, t, h, dk] = r.input_dims("q", Kind::Float)?;
    let [bk, l, hk, dkk] = r.input_dims("k", Kind::Float)?;
    let [bv, lv, hv, dv] = r.input_dims("v", Kind::Float)?;
    for (arg, what, got, want) in [
        ("k", "batch", bk, b),
        ("k", "heads", hk, h),
        ("k", "last dimension", dkk, dk),
        ("v", "batch", bv, b),
        ("v", "rows", lv, l),
        ("v", "heads", hv, h),
    ] {
        r.same(arg, what, got, want)?;
    }
    let kv_lens = kv_lens(r, b, l)?;
    let (scale, causal) = (r.number("softmax_scale")? as f32, r.flag("causal")?);
    let out = r.expect("out", Kind::Float, &[b, t, h, dv])?;
    let dtype = r.inputs.get("q").dtype;
    Ok(Spec::MhaAttention(AttentionSpec {
        b,
        t,
        h,
        d1: dk,
        d2: dv,
        l,
        kv_lens,
        causal,
        dtype,
        out,
        scale,
        page: 0,
    }))
}

fn moe_route(r: &mut Reader) -> Result<Spec> {
    let [t, e] = r.input_dims("logits", Kind::F32)?;
    let config = RouteConfig {
        scoring: r.word("scoring", &[("sigmoid", Scoring::Sigmoid), ("softmax", Scoring::Softmax)])?,
        method: r.word(
            "method",
            &[
                ("greedy", TopkMethod::Greedy),
                ("group_limited_greedy", TopkMethod::GroupLimitedGreedy),
                ("noaux_tc", TopkMethod::NoAuxTc),
            ],
        )?,
        n_group: r.count("n_group")?,
        topk_group: r.count("topk_group")?,
        top_k: r.count("top_k")?,
        norm_topk_prob: r.flag("norm_topk_prob")?,
        routed_scaling_factor: r.number("routed_scaling_factor")? as f32,
    };
    let max_bias = match (config.method, r.has("bias")) {
        (TopkMethod::NoAuxTc, true) => {
            let [eb] = r.input_dims("bias", Kind::F32)?;
            r.same("bias", "length", eb, e)?;
            r.inputs.get("bias").values().iter().fold(0.0f64, |m, b| m.max(b.abs()))
        }
        (TopkMethod::NoAuxTc, false) => {
            return Err(r.err("bias", "missing tensor (noaux_tc needs the correction bias)"))
        }
        (_, true) => return Err(r.err("bias", "only noaux_tc routing takes a bias")),
        (_, false) => 0.0,
    };
    r.expect("ids", Kind::I32, &[t, config.top_k])?;
    r.expect("weights", Kind::F32, &[t, config.top_k])?;
    Ok(Spec::MoeRoute(RouteSpec { t, e, config, max_bias }))
}

fn argmax(r: &mut Reader) -> Result<Spec> {
    let [rows, n] = r.input_dims("x", Kind::Float)?;
    r.expect("out", Kind::I32, &[rows])?;
    let x = r.inputs.get("x").dtype;
    Ok(Spec::Argmax(RowsSpec { r: rows, n, a: x, b: x, out: DType::I32, std: 1.0 }))
}

fn topk(r: &mut Reader) -> Result<Spec> {
    let [rows, n] = r.input_dims("x", Kind::Float)?;
    let k = r.count("k")?;
    r.expect("values", Kind::F32, &[rows, k])?;
    r.expect("ids", Kind::I32, &[rows, k])?;
    Ok(Spec::TopK(TopKSpec { r: rows, n, k, x: r.inputs.get("x").dtype }))
}

/// The safetensors dtype an output is written as: FP8 formats other than e4m3fn and ue8m0 scales as U8,
/// as the format stores them.
fn st_dtype(dtype: DType) -> StDtype {
    match dtype {
        DType::F32 => StDtype::F32,
        DType::F16 => StDtype::F16,
        DType::BF16 => StDtype::BF16,
        DType::F8E4M3Fn => StDtype::F8_E4M3,
        DType::I32 => StDtype::I32,
        DType::I64 => StDtype::I64,
        DType::F8E4M3Fnuz | DType::F8E5M2 | DType::Ue8m0 | DType::U8 => StDtype::U8,
    }
}

/// One backend's outputs as a case file (the bytes; the caller decides how to write them): under the
/// expected tensors' names (`CASE.expect.ARG`), with the source file's case entries (so U8 outputs keep
/// their `fp8` / `scale_format`) and the backend in the metadata.
pub fn actual_file(source: &Path, backend: &str, cases: &[(&FileCase, &Outputs)]) -> Result<Vec<u8>> {
    let file = format!("outputs of {}", source.display());
    let mut meta = HashMap::from([
        ("dsv3-op-actual-backend".to_string(), backend.to_string()),
        ("dsv3-op-actual-of".to_string(), source.display().to_string()),
    ]);
    let mut views = Vec::new();
    for (fc, outputs) in cases {
        let mut entry = Map::from_iter([("op".to_string(), Value::from(fc.case.op))]);
        for o in &outputs.0 {
            match o.dtype {
                DType::F8E4M3Fnuz => entry.insert("fp8".into(), "e4m3fnuz".into()),
                DType::F8E5M2 => entry.insert("fp8".into(), "e5m2".into()),
                DType::Ue8m0 => entry.insert("scale_format".into(), "ue8m0".into()),
                _ => None,
            };
        }
        meta.insert(fc.case.name.clone(), Value::Object(entry).to_string());
        for o in &outputs.0 {
            let name = format!("{}.expect.{}", fc.case.name, o.arg);
            let view = TensorView::new(st_dtype(o.dtype), o.shape.clone(), &o.elements)
                .map_err(|e| data(&file, &name, e))?;
            views.push((name, view));
        }
    }
    safetensors::serialize(views, Some(meta)).map_err(|e| data(&file, "header", e))
}
