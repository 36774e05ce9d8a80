//! Log lines through `tracing`: what was loaded from where, which numeric path was chosen, warnings such
//! as a kernel cache that cannot be written. They go to stderr only, so a `--json` last line on stdout
//! stays clean, through [`crate::out::Stderr`], so a closed stderr cannot end a command. The results a
//! command exists to print (tables, tokens per second, error messages) are not log lines: they are
//! printed whatever the level.

use std::io::IsTerminal;

use tracing_subscriber::filter::{EnvFilter, LevelFilter};

use crate::out::Stderr;

/// Installs the subscriber for the whole process. Levels: warnings and errors with `-q`, info by default,
/// debug with `-v`, trace with `-vv`; `RUST_LOG` (e.g. `RUST_LOG=dsv3_backend_gpu=debug`), when set,
/// decides instead.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::WARN,
        (false, 0) => LevelFilter::INFO,
        (false, 1) => LevelFilter::DEBUG,
        (false, _) => LevelFilter::TRACE,
    };
    let filter = EnvFilter::builder().with_default_directive(level.into()).from_env_lossy();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| Stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .finish();
    // Only `main` installs one; were there another, its lines would still go somewhere.
    let _ = tracing::subscriber::set_global_default(subscriber);
}
