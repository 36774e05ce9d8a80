//! The launch count of a decode step, per MoE layer: the step-execution issue's budget is 30 op launches
//! per MoE layer (a V3 decode step was ~295 before: one GEMM per attention head, the cache written per
//! sequence). Counted as the difference between the built-in model's architecture with 3 and with 2
//! layers (the first layer dense, the others MoE), so the embedding, the dense layer and the head cancel.
//! The counts are exact: a change that adds a launch to the layer fails here and says how many.

use std::sync::Arc;

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::{Backend, Device};
use dsv3_model::builtin::{Builtin, CONFIG};
use dsv3_model::config::ModelConfig;
use dsv3_model::generate::{generate, Request, Sampling};
use dsv3_model::graph::{Model, NumericPath};

fn launches_per_step(layers: usize, path: NumericPath) -> f64 {
    let mut json: serde_json::Value = serde_json::from_str(CONFIG).unwrap();
    json["num_hidden_layers"] = layers.into();
    // The launches do not depend on the vocabulary; a small one keeps the random weights cheap.
    json["vocab_size"] = 512.into();
    let cfg = ModelConfig::from_json(&json.to_string(), "built-in config").unwrap();
    let source = Builtin::with_config(cfg.clone(), 7);
    let device: Arc<dyn Device> = CpuBackend::new(Mode::Fast).open(0).unwrap();
    let model = Model::load(cfg, &source, device, path, |_| {}).unwrap();
    let request = Request {
        max_new_tokens: 3,
        sampling: Sampling { temperature: 0.0, top_p: 1.0, seed: 1 },
        stop: Vec::new(),
    };
    let out = generate(&model, &[vec![5, 6, 7], vec![8, 9]], &request, |_, _| Ok(())).unwrap();
    out.launches_per_step().unwrap()
}

#[test]
fn a_moe_layer_decodes_in_at_most_30_launches() {
    // bf16: attention 15 (3 norms, 4 projections, 2 ropes, the cache append, 2 batched head products, MLA,
    // the residual add and the FFN norm) + MoE 14 (router GEMM and routing, dispatch, 3 grouped GEMMs,
    // silu·mul, combine, the shared expert's 3 GEMMs and silu·mul, the two adds).
    let bf16 = launches_per_step(3, NumericPath::Bf16) - launches_per_step(2, NumericPath::Bf16);
    assert_eq!(bf16, 29.0, "op launches per MoE layer on the bf16 path");
    // W8A8: each FP8 GEMM's input is quantized by an act_quant launch of its own (10 in the layer).
    let w8a8 = launches_per_step(3, NumericPath::W8A8) - launches_per_step(2, NumericPath::W8A8);
    assert_eq!(w8a8, 39.0, "op launches per MoE layer on the W8A8 path");
}
