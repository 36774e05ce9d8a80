//! `dsv3 op --cases` end to end: the table and the JSON line, `--case`, exit status 1 when a case
//! disagrees with its expected outputs, and 2 with the case and tensor named for a broken file.

use std::process::Command;

const CASES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conformance/fixtures/torch-op-cases.safetensors");

fn dsv3(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_dsv3")).args(args).output().expect("dsv3 runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().expect("exits"), text(&out.stdout), text(&out.stderr))
}

fn results(stdout: &str) -> Vec<serde_json::Value> {
    let last = stdout.lines().last().expect("output");
    let v: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    v["results"].as_array().expect("results").clone()
}

#[test]
fn every_case_passes_on_the_cpu_with_one_json_row_each() {
    let (code, stdout, stderr) = dsv3(&["op", "--cases", CASES, "--backend", "cpu", "--json"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let rows = results(&stdout);
    assert_eq!(rows.len(), 23);
    for r in &rows {
        assert_eq!((r["backend"].as_str(), r["status"].as_str()), (Some("cpu"), Some("pass")), "{r}");
        for key in ["case", "op", "nmse", "max_abs", "cos_dist"] {
            assert!(r.get(key).is_some(), "{key} missing from {r}");
        }
    }
}

#[test]
fn one_case_on_two_backends() {
    let (code, stdout, _) =
        dsv3(&["op", "--cases", CASES, "--case", "rope_yarn_bf16", "--backend", "cpu,cpu-ref", "--json"]);
    assert_eq!(code, 0);
    let rows = results(&stdout);
    let got: Vec<(&str, &str)> =
        rows.iter().map(|r| (r["backend"].as_str().unwrap(), r["case"].as_str().unwrap())).collect();
    assert_eq!(got, [("cpu", "rope_yarn_bf16"), ("cpu-ref", "rope_yarn_bf16")]);
    let (code, _, stderr) = dsv3(&["op", "--cases", CASES, "--case", "nope"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("no such case"), "{stderr}");
}

/// A copy of the file whose expected `gemm_f32` output has one element off by 1 % (a wrong reference,
/// as far as dsv3 can tell): the case fails and the command exits 1.
#[test]
fn a_disagreeing_case_fails_and_a_broken_file_is_named() {
    let bytes = std::fs::read(CASES).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let c = tensors.iter_mut().find(|t| t.0 == "gemm_f32.expect.c").unwrap();
    let v = f32::from_le_bytes(c.3[..4].try_into().unwrap()) * 1.01;
    c.3[..4].copy_from_slice(&v.to_le_bytes());
    let write = |tensors: &[(String, safetensors::Dtype, Vec<usize>, Vec<u8>)], name: &str| {
        let views: Vec<_> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let path = std::env::temp_dir().join(format!("dsv3-op-{name}-{}.safetensors", std::process::id()));
        std::fs::write(&path, safetensors::serialize(views, header.metadata().clone()).unwrap()).unwrap();
        path
    };
    let path = write(&tensors, "wrong");
    let (code, stdout, _) =
        dsv3(&["op", "--cases", path.to_str().unwrap(), "--backend", "cpu", "--case", "gemm_f32"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("gemm_f32") && stdout.contains("fail"), "{stdout}");
    tensors.retain(|t| t.0 != "mha_causal_f32.v");
    let broken = write(&tensors, "broken");
    let (code, _, stderr) = dsv3(&["op", "--cases", broken.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("mha_causal_f32.v") && stderr.contains("missing tensor"), "{stderr}");
    std::fs::remove_file(path).unwrap();
    std::fs::remove_file(broken).unwrap();
}
