//! `dsv3 op --cases FILE`: the cases of a case file (inputs and expected outputs from outside, e.g.
//! PyTorch) on the selected backends, each compared with its expected outputs under the op's bound from
//! the tolerance table.

use std::path::PathBuf;

use crate::cli::TEXT;
use crate::out::{out, outln, write_file};
use crate::registry;
use dsv3_conformance::case_file::{self, FileCase};
use dsv3_conformance::runner::{self, Given};
use dsv3_conformance::Status;
use serde_json::json;

/// Run the cases of a case file on the selected backends
///
/// A case file holds inputs, expected outputs and parameters, e.g. written by PyTorch (format in
/// conformance/fixtures/CASES.md). Each case is compared with its expected outputs under the op's bound;
/// one row per case and backend. Exit status 1 on any failure.
#[derive(clap::Args)]
pub struct Args {
    /// The case file
    #[arg(long, value_name = "FILE.safetensors")]
    cases: PathBuf,
    /// Only the case named NAME
    #[arg(long, value_name = "NAME", value_parser = TEXT)]
    case: Option<String>,
    /// `all` (cpu-ref included) or NAME,...
    #[arg(long, default_value = "all", value_parser = TEXT)]
    backend: String,
    /// The last stdout line is {"results":[{"case","op","backend","status","nmse","max_abs","cos_dist",...}]}
    #[arg(long)]
    json: bool,
    /// Save the outputs (of exactly one --backend) to OUT under the expected tensors' names
    #[arg(long, value_name = "OUT")]
    write_actual: Option<PathBuf>,
    /// Print each row on stderr as it is produced
    #[arg(long)]
    progress: bool,
}

pub fn run(args: Args) -> i32 {
    crate::finish("op", try_run(args))
}

fn try_run(args: Args) -> Result<i32, String> {
    let path = args.cases.as_path();
    let file = case_file::read(path).map_err(|e| e.to_string())?;
    let selected: Vec<&FileCase> =
        file.cases.iter().filter(|c| args.case.as_ref().is_none_or(|n| &c.case.name == n)).collect();
    if selected.is_empty() {
        let names: Vec<&str> = file.cases.iter().map(|c| c.case.name.as_str()).collect();
        return Err(format!("--case: {} has no such case (it has {})", path.display(), names.join(", ")));
    }
    // Every backend, the CPU oracle included: here it is compared with the file, not with itself.
    let spec = args.backend.as_str();
    let backends = registry::select(spec)?;
    registry::require_present(spec, &backends)?;
    let write_actual = args.write_actual.as_deref();
    if write_actual.is_some() && backends.len() != 1 {
        return Err(
            "--write-actual needs exactly one --backend (the outputs are saved under the expected names)"
                .into(),
        );
    }
    let given: Vec<Given> = selected.iter().map(|c| c.given()).collect();
    let refs: Vec<&dyn dsv3_core::Backend> = backends.iter().map(|b| b.as_ref()).collect();
    let options = runner::Options { progress: args.progress, ..runner::Options::default() };
    let (report, actuals) = runner::run_given(&refs, &given, &options);
    if let Some(reference) = &file.reference {
        outln!("{}: {} case(s), expected outputs from {reference}", path.display(), file.cases.len())?;
    }
    out!("{}", report.table())?;
    if let Some(out) = write_actual {
        let outputs: Vec<_> = selected
            .iter()
            .filter_map(|c| actuals.iter().find(|a| a.case == c.case.name).map(|a| (*c, &a.outputs)))
            .collect();
        let backend = refs[0].name();
        let bytes = case_file::actual_file(path, backend, &outputs).map_err(|e| e.to_string())?;
        write_file("--write-actual", out, &bytes)?;
        let (n, of) = (outputs.len(), selected.len());
        tracing::info!("wrote {n} of {of} case(s)' outputs from {backend} to {}", out.display());
    }
    if args.json {
        let results: Vec<_> = report
            .results
            .iter()
            .map(|r| {
                json!({"case": r.case, "op": r.op, "backend": r.backend, "device": r.device, "status": r.status,
                       "nmse": r.nmse, "max_abs": r.max_abs, "cos_dist": r.cos_dist, "bound": r.tolerance,
                       "reason": r.reason})
            })
            .collect();
        outln!("{}", json!({ "results": results }))?;
    }
    // A backend that cannot run here is reported, not a failure; a case that ran and disagreed is.
    Ok(if report.results.iter().any(|r| r.status == Status::Fail) { 1 } else { 0 })
}
