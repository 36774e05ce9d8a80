//! The model-level oracle on every backend of this build that is present: both fixtures (FP8 with partial
//! blocks, and BF16), every numeric path. Bounds and their derivation: `dsv3_model::golden`.

use std::path::PathBuf;

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::Backend;
use dsv3_model::golden;
use dsv3_model::graph::NumericPath;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn run(backend: &dyn Backend, fixture_name: &str, path: NumericPath) {
    let device = backend.open(0).expect("CPU backends are always present");
    let report = golden::check(&fixture(fixture_name), device, path).unwrap();
    println!("{}", report.line());
    assert!(report.pass(), "{}", report.line());
}

fn backends() -> [CpuBackend; 2] {
    [CpuBackend::new(Mode::Fast), CpuBackend::new(Mode::Reference)]
}

#[test]
fn fp8_fixture_f32_path() {
    backends().iter().for_each(|b| run(b, "tiny-dsv3", NumericPath::F32));
}

#[test]
fn fp8_fixture_bf16_path() {
    backends().iter().for_each(|b| run(b, "tiny-dsv3", NumericPath::Bf16));
}

#[test]
fn fp8_fixture_w8a8_path() {
    backends().iter().for_each(|b| run(b, "tiny-dsv3", NumericPath::W8A8));
}

#[test]
fn bf16_fixture_f32_path() {
    backends().iter().for_each(|b| run(b, "tiny-dsv3-bf16", NumericPath::F32));
}

#[test]
fn bf16_fixture_bf16_path() {
    backends().iter().for_each(|b| run(b, "tiny-dsv3-bf16", NumericPath::Bf16));
}

#[test]
fn w8a8_needs_an_fp8_checkpoint() {
    let device = CpuBackend::new(Mode::Fast).open(0).unwrap();
    let err = golden::check(&fixture("tiny-dsv3-bf16"), device, NumericPath::W8A8).unwrap_err();
    assert!(err.to_string().contains("w8a8 needs an FP8 checkpoint"), "{err}");
}
