//! config.json parsing: the fixtures, and errors that name the field.

use std::path::PathBuf;

use dsv3_core::Error;
use dsv3_model::config::{Arch, ModelConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).join("config.json")
}

#[test]
fn fixtures_parse() {
    let fp8 = ModelConfig::from_file(&fixture("tiny-dsv3")).unwrap();
    assert_eq!(fp8.arch, Arch::DeepseekV3);
    assert_eq!(fp8.q_lora_rank, Some(96));
    assert!(fp8.quantization.is_some());
    let yarn = fp8.yarn.unwrap();
    assert_eq!((yarn.factor, yarn.original_max_position, yarn.mscale_all_dim), (40.0, 128.0, 1.0));
    let moe = fp8.moe.unwrap();
    assert_eq!(
        (moe.n_routed_experts, moe.route.n_group, moe.route.topk_group, moe.route.top_k),
        (16, 4, 2, 4)
    );
    // V3 softmax scale with YaRN: 48^-0.5 · (0.1·ln 40 + 1)²
    let m = 0.1 * 40f64.ln() + 1.0;
    assert!((fp8.softmax_scale() as f64 - m * m / 48f64.sqrt()).abs() < 1e-7);

    let bf16 = ModelConfig::from_file(&fixture("tiny-dsv3-bf16")).unwrap();
    assert!(bf16.quantization.is_none() && bf16.yarn.is_none());
    assert_eq!(bf16.moe.unwrap().n_shared_experts, 2);
}

fn edit(f: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let text = std::fs::read_to_string(fixture("tiny-dsv3")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    f(v.as_object_mut().unwrap());
    v.to_string()
}

fn field_of(text: &str) -> String {
    match ModelConfig::from_json(text, "config.json") {
        Err(Error::Data { file, field, .. }) => {
            assert_eq!(file, "config.json");
            field
        }
        other => panic!("expected a Data error, got {other:?}"),
    }
}

#[test]
fn errors_name_the_field() {
    use serde_json::json;
    assert_eq!(field_of(&edit(|m| drop(m.remove("hidden_size")))), "hidden_size");
    assert_eq!(field_of(&edit(|m| drop(m.insert("index_topk".into(), json!(2048))))), "index_topk");
    assert_eq!(field_of(&edit(|m| drop(m.insert("model_type".into(), json!("llama"))))), "model_type");
    assert_eq!(field_of(&edit(|m| drop(m.insert("n_group".into(), json!(3))))), "n_group");
    assert_eq!(field_of(&edit(|m| drop(m.insert("topk_group".into(), json!(5))))), "topk_group");
    assert_eq!(
        field_of(&edit(|m| drop(m.insert("num_experts_per_tok".into(), json!(9))))),
        "num_experts_per_tok"
    );
    assert_eq!(field_of(&edit(|m| drop(m.insert("scoring_func".into(), json!("softmax"))))), "topk_method");
    assert_eq!(field_of(&edit(|m| drop(m.insert("hidden_size".into(), json!(-1))))), "hidden_size");
    assert_eq!(field_of(&edit(|m| drop(m.insert("qk_head_dim".into(), json!(40))))), "qk_head_dim");
    assert_eq!(field_of(&edit(|m| drop(m.insert("eos_token_id".into(), json!(512))))), "eos_token_id");
    assert_eq!(
        field_of(&edit(|m| m["rope_scaling"]["type"] = json!("linear"))),
        "rope_scaling.type",
        "type contradicts rope_type"
    );
    let linear = edit(|m| {
        m["rope_scaling"]["type"] = json!("linear");
        m["rope_scaling"]["rope_type"] = json!("linear");
    });
    assert_eq!(field_of(&linear), "rope_scaling.type");
    assert_eq!(field_of(&edit(|m| m["rope_scaling"]["mscale"] = json!(0.5))), "rope_scaling.mscale");
    assert_eq!(
        field_of(&edit(|m| m["quantization_config"]["weight_block_size"] = json!([64, 64]))),
        "quantization_config.weight_block_size"
    );
    assert_eq!(field_of("[1, 2]"), "(root)");
    assert_eq!(field_of("{not json"), "(json)");
}

/// Finite scalars that would make every output 0, ±inf or NaN, with exit status 0.
#[test]
fn scalars_out_of_range_name_the_field() {
    use serde_json::json;
    let cases = [
        ("routed_scaling_factor", json!(1e38), "routed_scaling_factor"),
        ("routed_scaling_factor", json!(0.0), "routed_scaling_factor"),
        ("routed_scaling_factor", json!(-2.5), "routed_scaling_factor"),
        ("rms_norm_eps", json!(1e300), "rms_norm_eps"),
        ("rms_norm_eps", json!(1e-50), "rms_norm_eps"), // 0 as an f32
    ];
    for (key, value, field) in cases {
        assert_eq!(field_of(&edit(|m| drop(m.insert(key.into(), value.clone())))), field, "{key} = {value}");
    }
    for (beta_fast, beta_slow, field) in
        [(1.0, 32.0, "beta_fast"), (4.0, 4.0, "beta_fast"), (32.0, 0.0, "beta_slow")]
    {
        let text = edit(|m| {
            m["rope_scaling"]["beta_fast"] = json!(beta_fast);
            m["rope_scaling"]["beta_slow"] = json!(beta_slow);
        });
        assert_eq!(
            field_of(&text),
            format!("rope_scaling.{field}"),
            "beta_fast {beta_fast}, beta_slow {beta_slow}"
        );
    }
    // The released values stay accepted.
    ModelConfig::from_json(&edit(|m| drop(m.insert("routed_scaling_factor".into(), json!(16.0)))), "c")
        .unwrap();
}

/// transformers 5 re-saves drop `rope_scaling` for `rope_parameters` and add `mlp_bias`.
#[test]
fn transformers_5_resave_parses_the_same() {
    use serde_json::json;
    let original = ModelConfig::from_file(&fixture("tiny-dsv3")).unwrap();
    let resaved = edit(|m| {
        let mut params = m.remove("rope_scaling").unwrap();
        params["rope_theta"] = json!(10000);
        m.insert("rope_parameters".into(), params);
        m.insert("mlp_bias".into(), json!(false));
    });
    assert_eq!(ModelConfig::from_json(&resaved, "config.json").unwrap(), original);
    let plain = edit(|m| {
        m.remove("rope_scaling");
        m.insert("rope_parameters".into(), json!({"rope_type": "default", "rope_theta": 10000}));
    });
    assert_eq!(ModelConfig::from_json(&plain, "config.json").unwrap().yarn, None);
    assert_eq!(field_of(&edit(|m| drop(m.insert("mlp_bias".into(), json!(true))))), "mlp_bias");
    assert_eq!(
        field_of(&edit(|m| drop(m.insert("num_hidden_layers".into(), json!(1u64 << 40))))),
        "num_hidden_layers"
    );
}
