//! The full set (DeepSeek-V3's real shapes) on the CPU fast mode against the reference. Minutes in a
//! release build, so ignored by default: `cargo test --release -p dsv3-conformance --test full_cpu --
//! --ignored --nocapture`.

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_conformance::{cases, run, Options};

#[test]
#[ignore = "minutes in a release build; run with --ignored"]
fn full_set_cpu_fast_matches_reference() {
    let cpu = CpuBackend::new(Mode::Fast);
    let report = run(&[&cpu], &cases::full(), &Options { progress: true, ..Options::default() });
    println!("{}", report.table());
    assert!(!report.failed(), "conformance failures: {}", report.summary());
}
