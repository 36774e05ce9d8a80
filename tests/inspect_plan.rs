//! `dsv3 inspect --place auto --assume … --json` end to end: the real datasheet tables, the JSON keys the
//! plan adds, and an unknown GPU named in the error.

use std::process::Command;

fn dsv3(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dsv3")).args(args).output().expect("run dsv3")
}

const V3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/model/tests/fixtures/configs/deepseek-v3.json");

#[test]
fn inspect_plans_deepseek_v3_on_an_h200_plus_host_ram() {
    let out = dsv3(&[
        "inspect",
        "--config",
        V3,
        "--place",
        "auto",
        "--assume",
        "cuda:0=H200,cpu=768GB@300GB/s@10TFLOPS",
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    // Existing keys are still there.
    assert_eq!(json["total_params"], 671_026_419_200u64);
    assert_eq!(json["fits"], true);
    let placement = json["placement"].as_array().unwrap();
    assert_eq!(placement.len(), 2);
    let (gpu, cpu) = (&placement[0], &placement[1]);
    assert_eq!(gpu["device"], "cuda:0");
    // The H200's 141 GB come from the CUDA crate's datasheet row.
    assert_eq!(gpu["memory_bytes"], 141_000_000_000u64);
    assert!(gpu["parts"]
        .as_str()
        .unwrap()
        .starts_with("embed, layers.0-60.attn, layers.0-2.mlp, layers.3-60.router, layers.3-60.shared"));
    assert_eq!(cpu["device"], "cpu:0");
    assert_eq!(cpu["cache_bytes_per_1k_tokens"], 0);
    assert_eq!(gpu["cache_bytes_per_1k_tokens"], 70_272_000);
    let weights = gpu["weight_bytes"].as_u64().unwrap() + cpu["weight_bytes"].as_u64().unwrap();
    assert_eq!(weights, json["weight_bytes_main"].as_u64().unwrap());
    let decode = json["predicted_decode_tok_s"].as_f64().unwrap();
    let prefill = json["predicted_prefill_tok_s"].as_f64().unwrap();
    assert!((5.0..50.0).contains(&decode) && (100.0..1000.0).contains(&prefill), "{decode} {prefill}");
    assert!(stdout.contains("plan            fits"), "{stdout}");
}

#[test]
fn inspect_names_an_unknown_gpu_and_a_plan_that_does_not_fit() {
    let out = dsv3(&["inspect", "--config", V3, "--place", "auto", "--assume", "cuda:0=H900"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("--assume cuda:0=H900: unknown GPU (known: H200, "), "{stderr}");
    assert!(stderr.contains("MI300X"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = dsv3(&["inspect", "--config", V3, "--place", "auto", "--assume", "cuda:0=h200", "--json"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(json["fits"], false);
    assert!(json["placement"][0]["shortfall_bytes"].as_u64().unwrap() > 500_000_000_000);
    assert!(stdout.contains("DOES NOT FIT:"), "{stdout}");
}

/// `generate --record-expert-stats` writes counts (and adds to them), `--place auto --expert-stats` uses
/// them, and counts of another model's shape are refused naming the file and field.
#[test]
fn expert_usage_is_recorded_by_generate_and_used_by_the_planner() {
    let dir = std::env::temp_dir().join(format!("dsv3-expert-stats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("tiny.json");
    let path = file.to_str().unwrap();
    let tiny = concat!(env!("CARGO_MANIFEST_DIR"), "/model/tests/fixtures/tiny-dsv3");
    let record = [
        "generate",
        "--model",
        tiny,
        "--tokens",
        "1,2,3",
        "--max-new-tokens",
        "4",
        "--temperature",
        "0",
        "--record-expert-stats",
        path,
    ];
    let tokens = |out: &std::process::Output| {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stats: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        stats["tokens"].as_u64().unwrap()
    };
    // 3 prompt tokens, then 3 decode steps (the first new token comes from the prefill).
    assert_eq!(tokens(&dsv3(&record)), 6);
    assert_eq!(tokens(&dsv3(&record)), 12, "a second run adds to the counts");
    // The tiny model's counts do not describe DeepSeek-V3.
    let out = dsv3(&[
        "inspect",
        "--config",
        V3,
        "--place",
        "auto",
        "--assume",
        "cuda:0=H200",
        "--expert-stats",
        path,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(path) && err.contains("n_routed_experts"), "{err}");
    let out = dsv3(&[
        "generate",
        "--model",
        tiny,
        "--tokens",
        "1",
        "--place",
        "experts=cpu",
        "--expert-stats",
        path,
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--expert-stats orders the experts for --place auto")
    );

    // DeepSeek-V3 where every token chose experts 0-7 of every MoE layer: planned with these counts, the
    // GPU holds those experts and no step reads an expert from host RAM.
    let hot: Vec<u64> = (0..256).map(|e| if e < 8 { 1000 } else { 0 }).collect();
    let layers: serde_json::Map<String, serde_json::Value> =
        (3..61).map(|l| (l.to_string(), serde_json::json!(hot))).collect();
    let stats = serde_json::json!({"format": "dsv3-expert-stats", "version": 1, "n_routed_experts": 256,
        "top_k": 8, "tokens": 1000, "layers": layers});
    let v3_file = dir.join("v3.json");
    std::fs::write(&v3_file, stats.to_string()).unwrap();
    let plan = |extra: &[&str]| {
        let mut args = vec![
            "inspect",
            "--config",
            V3,
            "--place",
            "auto",
            "--assume",
            "cuda:0=H200,cpu=768GB@300GB/s",
            "--json",
        ];
        args.extend(extra);
        let out = dsv3(&args);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        serde_json::from_str::<serde_json::Value>(stdout.lines().last().unwrap()).unwrap()
    };
    let (uniform, hot) = (plan(&[]), plan(&["--expert-stats", v3_file.to_str().unwrap()]));
    assert_eq!(hot["placement"][1]["decode_share"], 0.0, "{}", hot["placement"]);
    let rate = |p: &serde_json::Value| p["predicted_decode_tok_s"].as_f64().unwrap();
    assert!(rate(&hot) > 3.0 * rate(&uniform), "{} vs {}", rate(&hot), rate(&uniform));
    std::fs::remove_dir_all(&dir).unwrap();
}
