//! Runs cases on backends. For every backend: its devices, or one `unavailable` row per op with the
//! reason (never a silent skip). For every device and case: the expectation lists, then
//! `Device::supports`, then (test mode) the oracle's outputs — computed once per case and reused for
//! every device — against the device's, or (perf mode) timing, or (support mode) just the answer of
//! `supports`.

use crate::case::{Bound, Case, Inputs, Outputs};
use crate::expectations::{self, Expectations};
use crate::report::{Perf, Report, Row, Status};
use dsv3_backend_cpu::{CpuBackend, Mode as CpuMode};
use dsv3_core::ops::OP_NAMES;
use dsv3_core::{Backend, DType, Device, Error, Op, Result, Support};
use std::io::Write;
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
    /// Test mode: run each case this many times on each device and fail if any repetition's outputs
    /// differ bitwise from the first (races, reads of uninitialised memory). 1 runs each case once.
    pub repeat: usize,
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
            repeat: 1,
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
    launch_bound(device, &case.bind(device, inputs, true)?)
}

/// Launches a bound case on its device, syncs and downloads the outputs.
fn launch_bound(device: &Arc<dyn Device>, bound: &Bound) -> Result<Outputs> {
    let stream = device.default_stream();
    stream.launch(&bound.op)?;
    stream.sync()?;
    bound.download(stream.as_ref())
}

/// A case whose inputs and expected outputs are given (read from a case file) instead of generated from
/// its seed and computed by the oracle.
pub struct Given<'a> {
    pub case: &'a Case,
    pub inputs: &'a Inputs,
    pub expected: &'a Outputs,
}

/// The outputs one device produced for one case (test mode), for `dsv3 op --write-actual`.
pub struct Actual {
    pub backend: &'static str,
    pub case: String,
    pub outputs: Outputs,
}

/// Runs generated cases: inputs from each case's seed, expected outputs from the oracle.
pub fn run(backends: &[&dyn Backend], cases: &[Case], options: &Options) -> Report {
    let items = cases.iter().filter(|c| options.selects(c)).map(|c| (c, None));
    run_items(backends, items, options).0
}

/// Runs cases with given inputs and expected outputs; also returns each device's outputs.
pub fn run_given(backends: &[&dyn Backend], cases: &[Given], options: &Options) -> (Report, Vec<Actual>) {
    let items = cases.iter().filter(|g| options.selects(g.case)).map(|g| (g.case, Some(g)));
    run_items(backends, items, options)
}

fn targets(backends: &[&dyn Backend], options: &Options, slots: &mut [Vec<Row>]) -> Vec<Target> {
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
    targets
}

fn run_items<'a>(
    backends: &[&dyn Backend],
    items: impl Iterator<Item = (&'a Case, Option<&'a Given<'a>>)>,
    options: &Options,
) -> (Report, Vec<Actual>) {
    // Rows per backend, in the caller's order.
    let mut slots: Vec<Vec<Row>> = vec![Vec::new(); backends.len()];
    let mut targets = targets(backends, options, &mut slots);
    let mut actuals = Vec::new();
    let oracle = if options.mode == Mode::Test { Some(oracle()) } else { None };
    for (case, given) in items {
        if targets.is_empty() {
            break;
        }
        let generated;
        let inputs = match given {
            Some(g) => g.inputs,
            None => {
                generated = case.inputs();
                &generated
            }
        };
        let mut oracle_out: Option<std::result::Result<Outputs, String>> = None;
        for t in &mut targets {
            let row = match options.mode {
                Mode::Test => {
                    let oracle = oracle.as_ref().unwrap();
                    let (row, outputs) = test_one(t, case, inputs, options, || match given {
                        Some(g) => Ok(g.expected.clone()),
                        None => oracle_out
                            .get_or_insert_with(|| match oracle {
                                Ok(dev) => {
                                    execute(dev, case, inputs).map_err(|e| format!("oracle failed: {e}"))
                                }
                                Err(e) => Err(format!("oracle unavailable: {e}")),
                            })
                            .clone(),
                    });
                    if let (Some(outputs), Some(_)) = (outputs, given) {
                        actuals.push(Actual { backend: t.backend, case: case.name.clone(), outputs });
                    }
                    row
                }
                Mode::Perf => perf_one(t, case, inputs, options),
                Mode::Support => support_one(t, case, inputs),
            };
            if options.progress {
                let m = row.nmse.map_or(String::new(), |v| format!(" nmse {v:.2e}"));
                // Not `eprintln!`: a closed stderr must not end the run (a panic, exit status 101).
                let line =
                    format!("{} {} {}{m} {}\n", row.backend, row.case, row.status.as_str(), row.reason);
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            t.rows.push(row);
        }
    }
    for t in targets {
        slots[t.slot].extend(t.rows);
    }
    (Report { results: slots.into_iter().flatten().collect() }, actuals)
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
) -> std::result::Result<(Bound, Support), Box<Row>> {
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
) -> (Row, Option<Outputs>) {
    let (bound, support) = match prepare(t, case, inputs, true) {
        Ok(x) => x,
        Err(r) => return (*r, None),
    };
    // A vendor library's kernel, or a kernel on tensor cores with a rounding beyond the op's contract, is
    // held to its own derived rule, and only where it runs.
    let own_rule = match &support {
        Support::Library { .. } => case.spec.library_tolerance(),
        Support::TensorCore { .. } => case.spec.tensor_core_tolerance(),
        _ => None,
    };
    let own_case;
    let case = match own_rule {
        Some(tolerance) => {
            own_case = Case { tolerance, ..case.clone() };
            &own_case
        }
        None => case,
    };
    let result = launch_bound(&t.dev, &bound);
    drop(bound);
    let mut r = row(t, case, Status::Pass, String::new());
    let outputs = match result {
        Ok(o) => o,
        Err(e) => {
            let r = Row { status: Status::Fail, reason: format!("launch: {e}"), ..r };
            return (xfail(t, case, options, r), None);
        }
    };
    let expected = match oracle() {
        Ok(o) => o,
        Err(e) => return (Row { status: Status::Fail, reason: e, ..r }, Some(outputs)),
    };
    let verdict = case.compare(inputs, &expected, &outputs);
    if let Some(m) = verdict.metrics {
        r.nmse = Some(m.nmse);
        r.max_abs = Some(m.max_abs);
        r.max_rel = Some(m.max_rel);
        r.cos_dist = Some(m.cos_dist);
        r.tolerance = Some(case.tolerance.nmse);
    }
    let mut failures = verdict.failures.clone();
    if let Some(why) = repetitions_differ(t, case, inputs, &outputs, options.repeat) {
        failures.push(why);
    }
    let mut reasons = failures.clone();
    reasons.extend(verdict.notes.iter().cloned());
    match &support {
        Support::Emulated { via } => reasons.push(format!("emulated via {via}")),
        Support::Library { library } => reasons.push(format!("native via {library}")),
        Support::TensorCore { rounding } => reasons.push(format!("native on tensor cores ({rounding})")),
        _ => {}
    }
    r.reason = reasons.join("; ");
    if !failures.is_empty() {
        r.status = Status::Fail;
    }
    (xfail(t, case, options, r), Some(outputs))
}

/// Stress mode: runs the case `repeat − 1` more times, each on freshly bound buffers (outputs pre-filled
/// with garbage again, so a kernel that reads memory it never wrote shows up as well as a race), and
/// says where the first output that is not bitwise identical to the first run's differs.
fn repetitions_differ(
    t: &Target,
    case: &Case,
    inputs: &Inputs,
    first: &Outputs,
    repeat: usize,
) -> Option<String> {
    for rep in 2..=repeat {
        let again = match execute(&t.dev, case, inputs) {
            Ok(o) => o,
            Err(e) => return Some(format!("repetition {rep}: launch: {e}")),
        };
        for (a, b) in first.0.iter().zip(&again.0) {
            let size = a.dtype.size();
            let e = crate::metrics::exact(&b.elements, &a.elements, size);
            if let Some(i) = e.first {
                return Some(format!(
                    "repetition {rep} differs bitwise from the first in `{}`: {} element(s), first at {i} ({} vs {})",
                    a.arg,
                    e.mismatches,
                    a.dtype.read_f64(&b.elements, i),
                    a.dtype.read_f64(&a.elements, i)
                ));
            }
        }
    }
    None
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

/// Operand bytes the timing loop cycles through, and the most copies it binds for that. Launched again
/// on the same buffers, an op whose operands fit the last-level cache finds them there, while a decode
/// step reads each layer's weights once, from memory (on the Zen 3 build VM a 29 MB bf16 weight read
/// "147 % of peak" that way). So smaller ops are timed over copies of their operands, bound once each
/// and launched in turn, at least this many bytes in all: twice the largest caches a core or GPU sees
/// today (MI300X's 256 MB Infinity Cache; 32–96 MB L3 per CPU core complex, 50–60 MB GPU L2).
const ROTATE_BYTES: f64 = 512e6;
const MAX_COPIES: usize = 64;

/// How many copies of an op moving `bytes` per launch the timing loop cycles through.
fn copies_for(bytes: f64) -> usize {
    if bytes <= 0.0 || bytes >= ROTATE_BYTES {
        return 1;
    }
    ((ROTATE_BYTES / bytes).ceil() as usize).clamp(1, MAX_COPIES)
}

fn perf_one(t: &Target, case: &Case, inputs: &Inputs, options: &Options) -> Row {
    let (bound, _) = match prepare(t, case, inputs, true) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    // The extra copies are a measurement aid: where one cannot be bound (memory), time over those that were.
    let wanted = copies_for(bound.op.cost().bytes);
    let mut copies = vec![bound];
    while copies.len() < wanted {
        match case.bind(&t.dev, inputs, true) {
            Ok(b) => copies.push(b),
            Err(_) => break,
        }
    }
    let stream = t.dev.default_stream();
    let timed = (|| -> Result<(f64, usize)> {
        // Warm-up (first-use compilation, page faults) of every copy.
        for b in &copies {
            stream.launch(&b.op)?;
        }
        stream.sync()?;
        let mut batch = 1usize;
        let (mut total, mut iterations) = (0.0f64, 0usize);
        while total < options.perf_seconds && iterations < options.perf_max_iterations {
            let n = batch.min(options.perf_max_iterations - iterations);
            let start = Instant::now();
            for i in iterations..iterations + n {
                stream.launch(&copies[i % copies.len()].op)?;
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
    let bound = &copies[0];
    let cost = bound.op.cost();
    let mut perf = Perf {
        ms: seconds * 1e3,
        iterations,
        copies: copies.len(),
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
        // A case that computes, against a class whose peak is unknown (0), has no roofline: its memory
        // time alone could call a compute-bound case "memory bound".
        let unknown = cost.flops > 0.0 && peak_flops <= 0.0;
        let (best, which) = if unknown {
            (0.0, String::new())
        } else if compute >= memory {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Operands below ROTATE_BYTES are cycled through enough copies to pass it (at most MAX_COPIES);
    /// larger ones, or ops that move nothing, are launched on one set.
    #[test]
    fn copies_cover_the_rotation_bytes() {
        assert_eq!(copies_for(0.0), 1);
        assert_eq!(copies_for(ROTATE_BYTES), 1);
        assert_eq!(copies_for(2.0 * ROTATE_BYTES), 1);
        assert_eq!(copies_for(ROTATE_BYTES / 2.0), 2);
        assert_eq!(copies_for(29.4e6), 18);
        assert_eq!(copies_for(1e3), MAX_COPIES);
    }
}
