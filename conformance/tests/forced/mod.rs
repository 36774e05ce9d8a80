//! The GEMM cases of the quick set on the CPU fast mode with its kernel path forced (`DSV3_CPU_KERNEL`),
//! so that every path passes conformance on a machine that has it, not only the best one: the bf16
//! prefill paths (AMX, AVX512-BF16; their cases are the prefill GEMMs with bf16 activations), and the
//! paths below the best one this CPU has (AVX2 on an AVX-512 machine, the portable scalar path
//! everywhere). The path is chosen once per process, so each forced path is its own test binary with
//! this one test. A path this CPU cannot run is reported `unavailable: <reason>` through
//! `dsv3_core::testing::cpu_lacks`: never a pass, counted and listed by `ci/test.sh` (under `CI=true` too:
//! no CI step can install an instruction set).

use dsv3_backend_cpu::fast::gemm::{kernel_name, KERNEL_ENV};
use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_conformance::{cases, run, Options, Status};

pub fn gemm_cases_pass_on_forced_path(test: &str, path: &str) {
    // Safe to set: this binary has one test, and nothing has read the environment yet.
    std::env::set_var(KERNEL_ENV, path);
    let name = kernel_name();
    if !name.contains(&format!("forced by {KERNEL_ENV}={path}")) {
        let why = format!("unavailable: this CPU cannot run the {path} path: {name}");
        return dsv3_core::testing::cpu_lacks(test, &why);
    }
    let cpu = CpuBackend::new(Mode::Fast);
    for op in ["gemm", "grouped_gemm"] {
        let options = Options { op: Some(op.into()), ..Options::default() };
        let report = run(&[&cpu], &cases::quick(), &options);
        println!("{name}\n{}", report.table());
        assert!(report.count(Status::Pass) > 0, "{op}: nothing ran: {}", report.summary());
        assert!(!report.failed(), "{op} on {name}: {}", report.summary());
    }
}
