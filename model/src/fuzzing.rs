//! Entry points of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run with `cargo +nightly fuzz run NAME`)
//! and of their replay in `cargo test` (`model/tests/fuzz_replay.rs`): one function per parser of
//! untrusted input, taking raw bytes. Each must return, whatever the bytes, without panicking and in
//! bounded time; it also does what a caller would do next with a value that parsed (read every tensor,
//! plan the model, assign the parts), since that is where an accepted-but-absurd input breaks things.
//!
//! They live in the library, not in the fuzz crate, so the fuzz targets and the stable replay test run the
//! same code (the fuzz crate needs nightly and is not a workspace member).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use crate::chat::{self, Message};
use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::placement::Rules;

/// A fuzz target's entry point: any bytes in, nothing out; it must return, without panicking.
pub type Entry = fn(&[u8]);

/// Every target: its name (the fuzz target's and its corpus directory's) and its entry point.
pub const TARGETS: [(&str, Entry); 8] = [
    ("safetensors", safetensors_file),
    ("shard_index", shard_index),
    ("config", config_json),
    ("chat_template", chat_template),
    ("place", place_rules),
    ("shape", shape),
    ("tokens", tokens),
    ("assume", assume),
];

/// The tiny test model's config: small enough that planning and assigning over it is cheap, and a real
/// DeepSeek-V3 layout (dense and MoE layers, MLA), so placement rules have parts to match.
const TINY_CONFIG: &str = include_str!("../tests/fixtures/tiny-dsv3/config.json");

fn tiny_config() -> ModelConfig {
    ModelConfig::from_json(TINY_CONFIG, "tiny-dsv3/config.json").expect("the tiny fixture's config parses")
}

/// A directory of its own under the system temp dir for one input (fuzz targets and the replay test run
/// inputs on several threads at once), removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("dsv3-fuzz-{}-{n}", std::process::id()));
        fs::create_dir_all(&dir).expect("creating a scratch directory under the temp dir");
        Scratch(dir)
    }

    fn write(&self, name: &str, data: &[u8]) {
        fs::write(self.0.join(name), data).expect("writing a scratch file");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A small valid safetensors file: three tensors of different dtypes (the seed of the `safetensors`
/// corpus, and the shard the `shard_index` target's index points at).
pub fn small_safetensors() -> Vec<u8> {
    let a = vec![1u8; 4 * 3 * 2];
    let b = 1.5f32.to_le_bytes().repeat(2);
    let c = vec![0x38u8; 5];
    let views = vec![
        ("model.a.weight", TensorView::new(Dtype::BF16, vec![4, 3], &a).expect("consistent view")),
        ("model.b.weight", TensorView::new(Dtype::F32, vec![2], &b).expect("consistent view")),
        ("model.c.weight", TensorView::new(Dtype::F8_E4M3, vec![5], &c).expect("consistent view")),
    ];
    safetensors::serialize(views, None).expect("serializing three consistent views")
}

/// Opens the checkpoint in `dir` and, if that succeeds, does what a loader and `inspect` do: reads every
/// tensor, validates it against a config, reports. Also used by `model/tests/fuzz_headers.rs`.
pub fn exercise_checkpoint(dir: &Path) {
    let Ok(ckpt) = Checkpoint::open(dir) else { return };
    let mut sum = 0u64;
    for name in ckpt.names() {
        if let Ok(t) = ckpt.tensor(name) {
            sum = sum.wrapping_add(t.bytes.iter().map(|&b| b as u64).sum::<u64>());
        }
    }
    std::hint::black_box((sum, ckpt.total_bytes(), ckpt.bytes_by_dtype()));
    let cfg = tiny_config();
    let _ = ckpt.validate(&cfg, true);
    let _ = crate::plan::part_sizes(&cfg, Some(&ckpt), None);
    std::hint::black_box(crate::inspect::Report::from_config(&cfg, Some(&ckpt), &[]).to_json());
}

/// The bytes as a single-file checkpoint, `model.safetensors`.
pub fn safetensors_file(data: &[u8]) {
    let scratch = Scratch::new();
    scratch.write("model.safetensors", data);
    exercise_checkpoint(&scratch.0);
}

/// The bytes as `model.safetensors.index.json`, next to one valid shard `s.safetensors`.
pub fn shard_index(data: &[u8]) {
    let scratch = Scratch::new();
    scratch.write("s.safetensors", &small_safetensors());
    scratch.write("model.safetensors.index.json", data);
    exercise_checkpoint(&scratch.0);
}

/// The bytes as `config.json`; a config that parses is then sized, planned and reported as `inspect` does.
pub fn config_json(data: &[u8]) {
    let Ok(cfg) = ModelConfig::from_json(&String::from_utf8_lossy(data), "fuzz/config.json") else { return };
    std::hint::black_box(crate::placement::parts(&cfg));
    let _ = crate::plan::part_sizes(&cfg, None, None);
    std::hint::black_box(crate::inspect::Report::from_config(&cfg, None, &[]).to_json());
}

/// The bytes as a chat template, rendered over a short conversation with every role.
pub fn chat_template(data: &[u8]) {
    let template = String::from_utf8_lossy(data);
    let messages = [
        Message::system("Be brief."),
        Message::user("Hello"),
        Message::assistant("<think>hm</think>Hi."),
        Message::tool("{\"ok\": true}"),
        Message::user("Again?"),
    ];
    for add_generation_prompt in [false, true] {
        let _ = chat::render(&template, &messages, "<bos>", "<eos>", add_generation_prompt);
    }
}

/// The bytes as `--place` rules, assigned over the tiny model's parts.
pub fn place_rules(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(rules) = Rules::parse(&text) {
        let _ = rules.assign(&tiny_config(), "cpu:0");
    }
}

/// The bytes as `bench --shape`.
pub fn shape(data: &[u8]) {
    let _ = crate::values::parse_shape(&String::from_utf8_lossy(data));
}

/// The bytes as `--tokens`.
pub fn tokens(data: &[u8]) {
    let _ = crate::values::parse_tokens(&String::from_utf8_lossy(data));
}

/// The bytes as `--assume`, with a one-entry datasheet (`H200`); devices that parse are then used to plan
/// the tiny model as `--place auto` does.
pub fn assume(data: &[u8]) {
    let datasheet = |name: &str| -> Result<(u64, dsv3_core::Peak), String> {
        if name.eq_ignore_ascii_case("H200") {
            let peak = dsv3_core::Peak {
                f32_flops: 67e12,
                bf16_flops: 989e12,
                fp8_flops: 1979e12,
                bytes_per_s: 4.8e12,
                source: "fuzz datasheet".into(),
            };
            Ok((141_000_000_000, peak))
        } else {
            Err(format!("unknown device `{name}`; known: H200"))
        }
    };
    let Ok(devices) = crate::plan::parse_assume(&String::from_utf8_lossy(data), &datasheet) else { return };
    let _ = Rules::auto(devices, None).assign(&tiny_config(), "cpu:0");
}
