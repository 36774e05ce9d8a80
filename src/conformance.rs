//! `dsv3 conformance`: every case on the selected backends against the CPU oracle.

use std::path::PathBuf;

use crate::cli::{Checked, OP, TEXT};
use crate::out::{out, write_file};
use crate::registry;
use dsv3_conformance::{cases, runner, Mode, Row, Status};

/// Run every op case on the selected backends against the CPU reference (oracle)
///
/// The full set uses DeepSeek-V3's shapes; --quick only edge shapes. Exit status 1 on any failure.
#[derive(clap::Args)]
pub struct Args {
    /// `all` (every backend under test; those this build or machine lacks are reported as rows), or
    /// NAME,... (each must be present here)
    #[arg(long, default_value = "all", value_parser = TEXT)]
    backend: String,
    /// Only the cases of this op
    #[arg(long, value_parser = OP)]
    op: Option<String>,
    /// Only the cases whose name contains TEXT
    #[arg(long, value_name = "TEXT", value_parser = TEXT)]
    case: Option<String>,
    /// Edge shapes only (seconds, every op)
    #[arg(long)]
    quick: bool,
    /// test: compare with the oracle; perf: time each case (ms, GFLOP/s, GB/s, % of peak); support: only
    /// ask each device
    #[arg(long, default_value = "test", value_parser = MODE)]
    mode: Mode,
    /// Write the report as JSON to FILE
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the support matrix (op × backend × dtype) as markdown to FILE
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Fail on expected failures that now pass (so stale entries get removed)
    #[arg(long)]
    verify_xfail: bool,
    /// Print each row on stderr as it is produced
    #[arg(long)]
    progress: bool,
    /// Stress: run each case N times on fresh buffers and fail if any run's outputs differ bitwise from the
    /// first (races, reads of uninitialised memory)
    #[arg(long, value_name = "N", default_value = "1", value_parser = REPEAT)]
    repeat: usize,
}

const MODE: Checked<Mode> = Checked(|mode| match mode {
    "test" => Ok(Mode::Test),
    "perf" => Ok(Mode::Perf),
    "support" => Ok(Mode::Support),
    other => Err(format!("--mode {other}: expected test, perf or support")),
});

const REPEAT: Checked<usize> = Checked(|n| {
    n.parse().ok().filter(|&n: &usize| n >= 1).ok_or(format!("--repeat {n}: expected a count ≥ 1"))
});

pub fn run(args: Args) -> i32 {
    crate::finish("conformance", try_run(args))
}

fn try_run(args: Args) -> Result<i32, String> {
    let spec = args.backend.as_str();
    // The oracle compared with itself proves nothing: `all` means every backend under test.
    let backends: Vec<_> =
        registry::select(spec)?.into_iter().filter(|b| spec != "all" || b.name() != "cpu-ref").collect();
    registry::require_present(spec, &backends)?;
    if args.repeat > 1 && args.mode != Mode::Test {
        return Err("--repeat compares outputs: it needs --mode test".into());
    }
    let set = if args.quick { cases::quick() } else { cases::full() };
    let options = runner::Options {
        mode: args.mode,
        op: args.op,
        case: args.case,
        verify_xfail: args.verify_xfail,
        progress: args.progress,
        repeat: args.repeat,
        ..runner::Options::default()
    };
    let refs: Vec<&dyn dsv3_core::Backend> = backends.iter().map(|b| b.as_ref()).collect();
    let mut report = runner::run(&refs, &set, &options);
    if spec == "all" {
        // Backends this build lacks are part of the answer too: one unavailable row per op, with why.
        for (name, reason) in registry::NOT_BUILT {
            for op in
                dsv3_core::ops::OP_NAMES.iter().filter(|op| options.op.as_deref().is_none_or(|o| o == **op))
            {
                report.results.push(Row::new(
                    name,
                    "-",
                    op,
                    "*",
                    "*",
                    Status::Unavailable,
                    reason.to_string(),
                ));
            }
        }
    }
    out!("{}", report.table())?;
    if let Some(path) = &args.json {
        write_file("--json", path, report.to_json().as_bytes())?;
    }
    if let Some(path) = &args.markdown {
        write_file("--markdown", path, report.markdown().as_bytes())?;
    }
    Ok(if report.failed() { 1 } else { 0 })
}
