//! `dsv3 op --cases FILE`: the cases of a case file (inputs and expected outputs from outside, e.g.
//! PyTorch) on the selected backends, each compared with its expected outputs under the op's bound from
//! the tolerance table.

use crate::{registry, Options};
use dsv3_conformance::case_file::{self, FileCase};
use dsv3_conformance::runner::{self, Given};
use dsv3_conformance::Status;
use serde_json::json;
use std::path::Path;

pub fn run(args: &[String]) -> i32 {
    crate::finish("op", try_run(args))
}

fn try_run(args: &[String]) -> Result<i32, String> {
    let opts = Options::parse(args, &["json", "progress"])?;
    opts.only(&["cases", "case", "backend", "json", "write-actual", "progress"])?;
    let path = opts.value("cases").ok_or("--cases FILE.safetensors is required")?;
    let file = case_file::read(Path::new(path)).map_err(|e| e.to_string())?;
    let selected: Vec<&FileCase> =
        file.cases.iter().filter(|c| opts.value("case").is_none_or(|n| c.case.name == n)).collect();
    if selected.is_empty() {
        let names: Vec<&str> = file.cases.iter().map(|c| c.case.name.as_str()).collect();
        return Err(format!("--case: {path} has no such case (it has {})", names.join(", ")));
    }
    // Every backend, the CPU oracle included: here it is compared with the file, not with itself.
    let backends = registry::select(opts.value("backend").unwrap_or("all"))?;
    let write_actual = opts.value("write-actual");
    if write_actual.is_some() && backends.len() != 1 {
        return Err(
            "--write-actual needs exactly one --backend (the outputs are saved under the expected names)"
                .into(),
        );
    }
    let given: Vec<Given> = selected.iter().map(|c| c.given()).collect();
    let refs: Vec<&dyn dsv3_core::Backend> = backends.iter().map(|b| b.as_ref()).collect();
    let options = runner::Options { progress: opts.flag("progress"), ..runner::Options::default() };
    let (report, actuals) = runner::run_given(&refs, &given, &options);
    if let Some(reference) = &file.reference {
        println!("{path}: {} case(s), expected outputs from {reference}", file.cases.len());
    }
    print!("{}", report.table());
    if let Some(out) = write_actual {
        let outputs: Vec<_> = selected
            .iter()
            .filter_map(|c| actuals.iter().find(|a| a.case == c.case.name).map(|a| (*c, &a.outputs)))
            .collect();
        let backend = refs[0].name();
        case_file::write_actual(Path::new(out), Path::new(path), backend, &outputs)
            .map_err(|e| e.to_string())?;
        eprintln!("wrote {} of {} case(s)' outputs from {backend} to {out}", outputs.len(), selected.len());
    }
    if opts.flag("json") {
        let results: Vec<_> = report
            .results
            .iter()
            .map(|r| {
                json!({"case": r.case, "op": r.op, "backend": r.backend, "device": r.device, "status": r.status,
                       "nmse": r.nmse, "max_abs": r.max_abs, "cos_dist": r.cos_dist, "bound": r.tolerance,
                       "reason": r.reason})
            })
            .collect();
        println!("{}", json!({ "results": results }));
    }
    // A backend that cannot run here is reported, not a failure; a case that ran and disagreed is.
    Ok(if report.results.iter().any(|r| r.status == Status::Fail) { 1 } else { 0 })
}
