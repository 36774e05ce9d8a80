//! Case files (`dsv3 op --cases`): PyTorch's and numpy's cases pass on both CPU modes, and files that break the format
//! are typed errors naming the case and the tensor or field — never a panic.

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_conformance::case_file::{self, OUTSIDE_CASE_FILES, TORCH_OP_CASES};
use dsv3_conformance::runner::{run_given, Options};
use dsv3_conformance::Status;
use dsv3_core::Error;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

/// Every case of the outside files passes on `backend`; a row that is anything but a pass fails the
/// test, so it cannot pass by skipping.
fn all_pass(backend: &CpuBackend) {
    for path in OUTSIDE_CASE_FILES.iter().map(Path::new) {
        let cases = case_file::read(path).expect("the shipped case file reads").cases.len();
        let report = case_file::run_file(backend, path).expect("reads");
        println!("{}", report.table());
        assert_eq!(report.count(Status::Pass), cases, "{}", report.table());
        assert_eq!(report.results.len(), cases);
    }
}

#[test]
fn torch_cases_pass_on_the_oracle() {
    all_pass(&CpuBackend::new(Mode::Reference));
}

#[test]
fn torch_cases_pass_on_the_fast_cpu_backend() {
    all_pass(&CpuBackend::new(Mode::Fast));
}

#[test]
fn the_shipped_files_cover_every_op_a_case_file_can_name() {
    assert_eq!(case_file::read(Path::new(TORCH_OP_CASES)).unwrap().cases.len(), 23);
    let files: Vec<_> = OUTSIDE_CASE_FILES.iter().map(|p| case_file::read(Path::new(p)).unwrap()).collect();
    for op in case_file::op_names() {
        assert!(files.iter().flat_map(|f| &f.cases).any(|c| c.case.op == op), "no case of {op}");
    }
}

/// One tensor of a file being rewritten.
struct Entry {
    name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

/// The shipped file with `edit` applied to its tensors and metadata.
fn rewritten(edit: impl FnOnce(&mut Vec<Entry>, &mut HashMap<String, String>)) -> Vec<u8> {
    let bytes = std::fs::read(TORCH_OP_CASES).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut meta = header.metadata().clone().unwrap();
    let mut entries: Vec<Entry> = st
        .tensors()
        .into_iter()
        .map(|(name, v)| Entry { name, dtype: v.dtype(), shape: v.shape().to_vec(), data: v.data().to_vec() })
        .collect();
    edit(&mut entries, &mut meta);
    let views: Vec<(String, TensorView)> = entries
        .iter()
        .map(|e| (e.name.clone(), TensorView::new(e.dtype, e.shape.clone(), &e.data).unwrap()))
        .collect();
    safetensors::serialize(views, Some(meta)).unwrap()
}

/// The error for a rewritten file; it must be `Error::Data` whose field names `field`.
fn error_of(bytes: &[u8], field: &str, reason: &str) {
    match case_file::parse(bytes, "edited.safetensors") {
        Ok(_) => panic!("accepted a broken file (expected an error on {field})"),
        Err(Error::Data { file, field: f, reason: r }) => {
            assert_eq!(file, "edited.safetensors");
            assert_eq!(f, field, "reason: {r}");
            assert!(r.contains(reason), "{f}: {r:?} does not say {reason:?}");
        }
        Err(e) => panic!("not a data error: {e}"),
    }
}

fn remove(entries: &mut Vec<Entry>, name: &str) {
    let before = entries.len();
    entries.retain(|e| e.name != name);
    assert_eq!(entries.len() + 1, before, "{name} is in the file");
}

fn find<'a>(entries: &'a mut [Entry], name: &str) -> &'a mut Entry {
    entries.iter_mut().find(|e| e.name == name).unwrap()
}

#[test]
fn a_missing_tensor_names_the_case_and_the_tensor() {
    error_of(&rewritten(|e, _| remove(e, "gemm_bf16.b")), "gemm_bf16.b", "missing tensor");
    error_of(&rewritten(|e, _| remove(e, "topk_f32.expect.ids")), "topk_f32.expect.ids", "missing tensor");
    error_of(
        &rewritten(|e, _| remove(e, "gemm_w8a8.a_scales")),
        "gemm_w8a8.a_scales",
        "need their scale grid",
    );
}

#[test]
fn a_wrong_dtype_or_shape_is_named() {
    let bytes = rewritten(|e, _| {
        let t = find(e, "rms_norm_float32_3x512.weight");
        t.dtype = Dtype::I32;
    });
    error_of(&bytes, "rms_norm_float32_3x512.weight", "dtype I32");
    let bytes = rewritten(|e, _| {
        let t = find(e, "rope_plain_f32.x");
        t.shape = vec![6, 2, 128];
    });
    error_of(&bytes, "rope_plain_f32.x", "last dimension is 128");
    let bytes = rewritten(|e, _| {
        let t = find(e, "softmax_bfloat16_2x1000.expect.out");
        t.shape = vec![1000, 2];
    });
    error_of(&bytes, "softmax_bfloat16_2x1000.expect.out", "shape [1000, 2]");
    // A U8 code tensor without the case's "fp8" saying which format it holds.
    let bytes = rewritten(|e, _| find(e, "gemm_w8a8.b").dtype = Dtype::U8);
    error_of(&bytes, "gemm_w8a8.b", "\"fp8\"");
}

#[test]
fn out_of_range_data_is_named() {
    let bytes =
        rewritten(|e, _| find(e, "mla_decode_bf16.kv_lens").data[..4].copy_from_slice(&301i32.to_le_bytes()));
    error_of(&bytes, "mla_decode_bf16.kv_lens", "length 301 outside 0..=300");
    let bytes =
        rewritten(|e, _| find(e, "embedding_bf16.ids").data[..4].copy_from_slice(&(-1i32).to_le_bytes()));
    error_of(&bytes, "embedding_bf16.ids", "id -1");
    let bytes = rewritten(|e, _| {
        find(e, "grouped_gemm_bf16_x_blockfp8.expert_offsets").data[4..8]
            .copy_from_slice(&100i32.to_le_bytes())
    });
    error_of(&bytes, "grouped_gemm_bf16_x_blockfp8.expert_offsets", "must rise from 0");
}

#[test]
fn unknown_ops_parameters_and_tensors_are_named() {
    let bytes = rewritten(|_, m| {
        m.insert("argmax_f32".into(), r#"{"op": "argmin"}"#.into());
    });
    error_of(&bytes, "argmax_f32.op", "unknown op `argmin`");
    let bytes = rewritten(|_, m| {
        m.insert("rms_norm_float32_3x512".into(), r#"{"op": "rms_norm", "epsilon": 1e-6}"#.into());
    });
    error_of(&bytes, "rms_norm_float32_3x512.eps", "missing parameter");
    let bytes = rewritten(|_, m| {
        m.insert(
            "rms_norm_float32_3x512".into(),
            r#"{"op": "rms_norm", "eps": 1e-6, "epsilon": 1e-6}"#.into(),
        );
    });
    error_of(&bytes, "rms_norm_float32_3x512.epsilon", "not a parameter of `rms_norm`");
    let bytes = rewritten(|_, m| {
        m.insert("topk_f32".into(), r#"{"op": "topk", "k": "eight"}"#.into());
    });
    error_of(&bytes, "topk_f32.k", "non-negative integer");
    // Parameters the op's contract rejects (64 experts do not split into 7 groups; top-k past the row).
    let bytes = rewritten(|_, m| {
        let v2 = r#"{"op": "moe_route", "scoring": "softmax", "method": "group_limited_greedy", "n_group": 7,
                     "topk_group": 3, "top_k": 6, "norm_topk_prob": false, "routed_scaling_factor": 1.0}"#;
        m.insert("moe_route_v2_group_limited_greedy".into(), v2.into());
    });
    error_of(&bytes, "moe_route_v2_group_limited_greedy", "do not split into 7 groups");
    let bytes = rewritten(|e, m| {
        m.insert("topk_f32".into(), r#"{"op": "topk", "k": 200000}"#.into());
        for t in ["topk_f32.expect.values", "topk_f32.expect.ids"] {
            let t = find(e, t);
            t.shape = vec![2, 200000];
            t.data = vec![0; 2 * 200000 * 4];
        }
    });
    error_of(&bytes, "topk_f32", "k = 200000");
    let bytes = rewritten(|e, _| find(e, "argmax_f32.x").name = "argmax_f32.input".into());
    error_of(&bytes, "argmax_f32.x", "missing tensor");
    let bytes = rewritten(|e, _| {
        let extra =
            Entry { name: "argmax_f32.y".into(), dtype: Dtype::F32, shape: vec![1], data: vec![0; 4] };
        e.push(extra);
    });
    error_of(&bytes, "argmax_f32.y", "not an argument of `argmax`");
}

#[test]
fn malformed_metadata_is_named() {
    let bytes = rewritten(|_, m| {
        m.insert("topk_f32".into(), "{not json".into());
    });
    error_of(&bytes, "topk_f32", "not a JSON object");
    let bytes = rewritten(|_, m| {
        m.remove("dsv3-op-cases");
    });
    error_of(&bytes, "dsv3-op-cases", "missing");
    let bytes = rewritten(|_, m| {
        m.insert("dsv3-op-cases".into(), "2".into());
    });
    error_of(&bytes, "dsv3-op-cases", "version \"2\"");
    let bytes = rewritten(|_, m| {
        m.insert(
            "rope_yarn_bf16".into(),
            r#"{"op": "rope", "dim": 64, "theta": 1e4, "yarn": {"factor": 40}}"#.into(),
        );
    });
    error_of(&bytes, "rope_yarn_bf16.yarn.original_max_position", "missing or not a number");
    let bytes = rewritten(|e, _| {
        e.push(Entry { name: "stray".into(), dtype: Dtype::F32, shape: vec![1], data: vec![0; 4] });
    });
    error_of(&bytes, "stray", "not CASE.ARG");
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    let bytes = std::fs::read(TORCH_OP_CASES).unwrap();
    for cut in [0, 7, 8, 100, 1000, bytes.len() - 1] {
        assert!(case_file::parse(&bytes[..cut], "cut").is_err(), "cut at {cut}");
    }
    let mut flipped = bytes.clone();
    flipped[8..40].fill(b'x');
    assert!(case_file::parse(&flipped, "flipped").is_err());
}

#[test]
fn actual_outputs_are_written_under_the_expected_names() {
    let file = case_file::read(Path::new(TORCH_OP_CASES)).unwrap();
    let given: Vec<_> = file.cases.iter().map(|c| c.given()).collect();
    let backend = CpuBackend::new(Mode::Reference);
    let (_, actuals) = run_given(&[&backend], &given, &Options::default());
    assert_eq!(actuals.len(), file.cases.len());
    let pairs: Vec<_> = file
        .cases
        .iter()
        .map(|c| (c, &actuals.iter().find(|a| a.case == c.case.name).unwrap().outputs))
        .collect();
    let written = case_file::actual_file(Path::new(TORCH_OP_CASES), "cpu-ref", &pairs).unwrap();
    let out = SafeTensors::deserialize(&written).unwrap();
    let source = std::fs::read(TORCH_OP_CASES).unwrap();
    let source = SafeTensors::deserialize(&source).unwrap();
    let expected: Vec<String> =
        source.names().into_iter().filter(|n| n.contains(".expect.")).map(String::from).collect();
    assert_eq!(out.len(), expected.len());
    for name in expected {
        let (a, e) = (out.tensor(&name).unwrap(), source.tensor(&name).unwrap());
        assert_eq!((a.dtype(), a.shape()), (e.dtype(), e.shape()), "{name}");
    }
}
