//! `dsv3 conformance`: every case on the selected backends against the CPU oracle.

use crate::{registry, Options};
use dsv3_conformance::{cases, runner, Mode};

pub fn run(args: &[String]) -> i32 {
    match try_run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("dsv3 conformance: {e}");
            2
        }
    }
}

fn try_run(args: &[String]) -> Result<i32, String> {
    let opts = Options::parse(args, &["quick", "verify-xfail", "support", "progress"])?;
    opts.only(&["backend", "op", "case", "quick", "json", "markdown", "verify-xfail", "support", "progress"])?;
    let spec = opts.value("backend").unwrap_or("all");
    // The oracle compared with itself proves nothing: `all` means every backend under test.
    let backends: Vec<_> =
        registry::select(spec)?.into_iter().filter(|b| spec != "all" || b.name() != "cpu-ref").collect();
    if let Some(op) = opts.value("op") {
        if !dsv3_core::ops::OP_NAMES.contains(&op) {
            return Err(format!("--op {op}: unknown op (known: {})", dsv3_core::ops::OP_NAMES.join(", ")));
        }
    }
    let set = if opts.flag("quick") { cases::quick() } else { cases::full() };
    let options = runner::Options {
        mode: if opts.flag("support") { Mode::Support } else { Mode::Test },
        op: opts.value("op").map(str::to_string),
        case: opts.value("case").map(str::to_string),
        verify_xfail: opts.flag("verify-xfail"),
        progress: opts.flag("progress"),
        ..runner::Options::default()
    };
    let refs: Vec<&dyn dsv3_core::Backend> = backends.iter().map(|b| b.as_ref()).collect();
    let report = runner::run(&refs, &set, &options);
    print!("{}", report.table());
    if let Some(path) = opts.value("json") {
        std::fs::write(path, report.to_json()).map_err(|e| format!("--json {path}: {e}"))?;
    }
    if let Some(path) = opts.value("markdown") {
        std::fs::write(path, report.markdown()).map_err(|e| format!("--markdown {path}: {e}"))?;
    }
    Ok(if report.failed() { 1 } else { 0 })
}
