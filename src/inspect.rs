//! `dsv3 inspect`: what a checkpoint is, from its config alone or with its files, before anyone
//! downloads 640 GB of it.

use std::path::Path;

use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::inspect::Report;

use crate::{finish, registry, Options};

pub fn run(args: &[String]) -> i32 {
    finish("inspect", try_run(args).map(|()| 0))
}

fn try_run(args: &[String]) -> Result<(), String> {
    let opts = Options::parse(args, &["json"])?;
    opts.only(&["model", "config", "json"])?;
    let (config, checkpoint) = match (opts.value("model"), opts.value("config")) {
        (Some(dir), None) => {
            let dir = Path::new(dir);
            let config = ModelConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
            (config, Some(Checkpoint::open(dir).map_err(|e| e.to_string())?))
        }
        (None, Some(file)) => (ModelConfig::from_file(Path::new(file)).map_err(|e| e.to_string())?, None),
        _ => return Err("give --model DIR or --config FILE".into()),
    };
    let devices: Vec<_> = registry::backends()
        .iter()
        .filter(|b| b.name() != "cpu-ref") // the same memory as `cpu`
        .filter_map(|b| b.devices().ok())
        .flatten()
        .collect();
    let report = Report::from_config(&config, checkpoint.as_ref(), &devices);
    print!("{}", report.render_text());
    if opts.flag("json") {
        println!("{}", report.to_json());
    }
    Ok(())
}
