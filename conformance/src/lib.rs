//! dsv3-conformance: every backend compared op by op with the CPU reference mode (the oracle).
//!
//! * [`case`] — cases as data: op × dtypes × shape × seed, with deterministic inputs, guard regions
//!   around every output and the comparison with the oracle;
//! * [`case_file`] — cases brought from outside: inputs, expected outputs and parameters in a safetensors
//!   file (`dsv3 op --cases`), run and compared like generated cases;
//! * [`cases`] — the two sets: [`cases::quick`] (seconds, every op, edge shapes) and [`cases::full`]
//!   (plus DeepSeek-V3's real per-layer shapes);
//! * [`tolerance`] — the one tolerance table, each bound with its derivation;
//! * [`metrics`] — NMSE, max abs / rel, cosine distance, exact and tie-aware comparisons, guard checks;
//! * [`expectations`] — per-backend unsupported and expected-failure lists;
//! * [`sampling_stats`] — sampling judged by its distribution (chi-square against the exact nucleus);
//! * [`suite`] — the ops of one model step at its real shapes, each with a checked replica (`bench ops`);
//! * [`runner`] — test / perf / support modes; [`report`] — console table, JSON, markdown matrix;
//! * [`fuzzing`] — the case-file reader's fuzz entry; [`fuzz_replay`] — the stable replay of every fuzz
//!   target's corpus, shared with the model crate's targets.

pub mod case;
pub mod case_file;
pub mod cases;
pub mod expectations;
pub mod fuzz_replay;
pub mod fuzzing;
pub mod gen;
pub mod metrics;
pub mod report;
pub mod runner;
pub mod sampling_stats;
pub mod suite;
pub mod tolerance;

pub use case::Case;
pub use report::{Report, Row, Status};
pub use runner::{run, Mode, Options};

use dsv3_core::Backend;

/// Runs the quick set on `backend` against the oracle (test mode). Each backend crate's tests call this
/// and assert `!report.failed()`.
pub fn run_quick_against_oracle(backend: &dyn Backend) -> Report {
    run(&[backend], &cases::quick(), &Options::default())
}
