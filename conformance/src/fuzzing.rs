//! The entry point of the `case_file` fuzz target (`fuzz/fuzz_targets/case_file.rs`, run with `cargo
//! +nightly fuzz run case_file`) and of its replay in `cargo test` (`conformance/tests/fuzz_replay.rs`):
//! the op case-file reader of `dsv3 op --cases`, fed raw bytes. It must return, whatever the bytes,
//! without panicking and in bounded time; a file that parses is then run as the command runs it.
//!
//! It lives here, beside the reader, for the reason `dsv3_model::fuzzing` lives in the model crate: the fuzz
//! target and the stable replay test run the same code.

use std::collections::HashMap;

use dsv3_backend_cpu::{CpuBackend, Mode as CpuMode};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;

use crate::case_file::{self, FileCase, TORCH_OP_CASES, VERSION_KEY};
use crate::fuzz_replay::Entry;
use crate::runner::{run_given, Given, Options};

/// Every target of this crate: its name (the fuzz target's and its corpus directory's) and its entry.
pub const TARGETS: [(&str, Entry); 1] = [("case_file", case_file)];

/// The bytes as a case file; its cases, if it parses, run on the CPU backend and are compared with their
/// expected outputs, as `dsv3 op --cases FILE --backend cpu --json` does.
pub fn case_file(data: &[u8]) {
    let Ok(file) = case_file::parse(data, "fuzz.safetensors") else { return };
    let given: Vec<Given> = file.cases.iter().map(FileCase::given).collect();
    let cpu = CpuBackend::new(CpuMode::Fast);
    let (report, _) = run_given(&[&cpu], &given, &Options::default());
    std::hint::black_box(report.to_json());
}

/// The most tensor bytes a seed case may hold: each mutation copies and parses the whole seed, and
/// 2000 mutations must stay a few seconds in the dev profile.
pub const SEED_CASE_BYTES: usize = 128 << 10;

/// The seed of the `case_file` corpus: PyTorch's case file (`fixtures/torch-op-cases.safetensors`, 7 MB)
/// cut to the smallest case of each op, among cases of at most [`SEED_CASE_BYTES`] (about 200 KB in
/// all). The ops whose smallest case is larger (`topk` and `argmax` over a vocabulary row, `embedding`,
/// `mla_attention`, `grouped_gemm`) are left out: their readers share the tensor and parameter code the
/// others reach.
pub fn torch_cases_one_per_op() -> Vec<u8> {
    let bytes = std::fs::read(TORCH_OP_CASES).expect("the shipped case file");
    let st = SafeTensors::deserialize(&bytes).expect("the shipped case file is safetensors");
    let (_, header) = SafeTensors::read_metadata(&bytes).expect("its header");
    let meta = header.metadata().clone().expect("its metadata");
    let tensors = st.tensors();
    let bytes_of = |case: &str| -> usize {
        let prefix = format!("{case}.");
        tensors.iter().filter(|(n, _)| n.starts_with(&prefix)).map(|(_, t)| t.data().len()).sum()
    };
    // Smallest case of each op, ties broken by name (the metadata map has no order).
    let mut smallest: HashMap<String, (usize, &str)> = HashMap::new();
    for (case, entry) in &meta {
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str(entry) else { continue };
        let Some(op) = obj.get("op").and_then(|o| o.as_str()) else { continue };
        let size = (bytes_of(case), case.as_str());
        if size.0 > SEED_CASE_BYTES {
            continue;
        }
        let best = smallest.entry(op.to_string()).or_insert(size);
        *best = (*best).min(size);
    }
    let kept: Vec<String> = smallest.into_values().map(|(_, case)| case.to_string()).collect();
    let kept = |case: &str| kept.iter().any(|k| k == case);
    let views: Vec<(String, TensorView)> =
        tensors.into_iter().filter(|(n, _)| n.split_once('.').is_some_and(|(case, _)| kept(case))).collect();
    let meta: HashMap<String, String> =
        meta.into_iter().filter(|(k, _)| k == VERSION_KEY || k == "reference" || kept(k)).collect();
    safetensors::serialize(views, Some(meta)).expect("views of a valid file")
}
