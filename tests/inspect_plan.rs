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
