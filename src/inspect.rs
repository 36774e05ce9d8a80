//! `dsv3 inspect`: what a checkpoint is, from its config alone or with its files, before anyone
//! downloads 640 GB of it; with `--place`, where its parts would go and how fast it would run.

use std::collections::HashMap;
use std::path::PathBuf;

use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::expert_stats::ExpertStats;
use dsv3_model::inspect::{vocabulary_gap, DeviceFit, Report};
use dsv3_model::placement::Rules;
use dsv3_model::plan::{self, DeviceSpec};
use dsv3_model::tokenizer::Tokenizer;

use crate::cli::TEXT;
use crate::out::{out, outln};
use crate::{device_specs, finish, registry};

/// What a checkpoint is, from its config alone or with its files
///
/// Architecture, parameters (total, active, MTP), weight bytes by dtype, latent KV-cache bytes per token,
/// and whether it fits on each device present.
#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "config"])))]
pub struct Args {
    /// A checkpoint directory (HF layout)
    #[arg(long, value_name = "DIR")]
    model: Option<PathBuf>,
    /// A config.json alone
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The last stdout line is a JSON object
    #[arg(long)]
    json: bool,
    /// Add the plan: per device its parts, weight bytes, cache per 1K tokens, share of the decode step and
    /// fit (or shortfall), and the predicted decode / prefill tok/s. RULES as for `generate --place` (parts
    /// no rule names go to the first device); `auto` plans it: attention and its cache first on the fastest
    /// device, then shared experts, dense layers, head, routers, routed experts by layer, spilling to the
    /// next
    #[arg(long, value_name = "RULES|auto", value_parser = TEXT)]
    place: Option<String>,
    /// Plan for these devices instead of the present ones, e.g. 'cuda:0=H200,cpu=768GB@300GB/s':
    /// DEVICE=GPU (a datasheet name: H200, H100, MI300X, …) or DEVICE=MEMORY@BANDWIDTH[@FLOPS] (GB, GiB, TB;
    /// GB/s, TB/s; TFLOPS — without it the prefill rate is unknown)
    #[arg(long, value_name = "DEVICES", requires = "place", value_parser = TEXT)]
    assume: Option<String>,
    /// Expert-usage counts (written by `generate --record-expert-stats`): each routed expert is read by
    /// its recorded share of tokens, and `auto` puts the most used first on the fastest device
    #[arg(long, value_name = "FILE", requires = "place")]
    expert_stats: Option<PathBuf>,
}

pub fn run(args: Args) -> i32 {
    finish("inspect", try_run(args).map(|()| 0))
}

fn try_run(args: Args) -> Result<(), String> {
    let (config, checkpoint) = match (&args.model, &args.config) {
        (Some(dir), _) => {
            let config = ModelConfig::from_file(&dir.join("config.json")).map_err(|e| e.to_string())?;
            (config, Some(Checkpoint::open(dir).map_err(|e| e.to_string())?))
        }
        (None, Some(file)) => (ModelConfig::from_file(file).map_err(|e| e.to_string())?, None),
        (None, None) => unreachable!("clap requires --model or --config"),
    };
    let assume = args.assume.as_deref();
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
    let plan = match args.place.as_deref() {
        None => None,
        Some(place) => {
            let specs = match &assumed {
                Some(specs) => specs.clone(),
                None => device_specs::present(&mut HashMap::new()),
            };
            let first = specs.first().ok_or("--place: no device present to plan on")?.name.clone();
            let usage = args.expert_stats.as_deref().map(|file| ExpertStats::load_for(file, &config));
            let usage = usage.transpose().map_err(|e| e.to_string())?;
            let sizes =
                plan::part_sizes(&config, checkpoint.as_ref(), usage.as_ref()).map_err(|e| e.to_string())?;
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
    match Tokenizer::for_model(args.model.as_deref(), config.vocab_size) {
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
    if args.json {
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
