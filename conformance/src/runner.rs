//! Runs cases on backends. For every backend: its devices, or one `unavailable` row per op with the
//! reason (never a silent skip). For every device and case: the expectation lists, then
//! `Device::supports`, then (test mode) the oracle's outputs — computed once per case and reused for
//! every device — against the device's, or (perf mode) timing, or (support mode) just the answer of
//! `supports`.

use crate::case::{Case, Inputs, Outputs};
use crate::expectations::{self, Expectations};
use crate::report::{Perf, Report, Row, Status};
use dsv3_backend_cpu::{CpuBackend, Mode as CpuMode};
use dsv3_core::ops::OP_NAMES;
use dsv3_core::{Backend, DType, Device, Error, Op, Result, Support};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Compare every case with the oracle.
    Test,
    /// Time every case: warm-up, then repeat until `perf_seconds` or `perf_max_iterations`.
    Perf,
    /// Only ask `supports` (no numerics), for the support matrix.
    Support,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    /// Only cases of this op.
    pub op: Option<String>,
    /// Only cases whose name contains this.
    pub case: Option<String>,
    /// An expected failure that passes is a failure (so stale entries get removed).
    pub verify_xfail: bool,
    pub perf_seconds: f64,
    pub perf_max_iterations: usize,
    /// Print each row to stderr as it is produced.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            mode: Mode::Test,
            op: None,
            case: None,
            verify_xfail: false,
            perf_seconds: 0.5,
            perf_max_iterations: 1000,
            progress: false,
        }
    }
}

impl Options {
    pub fn selects(&self, case: &Case) -> bool {
        self.op.as_deref().is_none_or(|op| op == case.op)
            && self.case.as_deref().is_none_or(|c| case.name.contains(c))
    }
}

struct Target {
    /// Index of the backend in the caller's list (rows are reported in that order).
    slot: usize,
    backend: &'static str,
    device: String,
    dev: Arc<dyn Device>,
    expect: Expectations,
    rows: Vec<Row>,
}

/// The oracle device: the CPU backend in reference mode.
pub fn oracle() -> Result<Arc<dyn Device>> {
    CpuBackend::new(CpuMode::Reference).open(0)
}

/// Binds, launches, syncs and downloads one case on one device.
pub fn execute(device: &Arc<dyn Device>, case: &Case, inputs: &Inputs) -> Result<Outputs> {
    let bound = case.bind(device, inputs, true)?;
    let stream = device.default_stream();
    stream.launch(&bound.op)?;
    stream.sync()?;
    bound.download(stream.as_ref())
}

pub fn run(backends: &[&dyn Backend], cases: &[Case], options: &Options) -> Report {
    // Rows per backend, in the caller's order.
    let mut slots: Vec<Vec<Row>> = vec![Vec::new(); backends.len()];
    let mut targets = Vec::new();
    let ops: Vec<&str> =
        OP_NAMES.iter().copied().filter(|op| options.op.as_deref().is_none_or(|o| o == *op)).collect();
    for (slot, backend) in backends.iter().enumerate() {
        let name = backend.name();
        let unavailable = |reason: String, device: &str| -> Vec<Row> {
            ops.iter()
                .map(|op| Row::new(name, device, op, "*", "*", Status::Unavailable, reason.clone()))
                .collect()
        };
        let infos = match backend.devices() {
            Ok(infos) if !infos.is_empty() => infos,
            Ok(_) => {
                slots[slot].extend(unavailable("no device".into(), "-"));
                continue;
            }
            Err(Error::Unavailable { reason, .. }) => {
                slots[slot].extend(unavailable(reason, "-"));
                continue;
            }
            Err(e) => {
                slots[slot].extend(unavailable(format!("device discovery failed: {e}"), "-"));
                continue;
            }
        };
        for info in infos {
            let label = format!("{}:{} {}", name, info.ordinal, info.name);
            match backend.open(info.ordinal) {
                Ok(dev) => targets.push(Target {
                    slot,
                    backend: name,
                    device: label,
                    dev,
                    expect: expectations::for_backend(name),
                    rows: Vec::new(),
                }),
                Err(e) => slots[slot].extend(unavailable(format!("open failed: {e}"), &label)),
            }
        }
    }
    let oracle = if options.mode == Mode::Test { Some(oracle()) } else { None };
    for case in cases.iter().filter(|c| options.selects(c)) {
        if targets.is_empty() {
            break;
        }
        let inputs = case.inputs();
        let mut oracle_out: Option<std::result::Result<Outputs, String>> = None;
        for t in &mut targets {
            let row = match options.mode {
                Mode::Test => {
                    let oracle = oracle.as_ref().unwrap();
                    test_one(t, case, &inputs, options, || {
                        oracle_out
                            .get_or_insert_with(|| match oracle {
                                Ok(dev) => {
                                    execute(dev, case, &inputs).map_err(|e| format!("oracle failed: {e}"))
                                }
                                Err(e) => Err(format!("oracle unavailable: {e}")),
                            })
                            .clone()
                    })
                }
                Mode::Perf => perf_one(t, case, &inputs, options),
                Mode::Support => support_one(t, case, &inputs),
            };
            if options.progress {
                let m = row.nmse.map_or(String::new(), |v| format!(" nmse {v:.2e}"));
                eprintln!("{} {} {}{m} {}", row.backend, row.case, row.status.as_str(), row.reason);
            }
            t.rows.push(row);
        }
    }
    for t in targets {
        slots[t.slot].extend(t.rows);
    }
    Report { results: slots.into_iter().flatten().collect() }
}

fn row(t: &Target, case: &Case, status: Status, reason: String) -> Row {
    Row::new(t.backend, &t.device, case.op, &case.name, &case.dtypes, status, reason)
}

/// Binds on the device and asks `supports`; `Err(row)` when the case does not run there.
fn prepare(
    t: &Target,
    case: &Case,
    inputs: &Inputs,
    upload: bool,
) -> std::result::Result<(crate::case::Bound, Support), Box<Row>> {
    if let Some(reason) = t.expect.unsupported_reason(case) {
        return Err(Box::new(row(t, case, Status::Unsupported, format!("listed unsupported: {reason}"))));
    }
    let bound = case
        .bind(&t.dev, inputs, upload)
        .map_err(|e| Box::new(row(t, case, Status::Fail, format!("binding: {e}"))))?;
    let support = t.dev.supports(&bound.op);
    if let Support::Unsupported { reason } = &support {
        return Err(Box::new(row(t, case, Status::Unsupported, reason.clone())));
    }
    Ok((bound, support))
}

fn test_one(
    t: &Target,
    case: &Case,
    inputs: &Inputs,
    options: &Options,
    oracle: impl FnOnce() -> std::result::Result<Outputs, String>,
) -> Row {
    let (bound, support) = match prepare(t, case, inputs, true) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let result = (|| -> Result<Outputs> {
        let stream = t.dev.default_stream();
        stream.launch(&bound.op)?;
        stream.sync()?;
        bound.download(stream.as_ref())
    })();
    drop(bound);
    let mut r = row(t, case, Status::Pass, String::new());
    let outputs = match result {
        Ok(o) => o,
        Err(e) => {
            return xfail(t, case, options, Row { status: Status::Fail, reason: format!("launch: {e}"), ..r })
        }
    };
    let expected = match oracle() {
        Ok(o) => o,
        Err(e) => return Row { status: Status::Fail, reason: e, ..r },
    };
    let verdict = case.compare(inputs, &expected, &outputs);
    if let Some(m) = verdict.metrics {
        r.nmse = Some(m.nmse);
        r.max_abs = Some(m.max_abs);
        r.max_rel = Some(m.max_rel);
        r.cos_dist = Some(m.cos_dist);
        r.tolerance = Some(case.tolerance.nmse);
    }
    let mut reasons = verdict.failures.clone();
    reasons.extend(verdict.notes.iter().cloned());
    if let Support::Emulated { via } = &support {
        reasons.push(format!("emulated via {via}"));
    }
    r.reason = reasons.join("; ");
    if !verdict.passed() {
        r.status = Status::Fail;
    }
    xfail(t, case, options, r)
}

/// Applies the expected-failure list to a finished row.
fn xfail(t: &Target, case: &Case, options: &Options, mut r: Row) -> Row {
    let Some(reason) = t.expect.xfail_reason(case) else { return r };
    match r.status {
        Status::Fail => {
            r.status = Status::Xfail;
            r.reason = format!("expected failure ({reason}): {}", r.reason);
        }
        Status::Pass if options.verify_xfail => {
            r.status = Status::Fail;
            r.reason = format!("listed as an expected failure ({reason}) but passes: remove the entry");
        }
        Status::Pass => r.reason = format!("listed as an expected failure ({reason}) but passes"),
        _ => {}
    }
    r
}

fn support_one(t: &Target, case: &Case, inputs: &Inputs) -> Row {
    match prepare(t, case, inputs, false) {
        Ok((_, support)) => row(t, case, Status::Supported, support.to_string()),
        Err(r) => *r,
    }
}

/// Which peak a case's FLOPs are measured against: FP8 if any operand is FP8, bf16 / f16 if any is,
/// else f32.
fn flop_class(op: &Op) -> DType {
    let dtypes: Vec<DType> = op.tensors().iter().map(|(_, t, _)| t.dtype).collect();
    if dtypes.iter().any(|d| d.fp8_format().is_some()) {
        DType::F8E4M3Fn
    } else if dtypes.iter().any(|d| matches!(d, DType::BF16 | DType::F16)) {
        DType::BF16
    } else {
        DType::F32
    }
}

fn perf_one(t: &Target, case: &Case, inputs: &Inputs, options: &Options) -> Row {
    let (bound, _) = match prepare(t, case, inputs, true) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let stream = t.dev.default_stream();
    let timed = (|| -> Result<(f64, usize)> {
        // Warm-up (first-use compilation, page faults, caches).
        stream.launch(&bound.op)?;
        stream.sync()?;
        let mut batch = 1usize;
        let (mut total, mut iterations) = (0.0f64, 0usize);
        while total < options.perf_seconds && iterations < options.perf_max_iterations {
            let n = batch.min(options.perf_max_iterations - iterations);
            let start = Instant::now();
            for _ in 0..n {
                stream.launch(&bound.op)?;
            }
            stream.sync()?;
            total += start.elapsed().as_secs_f64();
            iterations += n;
            batch *= 2;
        }
        Ok((total, iterations))
    })();
    let (total, iterations) = match timed {
        Ok(x) => x,
        Err(e) => return row(t, case, Status::Fail, format!("launch: {e}")),
    };
    let seconds = total / iterations.max(1) as f64;
    let cost = bound.op.cost();
    let mut perf = Perf {
        ms: seconds * 1e3,
        iterations,
        gflops: cost.flops / seconds / 1e9,
        gbps: cost.bytes / seconds / 1e9,
        pct_of_peak: None,
        bound: None,
    };
    if let Some(peak) = t.dev.peak() {
        let class = flop_class(&bound.op);
        let (peak_flops, name) = match class {
            DType::F8E4M3Fn => (peak.fp8_flops, "fp8"),
            DType::BF16 => (peak.bf16_flops, "bf16"),
            _ => (peak.f32_flops, "f32"),
        };
        let compute = if peak_flops > 0.0 { cost.flops / peak_flops } else { 0.0 };
        let memory = if peak.bytes_per_s > 0.0 { cost.bytes / peak.bytes_per_s } else { 0.0 };
        let (best, which) = if compute >= memory {
            (compute, format!("compute ({name})"))
        } else {
            (memory, "memory".to_string())
        };
        if best > 0.0 {
            perf.pct_of_peak = Some(100.0 * best / seconds);
            perf.bound = Some(which);
        }
    }
    let mut r = row(t, case, Status::Pass, String::new());
    r.perf = Some(perf);
    r
}
