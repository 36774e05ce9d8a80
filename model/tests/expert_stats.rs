//! Expert-usage counts: recorded from a model's routing, written and read back, refused when they do not
//! describe the model, and used by the planner to put the most used experts on the fast device.

use std::path::PathBuf;
use std::sync::Arc;

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::Backend;
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::expert_stats::ExpertStats;
use dsv3_model::generate::{generate, Request, Sampling};
use dsv3_model::graph::{Model, NumericPath};
use dsv3_model::placement::{Part, Rules};
use dsv3_model::plan::{self, parse_assume, part_sizes};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn config(name: &str) -> ModelConfig {
    let path = match name {
        "deepseek-v3" => fixtures().join("configs/deepseek-v3.json"),
        fixture => fixtures().join(fixture).join("config.json"),
    };
    ModelConfig::from_file(&path).unwrap()
}

#[test]
fn recorded_routing_counts_every_token_of_every_moe_layer() {
    let cfg = config("tiny-dsv3");
    let ckpt = Checkpoint::open(&fixtures().join("tiny-dsv3")).unwrap();
    let device = CpuBackend::new(Mode::Fast).open(0).unwrap();
    let model = Model::load(cfg.clone(), &ckpt, Arc::clone(&device), NumericPath::Bf16, |_| {}).unwrap();
    model.record_routes();
    let request = Request {
        max_new_tokens: 4,
        sampling: Sampling { temperature: 0.0, top_p: 1.0, seed: 0 },
        stop: vec![],
    };
    let prompts = vec![vec![5, 17, 300, 2, 9], vec![44, 3]];
    generate(&model, &prompts, &request, |_, _| Ok(())).unwrap();
    let mut stats = ExpertStats::new(&cfg).unwrap();
    stats.add_routes(&model.take_routes()).unwrap();

    // Layers 1 and 2 are MoE (layer 0 is dense); top 4 of 16.
    assert_eq!(stats.counts.keys().copied().collect::<Vec<_>>(), [1, 2]);
    // Every row a forward pass ran: the 7 prompt tokens (the first new token comes from prefill), then
    // 3 decode steps of both sequences.
    assert_eq!(stats.tokens, 7 + 3 * 2);
    for counts in stats.counts.values() {
        assert_eq!(counts.len(), 16);
        assert_eq!(counts.iter().sum::<u64>(), 4 * stats.tokens);
    }
    let usage: f64 = (0..16).map(|e| stats.usage(1, e).unwrap()).sum();
    assert!((usage - 4.0).abs() < 1e-9, "each token reads top_k experts: {usage}");

    let text = stats.to_json();
    assert_eq!(ExpertStats::from_json(&text, "stats.json").unwrap(), stats);
    // A second run adds to the first.
    let before = stats.tokens;
    generate(&model, &prompts, &request, |_, _| Ok(())).unwrap();
    stats.add_routes(&model.take_routes()).unwrap();
    assert_eq!(stats.tokens, 2 * before);
}

#[test]
fn counts_for_another_model_or_malformed_files_are_refused_naming_the_field() {
    let tiny = config("tiny-dsv3");
    let stats = ExpertStats::new(&tiny).unwrap();
    let err = stats.check(&config("tiny-dsv3-bf16"), "s.json").unwrap_err().to_string();
    assert!(err.contains("s.json") && err.contains("n_routed_experts") && err.contains("16"), "{err}");
    assert!(ExpertStats::new(&config("deepseek-v3")).unwrap().check(&tiny, "s.json").is_err());

    let good = stats.to_json();
    let cases = [
        ("{", "(file)"),
        (r#"{"format":"other","version":1}"#, "format"),
        (&good.replace("\"tokens\":0", "\"tokens\":-1"), "tokens"),
        (&good.replace("\"tokens\":0", "\"tokens\":1"), "layers.1"), // counts sum to 0, not 4
        (&good.replace("[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]", "[0,0]"), "layers.1"),
        (&good.replace("\"1\":", "\"x\":"), "layers.x"),
    ];
    for (text, field) in cases {
        let err = ExpertStats::from_json(text, "s.json").expect_err(text).to_string();
        assert!(err.contains("s.json") && err.contains(field), "{text}: {err}");
    }
    // Recorded routing that does not fit the layers.
    let mut s = stats.clone();
    assert!(s.add_routes(&[vec![0; 4]]).is_err(), "one record for two MoE layers");
    assert!(s.add_routes(&[vec![0; 4], vec![16, 0, 0, 0]]).unwrap_err().to_string().contains("expert id 16"));
}

/// DeepSeek-V3 on an H200 plus host RAM, where every token of every layer chose experts 0-7: the planner
/// puts those on the GPU ahead of any other expert, and predicts the decode rate of a step that reads no
/// expert from host RAM.
#[test]
fn the_planner_puts_the_most_used_experts_on_the_fast_device() {
    let cfg = config("deepseek-v3");
    let datasheet = |name: &str| Err(format!("no datasheet for {name}"));
    let devices = parse_assume("cuda:0=141GB@4.8TB/s,cpu=768GB@300GB/s", &datasheet).unwrap();
    let mut stats = ExpertStats::new(&cfg).unwrap();
    stats.tokens = 1000;
    for counts in stats.counts.values_mut() {
        counts[..8].fill(1000);
    }
    let uniform = plan::auto(&cfg, &part_sizes(&cfg, None, None).unwrap(), &devices).unwrap();
    let sizes = part_sizes(&cfg, None, Some(&stats)).unwrap();
    let hot = plan::auto(&cfg, &sizes, &devices).unwrap();
    assert!(hot.fits() && uniform.fits());
    let a = &hot.assignment;
    for l in 3..61 {
        assert!((0..8).all(|e| a.device(Part::Expert(l, e)) == Some("cuda:0")), "layer {l}");
    }
    // Without counts the GPU's room goes to the first layers' experts in id order.
    assert_eq!(uniform.assignment.device(Part::Expert(60, 0)), Some("cpu:0"));
    // Nothing the tokens read is in host RAM: the CPU's share of the step is zero.
    assert_eq!(hot.rows[1].decode_s, Some(0.0));
    let (h, u) = (hot.decode_tok_s().unwrap(), uniform.decode_tok_s().unwrap());
    assert!(h > 3.0 * u, "hot {h} vs uniform {u}");
    // The same plan through `--place auto` with the counts.
    assert_eq!(Rules::auto(devices, Some(stats)).assign(&cfg, "cpu:0").unwrap(), hot.assignment);
}
