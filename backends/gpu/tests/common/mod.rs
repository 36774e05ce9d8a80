//! Running conformance cases on the host emulator: the quick set per op, at a given warp width.

#![allow(dead_code)]

use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_conformance::{cases, run, Case, Options, Report, Status};

/// Runs `cases` of `op` on the emulator with `warp` lanes per warp and fails on anything but a pass.
pub fn check_cases(warp: u32, op: &str, cases: &[Case]) -> Report {
    check_backend(&EmulatorBackend::new(warp), op, cases)
}

/// Runs `cases` of `op` on `backend` (an emulator) and fails on anything but a pass.
pub fn check_backend(backend: &EmulatorBackend, op: &str, cases: &[Case]) -> Report {
    let options = Options { op: Some(op.to_string()), ..Options::default() };
    let report = run(&[backend], cases, &options);
    println!("{}", report.table());
    let on = report.results.first().map_or_else(String::new, |r| r.device.clone());
    assert!(report.count(Status::Pass) > 0, "{op} on {on}: nothing ran: {}", report.summary());
    let bad: Vec<_> = report.results.iter().filter(|r| r.status != Status::Pass).collect();
    assert!(bad.is_empty(), "{op} on {on}: {}\n{}", report.summary(), report.table());
    report
}

/// The quick set's cases of `op`, at warp 32 (NVIDIA) and 64 (AMD wave64).
pub fn check_quick(op: &str) {
    for warp in [32, 64] {
        check_cases(warp, op, &cases::quick());
    }
}
