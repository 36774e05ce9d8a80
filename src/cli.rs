//! The command line, declared with clap's derive: `dsv3` and its subcommands (each subcommand's options
//! live beside its code as an `Args` struct, so an option is one field there), the value checks they
//! share, and where clap's own output goes: help and version through [`crate::out`] (a closed stdout ends
//! quietly, a full one is an error — clap's printing would panic or ignore it), errors on stderr with
//! clap's status 2.

use std::ffi::OsStr;

use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use dsv3_model::generate::{MAX_NEW_TOKENS_LIMIT, MIN_TEMPERATURE};

use crate::out::{err, out};
use crate::{bench, conformance, finish, inspect, model_cmd, op_cmd, probe, serve};

/// DeepSeek-V3-class inference over one backend layer: run models on whatever hardware is present, check
/// every backend against the CPU oracle, measure each op.
///
/// `dsv3 help COMMAND` (or `dsv3 COMMAND --help`) describes a command and its options. Errors exit with
/// status 2, a failed check (a conformance case, a golden fixture) with 1. Log lines (what was loaded from
/// where, which path was chosen, warnings) go to stderr: `-q` keeps only warnings, `-v` / `-vv` add debug
/// and trace lines, and `RUST_LOG` (e.g. `RUST_LOG=debug`), when set, decides instead.
#[derive(Parser)]
#[command(name = "dsv3", version, arg_required_else_help = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log lines on stderr: -v debug, -vv trace
    #[arg(short, long, action = ArgAction::Count, global = true, display_order = 1000)]
    pub verbose: u8,
    /// Only warnings and errors on stderr (results are still printed)
    #[arg(short, long, global = true, conflicts_with = "verbose", display_order = 1000)]
    pub quiet: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Every backend compiled in, its devices and capabilities, or why it is unavailable
    Devices,
    Conformance(conformance::Args),
    Op(op_cmd::Args),
    Bench(bench::Args),
    Generate(model_cmd::GenerateArgs),
    Logits(model_cmd::LogitsArgs),
    Inspect(inspect::Args),
    Golden(model_cmd::GoldenArgs),
    Probe(probe::Args),
    Serve(serve::Args),
    /// A completion script for SHELL on stdout
    ///
    /// e.g. `dsv3 completions bash > ~/.local/share/bash-completion/completions/dsv3`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The command line, or the exit status when there is nothing to run: 0 after help or the version, 2
/// after a usage error (printed on stderr, with clap's suggestion for a misspelt command or option).
pub fn parse() -> Result<Cli, i32> {
    Cli::try_parse().map_err(|e| {
        // Errors end with a newline; help does not.
        let text = e.render().to_string();
        let end = if text.ends_with('\n') { "" } else { "\n" };
        if e.use_stderr() {
            err!("{text}{end}");
            e.exit_code()
        } else {
            finish("help", out!("{text}{end}").map(|()| e.exit_code()).map_err(String::from))
        }
    })
}

/// `dsv3 completions SHELL`: the script, rendered in memory and printed like any other output.
pub fn completions(shell: clap_complete::Shell) -> i32 {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "dsv3", &mut script);
    let script = String::from_utf8_lossy(&script);
    finish("completions", out!("{script}").map(|()| 0).map_err(String::from))
}

/// A value parser from a function of the text: the function's error is the message, as it is when it
/// names its option (as the commands' own errors do), else after `--option value: ` (for a check several
/// options share). A value that is not UTF-8 is an error naming the option — clap's own parsers say only
/// that some argument was not UTF-8. Paths take `PathBuf` instead: any bytes the OS allows.
#[derive(Clone)]
pub struct Checked<T>(pub fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Checked<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let flag = arg.and_then(clap::Arg::get_long).unwrap_or("value");
        let Some(text) = value.to_str() else {
            let message = format!("--{flag}: `{}` is not valid UTF-8", value.to_string_lossy());
            return Err(cmd.clone().error(ErrorKind::InvalidUtf8, message));
        };
        (self.0)(text).map_err(|e| {
            let message = if e.starts_with("--") { e } else { format!("--{flag} {text}: {e}") };
            cmd.clone().error(ErrorKind::ValueValidation, message)
        })
    }
}

/// Any text (UTF-8).
pub const TEXT: Checked<String> = Checked(|s| Ok(s.to_string()));

/// `--op`: one of the ops every backend implements.
pub const OP: Checked<String> = Checked(|op| {
    if dsv3_core::ops::OP_NAMES.contains(&op) {
        Ok(op.to_string())
    } else {
        Err(format!("--op {op}: unknown op (known: {})", dsv3_core::ops::OP_NAMES.join(", ")))
    }
});

pub fn number<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("{flag}: `{s}` is not a number"))
}

/// `--seed`.
pub const SEED: Checked<u64> = Checked(|s| number("--seed", s));

/// `--top-p`.
pub const TOP_P: Checked<f32> = Checked(|s| number("--top-p", s));

/// `--max-new-tokens`: 1 up to the generator's limit.
pub const MAX_NEW_TOKENS: Checked<usize> = Checked(|s| {
    let n = number("--max-new-tokens", s)?;
    if n == 0 || n > MAX_NEW_TOKENS_LIMIT {
        return Err(format!("--max-new-tokens {n}: must be in 1..={MAX_NEW_TOKENS_LIMIT}"));
    }
    Ok(n)
});

/// `--temperature`: 0 (greedy) or at least [`MIN_TEMPERATURE`], below which `logits / T` overflows (the
/// generator refuses it too; here the option is named before anything is loaded).
pub const TEMPERATURE: Checked<f32> = Checked(|s| {
    let t: f32 = number("--temperature", s)?;
    if t != 0.0 && (t.is_nan() || t < MIN_TEMPERATURE) {
        return Err(format!("--temperature {s}: must be 0 (greedy) or at least {MIN_TEMPERATURE}"));
    }
    Ok(t)
});

#[cfg(test)]
mod tests {
    use super::*;

    /// clap's own consistency checks of the declarations (conflicting names, bad defaults).
    #[test]
    fn the_declarations_are_consistent() {
        Cli::command().debug_assert();
    }
}
