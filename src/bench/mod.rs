//! `dsv3 bench`: one op (`--op`), a model's prefill and decode grid (`model`), every op of a model's step
//! (`ops`), the comparison of two saved runs (`compare`) and a saved run's chart (`plot`). One concern per
//! file: the op timer (`op`),
//! the op suite (`ops`) and its peers (`peer`), the model grid (`model`), the saved
//! format (`results`), the statistics (`stats`), the rooflines (`roofline`), where a run happened
//! (`machine`), tables (`report`), charts (`plot`), drawing a saved run again (`redraw`) and the comparison
//! (`compare`).

mod compare;
mod machine;
mod model;
mod op;
mod ops;
mod peer;
mod plot;
mod redraw;
mod report;
mod results;
mod roofline;
mod stats;

/// Time one op (ms, GFLOP/s, GB/s, % of peak), a model (`bench model`), or compare saved runs
///
/// `dsv3 bench --op OP`: GEMMs take any --shape and --dtype; other ops are timed on the full conformance
/// set's cases for that op (the DeepSeek-V3 shapes among them). `dsv3 bench ops --suite deepseek-v3`:
/// every op of a decode and a prefill step at the model's shapes, each checked on a replica. `dsv3 bench model`: prefill and decode
/// tok/s over prompt × generation × batch, saved with --json. `dsv3 bench compare A.json B.json`: ratios
/// with a noise verdict. `dsv3 bench plot RUN.json CHART.svg`: a saved run's chart drawn again.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    op: op::Args,
}

/// Boxed: the options of `model` and `ops` would make every `dsv3` command as large as they are.
#[derive(clap::Subcommand)]
enum Command {
    Model(Box<model::Args>),
    Ops(Box<ops::Args>),
    Compare(compare::Args),
    Plot(redraw::Args),
}

/// `quiet` (-q) hides the progress bar of `bench model`.
pub fn run(args: Args, quiet: bool) -> i32 {
    match args.command {
        Some(Command::Model(args)) => model::run(*args, quiet),
        Some(Command::Ops(args)) => ops::run(*args),
        Some(Command::Compare(args)) => compare::run(args),
        Some(Command::Plot(args)) => redraw::run(args),
        None => op::run(args.op),
    }
}
