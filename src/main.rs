//! `dsv3`: run DeepSeek-V3-class models on whatever hardware is present, check every backend against the
//! CPU oracle, and measure each op.

mod bench;
mod cli;
mod conformance;
mod device_specs;
mod devices;
mod inspect;
mod logging;
mod model_cmd;
mod op_cmd;
mod out;
mod probe;
mod registry;
mod serve;

use cli::Command;
use out::errln;

/// Mesa's Vulkan drivers (lavapipe included) load the Wayland client library, which writes "error:
/// XDG_RUNTIME_DIR is invalid or not set in the environment." once per Vulkan instance when that
/// variable is unset, as on servers and in containers. It only looks for a display to draw on, which dsv3
/// never does; an absolute path (the temporary directory) keeps it quiet. Set before any thread starts.
fn quiet_wayland_probe() {
    if !std::env::var_os("XDG_RUNTIME_DIR").is_some_and(|d| std::path::Path::new(&d).is_absolute()) {
        std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
}

fn main() {
    quiet_wayland_probe();
    let cli = match cli::parse() {
        Ok(cli) => cli,
        Err(code) => std::process::exit(code),
    };
    logging::init(cli.verbose, cli.quiet);
    let code = match cli.command {
        Command::Devices => devices::run(),
        Command::Conformance(args) => conformance::run(args),
        Command::Op(args) => op_cmd::run(args),
        Command::Bench(args) => bench::run(args, cli.quiet),
        Command::Generate(args) => model_cmd::run_generate(args),
        Command::Logits(args) => model_cmd::run_logits(args),
        Command::Golden(args) => model_cmd::run_golden(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Probe(args) => probe::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Completions { shell } => cli::completions(shell),
    };
    std::process::exit(code);
}

/// The exit status of a subcommand: its own, or 2 with the error on stderr.
pub fn finish(command: &str, result: Result<i32, String>) -> i32 {
    result.unwrap_or_else(|e| {
        errln!("dsv3 {command}: {e}");
        2
    })
}
