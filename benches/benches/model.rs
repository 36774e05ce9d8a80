//! Whole-model prefill and decode tokens/s on the CPU backend, with the rooflines they are measured
//! against printed first: decode is bound by weight bytes read per token ÷ memory bandwidth, prefill by
//! 2 × active parameters per token ÷ peak FLOP/s.
//!
//! Models: the two golden fixtures (overhead-dominated), a full-width DeepSeek-V2-Lite shape cut to 2
//! layers (1 dense + 1 MoE with 64 experts, bf16, random weights), alone and split over devices, and,
//! with `DSV3_BENCH_V3_LAYER=1` since it needs ~12 GB of memory, one full-width DeepSeek-V3 MoE layer
//! (MLA + 256 FP8 experts, top-8, plus the shared expert; vocabulary cut to 1024 so that the head does not
//! dominate), alone and with its routed experts on the CPU beside the rest on wgpu.

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_backend_wgpu::WgpuBackend;
use dsv3_core::{Backend, Device};
use dsv3_model::builtin::Builtin;
use dsv3_model::cache::KvCache;
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::generate::{generate, Request, Sampling};
use dsv3_model::graph::{Logits, Model, NumericPath};
use dsv3_model::layout::param_count;
use dsv3_model::placement::Rules;

const DECODE_TOKENS: usize = 32;

fn device() -> Arc<dyn Device> {
    CpuBackend::new(Mode::Fast).open(0).unwrap()
}

fn fixture(name: &str, path: NumericPath) -> Model {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures").join(name);
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    Model::load(cfg, &Checkpoint::open(&dir).unwrap(), device(), path, |_| {}).unwrap()
}

fn v2_lite_two_layers_config() -> ModelConfig {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/configs");
    let text = std::fs::read_to_string(dir.join("deepseek-v2-lite.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["num_hidden_layers"] = 2.into();
    ModelConfig::from_json(&json.to_string(), "deepseek-v2-lite.json (2 layers)").unwrap()
}

/// The model placed by `rules` over devices opened by name: `cpu:N` is the N-th separate instance of the
/// CPU backend (a device of its own, so every boundary copies through the host as between real devices),
/// `wgpu:0` the Vulkan device.
fn placed(cfg: &ModelConfig, source: &Builtin, rules: &str, path: NumericPath) -> Model {
    let assignment = Rules::parse(rules).unwrap().assign(cfg, "cpu:0").unwrap();
    let mut cpus: Vec<Arc<dyn Device>> = Vec::new();
    let mut open = |name: &str| -> dsv3_core::Result<Arc<dyn Device>> {
        let (backend, ordinal) = name.split_once(':').unwrap();
        match backend {
            "wgpu" => WgpuBackend::new().open(ordinal.parse().unwrap()),
            _ => {
                let n: usize = ordinal.parse().unwrap();
                while cpus.len() <= n {
                    cpus.push(device());
                }
                Ok(cpus[n].clone())
            }
        }
    };
    Model::load_placed(cfg.clone(), source, &assignment, &mut open, path, |_| {}).unwrap()
}

/// A full-width DeepSeek-V2-Lite shape cut to 2 layers, on one device, and what placement itself costs:
/// the same model with its routed experts on a second CPU device, with half of them there, and with every
/// part kind on another device. The machine's bandwidth drifts by more than the 5 % the overhead may cost
/// between criterion groups run one after another, so this is timed by hand in interleaved rounds (each
/// round decodes once on every placement) and each placement's cost is the median over rounds of its time
/// over the one-device time of the same round.
fn v2_lite(_: &mut Criterion) {
    if !selected("v2-lite") {
        return;
    }
    let cfg = v2_lite_two_layers_config();
    let source = Builtin::with_config(cfg.clone(), 1);
    let scattered = "embed=cpu:1,attn=cpu:2,router=cpu:3,shared=cpu:1,experts=cpu:2,mlp=cpu:3,head=cpu:1";
    let placements = [
        ("one device", "*=cpu:0"),
        ("routed experts on a second device", "experts=cpu:1"),
        ("half of the routed experts on a second device", "experts.0-31=cpu:1"),
        ("every part kind on another device", scattered),
    ];
    let models: Vec<Model> = placements
        .iter()
        .map(|(what, rules)| {
            eprintln!("v2-lite-2-layers bf16, {what}: --place {rules}");
            placed(&cfg, &source, rules, NumericPath::Bf16)
        })
        .collect();
    rooflines("v2-lite-2-layers bf16", &models[0]);
    let request = Request {
        max_new_tokens: DECODE_TOKENS,
        sampling: Sampling { temperature: 0.0, top_p: 1.0, seed: 0 },
        stop: Vec::new(),
    };
    const ROUNDS: usize = 15;
    let mut secs = vec![Vec::new(); models.len()];
    for round in 0..=ROUNDS {
        for (i, model) in models.iter().enumerate() {
            let start = std::time::Instant::now();
            let out = generate(model, &[vec![3]], &request, |_, _| Ok(())).unwrap();
            assert_eq!(out.decode_tokens, DECODE_TOKENS - 1);
            if round > 0 {
                // Round 0 warms caches and page tables.
                secs[i].push(start.elapsed().as_secs_f64());
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    eprintln!("decode of {} tokens after a 1-token prompt, {ROUNDS} interleaved rounds:", DECODE_TOKENS - 1);
    for (i, (what, _)) in placements.iter().enumerate() {
        let ratios: Vec<f64> = secs[i].iter().zip(&secs[0]).map(|(s, one)| s / one).collect();
        let tok_s = (DECODE_TOKENS - 1) as f64 / median(secs[i].clone());
        eprintln!(
            "  {what}: {tok_s:.1} tok/s median, {:+.1} % against one device (median of rounds)",
            (median(ratios) - 1.0) * 100.0
        );
    }
}

/// Whether criterion's name filter (the first argument that is not a flag, if any) selects `name`.
fn selected(name: &str) -> bool {
    std::env::args().skip(1).find(|a| !a.starts_with('-')).is_none_or(|f| name.contains(f.as_str()))
}

/// Prints the rooflines: weight bytes a decode token reads (the whole model but the unchosen experts and
/// all but one embedding row), and the FLOPs a prefill token needs.
fn rooflines(label: &str, model: &Model) {
    let cfg = &model.config;
    let params = param_count(cfg);
    let read = params.active - ((cfg.vocab_size - 1) * cfg.hidden_size) as u64;
    let bytes_per_param = model.weight_bytes as f64 / params.main as f64;
    let peak = model.device.peak().unwrap();
    let bytes = read as f64 * bytes_per_param;
    eprintln!(
        "{label}: {} ({}); decode reads ~{:.1} MB/token → roofline {:.0} tok/s at {:.1} GB/s; prefill {:.1} MFLOP/token → roofline {:.0} tok/s at {:.0} GFLOP/s ({})",
        model.describe_numerics(),
        model.path.name(),
        bytes / 1e6,
        peak.bytes_per_s / bytes,
        peak.bytes_per_s / 1e9,
        2.0 * read as f64 / 1e6,
        peak.f32_flops / (2.0 * read as f64),
        peak.f32_flops / 1e9,
        peak.source,
    );
}

fn bench_model(c: &mut Criterion, label: &str, model: &Model, prompt_len: usize) {
    rooflines(label, model);
    let prompt: Vec<u32> =
        (0..prompt_len as u32).map(|i| (i * 7919 + 3) % model.config.vocab_size as u32).collect();
    let mut group = c.benchmark_group(label);
    group.sample_size(10);
    group.throughput(Throughput::Elements(prompt_len as u64));
    group.bench_function(format!("prefill {prompt_len} tokens"), |b| {
        b.iter(|| {
            let mut cache = KvCache::new(model, 1, prompt_len).unwrap();
            model.forward(&mut cache, &prompt, prompt_len, Logits::Last).unwrap()
        })
    });
    group.throughput(Throughput::Elements(DECODE_TOKENS as u64 - 1));
    let request = Request {
        max_new_tokens: DECODE_TOKENS,
        sampling: Sampling { temperature: 0.0, top_p: 1.0, seed: 0 },
        stop: Vec::new(),
    };
    group.bench_function(format!("decode {} tokens after a 1-token prompt", DECODE_TOKENS - 1), |b| {
        b.iter(|| {
            let out = generate(model, &[vec![prompt[0]]], &request, |_, _| Ok(())).unwrap();
            assert_eq!(out.decode_tokens, DECODE_TOKENS - 1);
        })
    });
    group.finish();
}

fn fixtures(c: &mut Criterion) {
    bench_model(c, "tiny-dsv3 w8a8", &fixture("tiny-dsv3", NumericPath::W8A8), 20);
    bench_model(c, "tiny-dsv3-bf16 bf16", &fixture("tiny-dsv3-bf16", NumericPath::Bf16), 20);
    bench_model(c, "tiny-dsv3-bf16 f32", &fixture("tiny-dsv3-bf16", NumericPath::F32), 20);
}

fn v3_moe_layer() -> ModelConfig {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/fixtures/configs");
    let text = std::fs::read_to_string(dir.join("deepseek-v3.json")).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["num_hidden_layers"] = 1.into();
    json["first_k_dense_replace"] = 0.into();
    json["num_nextn_predict_layers"] = 0.into();
    json["vocab_size"] = 1024.into();
    json["bos_token_id"] = 0.into();
    json["eos_token_id"] = 1.into();
    ModelConfig::from_json(&json.to_string(), "deepseek-v3.json (one MoE layer)").unwrap()
}

fn v3_layer(c: &mut Criterion) {
    if std::env::var("DSV3_BENCH_V3_LAYER").is_err() {
        eprintln!("v3-moe-layer: skipped (set DSV3_BENCH_V3_LAYER=1; needs ~12 GB of memory)");
        return;
    }
    let cfg = v3_moe_layer();
    let source = Builtin::bulk(cfg.clone(), 1);
    for path in [NumericPath::W8A8, NumericPath::Bf16] {
        let model = Model::load(cfg.clone(), &source, device(), path, |_| {}).unwrap();
        bench_model(c, &format!("v3-moe-layer {}", path.name()), &model, 64);
    }
    // The one-GPU recipe's shape: routed experts on the CPU, attention and the rest on wgpu where a
    // Vulkan device is present (on lavapipe this measures the machinery, not a GPU).
    if WgpuBackend::new().devices().is_ok_and(|d| !d.is_empty()) {
        let model = placed(&cfg, &source, "experts=cpu:0,*=wgpu:0", NumericPath::Bf16);
        bench_model(c, "v3-moe-layer bf16 placed experts=cpu,*=wgpu:0", &model, 64);
    } else {
        eprintln!("v3-moe-layer experts=cpu,*=wgpu:0: skipped: no wgpu device");
    }
}

criterion_group!(benches, fixtures, v2_lite, v3_layer);
criterion_main!(benches);
