//! The planner (`--place auto`, `--assume`) on the real released configs, and its predictions against a
//! hand computation.

use std::path::PathBuf;

use dsv3_core::Peak;
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::inspect::{Report, FIT_CACHE_TOKENS};
use dsv3_model::layout::kv_bytes_per_token;
use dsv3_model::placement::{parts, Part, Rules};
use dsv3_model::plan::{self, parse_assume, part_sizes, DeviceSpec, PlanError, HOST_LINK_BYTES_PER_S};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn real(name: &str) -> ModelConfig {
    ModelConfig::from_file(&fixtures().join("configs").join(format!("{name}.json"))).unwrap()
}

/// The CLI looks names up in the CUDA and HIP crates' datasheets; the model crate's tests use this one row
/// (NVIDIA's H200 figures, as in `backends/cuda/src/arch.rs`).
fn datasheet(name: &str) -> Result<(u64, Peak), String> {
    match name {
        "H200" => Ok((
            141_000_000_000,
            Peak {
                f32_flops: 67e12,
                bf16_flops: 989e12,
                fp8_flops: 1979e12,
                bytes_per_s: 4.8e12,
                source: "NVIDIA datasheet (H200, dense)".into(),
            },
        )),
        _ => Err("unknown GPU (known: H200)".into()),
    }
}

fn assume(text: &str) -> Vec<DeviceSpec> {
    parse_assume(text, &datasheet).unwrap()
}

#[test]
fn deepseek_v3_on_an_h200_plus_host_ram_fits_with_attention_and_shared_experts_on_the_gpu() {
    let cfg = real("deepseek-v3");
    let devices = assume("cuda:0=H200,cpu=768GB@300GB/s");
    assert_eq!(devices[1].name, "cpu:0");
    assert_eq!(devices[1].memory_bytes, 768_000_000_000);
    assert_eq!(devices[1].bytes_per_s, 300e9);
    let sizes = part_sizes(&cfg, None, None).unwrap();
    let plan = plan::auto(&cfg, &sizes, &devices).unwrap();
    assert!(plan.fits(), "{}", plan.render_text());
    let a = &plan.assignment;
    for p in parts(&cfg) {
        if matches!(
            p,
            Part::Attn(_) | Part::Shared(_) | Part::Mlp(_) | Part::Embed | Part::Head | Part::Router(_)
        ) {
            assert_eq!(a.device(p), Some("cuda:0"), "{p}");
        }
    }
    // The GPU's remaining room holds the first layers' routed experts; the rest are in host RAM.
    assert_eq!(a.device(Part::Expert(3, 0)), Some("cuda:0"));
    assert_eq!(a.device(Part::Expert(60, 255)), Some("cpu:0"));
    // Experts are placed one by one: the GPU is full to within one expert (3 FP8 matrices of
    // 2048 × 7168 with their scales, 44.3 MB).
    let gpu = &plan.rows[0];
    let expert = sizes.iter().find(|s| s.part == Part::Expert(3, 0)).unwrap().weight_bytes;
    assert!((44_000_000..45_000_000).contains(&expert), "{expert}");
    assert!(
        gpu.needed_bytes <= gpu.spec.usable_bytes() && gpu.spec.usable_bytes() - gpu.needed_bytes < expert
    );
    // Decode is bound by the CPU's share: a few tens of tokens per second, not hundreds.
    let decode = plan.decode_tok_s().unwrap();
    assert!((5.0..50.0).contains(&decode), "{decode}");
    // The same plan through `--place auto`'s rules.
    assert_eq!(Rules::auto(devices, None).assign(&cfg, "cpu:0").unwrap(), plan.assignment);
}

#[test]
fn deepseek_v3_on_one_h200_does_not_fit_and_says_by_how_much() {
    let cfg = real("deepseek-v3");
    let devices = assume("cuda:0=H200");
    let sizes = part_sizes(&cfg, None, None).unwrap();
    let plan = plan::auto(&cfg, &sizes, &devices).unwrap();
    assert!(!plan.fits());
    // Independently: the report's main weights plus the cache budget, over 141 GB minus 5 % headroom.
    let report = Report::from_config(&cfg, None, &[]);
    let needed = report.weight_bytes.main + FIT_CACHE_TOKENS * kv_bytes_per_token(&cfg, 2);
    let usable = 141_000_000_000 - 7_050_000_000;
    assert_eq!(plan.shortfalls(), vec![("cuda:0".to_string(), needed - usable)]);
    let err = Rules::auto(devices, None).assign(&cfg, "cuda:0").unwrap_err().to_string();
    let short = format!("cuda:0 is {:.2} GB", (needed - usable) as f64 / 1e9);
    assert!(err.contains("does not fit") && err.contains(&short), "{err}");
}

#[test]
fn deepseek_v2_lite_fits_one_gpu_with_room_for_its_bf16_weights() {
    let cfg = real("deepseek-v2-lite");
    let sizes = part_sizes(&cfg, None, None).unwrap();
    // 15.7 B parameters in bf16 are 31.4 GB: a 48 GB GPU holds all of it, nothing on the CPU.
    let devices = assume("cuda:0=48GB@864GB/s@362TFLOPS,cpu=64GB@50GB/s");
    let plan = plan::auto(&cfg, &sizes, &devices).unwrap();
    assert!(plan.fits());
    assert!(parts(&cfg).into_iter().all(|p| plan.assignment.device(p) == Some("cuda:0")));
    assert!(plan.rows[1].parts.is_empty());
    assert_eq!(plan.crossings, 0);
    // A 24 GB GPU cannot hold 31.4 GB of bf16 weights: alone it is short by the difference …
    let alone = plan::auto(&cfg, &sizes, &assume("cuda:0=24GB@1TB/s")).unwrap();
    let weights: u64 = sizes.iter().map(|s| s.weight_bytes).sum();
    let needed = weights + FIT_CACHE_TOKENS * kv_bytes_per_token(&cfg, 2);
    assert!(weights > 31_000_000_000);
    assert_eq!(alone.shortfalls(), vec![("cuda:0".to_string(), needed - 22_000_000_000)]);
    // … and beside host RAM it keeps attention, shared experts and the dense layer, the experts spill.
    let split = plan::auto(&cfg, &sizes, &assume("cuda:0=24GB@1TB/s,cpu=64GB@50GB/s")).unwrap();
    assert!(split.fits());
    let a = &split.assignment;
    assert!(parts(&cfg)
        .into_iter()
        .filter(|p| matches!(p, Part::Attn(_) | Part::Shared(_) | Part::Mlp(_)))
        .all(|p| a.device(p) == Some("cuda:0")));
    assert_eq!(a.device(Part::Expert(26, 63)), Some("cpu:0"));
}

#[test]
fn bad_assume_items_are_errors_naming_them() {
    let cases = [
        ("cuda:0=H900", "--assume cuda:0=H900: unknown GPU (known: H200)"),
        ("cpu=768GB", "--assume cpu=768GB: unknown GPU"),
        ("cpu=768XB@300GB/s", "--assume cpu=768XB@300GB/s: memory: `768XB` is not a number with a unit"),
        ("cpu=768GB@300GB", "--assume cpu=768GB@300GB: bandwidth: `300GB` is not a number with a unit"),
        ("cpu=0GB@300GB/s", "--assume cpu=0GB@300GB/s: memory: `0GB` must be positive"),
        ("cpu=1GB@1GB/s@1PFLOPS", "--assume cpu=1GB@1GB/s@1PFLOPS: FLOP rate:"),
        ("cpu=1GB@1GB/s@1TFLOPS@2", "--assume cpu=1GB@1GB/s@1TFLOPS@2: expected MEMORY@BANDWIDTH"),
        ("cuda:x=H200", "--assume cuda:x=H200: `cuda:x` is not a device name"),
        ("H200", "--assume H200: expected DEVICE=NAME"),
        ("cpu=1GB@1GB/s,cpu:0=2GB@1GB/s", "--assume cpu:0=2GB@1GB/s: cpu:0 is assumed twice"),
    ];
    for (text, expected) in cases {
        let err = parse_assume(text, &datasheet).unwrap_err();
        assert!(matches!(err, PlanError::Assume { .. }));
        assert!(err.to_string().starts_with(expected), "{text}: {err}");
    }
    // Units: binary and decimal, rates in TB/s, optional FLOP rate.
    let d = assume("cpu=1.5TiB@0.5TB/s@2TFLOPS,hip:1=512GiB@100GiB/s");
    assert_eq!(d[0].memory_bytes, 1_649_267_441_664);
    assert_eq!((d[0].bytes_per_s, d[0].bf16_flops), (0.5e12, 2e12));
    assert_eq!(
        (d[1].name.as_str(), d[1].memory_bytes, d[1].bytes_per_s),
        ("hip:1", 512 << 30, 100.0 * (1u64 << 30) as f64)
    );
    assert_eq!(d[1].bf16_flops, 0.0);
}

#[test]
fn a_rule_naming_a_device_not_planned_is_an_error() {
    let cfg = real("deepseek-v2-lite");
    let sizes = part_sizes(&cfg, None, None).unwrap();
    let assignment = Rules::parse("experts=cpu,*=cuda:1").unwrap().assign(&cfg, "cuda:1").unwrap();
    let err = plan::evaluate(&cfg, &sizes, &assume("cuda:0=H200,cpu=1TB@100GB/s"), assignment).unwrap_err();
    assert_eq!(err.to_string(), "--place: device `cuda:1` is not among the planned devices (cuda:0, cpu:0)");
}

/// Part sizes from a checkpoint's files equal the config's estimate on the FP8 fixture (stored exactly as
/// the estimate assumes), and every byte of the main model lands in some part.
#[test]
fn part_sizes_from_the_checkpoint_match_the_estimate() {
    let dir = fixtures().join("tiny-dsv3");
    let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let ckpt = Checkpoint::open(&dir).unwrap();
    let from_files = part_sizes(&cfg, Some(&ckpt), None).unwrap();
    assert_eq!(from_files, part_sizes(&cfg, None, None).unwrap());
    let total: u64 = from_files.iter().map(|s| s.weight_bytes).sum();
    assert_eq!(total, Report::from_config(&cfg, Some(&ckpt), &[]).weight_bytes.main);
}

/// tiny-dsv3's shapes in bf16 (its quantization_config removed), experts on a slow CPU, the rest on a GPU;
/// every number computed by hand from the config.
#[test]
fn predictions_match_a_hand_computation() {
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tiny-dsv3/config.json")).unwrap())
            .unwrap();
    json.as_object_mut().unwrap().remove("quantization_config");
    let cfg = ModelConfig::from_json(&json.to_string(), "tiny-dsv3 bf16").unwrap();
    let devices = assume("cuda:0=10GB@1000GB/s@100TFLOPS,cpu=100GB@100GB/s@1TFLOPS");
    let sizes = part_sizes(&cfg, None, None).unwrap();
    let assignment = Rules::parse("experts=cpu,*=cuda:0").unwrap().assign(&cfg, "cuda:0").unwrap();
    let plan = plan::evaluate(&cfg, &sizes, &devices, assignment).unwrap();

    // d 256, 3 layers (layer 0 dense, intermediate 512), 16 routed experts of width 128 (top 4), 1 shared,
    // 4 heads, q_lora 96, qk 32 + 16, v 32, kv_lora 64, vocab 512; bf16 = 2 bytes, correction bias f32.
    // Attention params per layer: norms 2·256, q_a 96·256, q_a norm 96, q_b 192·96, kv_a 80·256,
    // kv_a norm 64, kv_b 256·64, o 256·128 = 113,312.
    let attn = 512 + 24576 + 96 + 18432 + 20480 + 64 + 16384 + 32768;
    assert_eq!(attn, 113_312);
    let (dense, router, expert, embed) = (3 * 256 * 512, 16 * 256, 3 * 256 * 128, 512 * 256);
    let router_bytes = 2 * router + 4 * 16;
    // GPU reads per token: one embedding row, 3 attentions, the dense MLP, 2 routers, 2 shared experts,
    // the final norm and the head.
    let gpu_read =
        2 * 256 + 3 * 2 * attn + 2 * dense + 2 * router_bytes + 2 * 2 * expert + 2 * 256 + 2 * embed;
    assert_eq!(gpu_read, 2_139_200);
    // CPU: 4 of 16 experts in each of the 2 MoE layers.
    let cpu_read = 2 * 4 * 2 * expert;
    assert_eq!(plan.rows[0].decode_s, Some(gpu_read as f64 / 1e12));
    assert_eq!(plan.rows[1].decode_s, Some(cpu_read as f64 / 100e9));
    // Crossings: into and out of the experts in layers 1 and 2, 256 f32 values each.
    assert_eq!(plan.crossings, 4);
    let transfer = 4.0 * 256.0 * 4.0 / HOST_LINK_BYTES_PER_S;
    let decode = 1.0 / (2_139_200.0 / 1e12 + 1_572_864.0 / 100e9 + transfer);
    assert!((plan.decode_tok_s().unwrap() - decode).abs() < 1e-6 * decode);
    assert!((decode - 55_458.0).abs() < 1.0, "{decode}");
    // Prefill: 2 FLOPs per weight used (bias included, embedding lookup none) at bf16 rates.
    let gpu_flops = 2.0 * (3 * attn + dense + 2 * (router + 16) + 2 * expert + 256 + embed) as f64;
    let cpu_flops = 2.0 * (2 * 4 * expert) as f64;
    let prefill = 1.0 / (gpu_flops / 100e12 + cpu_flops / 1e12 + transfer);
    assert!((plan.prefill_tok_s().unwrap() - prefill).abs() < 1e-6 * prefill);
    // Sizes and cache: 80 values of 2 bytes per layer per token.
    assert_eq!(plan.rows[0].cache_bytes_per_token, 3 * 80 * 2);
    assert_eq!(plan.rows[1].weight_bytes, 2 * 16 * 2 * expert as u64);
    assert_eq!(plan.rows[1].cache_bytes_per_token, 0);
    let text = plan.render_text();
    assert!(text.contains("cuda:0 (10GB@1000GB/s@100TFLOPS, 1000 GB/s): fits"), "{text}");
    assert!(text.contains("parts: layers.1-2.experts"), "{text}");
}
