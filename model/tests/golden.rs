//! The model-level oracle on every backend of this build that is present: both fixtures (FP8 with partial
//! blocks, and BF16), every numeric path. Bounds and their derivation: `dsv3_model::golden`.

use std::path::PathBuf;

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_backend_wgpu::WgpuBackend;
use dsv3_core::{Backend, Error};
use dsv3_model::golden;
use dsv3_model::graph::NumericPath;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn run(backend: &dyn Backend, fixture_name: &str, path: NumericPath) {
    let device = backend.open(0).expect("listed backends have a device 0");
    let report = golden::check(&fixture(fixture_name), device, path).unwrap();
    println!("{}", report.line());
    assert!(report.pass(), "{}", report.line());
}

/// The CPU backends, and wgpu where a Vulkan driver is present. Without one the wgpu runs are reported
/// loudly as not run — except under `CI=true`, where the driver is installed and its absence fails.
fn backends() -> Vec<Box<dyn Backend>> {
    let mut all: Vec<Box<dyn Backend>> =
        vec![Box::new(CpuBackend::new(Mode::Fast)), Box::new(CpuBackend::new(Mode::Reference))];
    let wgpu = WgpuBackend::new();
    let reason = match wgpu.devices() {
        Ok(d) if !d.is_empty() => {
            all.push(Box::new(wgpu));
            return all;
        }
        Ok(_) => "no device".to_string(),
        Err(Error::Unavailable { reason, .. }) => reason,
        Err(e) => e.to_string(),
    };
    dsv3_core::testing::not_run("the golden fixtures on wgpu", &format!("wgpu unavailable: {reason}"));
    all
}

#[test]
fn fp8_fixture_f32_path() {
    backends().iter().for_each(|b| run(b.as_ref(), "tiny-dsv3", NumericPath::F32));
}

#[test]
fn fp8_fixture_bf16_path() {
    backends().iter().for_each(|b| run(b.as_ref(), "tiny-dsv3", NumericPath::Bf16));
}

#[test]
fn fp8_fixture_w8a8_path() {
    backends().iter().for_each(|b| run(b.as_ref(), "tiny-dsv3", NumericPath::W8A8));
}

/// Routing flips are found against the f32 path's routing, reported with their own error and left out of
/// the bound: W8A8 quantizes the router's input, so tokens whose expert margin is below its noise pick
/// other experts; bf16 keeps every choice on these fixtures (smallest margin 2e-3), so it excuses nothing.
#[test]
fn routing_flips_are_excused_and_reported_only_where_routing_differs() {
    let device = CpuBackend::new(Mode::Fast).open(0).unwrap();
    let w8a8 = golden::check(&fixture("tiny-dsv3"), device.clone(), NumericPath::W8A8).unwrap();
    assert!(!w8a8.excused.is_empty(), "{}", w8a8.line());
    assert!(w8a8.line().contains("excused"), "{}", w8a8.line());
    // Flipped rows are the large errors the random-walk bound does not describe.
    assert!(w8a8.excused.iter().all(|&(_, e)| e > w8a8.prefill.rel_l2), "{}", w8a8.line());
    let bf16 = golden::check(&fixture("tiny-dsv3"), device, NumericPath::Bf16).unwrap();
    assert!(bf16.excused.is_empty(), "{}", bf16.line());
}

#[test]
fn bf16_fixture_f32_path() {
    backends().iter().for_each(|b| run(b.as_ref(), "tiny-dsv3-bf16", NumericPath::F32));
}

#[test]
fn bf16_fixture_bf16_path() {
    backends().iter().for_each(|b| run(b.as_ref(), "tiny-dsv3-bf16", NumericPath::Bf16));
}

#[test]
fn w8a8_needs_an_fp8_checkpoint() {
    let device = CpuBackend::new(Mode::Fast).open(0).unwrap();
    let err = golden::check(&fixture("tiny-dsv3-bf16"), device, NumericPath::W8A8).unwrap_err();
    assert!(err.to_string().contains("w8a8 needs an FP8 checkpoint"), "{err}");
}

/// A fixture whose golden file is rewritten by `edit` (name → (dtype, shape, bytes)).
fn edited_fixture(
    edit: impl FnOnce(&mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>),
) -> tempfile::TempDir {
    let src = fixture("tiny-dsv3-bf16");
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    let bytes = std::fs::read(src.join("golden.safetensors")).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<_> = golden
        .tensors()
        .into_iter()
        .map(|(name, t)| (name, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    edit(&mut tensors);
    let views = tensors.iter().map(|(name, dtype, shape, data)| {
        (name.clone(), safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap())
    });
    safetensors::serialize_to_file(views, None, &dir.path().join("golden.safetensors")).unwrap();
    dir
}

fn expect_golden_error(dir: &tempfile::TempDir, field: &str, says: &str) {
    let device = CpuBackend::new(Mode::Fast).open(0).unwrap();
    match golden::check(dir.path(), device, NumericPath::F32) {
        Err(Error::Data { field: f, reason, .. }) => {
            assert_eq!(f, field, "{reason}");
            assert!(reason.contains(says), "{reason}");
        }
        other => panic!("expected a Data error on {field}, got {:?}", other.map(|r| r.line())),
    }
}

/// Ids past u32 used to wrap (`x as u32`: 2^32 + 5 became 5) and the check passed; logits of the wrong
/// shape were accepted whenever their element count matched.
#[test]
fn malformed_golden_files_are_rejected_naming_the_tensor() {
    let set_first_id = |value: i64| {
        move |t: &mut Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)>| {
            let ids = t.iter_mut().find(|(n, ..)| n == "prompt_ids").unwrap();
            ids.3[..8].copy_from_slice(&value.to_le_bytes());
        }
    };
    let first = {
        let bytes = std::fs::read(fixture("tiny-dsv3-bf16/golden.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        i64::from_le_bytes(st.tensor("prompt_ids").unwrap().data()[..8].try_into().unwrap())
    };
    expect_golden_error(&edited_fixture(set_first_id((1 << 32) + first)), "prompt_ids", "not a token id");
    expect_golden_error(&edited_fixture(set_first_id(-1)), "prompt_ids", "element 0 is -1");
    // Past the 384-row vocabulary of this fixture.
    expect_golden_error(&edited_fixture(set_first_id(384)), "prompt_ids", "element 0 is 384");
    // Same element count, transposed shape.
    let transposed = edited_fixture(|t| {
        let logits = t.iter_mut().find(|(n, ..)| n == "decode_logits").unwrap();
        logits.2.reverse();
    });
    expect_golden_error(&transposed, "decode_logits", "expected [8, 384]");
}

/// The FP8 checkpoint with one weight's first code replaced by `code`.
struct Poisoned {
    checkpoint: dsv3_model::checkpoint::Checkpoint,
    tensor: String,
    code: u8,
}

impl dsv3_model::weights::WeightSource for Poisoned {
    fn describe(&self) -> String {
        dsv3_model::weights::WeightSource::describe(&self.checkpoint)
    }
    fn tensor(&self, name: &str) -> dsv3_core::Result<dsv3_model::weights::HostTensor<'_>> {
        let mut t = dsv3_model::weights::WeightSource::tensor(&self.checkpoint, name)?;
        if name == self.tensor {
            t.bytes.to_mut()[0] = self.code;
        }
        Ok(t)
    }
    fn contains(&self, name: &str) -> bool {
        self.checkpoint.contains(name)
    }
}

/// 0x7F and 0xFF are e4m3fn's NaN codes: the fast CPU path used to decode them as finite values (logits
/// off by 0.79, exit status 0). Every backend now refuses them at load, naming the tensor.
#[test]
fn fp8_nan_codes_in_weights_are_refused_at_load() {
    let dir = fixture("tiny-dsv3");
    let config = dsv3_model::config::ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let checkpoint = dsv3_model::checkpoint::Checkpoint::open(&dir).unwrap();
    let tensor = checkpoint
        .names()
        .into_iter()
        .find(|n| checkpoint.tensor(n).unwrap().dtype == dsv3_core::DType::F8E4M3Fn)
        .expect("the FP8 fixture has FP8 weights")
        .to_string();
    for code in [0x7F, 0xFF] {
        let source = Poisoned {
            checkpoint: dsv3_model::checkpoint::Checkpoint::open(&dir).unwrap(),
            tensor: tensor.clone(),
            code,
        };
        for backend in [CpuBackend::new(Mode::Fast), CpuBackend::new(Mode::Reference)] {
            let device = backend.open(0).unwrap();
            let result =
                dsv3_model::graph::Model::load(config.clone(), &source, device, NumericPath::Bf16, |_| {});
            match result {
                Err(Error::Data { field, reason, .. }) => {
                    assert_eq!(field, tensor, "{reason}");
                    assert!(reason.contains("element 0 is NaN"), "{reason}");
                }
                Err(other) => panic!("code {code:#x}: expected a Data error naming {tensor}, got {other}"),
                Ok(_) => panic!("code {code:#x} in {tensor} was loaded"),
            }
        }
    }
}
