//! `dsv3 bench plot RUN.json CHART.svg`: the chart of a saved run (`bench model --json` or `bench ops
//! --json`) drawn again from the run's own figures by this build's chart code, without measuring anything:
//! a run recorded on another machine, or before the charts changed, gets today's chart.

use std::path::PathBuf;

use super::plot;
use super::results::Run;
use crate::out::write_file;

/// Draw the chart of a saved run (`bench model --json` or `bench ops --json`) again, without measuring
///
/// The chart is what `--plot` draws for that kind of run: tok/s by batch and a roofline for `model`, the
/// per-op roofline for `ops`. The title keeps the run's commit and machine.
#[derive(clap::Args)]
pub struct Args {
    /// The saved run
    #[arg(value_name = "RUN.json")]
    run: PathBuf,
    /// The SVG file to write
    #[arg(value_name = "CHART.svg")]
    chart: PathBuf,
}

pub fn run(args: Args) -> i32 {
    crate::finish("bench plot", try_run(&args))
}

fn try_run(args: &Args) -> Result<i32, String> {
    let run = Run::load(&args.run).map_err(|e| e.to_string())?;
    let in_file = |e: String| format!("{}: {e}", args.run.display());
    let svg = match run.kind.as_str() {
        "model" => plot::tok_s_by_batch(&run).map_err(in_file)?,
        "ops" => plot::ops_roofline(&run).map_err(in_file)?,
        other => return Err(in_file(format!("kind {other:?}: only `model` and `ops` runs have charts"))),
    };
    write_file("CHART.svg", &args.chart, svg.as_bytes())?;
    Ok(0)
}
