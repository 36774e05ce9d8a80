//! Decode steps captured as graphs and replayed compute what eager steps compute.
//!
//! On the CUDA C kernels' host emulator (`cuda-emu`, which captures by recording its launches) the tiny
//! fixture generates the same tokens, token for token, with capture on and off, for a batch of sequences
//! that sample (so every logit matters), and the replay path is really taken: one capture per batch size,
//! every decode step a replay, the same op count per step. On the CPU, which cannot capture, and over two
//! devices (crossings need the host mid-step), steps run eagerly.

use std::path::PathBuf;

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_core::{Backend, Device};
use dsv3_model::cache::KvCache;
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::generate::{generate, Output, Request, Sampling};
use dsv3_model::golden;
use dsv3_model::graph::{GraphStats, Logits, Model, NumericPath};
use dsv3_model::placement::Rules;
use std::sync::Arc;

fn fixture() -> (ModelConfig, Checkpoint) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-dsv3");
    (ModelConfig::from_file(&dir.join("config.json")).unwrap(), Checkpoint::open(&dir).unwrap())
}

fn load(device: Arc<dyn Device>) -> Model {
    let (cfg, checkpoint) = fixture();
    Model::load(cfg, &checkpoint, device, NumericPath::Bf16, |_| {}).unwrap()
}

fn load_placed(rules: &str, open: &mut dyn FnMut(&str) -> dsv3_core::Result<Arc<dyn Device>>) -> Model {
    let (cfg, checkpoint) = fixture();
    let assignment = Rules::parse(rules).unwrap().assign(&cfg, "cpu:0").unwrap();
    Model::load_placed(cfg, &checkpoint, &assignment, open, NumericPath::Bf16, |_| {}).unwrap()
}

fn run(model: &Model, capture: bool) -> Output {
    model.set_graph_capture(capture);
    let request = Request {
        max_new_tokens: 5,
        sampling: Sampling { temperature: 0.8, top_p: 0.9, seed: 7 },
        stop: Vec::new(),
    };
    let prompts = vec![vec![5, 17, 300, 2], vec![44, 3, 500]];
    generate(model, &prompts, &request, |_, _| Ok(())).unwrap()
}

#[test]
fn replayed_decode_steps_generate_the_eager_tokens() {
    let model = load(EmulatorBackend::new(32).open(0).unwrap());
    assert!(model.device.capabilities().graph_capture);
    let eager = run(&model, false);
    assert_eq!(model.graph_stats(), GraphStats::default(), "capture off: no graph");
    let replayed = run(&model, true);
    assert_eq!(eager.tokens, replayed.tokens);
    assert_eq!(replayed.decode_steps, 4);
    assert_eq!(replayed.decode_graph_replays, 4, "every decode step ran from the graph");
    assert_eq!(model.graph_stats(), GraphStats { captures: 1, replays: 4 }, "one capture for the batch");
    assert_eq!(eager.decode_launches, replayed.decode_launches, "the same ops run per step");

    // A second generation with a new cache captures anew (the graphs hold the old cache's buffers), and
    // still matches.
    let again = run(&model, true);
    assert_eq!(again.tokens, eager.tokens);
    assert_eq!(model.graph_stats(), GraphStats { captures: 2, replays: 8 });
}

#[test]
fn replayed_logits_are_bitwise_the_eager_logits_and_stay_the_callers() {
    let model = load(EmulatorBackend::new(32).open(0).unwrap());
    let steps = |capture: bool| {
        model.set_graph_capture(capture);
        let mut cache = KvCache::new(&model, 1, 8).unwrap();
        model.forward(&mut cache, &[3, 100, 7], 3, Logits::Last).unwrap();
        let held: Vec<_> =
            [42, 9, 250].iter().map(|&t| model.forward(&mut cache, &[t], 1, Logits::Last).unwrap()).collect();
        // Downloaded only after every step: a replay must not overwrite logits already returned.
        held.iter().map(|l| golden::download_f32(&model, l).unwrap()).collect::<Vec<_>>()
    };
    let eager = steps(false);
    let replayed = steps(true);
    assert_eq!(model.graph_stats(), GraphStats { captures: 1, replays: 3 });
    for (step, (a, b)) in eager.iter().zip(&replayed).enumerate() {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "step {step}");
    }
    assert_ne!(replayed[0], replayed[1], "the steps' logits differ, so the comparison means something");
}

#[test]
fn a_device_that_cannot_capture_runs_decode_eagerly() {
    let model = load(CpuBackend::new(Mode::Fast).open(0).unwrap());
    let out = run(&model, true);
    assert_eq!(out.decode_graph_replays, 0);
    assert_eq!(model.graph_stats(), GraphStats::default());
}

#[test]
fn a_model_over_two_devices_runs_decode_eagerly() {
    let (emu, cpu) =
        (EmulatorBackend::new(32).open(0).unwrap(), CpuBackend::new(Mode::Fast).open(0).unwrap());
    let model = load_placed("experts=cpu:0,*=cuda-emu:0", &mut |name| match name {
        "cpu:0" => Ok(cpu.clone()),
        _ => Ok(emu.clone()),
    });
    assert_eq!(model.devices().len(), 2);
    let out = run(&model, true);
    assert_eq!(out.decode_steps, 4);
    assert_eq!(out.decode_graph_replays, 0);
    assert_eq!(model.graph_stats(), GraphStats::default());
}
