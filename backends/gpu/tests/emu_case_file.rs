//! PyTorch's and numpy's case files (`conformance/fixtures/*-op-cases.safetensors`) on the host emulator
//! at both warp widths: expected outputs from outside the project, not from the oracle.

use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_conformance::case_file::{read, run_file, OUTSIDE_CASE_FILES};
use dsv3_conformance::Status;
use std::path::Path;

#[test]
fn torch_op_cases_pass_at_warp_32_and_64() {
    for (path, warp) in OUTSIDE_CASE_FILES.iter().map(Path::new).flat_map(|p| [(p, 32), (p, 64)]) {
        let cases = read(path).expect("the shipped case file reads").cases.len();
        let report = run_file(&EmulatorBackend::new(warp), path).expect("reads");
        println!("{}", report.table());
        assert_eq!(
            report.count(Status::Pass),
            cases,
            "warp {warp}: {}\n{}",
            report.summary(),
            report.table()
        );
        assert_eq!(report.results.len(), cases);
    }
}
