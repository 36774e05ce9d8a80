//! PyTorch's case file (`conformance/fixtures/torch-op-cases.safetensors`) on the host emulator at both
//! warp widths: expected outputs from outside the project, not from the oracle.

use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_conformance::case_file::{read, run_file, TORCH_OP_CASES};
use dsv3_conformance::Status;
use std::path::Path;

#[test]
fn torch_op_cases_pass_at_warp_32_and_64() {
    let path = Path::new(TORCH_OP_CASES);
    let cases = read(path).expect("the shipped case file reads").cases.len();
    for warp in [32, 64] {
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
