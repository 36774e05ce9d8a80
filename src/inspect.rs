//! `dsv3 inspect`: what a checkpoint is, from its config alone or with its files, before anyone
//! downloads 640 GB of it.

use std::ffi::OsString;

use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::inspect::{vocabulary_gap, Report};
use dsv3_model::tokenizer::Tokenizer;

use crate::out::{out, outln};
use crate::{finish, registry, Options};

pub fn run(args: &[OsString]) -> i32 {
    finish("inspect", try_run(args).map(|()| 0))
}

fn try_run(args: &[OsString]) -> Result<(), String> {
    let opts = Options::parse(args, &["json"])?;
    opts.only(&["model", "config", "json"])?;
    let (config, checkpoint) = match (opts.path("model"), opts.path("config")) {
        (Some(dir), None) => {
            let config = ModelConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
            (config, Some(Checkpoint::open(dir).map_err(|e| e.to_string())?))
        }
        (None, Some(file)) => (ModelConfig::from_file(file).map_err(|e| e.to_string())?, None),
        _ => return Err("give --model DIR or --config FILE".into()),
    };
    let devices: Vec<_> = registry::backends()
        .iter()
        .filter(|b| b.name() != "cpu-ref") // the same memory as `cpu`
        .filter_map(|b| b.devices().ok())
        .flatten()
        .collect();
    let report = Report::from_config(&config, checkpoint.as_ref(), &devices);
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
    if opts.flag("json") {
        outln!("{}", report.to_json())?;
    }
    Ok(())
}
