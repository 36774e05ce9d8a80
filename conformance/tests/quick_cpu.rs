//! The quick set on the CPU backend's fast mode (`cpu`) against its reference mode (`cpu-ref`).

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_conformance::{run_quick_against_oracle, Status};

#[test]
fn quick_set_cpu_fast_matches_reference() {
    let report = run_quick_against_oracle(&CpuBackend::new(Mode::Fast));
    println!("{}", report.table());
    assert!(report.count(Status::Pass) > 0, "nothing ran: {}", report.summary());
    assert!(!report.failed(), "conformance failures: {}", report.summary());
}

#[test]
fn quick_set_reference_matches_itself() {
    // The oracle against itself: catches harness bugs (guards, nondeterministic inputs, compare logic).
    let report = run_quick_against_oracle(&CpuBackend::new(Mode::Reference));
    let bad: Vec<_> = report.results.iter().filter(|r| r.status != Status::Pass).collect();
    assert!(bad.is_empty(), "{}", report.table());
    assert!(report.results.iter().all(|r| r.nmse.is_none_or(|v| v == 0.0)));
}
