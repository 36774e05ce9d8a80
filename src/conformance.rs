//! `dsv3 conformance`: every case on the selected backends against the CPU oracle.

use std::ffi::OsString;

use crate::out::{out, write_file};
use crate::{registry, Options};
use dsv3_conformance::{cases, runner, Mode, Row, Status};

pub fn run(args: &[OsString]) -> i32 {
    crate::finish("conformance", try_run(args))
}

fn try_run(args: &[OsString]) -> Result<i32, String> {
    let opts = Options::parse(args, &["quick", "verify-xfail", "progress"])?;
    opts.only(&[
        "backend",
        "op",
        "case",
        "quick",
        "json",
        "markdown",
        "verify-xfail",
        "mode",
        "progress",
        "repeat",
    ])?;
    let mode = match opts.value("mode").unwrap_or("test") {
        "test" => Mode::Test,
        "perf" => Mode::Perf,
        "support" => Mode::Support,
        other => return Err(format!("--mode {other}: expected test, perf or support")),
    };
    let spec = opts.value("backend").unwrap_or("all");
    // The oracle compared with itself proves nothing: `all` means every backend under test.
    let backends: Vec<_> =
        registry::select(spec)?.into_iter().filter(|b| spec != "all" || b.name() != "cpu-ref").collect();
    registry::require_present(spec, &backends)?;
    if let Some(op) = opts.value("op") {
        if !dsv3_core::ops::OP_NAMES.contains(&op) {
            return Err(format!("--op {op}: unknown op (known: {})", dsv3_core::ops::OP_NAMES.join(", ")));
        }
    }
    let repeat = match opts.value("repeat") {
        None => 1,
        Some(n) => {
            n.parse().ok().filter(|&n: &usize| n >= 1).ok_or(format!("--repeat {n}: expected a count ≥ 1"))?
        }
    };
    if repeat > 1 && mode != Mode::Test {
        return Err("--repeat compares outputs: it needs --mode test".into());
    }
    let set = if opts.flag("quick") { cases::quick() } else { cases::full() };
    let options = runner::Options {
        mode,
        op: opts.value("op").map(str::to_string),
        case: opts.value("case").map(str::to_string),
        verify_xfail: opts.flag("verify-xfail"),
        progress: opts.flag("progress"),
        repeat,
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
    if let Some(path) = opts.path("json") {
        write_file("--json", path, report.to_json().as_bytes())?;
    }
    if let Some(path) = opts.path("markdown") {
        write_file("--markdown", path, report.markdown().as_bytes())?;
    }
    Ok(if report.failed() { 1 } else { 0 })
}
