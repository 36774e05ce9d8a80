//! Results: one row per (backend, device, case), written as a console table, as JSON, and as the
//! markdown support matrix (op × dtypes × backend) committed as `conformance/SUPPORT.md`.

use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    Unsupported,
    Unavailable,
    /// Failed, and listed as an expected failure.
    Xfail,
    /// Support mode: the device would run it (native or emulated, see the reason).
    Supported,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Unsupported => "unsupported",
            Status::Unavailable => "unavailable",
            Status::Xfail => "xfail",
            Status::Supported => "supported",
        }
    }
}

/// Timing of one case on one device (perf mode).
#[derive(Clone, Debug, Serialize)]
pub struct Perf {
    pub ms: f64,
    pub iterations: usize,
    /// Copies of the operands launched in turn (see the runner's `ROTATE_BYTES`).
    pub copies: usize,
    pub gflops: f64,
    pub gbps: f64,
    /// Measured time of the roofline bound over the measured time, in percent; `None` without a peak.
    pub pct_of_peak: Option<f64>,
    /// Which roofline bound binds: "compute (f32|bf16|fp8)" or "memory".
    pub bound: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub backend: String,
    pub device: String,
    pub op: String,
    pub case: String,
    pub dtype: String,
    pub status: Status,
    pub nmse: Option<f64>,
    pub max_abs: Option<f64>,
    pub max_rel: Option<f64>,
    pub cos_dist: Option<f64>,
    /// The NMSE bound the case is gated on (test mode, float outputs).
    pub tolerance: Option<f64>,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perf: Option<Perf>,
}

impl Row {
    pub fn new(
        backend: &str,
        device: &str,
        op: &str,
        case: &str,
        dtype: &str,
        status: Status,
        reason: String,
    ) -> Row {
        Row {
            backend: backend.into(),
            device: device.into(),
            op: op.into(),
            case: case.into(),
            dtype: dtype.into(),
            status,
            nmse: None,
            max_abs: None,
            max_rel: None,
            cos_dist: None,
            tolerance: None,
            reason,
            perf: None,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub results: Vec<Row>,
}

fn sci(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2e}"))
}

impl Report {
    /// Whether any row failed (the exit status of `dsv3 conformance`).
    pub fn failed(&self) -> bool {
        self.results.iter().any(|r| r.status == Status::Fail)
    }

    pub fn count(&self, status: Status) -> usize {
        self.results.iter().filter(|r| r.status == status).count()
    }

    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            Status::Pass,
            Status::Fail,
            Status::Xfail,
            Status::Unsupported,
            Status::Unavailable,
            Status::Supported,
        ]
        .iter()
        .filter(|s| self.count(**s) > 0)
        .map(|s| format!("{} {}", self.count(*s), s.as_str()))
        .collect();
        format!("{} results: {}", self.results.len(), parts.join(", "))
    }

    /// One line per row; failures carry their reason.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let w = self.results.iter().map(|r| r.case.len()).max().unwrap_or(4).clamp(4, 90);
        let perf = self.results.iter().any(|r| r.perf.is_some());
        if perf {
            let _ = writeln!(
                s,
                "{:<8} {:<w$} {:<11} {:>10} {:>9} {:>9} {:>7}  bound",
                "backend", "case", "status", "ms", "GFLOP/s", "GB/s", "%peak"
            );
        } else {
            let _ = writeln!(
                s,
                "{:<8} {:<w$} {:<11} {:>9} {:>9} {:>9} {:>9}  reason",
                "backend", "case", "status", "nmse", "bound", "max_abs", "cos_dist"
            );
        }
        for r in &self.results {
            if let Some(p) = &r.perf {
                let _ = writeln!(
                    s,
                    "{:<8} {:<w$} {:<11} {:>10.4} {:>9.1} {:>9.1} {:>7}  {}",
                    r.backend,
                    r.case,
                    r.status.as_str(),
                    p.ms,
                    p.gflops,
                    p.gbps,
                    p.pct_of_peak.map_or("-".into(), |v| format!("{v:.1}")),
                    p.bound.as_deref().unwrap_or("-")
                );
                continue;
            }
            let _ = writeln!(
                s,
                "{:<8} {:<w$} {:<11} {:>9} {:>9} {:>9} {:>9}  {}",
                r.backend,
                r.case,
                r.status.as_str(),
                sci(r.nmse),
                sci(r.tolerance),
                sci(r.max_abs),
                sci(r.cos_dist),
                r.reason
            );
        }
        let devices: Vec<String> = {
            let mut d: Vec<String> =
                self.results.iter().map(|r| format!("{}: {}", r.backend, r.device)).collect();
            d.dedup();
            d
        };
        for d in devices {
            let _ = writeln!(s, "device {d}");
        }
        let _ = writeln!(s, "{}", self.summary());
        s
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serialises")
    }

    /// The support matrix: one line per (op, dtypes), one column per backend, cells aggregated over the
    /// cases of that line (`pass`, `pass 3/4` with the rest unsupported, `fail`, `xfail`, `unsupported`,
    /// `unavailable`), reasons as numbered footnotes.
    pub fn markdown(&self) -> String {
        let mut backends: Vec<String> = Vec::new();
        for r in &self.results {
            if !backends.contains(&r.backend) {
                backends.push(r.backend.clone());
            }
        }
        // Backend-level unavailability rows (dtype "*") apply to every line.
        let unavailable: BTreeMap<&str, &str> = self
            .results
            .iter()
            .filter(|r| r.status == Status::Unavailable)
            .map(|r| (r.backend.as_str(), r.reason.as_str()))
            .collect();
        let mut lines: Vec<(String, String)> = Vec::new();
        for r in self.results.iter().filter(|r| r.status != Status::Unavailable) {
            let key = (r.op.clone(), r.dtype.clone());
            if !lines.contains(&key) {
                lines.push(key);
            }
        }
        // Ops with no case rows at all (every backend unavailable) still get a line.
        for r in self.results.iter().filter(|r| r.status == Status::Unavailable) {
            if !lines.iter().any(|(op, _)| *op == r.op) {
                lines.push((r.op.clone(), "*".into()));
            }
        }
        let mut order: Vec<&str> = dsv3_core::ops::OP_NAMES.to_vec();
        order.push("");
        lines.sort_by_key(|(op, _)| order.iter().position(|o| o == op).unwrap_or(order.len()));
        let mut notes: Vec<String> = Vec::new();
        let mut note = |reason: &str| -> usize {
            if let Some(i) = notes.iter().position(|n| n == reason) {
                return i + 1;
            }
            notes.push(reason.to_string());
            notes.len()
        };
        let mut s = String::new();
        let _ = writeln!(s, "# dsv3 support matrix\n");
        let _ = writeln!(
            s,
            "Generated by `dsv3 conformance ... --markdown FILE` (the README says how); do not edit by hand. Each cell \
             aggregates the conformance cases of that op and dtype combination on that backend, compared with \
             the CPU reference (`cpu-ref`).\n"
        );
        // Which device each column ran on (a fake test device says so in its name).
        for b in &backends {
            let device = self.results.iter().find(|r| &r.backend == b && !r.device.is_empty());
            if let Some(r) = device.filter(|_| !unavailable.contains_key(b.as_str())) {
                let _ = writeln!(s, "* `{b}`: {}", r.device);
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "| op | dtypes | {} |", backends.join(" | "));
        let _ = writeln!(s, "|---|---|{}", "---|".repeat(backends.len()));
        for (op, dtype) in &lines {
            let mut cells = Vec::new();
            for b in &backends {
                if let Some(reason) = unavailable.get(b.as_str()) {
                    cells.push(format!("unavailable[^{}]", note(reason)));
                    continue;
                }
                let rows: Vec<&Row> = self
                    .results
                    .iter()
                    .filter(|r| &r.backend == b && &r.op == op && &r.dtype == dtype)
                    .collect();
                cells.push(cell(&rows, &mut note));
            }
            let _ = writeln!(s, "| {op} | `{dtype}` | {} |", cells.join(" | "));
        }
        if !notes.is_empty() {
            let _ = writeln!(s);
            for (i, n) in notes.iter().enumerate() {
                let _ = writeln!(s, "[^{}]: {}", i + 1, n.replace('\n', " "));
            }
        }
        s
    }
}

fn cell(rows: &[&Row], note: &mut impl FnMut(&str) -> usize) -> String {
    if rows.is_empty() {
        return "–".into();
    }
    let n = rows.len();
    let count = |s: Status| rows.iter().filter(|r| r.status == s).count();
    let first_reason =
        |s: Status| rows.iter().find(|r| r.status == s).map(|r| r.reason.clone()).unwrap_or_default();
    let fails = count(Status::Fail);
    if fails > 0 {
        return format!("**fail** {fails}/{n}[^{}]", note(&first_reason(Status::Fail)));
    }
    let xfails = count(Status::Xfail);
    if xfails > 0 {
        return format!("xfail {xfails}/{n}[^{}]", note(&first_reason(Status::Xfail)));
    }
    let unsupported = count(Status::Unsupported);
    let ok = count(Status::Pass) + count(Status::Supported);
    let word = if count(Status::Supported) > 0 { "supported" } else { "pass" };
    // A passing backend that runs the op through a wider type says so, with how.
    let emulated = rows.iter().find_map(|r| {
        let at = r.reason.find("emulated via ")?;
        Some(r.reason[at..].split(';').next().unwrap_or_default().to_string())
    });
    let word = match &emulated {
        Some(via) => format!("{word} (emulated[^{}])", note(via)),
        None => word.to_string(),
    };
    match (ok, unsupported) {
        (_, 0) => word,
        (0, _) => format!("unsupported[^{}]", note(&first_reason(Status::Unsupported))),
        _ => format!("{word} {ok}/{n}, unsupported[^{}]", note(&first_reason(Status::Unsupported))),
    }
}
