//! `dsv3 inspect`: what a checkpoint is, from its config alone or with its files, before anyone
//! downloads 640 GB of it; with `--place`, where its parts would go and how fast it would run.

use std::collections::HashMap;
use std::ffi::OsString;

use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::inspect::{vocabulary_gap, DeviceFit, Report};
use dsv3_model::placement::Rules;
use dsv3_model::plan::{self, DeviceSpec};
use dsv3_model::tokenizer::Tokenizer;

use crate::out::{out, outln};
use crate::{device_specs, finish, registry, Options};

pub fn run(args: &[OsString]) -> i32 {
    finish("inspect", try_run(args).map(|()| 0))
}

fn try_run(args: &[OsString]) -> Result<(), String> {
    let opts = Options::parse(args, &["json"])?;
    opts.only(&["model", "config", "json", "place", "assume"])?;
    let (config, checkpoint) = match (opts.path("model"), opts.path("config")) {
        (Some(dir), None) => {
            let config = ModelConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
            (config, Some(Checkpoint::open(dir).map_err(|e| e.to_string())?))
        }
        (None, Some(file)) => (ModelConfig::from_file(file).map_err(|e| e.to_string())?, None),
        _ => return Err("give --model DIR or --config FILE".into()),
    };
    let assume = opts.value("assume");
    if assume.is_some() && opts.value("place").is_none() {
        return Err("--assume plans for devices: give --place auto or --place RULES with it".into());
    }
    // Assumed devices replace the present ones, in the fit lines too (below).
    let devices: Vec<_> = match assume {
        Some(_) => Vec::new(),
        None => registry::backends()
            .iter()
            .filter(|b| b.name() != "cpu-ref") // the same memory as `cpu`
            .filter_map(|b| b.devices().ok())
            .flatten()
            .collect(),
    };
    // The plan first: a bad --place or --assume is an error before any output.
    let assumed = assume.map(device_specs::assumed).transpose()?;
    let plan = match opts.value("place") {
        None => None,
        Some(place) => {
            let specs = match &assumed {
                Some(specs) => specs.clone(),
                None => device_specs::present(&mut HashMap::new()),
            };
            let first = specs.first().ok_or("--place: no device present to plan on")?.name.clone();
            let sizes = plan::part_sizes(&config, checkpoint.as_ref(), None).map_err(|e| e.to_string())?;
            let plan = if Rules::is_auto(place) {
                plan::auto(&config, &sizes, &specs)
            } else {
                // Parts no rule names go to the first device (the first assumed, or `--backend auto`'s).
                let rules = Rules::parse(place).map_err(|e| e.to_string())?;
                let assignment = rules.assign(&config, &first).map_err(|e| e.to_string())?;
                plan::evaluate(&config, &sizes, &specs, assignment)
            };
            Some(plan.map_err(|e| e.to_string())?)
        }
    };
    let mut report = Report::from_config(&config, checkpoint.as_ref(), &devices);
    if let Some(specs) = &assumed {
        report.devices = specs.iter().map(|s| assumed_fit(s, report.fit_bytes)).collect();
    }
    out!("{}", report.render_text())?;
    // The tokenizer generation would use: its faults are part of the report, not the end of it.
    match Tokenizer::for_model(opts.path("model"), config.vocab_size) {
        Ok(tokenizer) => {
            if let Some(gap) = tokenizer.and_then(|t| vocabulary_gap(config.vocab_size, t.vocab_size())) {
                outln!("{gap}")?;
            }
        }
        Err(e) => outln!("tokenizer       unusable: {e}")?,
    }
    if let Some(plan) = &plan {
        out!("{}", plan.render_text())?;
    }
    if opts.flag("json") {
        let mut object = report.to_json();
        if let (Some(plan), Some(map)) = (&plan, object.as_object_mut()) {
            for (key, value) in plan.json_fields() {
                map.insert(key.to_string(), value);
            }
        }
        outln!("{object}")?;
    }
    Ok(())
}

/// The report's fit line for an assumed device (whole model, no headroom: as for present devices).
fn assumed_fit(spec: &DeviceSpec, fit_bytes: u64) -> DeviceFit {
    let (backend, ordinal) = spec.name.split_once(':').unwrap_or((&spec.name, "0"));
    DeviceFit {
        backend: backend.to_string(),
        ordinal: ordinal.parse().unwrap_or(0),
        name: format!("{} (assumed)", spec.model),
        memory_bytes: spec.memory_bytes,
        fits: (spec.memory_bytes > 0).then_some(fit_bytes <= spec.memory_bytes),
    }
}
