//! Peers timed in the same run as `bench ops`, on the same shapes: faer's f32 GEMM on the CPU, and PyTorch
//! (`torch.matmul`, `torch._scaled_mm`, SDPA) through the user's python, running
//! `benches/peer/torch_gemm.py --json`; and for `bench model`, HuggingFace transformers generating from
//! the same model and prompt (`benches/peer/transformers_generate.py`). A peer that cannot time a row —
//! not installed, no such op, failed mid-run — gives that row an [`Outcome::Absent`] (or an error string)
//! with the reason, never nothing.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use dsv3_conformance::case::{Operand, Spec};
use dsv3_conformance::Case;
use dsv3_core::DType;
use serde_json::{json, Value};

/// The peers `bench ops --peer` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Faer,
    Torch,
}

impl Peer {
    pub const ALL: [Peer; 2] = [Peer::Faer, Peer::Torch];

    pub fn name(self) -> &'static str {
        match self {
            Peer::Faer => "faer",
            Peer::Torch => "torch",
        }
    }
}

/// What a peer did with one row.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// ms per call, one per repetition, and what ran (`faer 0.24 f32 matmul`).
    Timed {
        what: String,
        ms: Vec<f64>,
    },
    Absent(String),
}

/// One row to time: the case and the device our figure comes from (`cpu:0`, `cuda:0`).
pub struct Request<'a> {
    pub case: &'a Case,
    pub device: &'a str,
}

/// The peer scripts, embedded so that the binary runs them from anywhere (`python -c`).
const TORCH_SCRIPT: &str = include_str!("../../benches/peer/torch_gemm.py");
const TRANSFORMERS_SCRIPT: &str = include_str!("../../benches/peer/transformers_generate.py");

/// faer allocates its operands in f32; past this many bytes of A, B and C a row is absent rather than a
/// risk to the machine's memory (DeepSeek-V3's head is 3.7 GB in f32).
const FAER_MAX_BYTES: usize = 4 << 30;

/// Every request timed by `peer`, `repetitions` times of `seconds` each, in order.
pub fn time(
    peer: Peer,
    requests: &[Request],
    python: &Path,
    seconds: f64,
    repetitions: usize,
) -> Vec<Outcome> {
    match peer {
        Peer::Faer => requests.iter().map(|r| faer(r, seconds, repetitions)).collect(),
        Peer::Torch => torch(requests, python, seconds, repetitions),
    }
}

fn faer(r: &Request, seconds: f64, repetitions: usize) -> Outcome {
    if !r.device.starts_with("cpu") {
        return Outcome::Absent("faer runs on the CPU only".into());
    }
    let Spec::Gemm(g) = &r.case.spec else {
        return Outcome::Absent(format!("faer is timed on gemm only, not {}", r.case.op));
    };
    let (m, n, k) = (g.m, g.n, g.k);
    let bytes = (m * k + n * k + m * n) * 4;
    if bytes > FAER_MAX_BYTES {
        return Outcome::Absent(format!(
            "f32 operands of {:.1} GB, above the peer's 4 GiB",
            bytes as f64 / 1e9
        ));
    }
    // Values do not change a dense GEMM's time; small ones keep the sums finite.
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.01).collect();
    let b: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.01).collect();
    let mut c = vec![0f32; m * n];
    // C = A · Bᵀ with B stored [N, K], as dsv3's gemm; faer reads the transpose as a view, no copy.
    let mut call = || {
        let a = faer::MatRef::from_row_major_slice(&a, m, k);
        let bt = faer::MatRef::from_row_major_slice(&b, n, k).transpose();
        let cm = faer::MatMut::from_row_major_slice_mut(&mut c, m, n);
        faer::linalg::matmul::matmul(cm, faer::Accum::Replace, a, bt, 1.0f32, faer::Par::rayon(0));
    };
    let ms = (0..repetitions).map(|_| mean_ms(&mut call, seconds)).collect();
    Outcome::Timed { what: format!("faer 0.24 f32 matmul (ours: {})", r.case.dtypes), ms }
}

/// Mean ms per call over at least `seconds` of calls after one warm-up call, as conformance's perf mode
/// times ours.
fn mean_ms(call: &mut impl FnMut(), seconds: f64) -> f64 {
    call();
    let (start, mut calls) = (Instant::now(), 0u32);
    loop {
        call();
        calls += 1;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= seconds {
            return elapsed * 1e3 / f64::from(calls);
        }
    }
}

/// The JSON case the torch script times for a row, or why there is none.
fn torch_case(r: &Request) -> Result<Value, String> {
    let device = match r.device.split(':').next() {
        Some("cpu") => "cpu",
        // PyTorch's ROCm builds call HIP devices `cuda` too.
        Some("cuda" | "hip") => "cuda",
        _ => return Err(format!("PyTorch has no device for {}", r.device)),
    };
    let dense = |d: DType| match d {
        DType::F32 => Ok("f32"),
        DType::BF16 => Ok("bf16"),
        other => Err(format!("no torch peer for {other} operands")),
    };
    match &r.case.spec {
        Spec::Gemm(g) => match (g.a, g.b) {
            (Operand::Dense(a), Operand::Dense(_)) => {
                Ok(json!({"op": "matmul", "device": device, "batch": 1,
                "m": g.m, "n": g.n, "k": g.k, "dtype": dense(a)?}))
            }
            // torch._scaled_mm takes per-tensor scales, not DeepSeek's blocks: the throughput a block-scaled
            // kernel should approach, not the same arithmetic.
            _ => Ok(json!({"op": "scaled_mm", "device": device, "m": g.m, "n": g.n, "k": g.k})),
        },
        Spec::BatchedGemm(g) => Ok(json!({"op": "matmul", "device": device, "batch": g.batch,
            "m": g.m, "n": g.n, "k": g.k, "dtype": dense(g.a)?})),
        Spec::MlaAttention(a) => {
            let l = a.kv_lens.iter().copied().max().unwrap_or(a.l);
            Ok(json!({"op": "sdpa", "device": device, "b": a.b, "h": a.h, "t": a.t, "l": l,
                "dk": a.d1 + a.d2, "dv": a.d1, "causal": a.causal, "dtype": dense(a.dtype)?}))
        }
        _ => Err(format!("the torch peer times gemm, batched_gemm and mla_attention, not {}", r.case.op)),
    }
}

/// One python process for every row: the cases on stdin, one JSON line back. If it cannot start, exits
/// with an error or answers something else, every row it was to time is absent with that reason.
fn torch(requests: &[Request], python: &Path, seconds: f64, repetitions: usize) -> Vec<Outcome> {
    let cases: Vec<Result<Value, String>> = requests.iter().map(torch_case).collect();
    let asked: Vec<&Value> = cases.iter().filter_map(|c| c.as_ref().ok()).collect();
    let answers = if asked.is_empty() {
        Ok(Vec::new())
    } else {
        let input = json!({"seconds": seconds, "repetitions": repetitions, "cases": asked});
        run_python(python, TORCH_SCRIPT, &["--json"], &input.to_string()).and_then(|out| {
            let results = out["results"]
                .as_array()
                .filter(|r| r.len() == asked.len())
                .ok_or_else(|| format!("{} answered without one result per case", python.display()))?;
            let peer = out["peer"].as_str().unwrap_or("torch");
            Ok(results.iter().map(|r| torch_outcome(peer, r)).collect())
        })
    };
    let answers = answers.unwrap_or_else(|why| vec![Outcome::Absent(why); asked.len()]);
    let mut answers = answers.into_iter();
    cases
        .into_iter()
        .map(|c| match c {
            // One answer per case asked (checked above), in order.
            Ok(_) => answers.next().unwrap_or_else(|| Outcome::Absent("no answer".into())),
            Err(why) => Outcome::Absent(why),
        })
        .collect()
}

fn torch_outcome(peer: &str, r: &Value) -> Outcome {
    let ms: Option<Vec<f64>> = r["ms"].as_array().map(|v| v.iter().filter_map(Value::as_f64).collect());
    match (ms, r["what"].as_str(), r["absent"].as_str()) {
        (Some(ms), Some(what), _) if !ms.is_empty() && ms.iter().all(|x| x.is_finite() && *x > 0.0) => {
            Outcome::Timed { what: format!("{what} ({peer})"), ms }
        }
        (_, _, Some(why)) => Outcome::Absent(why.to_string()),
        _ => Outcome::Absent(format!("the torch script answered {r}")),
    }
}

/// What `bench model --peer transformers` measured for one cell: what ran, and prefill and decode tok/s,
/// one per repetition.
pub struct Generated {
    pub what: String,
    pub prefill: Vec<f64>,
    pub decode: Vec<f64>,
}

/// transformers generating `gen` tokens greedily after `prompt` from `model` (`--model DIR` or `--config
/// FILE`, as the script takes them), one warm-up and `repetitions` timed generations; or why not.
pub fn transformers(
    python: &Path,
    model: [&str; 2],
    prompt: &[u32],
    gen: usize,
    repetitions: usize,
) -> Result<Generated, String> {
    let tokens = prompt.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let (gen, repetitions) = (gen.to_string(), repetitions.to_string());
    let args = [model[0], model[1], "--tokens", &tokens, "--new", &gen, "--repetitions", &repetitions];
    let out = run_python(python, TRANSFORMERS_SCRIPT, &args, "")?;
    let rates = |key: &str| -> Option<Vec<f64>> {
        let v: Vec<f64> = out[key].as_array()?.iter().filter_map(Value::as_f64).collect();
        (!v.is_empty() && v.iter().all(|x| x.is_finite() && *x > 0.0)).then_some(v)
    };
    match (out["peer"].as_str(), rates("prefill_samples"), rates("decode_samples")) {
        (Some(what), Some(prefill), Some(decode)) => Ok(Generated { what: what.into(), prefill, decode }),
        _ => Err(format!("the transformers script answered {out}")),
    }
}

/// Runs `script` with `args` and `input` on stdin; its last stdout line parsed, or why not (the last line
/// of stderr says why python failed: `ModuleNotFoundError: No module named 'torch'`).
fn run_python(python: &Path, script: &str, args: &[&str], input: &str) -> Result<Value, String> {
    let mut child = Command::new(python)
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    // A python that exits at once closes its stdin: the answer below says why, not this write.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("{}: {e}", python.display()))?;
    let last = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes).lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string)
    };
    if !out.status.success() {
        let why = last(&out.stderr).unwrap_or_else(|| "no message".into());
        return Err(format!("{} exited with {}: {why}", python.display(), out.status));
    }
    let line = last(&out.stdout).unwrap_or_default();
    serde_json::from_str(&line).map_err(|_| format!("{} printed no JSON answer: {line:?}", python.display()))
}
