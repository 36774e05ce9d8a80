//! The model crate's fuzz targets (`fuzz/`, `cargo +nightly fuzz run NAME`) replayed on stable in every
//! `cargo test`, through the same entry functions the fuzz targets call (`dsv3_model::fuzzing`), by the
//! loop all targets share (`dsv3_conformance::fuzz_replay`: the corpus, then fixed-seed mutations of it).

use std::collections::BTreeSet;
use std::path::PathBuf;

use dsv3_conformance::fuzz_replay::{corpus, corpus_root};
use dsv3_model::fuzzing::TARGETS;

fn replay(name: &str) {
    let entry = TARGETS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no target {name}")).1;
    dsv3_conformance::fuzz_replay::replay(name, entry);
}

/// Every target (of this crate and of the conformance crate, whose replay is in its own tests) has a
/// corpus and every corpus directory is a target: a renamed target cannot silently replay nothing.
#[test]
fn corpus_directories_match_targets() {
    let all = TARGETS.iter().chain(&dsv3_conformance::fuzzing::TARGETS);
    let targets: BTreeSet<&str> = all.map(|(n, _)| *n).collect();
    let dirs: BTreeSet<String> = std::fs::read_dir(corpus_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(dirs.iter().map(String::as_str).collect::<BTreeSet<_>>(), targets);
    let fuzz_targets = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for name in targets {
        assert!(fuzz_targets.join(format!("{name}.rs")).is_file(), "no fuzz target file for {name}");
    }
}

/// The seeds are valid inputs, so the mutations start from inputs that reach past the first check.
#[test]
fn seeds_parse() {
    use dsv3_model::config::ModelConfig;
    for seed in corpus("config") {
        ModelConfig::from_json(std::str::from_utf8(&seed).unwrap(), "seed").unwrap();
    }
    for seed in corpus("place") {
        dsv3_model::placement::Rules::parse(std::str::from_utf8(&seed).unwrap()).unwrap();
    }
    for seed in corpus("shape") {
        dsv3_model::values::parse_shape(std::str::from_utf8(&seed).unwrap()).unwrap();
    }
    for seed in corpus("tokens") {
        dsv3_model::values::parse_tokens(std::str::from_utf8(&seed).unwrap()).unwrap();
    }
    let dir = tempfile::TempDir::new().unwrap();
    for seed in corpus("safetensors") {
        std::fs::write(dir.path().join("model.safetensors"), seed).unwrap();
        dsv3_model::checkpoint::Checkpoint::open(dir.path()).unwrap();
    }
}

macro_rules! replay_tests {
    ($($name:ident),*) => {$(
        #[test]
        fn $name() {
            replay(stringify!($name));
        }
    )*};
}

replay_tests!(safetensors, shard_index, config, chat_template, place, shape, tokens, assume);
