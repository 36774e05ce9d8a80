//! A model split over several devices computes what the single-device model computes.
//!
//! * Over separate instances of the CPU backend (each its own device, so every boundary really copies
//!   through the host) the logits are bitwise those of one device, for prefill, decode and batched
//!   generation: placement may move data, never change a number.
//! * Over different backends (fast CPU, the oracle, wgpu on lavapipe, the CUDA C kernels on the host
//!   emulator) both golden fixtures pass their path's bound against HF transformers, greedy tokens
//!   identical where the path requires it, as the single-device runs do (`tests/golden.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_backend_wgpu::WgpuBackend;
use dsv3_core::{Backend, Device, Error, Result};
use dsv3_model::cache::KvCache;
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::generate::{generate, Request, Sampling};
use dsv3_model::golden;
use dsv3_model::graph::{Logits, Model, NumericPath};
use dsv3_model::placement::{Part, Rules};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Opens devices by name: `cpu:N` is the N-th separate instance of the fast CPU backend (all of ordinal
/// 0, but distinct devices whose buffers cannot be shared), the rest from their backends.
struct Devices {
    cpus: Vec<Arc<dyn Device>>,
}

impl Devices {
    fn new() -> Devices {
        Devices { cpus: Vec::new() }
    }

    fn open(&mut self, name: &str) -> Result<Arc<dyn Device>> {
        let (backend, ordinal) = name.split_once(':').expect("canonical names");
        let ordinal: usize = ordinal.parse().unwrap();
        match backend {
            "cpu" => {
                while self.cpus.len() <= ordinal {
                    self.cpus.push(CpuBackend::new(Mode::Fast).open(0)?);
                }
                Ok(self.cpus[ordinal].clone())
            }
            "cpu-ref" => CpuBackend::new(Mode::Reference).open(ordinal),
            "wgpu" => WgpuBackend::new().open(ordinal),
            "cuda-emu" => EmulatorBackend::new(32).open(ordinal),
            other => Err(Error::invalid("test", "device", other.to_string())),
        }
    }
}

fn load(dir: &str, rules: &str, path: NumericPath) -> Model {
    let dir = fixture(dir);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let checkpoint = Checkpoint::open(&dir).unwrap();
    let assignment = Rules::parse(rules).unwrap().assign(&cfg, "cpu:0").unwrap();
    let mut devices = Devices::new();
    Model::load_placed(cfg, &checkpoint, &assignment, &mut |n| devices.open(n), path, |_| {}).unwrap()
}

fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut cache = KvCache::new(model, 1, tokens.len() + 1).unwrap();
    let prefill = model.forward(&mut cache, tokens, tokens.len(), Logits::All).unwrap();
    let mut out = golden::download_f32(model, &prefill).unwrap();
    let decode = model.forward(&mut cache, &[7], 1, Logits::Last).unwrap();
    out.extend(golden::download_f32(model, &decode).unwrap());
    out
}

/// Every part kind crosses a boundary: embed, a layer's attention, router, shared and routed experts and
/// the head each sit on a device of their own somewhere.
/// (Layer 0 of both fixtures is dense, the others MoE.)
const SCATTERED: &str = "embed=cpu:1,layers.0.attn=cpu:2,layers.0.mlp=cpu:3,router=cpu:3,shared=cpu:1,\
                         experts=cpu:2,norm=cpu:1,head=cpu:3";

/// Each MoE layer's routed experts over three devices (the layer's own and two others). Both fixtures
/// route by groups (the bf16 one's tokens here choose only among experts 4-7), so the ranges are picked
/// where this test's tokens go: every device receives activations (asserted below).
const SPLIT_EXPERTS: &str = "experts.4-5=cpu:1,experts.7=cpu:2";

#[test]
fn split_over_cpu_instances_is_bitwise_the_single_device() {
    for (fixture, path) in [("tiny-dsv3", NumericPath::W8A8), ("tiny-dsv3-bf16", NumericPath::Bf16)] {
        let single = load(fixture, "*=cpu:0", path);
        let tokens = [3, 100, 7, 42, 250];
        let want = logits(&single, &tokens);
        for rules in ["experts=cpu:1", "layers.1=cpu:1,head=cpu:2", SCATTERED, SPLIT_EXPERTS] {
            let split = load(fixture, rules, path);
            assert!(split.devices().len() > 1, "{rules}");
            let got = logits(&split, &tokens);
            assert!(split.bytes_moved() > 0, "{rules}: nothing crossed a boundary");
            // Every device had work: each received activations.
            assert!(
                split.devices().iter().all(|d| d.bytes_in > 0),
                "{fixture} {rules}: {:?}",
                split.devices()
            );
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{fixture} {rules}");
        }
    }
}

#[test]
fn batched_generation_split_equals_single() {
    let request = Request {
        max_new_tokens: 5,
        sampling: Sampling { temperature: 0.8, top_p: 0.9, seed: 11 },
        stop: Vec::new(),
    };
    let prompts = vec![vec![5, 17, 300, 2, 9], vec![44, 3, 3, 500, 120, 7, 8], vec![1]];
    let single = load("tiny-dsv3", "*=cpu:0", NumericPath::Bf16);
    let a = generate(&single, &prompts, &request, |_, _| Ok(())).unwrap();
    for rules in [SCATTERED, SPLIT_EXPERTS] {
        let split = load("tiny-dsv3", rules, NumericPath::Bf16);
        let b = generate(&split, &prompts, &request, |_, _| Ok(())).unwrap();
        assert_eq!(a.tokens, b.tokens, "{rules}");
    }
}

#[test]
fn a_tied_head_on_another_device_than_the_embedding_gets_its_own_copy() {
    // The FP8 fixture's shape with random weights and a tied head.
    let mut cfg = ModelConfig::from_file(&fixture("tiny-dsv3").join("config.json")).unwrap();
    cfg.tie_word_embeddings = true;
    let source = dsv3_model::builtin::Builtin::with_config(cfg.clone(), 3);
    let load = |rules: &str| {
        let assignment = Rules::parse(rules).unwrap().assign(&cfg, "cpu:0").unwrap();
        let mut devices = Devices::new();
        Model::load_placed(
            cfg.clone(),
            &source,
            &assignment,
            &mut |n| devices.open(n),
            NumericPath::Bf16,
            |_| {},
        )
        .unwrap()
    };
    let (single, split) = (load("*=cpu:0"), load("head=cpu:1"));
    let table = (cfg.vocab_size * cfg.hidden_size * 2) as u64;
    assert_eq!(split.devices()[1].weight_bytes, table, "the head's copy of the bf16 table");
    assert_eq!(split.weight_bytes, single.weight_bytes + table);
    assert!(logits(&single, &[9, 8, 7])
        .iter()
        .zip(&logits(&split, &[9, 8, 7]))
        .all(|(a, b)| a.to_bits() == b.to_bits()));
}

#[test]
fn the_model_reports_what_each_device_holds() {
    let model = load("tiny-dsv3", "experts=cpu:1,head=cpu:2", NumericPath::Bf16);
    let shares = model.devices();
    let names: Vec<&str> = shares.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["cpu:0", "cpu:1", "cpu:2"]);
    assert!(shares[1].parts.iter().all(|p| matches!(p, Part::Expert(..))));
    assert_eq!(shares[2].parts, [Part::Head]);
    assert_eq!(shares.iter().map(|s| s.weight_bytes).sum::<u64>(), model.weight_bytes);
    assert!(shares.iter().all(|s| s.weight_bytes > 0));
}

/// The golden fixtures on a placement, every path each fixture has, against HF transformers.
fn golden_placed(rules: &str, default: &str) {
    for fixture_name in ["tiny-dsv3", "tiny-dsv3-bf16"] {
        let paths: &[NumericPath] = if fixture_name == "tiny-dsv3" {
            &[NumericPath::F32, NumericPath::Bf16, NumericPath::W8A8]
        } else {
            &[NumericPath::F32, NumericPath::Bf16]
        };
        for &path in paths {
            let mut devices = Devices::new();
            let report = golden::check_placed(
                &fixture(fixture_name),
                &Rules::parse(rules).unwrap(),
                default,
                &mut |n| devices.open(n),
                path,
            )
            .unwrap();
            println!("{rules}: {}", report.line());
            // Greedy tokens are part of `pass` on the paths whose bound requires them (f32, bf16).
            assert!(report.pass(), "{rules}: {}", report.line());
        }
    }
}

#[test]
fn golden_experts_on_the_fast_cpu_beside_the_oracle() {
    golden_placed("experts=cpu", "cpu-ref:0");
}

/// wgpu runs on lavapipe in CI; without a Vulkan driver the runs on it are reported as not run (a failure
/// under CI=true, `dsv3_core::testing`).
fn wgpu_present(test: &str) -> bool {
    match WgpuBackend::new().devices() {
        Ok(d) if !d.is_empty() => true,
        other => {
            let reason = other.map_or_else(|e| e.to_string(), |_| "no device".into());
            dsv3_core::testing::not_run(test, &format!("wgpu unavailable: {reason}"));
            false
        }
    }
}

#[test]
fn golden_attention_and_shared_experts_on_wgpu_routed_experts_on_the_cpu() {
    if wgpu_present("golden split with attention on wgpu") {
        golden_placed("attn=wgpu:0,shared=wgpu:0", "cpu:0");
    }
}

#[test]
fn golden_three_devices() {
    if wgpu_present("golden split over three backends") {
        golden_placed("embed=cpu-ref,head=cpu-ref,experts=wgpu:0,layers.0=cuda-emu:0", "cpu:0");
        // One layer's routed experts over three backends, none of them the attention's.
        golden_placed("experts.0-1=cuda-emu:0,experts.2-4=wgpu:0,experts=cpu-ref", "cpu:0");
    }
}

#[test]
fn golden_first_layer_on_the_cuda_kernels() {
    golden_placed("layers.0=cuda-emu:0", "cpu:0");
}

#[test]
fn devices_sharing_host_memory_are_judged_together() {
    let mut devices = Devices::new();
    let (a, b) = (devices.open("cpu:0").unwrap(), devices.open("cpu-ref:0").unwrap());
    let host = a.info().memory_bytes;
    assert!(host > 0 && a.capabilities().host_memory && b.capabilities().host_memory);
    let (share, fits) = (host / 5 * 3, host / 5 * 2);
    // Each alone fits; 120 % of the host together does not, and the error names both.
    dsv3_model::memory::check_placement(&[(share, a.as_ref())]).unwrap();
    dsv3_model::memory::check_placement(&[(share, b.as_ref())]).unwrap();
    let err = dsv3_model::memory::check_placement(&[(share, a.as_ref()), (share, b.as_ref())])
        .unwrap_err()
        .to_string();
    assert!(err.contains("host memory shared by cpu:0, cpu-ref:0") && err.contains("GB short"), "{err}");
    dsv3_model::memory::check_placement(&[(share, a.as_ref()), (fits, b.as_ref())]).unwrap();
}
