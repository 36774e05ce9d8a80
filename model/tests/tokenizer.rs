//! The tokenizer against ids, decodes and stream steps recorded from Python `tokenizers` / transformers
//! (tests/fixtures/tokenizer/golden.json; its README says how), plus the error paths.

use std::path::PathBuf;
use std::sync::OnceLock;

use dsv3_core::Error;
use dsv3_model::tokenizer::{BosPolicy, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    bos_token: String,
    eos_token: String,
    bos_id: u32,
    eos_id: u32,
    vocab_size: usize,
    encode: Vec<EncodeCase>,
}

#[derive(Deserialize)]
struct EncodeCase {
    text: String,
    ids_with_special: Vec<u32>,
    ids_without_special: Vec<u32>,
    /// transformers' `AutoTokenizer.from_pretrained(dir)(text)["input_ids"]`.
    hf_input_ids: Vec<u32>,
    decoded: String,
    /// tokenizers' `DecodeStream.step` output after each id of `ids_with_special` ("" for nothing).
    stream: Vec<String>,
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn golden() -> &'static Golden {
    static GOLDEN: OnceLock<Golden> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let path = manifest_dir().join("tests/fixtures/tokenizer/golden.json");
        let text = std::fs::read_to_string(&path).expect("reading golden.json");
        serde_json::from_str(&text).expect("parsing golden.json")
    })
}

/// Parsing the 7.8 MB tokenizer.json takes a while: once per test binary.
fn tok() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::builtin().expect("the builtin tokenizer loads"))
}

/// A fresh directory under the system temp dir, unique to this process and test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dsv3-tokenizer-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn builtin_file(name: &str) -> PathBuf {
    manifest_dir().join("tokenizer/deepseek-v3").join(name)
}

/// A checkpoint-like directory: the builtin tokenizer.json and the given tokenizer_config.json text.
fn dir_with_config(name: &str, config: &str) -> PathBuf {
    let dir = temp_dir(name);
    std::fs::copy(builtin_file("tokenizer.json"), dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("tokenizer_config.json"), config).unwrap();
    dir
}

/// The builtin tokenizer_config.json with `edit` applied to its JSON object.
fn edited_config(edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> String {
    let text = std::fs::read_to_string(builtin_file("tokenizer_config.json")).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(value.as_object_mut().unwrap());
    serde_json::to_string(&value).unwrap()
}

fn config_with(key: &str, value: serde_json::Value) -> String {
    edited_config(|m| {
        m.insert(key.into(), value);
    })
}

fn config_without(key: &str) -> String {
    edited_config(|m| {
        m.remove(key);
    })
}

fn expect_data_error(
    result: dsv3_core::Result<impl std::fmt::Debug>,
    file_part: &str,
    field_is: &str,
) -> String {
    match result {
        Err(Error::Data { file, field, reason }) => {
            assert!(file.contains(file_part), "file {file:?} should name {file_part:?}");
            assert_eq!(field, field_is, "reason: {reason}");
            reason
        }
        other => panic!("expected a Data error naming {file_part} / {field_is}, got {other:?}"),
    }
}

#[test]
fn special_tokens_and_vocab_match_python() {
    let g = golden();
    let t = tok();
    assert_eq!(t.bos_token(), g.bos_token);
    assert_eq!(t.eos_token(), g.eos_token);
    assert_eq!(t.bos_id(), g.bos_id);
    assert_eq!(t.eos_id(), g.eos_id);
    assert_eq!(t.vocab_size(), g.vocab_size);
    assert!(t.chat_template().is_some_and(|s| s.contains("<｜Assistant｜>")));
}

#[test]
fn encode_matches_python_tokenizers_exactly() {
    for case in &golden().encode {
        let t = tok();
        assert_eq!(t.encode(&case.text, true).unwrap(), case.ids_with_special, "{:?}", case.text);
        assert_eq!(t.encode(&case.text, false).unwrap(), case.ids_without_special, "{:?}", case.text);
    }
}

#[test]
fn prompt_bos_policy() {
    let t = tok();
    for case in &golden().encode {
        // FromConfig is exactly what transformers' `tokenizer(text)` gives: no BOS for DeepSeek-V3.
        assert_eq!(t.encode_prompt(&case.text, BosPolicy::FromConfig).unwrap(), case.hf_input_ids);
        assert_eq!(t.encode_prompt(&case.text, BosPolicy::Never).unwrap(), case.ids_without_special);
        let mut with_bos = vec![t.bos_id()];
        with_bos.extend(&case.ids_without_special);
        assert_eq!(t.encode_prompt(&case.text, BosPolicy::Always).unwrap(), with_bos);
    }
    assert_eq!(t.encode_prompt("Hi", BosPolicy::FromConfig).unwrap(), vec![23166]);
}

#[test]
fn decode_round_trips_and_matches_python() {
    let t = tok();
    for case in &golden().encode {
        let decoded = t.decode(&case.ids_with_special).unwrap();
        assert_eq!(decoded, case.decoded);
        assert_eq!(decoded, case.text, "byte-level BPE is lossless");
    }
}

#[test]
fn every_id_in_the_vocabulary_decodes() {
    let t = tok();
    let all: Vec<u32> = (0..t.vocab_size() as u32).collect();
    t.decode(&all).unwrap();
}

#[test]
fn stream_decoder_matches_python_step_by_step() {
    let t = tok();
    for case in &golden().encode {
        let mut stream = t.stream_decoder();
        let steps: Vec<String> = case.ids_with_special.iter().map(|&id| stream.step(id).unwrap()).collect();
        assert_eq!(steps, case.stream, "{:?}", case.text);
        let rest = stream.finish().unwrap();
        assert_eq!(steps.concat() + &rest, case.text);
    }
}

#[test]
fn stream_decoder_holds_back_split_characters() {
    let t = tok();
    // "🦀" is F0 9F A6 80: " 🦀" is the tokens " \xF0\x9F" + "\xA6" + "\x80"; "你好" is one token.
    let ids = t.encode(" 🦀你好", false).unwrap();
    assert_eq!(ids, vec![7351, 102, 225, 30594]);
    let mut stream = t.stream_decoder();
    let steps: Vec<String> = ids.iter().map(|&id| stream.step(id).unwrap()).collect();
    assert_eq!(steps, vec!["", "", " 🦀", "你好"]);
    assert_eq!(stream.finish().unwrap(), "");

    // Generation stopping inside a character: finish flushes what is there, the partial character as
    // U+FFFD, rather than dropping it.
    let mut stream = t.stream_decoder();
    assert_eq!(stream.step(7351).unwrap(), "");
    assert_eq!(stream.step(102).unwrap(), "");
    assert_eq!(stream.finish().unwrap(), " \u{FFFD}");
}

#[test]
fn bad_ids_are_errors_naming_the_file() {
    let t = tok();
    for id in [t.vocab_size() as u32, 129_279, u32::MAX] {
        let reason = expect_data_error(t.decode(&[1, id]), "tokenizer.json", "model.vocab");
        assert!(reason.contains(&id.to_string()), "{reason}");
    }
}

#[test]
fn streaming_shows_ids_without_a_token_as_placeholders() {
    let t = tok();
    for id in [t.vocab_size() as u32, 129_011, 129_279, u32::MAX] {
        let mark = dsv3_model::tokenizer::unknown_id_placeholder(id);
        assert!(mark.contains(&id.to_string()), "{mark}");
        let mut stream = t.stream_decoder();
        assert_eq!(stream.step(43).unwrap(), "I");
        assert_eq!(stream.step(id).unwrap(), mark);
        // Decoding goes on after it.
        assert_eq!(stream.step(53341).unwrap(), "");
        assert_eq!(stream.step(100).unwrap(), " ❤");
        // Arriving inside a character: the partial character is flushed (U+FFFD) before the placeholder.
        assert_eq!(stream.step(53341).unwrap(), "");
        assert_eq!(stream.step(id).unwrap(), format!(" \u{FFFD}{mark}"));
        assert_eq!(stream.step(id).unwrap(), mark);
        assert_eq!(stream.finish().unwrap(), "");
    }
}

#[test]
fn from_dir_without_tokenizer_json_is_none() {
    let dir = temp_dir("empty");
    assert!(Tokenizer::from_dir(&dir).unwrap().is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn from_dir_loads_a_checkpoint_directory() {
    let dir = builtin_file("");
    let t = Tokenizer::from_dir(&dir).unwrap().expect("tokenizer.json is there");
    let case = &golden().encode[4];
    assert_eq!(t.encode(&case.text, true).unwrap(), case.ids_with_special);
    assert_eq!(t.bos_id(), 0);
    assert_eq!(t.eos_id(), 1);
    assert_eq!(t.chat_template(), tok().chat_template());
}

#[test]
fn malformed_tokenizer_json_names_the_file() {
    let dir = temp_dir("malformed");
    std::fs::write(dir.join("tokenizer.json"), "{\"model\": [1, 2").unwrap();
    std::fs::copy(builtin_file("tokenizer_config.json"), dir.join("tokenizer_config.json")).unwrap();
    let err = Tokenizer::from_dir(&dir).map(|t| t.is_some());
    expect_data_error(err, &dir.join("tokenizer.json").display().to_string(), "(json)");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_errors_name_file_and_field() {
    let missing = temp_dir("no-config");
    std::fs::copy(builtin_file("tokenizer.json"), missing.join("tokenizer.json")).unwrap();
    expect_data_error(Tokenizer::from_dir(&missing).map(|t| t.is_some()), "tokenizer_config.json", "(file)");
    std::fs::remove_dir_all(&missing).unwrap();

    let cases: Vec<(&str, String, &str)> = vec![
        ("bad-json", "{".into(), "(json)"),
        ("not-object", "[]".into(), "(root)"),
        ("bad-flag", config_with("add_bos_token", "yes".into()), "add_bos_token"),
        ("unknown-bos", config_with("bos_token", "<nope>".into()), "bos_token"),
        ("no-eos", config_without("eos_token"), "eos_token"),
        ("bad-template", config_with("chat_template", 3.into()), "chat_template"),
    ];
    for (name, config, field) in cases {
        let dir = dir_with_config(name, &config);
        let result = Tokenizer::from_dir(&dir).map(|t| t.is_some());
        expect_data_error(result, "tokenizer_config.json", field);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn add_bos_token_true_prepends_bos() {
    // DeepSeek-V2's tokenizer_config.json says `add_bos_token: true`. transformers 4.57.6
    // (LlamaTokenizerFast) then gives [0] + ids, and [0, 0, ...] for text that already starts with the
    // BOS text (checked by hand; transformers 5.24 ignores the flag for a ByteLevel tokenizer.json).
    let config = edited_config(|m| {
        m.insert("add_bos_token".into(), true.into());
        m.remove("chat_template");
    });
    let dir = dir_with_config("add-bos", &config);
    let t = Tokenizer::from_dir(&dir).unwrap().unwrap();
    assert_eq!(t.encode("Hello, world!", true).unwrap(), vec![0, 19923, 14, 2058, 3]);
    assert_eq!(t.encode("Hello, world!", false).unwrap(), vec![19923, 14, 2058, 3]);
    assert_eq!(t.encode("", true).unwrap(), vec![0]);
    assert_eq!(t.encode("<｜begin▁of▁sentence｜>Hi", true).unwrap(), vec![0, 0, 23166]);
    assert_eq!(t.encode_prompt("Hi", BosPolicy::FromConfig).unwrap(), vec![0, 23166]);
    assert_eq!(t.encode_prompt("Hi", BosPolicy::Never).unwrap(), vec![23166]);
    // No template in that config and no chat_template.jinja beside it.
    expect_data_error(t.chat_prompt(&[], true), "tokenizer_config.json", "chat_template");
    std::fs::remove_dir_all(&dir).unwrap();

    let config = config_with("add_eos_token", true.into());
    let dir = dir_with_config("add-eos", &config);
    let t = Tokenizer::from_dir(&dir).unwrap().unwrap();
    assert_eq!(t.encode("Hi", true).unwrap(), vec![23166, 1]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn chat_template_jinja_beside_the_config_is_used() {
    let config = config_without("chat_template");
    let dir = dir_with_config("template-file", &config);
    std::fs::write(dir.join("chat_template.jinja"), "{{ bos_token }}{{ messages | length }}").unwrap();
    let t = Tokenizer::from_dir(&dir).unwrap().unwrap();
    assert_eq!(t.chat_prompt(&[], false).unwrap(), "<｜begin▁of▁sentence｜>0");
    std::fs::remove_dir_all(&dir).unwrap();
}
