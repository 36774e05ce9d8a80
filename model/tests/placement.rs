//! Placement rules on the real released configs: names, first match wins, ranges, bare part names, the
//! implied default, and the errors a user gets for a rule that cannot mean anything.

use std::path::PathBuf;

use dsv3_model::config::ModelConfig;
use dsv3_model::layout::tensor_table;
use dsv3_model::placement::{describe_parts, parts, Part, Rules};

fn real(name: &str) -> ModelConfig {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs");
    ModelConfig::from_file(&dir.join(format!("{name}.json"))).unwrap()
}

#[test]
fn every_part_of_v3_is_named_once() {
    let cfg = real("deepseek-v3");
    let all = parts(&cfg);
    // embed, norm, head; 3 dense layers (attn + mlp); 58 MoE layers (attn, router, shared, 256 experts).
    assert_eq!(all.len(), 3 + 3 * 2 + 58 * (3 + 256));
    assert_eq!(all[0], Part::Embed);
    assert_eq!(all[1].to_string(), "layers.0.attn");
    assert_eq!(all[2].to_string(), "layers.0.mlp");
    assert!(all.contains(&Part::Expert(60, 255)));
    assert!(!all.contains(&Part::Expert(60, 256)));
    assert_eq!(Part::Expert(60, 255).to_string(), "layers.60.experts.255");
    assert!(!all.contains(&Part::Mlp(3)));
    let mut names: Vec<String> = all.iter().map(Part::to_string).collect();
    names.dedup();
    assert_eq!(names.len(), all.len());
}

#[test]
fn every_main_tensor_belongs_to_a_part_of_the_model() {
    for name in ["deepseek-v3", "deepseek-v2-lite"] {
        let cfg = real(name);
        let all: std::collections::BTreeSet<Part> = parts(&cfg).into_iter().collect();
        for spec in tensor_table(&cfg) {
            let part = Part::of_tensor(&cfg, &spec.name);
            if spec.mtp {
                assert_eq!(part, None, "{}", spec.name);
            } else {
                let part = part.unwrap_or_else(|| panic!("{} has no part", spec.name));
                assert!(all.contains(&part), "{} → {part}", spec.name);
            }
        }
    }
    let cfg = real("deepseek-v3");
    let of = |n: &str| Part::of_tensor(&cfg, n);
    assert_eq!(of("model.layers.5.mlp.experts.17.down_proj.weight_scale_inv"), Some(Part::Expert(5, 17)));
    assert_eq!(of("model.layers.5.mlp.gate.e_score_correction_bias"), Some(Part::Router(5)));
    assert_eq!(of("model.layers.5.mlp.shared_experts.up_proj.weight"), Some(Part::Shared(5)));
    assert_eq!(of("model.layers.1.mlp.gate_proj.weight"), Some(Part::Mlp(1)));
    assert_eq!(of("model.layers.5.post_attention_layernorm.weight"), Some(Part::Attn(5)));
}

#[test]
fn experts_on_the_cpu_everything_else_on_the_gpu() {
    let cfg = real("deepseek-v3");
    let a = Rules::parse("experts=cpu,*=cuda:0").unwrap().assign(&cfg, "wgpu").unwrap();
    for part in parts(&cfg) {
        let want = if matches!(part, Part::Expert(..)) { "cpu:0" } else { "cuda:0" };
        assert_eq!(a.device(part), Some(want), "{part}");
    }
    assert_eq!(a.device_names(), vec!["cuda:0", "cpu:0"]);
    assert_eq!(a.describe("cpu:0"), "layers.3-60.experts");
}

#[test]
fn layer_ranges_first_match_wins_and_the_default_takes_the_rest() {
    let cfg = real("deepseek-v3");
    let rules = Rules::parse("layers.0-30=cuda:0, layers.31-60=cuda:1, layers.*.experts=cpu").unwrap();
    let a = rules.assign(&cfg, "cuda:1").unwrap();
    assert_eq!(a.device(Part::Expert(10, 255)), Some("cuda:0"), "layers.0-30 comes first");
    assert_eq!(a.device(Part::Expert(40, 0)), Some("cuda:1"));
    assert_eq!(a.device(Part::Attn(30)), Some("cuda:0"));
    assert_eq!(a.device(Part::Attn(31)), Some("cuda:1"));
    assert_eq!(a.device(Part::Embed), Some("cuda:1"), "no rule: the default");
    assert_eq!(a.device(Part::Head), Some("cuda:1"));
    assert_eq!(
        a.describe("cuda:0"),
        "layers.0-30.attn, layers.0-2.mlp, layers.3-30.router, layers.3-30.shared, layers.3-30.experts"
    );

    let a =
        Rules::parse("layers.*.experts=cpu,head=wgpu:0,embed=cpu-ref").unwrap().assign(&cfg, "cuda").unwrap();
    assert_eq!(a.device(Part::Expert(7, 3)), Some("cpu:0"));
    assert_eq!(a.device(Part::Shared(7)), Some("cuda:0"));
    assert_eq!(a.device(Part::Head), Some("wgpu:0"));
    assert_eq!(a.device(Part::Embed), Some("cpu-ref:0"));
    assert_eq!(a.device_names(), vec!["cpu-ref:0", "cuda:0", "cpu:0", "wgpu:0"]);

    // A whole-layer expert range is the same as the bare part.
    let a = Rules::parse("layers.3.experts.0-255=cpu").unwrap().assign(&cfg, "cuda").unwrap();
    assert!((0..256).all(|e| a.device(Part::Expert(3, e)) == Some("cpu:0")));
    assert_eq!(a.device(Part::Expert(4, 0)), Some("cuda:0"));
    assert_eq!(a.describe("cpu:0"), "layers.3.experts");
}

#[test]
fn one_layers_experts_split_over_devices() {
    let cfg = real("deepseek-v3");
    let rules = Rules::parse("layers.4.experts.0-63=cuda:0,layers.5-6.experts.8=cuda:0,experts=cpu").unwrap();
    let a = rules.assign(&cfg, "cuda").unwrap();
    assert_eq!(a.device(Part::Expert(4, 63)), Some("cuda:0"));
    assert_eq!(a.device(Part::Expert(4, 64)), Some("cpu:0"));
    assert_eq!(a.device(Part::Expert(5, 8)), Some("cuda:0"));
    assert_eq!(a.device(Part::Expert(5, 9)), Some("cpu:0"));
    let groups = a.expert_groups(4);
    assert_eq!(groups.len(), 2);
    assert_eq!((groups[0].0, groups[0].1.len(), groups[0].1[63]), ("cuda:0", 64, 63));
    assert_eq!((groups[1].0, groups[1].1.len(), groups[1].1[0]), ("cpu:0", 192, 64));
    assert_eq!(a.expert_groups(2), vec![], "a dense layer");
    let gpu = a.describe("cuda:0");
    assert!(
        gpu.ends_with("layers.3-60.shared, layers.4.experts.0-63, layers.5-6.experts.8, norm, head"),
        "{gpu}"
    );
    let cpu = a.describe("cpu:0");
    assert_eq!(
        cpu,
        "layers.3.experts, layers.4.experts.64-255, layers.5-6.experts (255 of 256), layers.7-60.experts"
    );
}

#[test]
fn bad_rules_are_errors_naming_the_rule() {
    let cfg = real("deepseek-v3");
    let err =
        |text: &str| Rules::parse(text).and_then(|r| r.assign(&cfg, "cpu")).expect_err(text).to_string();
    assert!(err("experts").contains("expected PATTERN=DEVICE"));
    assert!(err("expert=cpu").contains("unknown part `expert`"));
    assert!(err("layers.x=cpu").contains("`x` is not a layer"));
    assert!(err("layers.5-2=cpu").contains("`5-2` is not a layer"));
    assert!(err("attn=cuda:x").contains("`cuda:x` is not a device name"));
    assert!(err("attn=").contains("is not a device name"));
    let e = err("layers.61=cpu");
    assert!(e.contains("`layers.61=cpu` matches no part of this model (61 layers"), "{e}");
    assert!(err("layers.1.router=cpu").contains("matches no part"), "layer 1 is dense");
    assert!(err("layers.4.experts.256=cpu").contains("matches no part"), "V3 has experts 0-255");
    assert!(err("layers.4.experts.9-3=cpu").contains("`9-3` is not an expert id"));
    // V2-Lite has one dense layer and MoE after it.
    let lite = real("deepseek-v2-lite");
    assert!(Rules::parse("mlp=cpu").unwrap().assign(&lite, "cuda").is_ok());
}

#[test]
fn describe_folds_consecutive_layers() {
    let mut parts = vec![Part::Embed, Part::Attn(0), Part::Attn(1), Part::Attn(3), Part::Head];
    parts.extend((0..4).map(|e| Part::Expert(2, e)));
    assert_eq!(describe_parts(&parts, 4), "embed, layers.0-1.attn, layers.3.attn, layers.2.experts, head");
    assert_eq!(
        describe_parts(&parts, 8),
        "embed, layers.0-1.attn, layers.3.attn, layers.2.experts.0-3, head"
    );
    let scattered =
        [Part::Expert(1, 0), Part::Expert(1, 5), Part::Expert(2, 0), Part::Expert(2, 5), Part::Expert(3, 2)];
    assert_eq!(describe_parts(&scattered, 8), "layers.1-2.experts (2 of 8), layers.3.experts.2");
}
