//! The `case_file` fuzz target (`cargo +nightly fuzz run case_file`) replayed on stable in every `cargo
//! test` (`dsv3_conformance::fuzz_replay`: its corpus, then fixed-seed mutations), and its seed checked
//! against the file it is cut from.

use std::collections::HashMap;

use dsv3_conformance::fuzz_replay::{corpus_root, replay};
use dsv3_conformance::fuzzing::{case_file, torch_cases_one_per_op};
use safetensors::SafeTensors;

/// The committed seed of the corpus, cut from the shipped PyTorch case file.
fn seed_path() -> std::path::PathBuf {
    corpus_root().join("case_file/torch-one-per-op.safetensors")
}

/// Name, dtype, shape and bytes of every tensor, in name order, and the metadata.
type Content = (Vec<(String, String, Vec<usize>, Vec<u8>)>, HashMap<String, String>);

/// A file's content, whatever order its header was written in.
fn content(bytes: &[u8]) -> Content {
    let st = SafeTensors::deserialize(bytes).unwrap();
    let mut tensors: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, format!("{:?}", t.dtype()), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    tensors.sort();
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    (tensors, header.metadata().clone().unwrap_or_default())
}

/// The seed is the shipped file cut to one small case per op, and it parses (so mutations start past the
/// first check). `DSV3_WRITE_CORPUS=1` writes it after a change to either.
#[test]
fn the_seed_is_the_torch_file_cut_to_one_case_per_op() {
    let expected = torch_cases_one_per_op();
    if std::env::var_os("DSV3_WRITE_CORPUS").is_some_and(|v| v == "1") {
        std::fs::write(seed_path(), &expected).unwrap();
    }
    let committed = std::fs::read(seed_path()).unwrap();
    assert!(
        content(&committed) == content(&expected),
        "{} differs from the shipped case file cut to one case per op: DSV3_WRITE_CORPUS=1 rewrites it",
        seed_path().display()
    );
    let file = dsv3_conformance::case_file::parse(&committed, "seed").unwrap();
    let mut ops: Vec<&str> = file.cases.iter().map(|c| c.case.op).collect();
    ops.sort();
    ops.dedup();
    assert_eq!(ops.len(), file.cases.len(), "one case per op");
    assert!(ops.contains(&"gemm") && ops.contains(&"moe_route"), "{ops:?}");
}

#[test]
fn case_file_corpus() {
    replay("case_file", case_file);
}
