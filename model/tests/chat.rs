//! The DeepSeek-V3 chat template rendered by minijinja against jinja2's (and transformers'
//! `apply_chat_template`) output recorded in tests/fixtures/tokenizer/golden.json.

use std::sync::OnceLock;

use dsv3_core::Error;
use dsv3_model::chat::{render, Message, Role};
use dsv3_model::tokenizer::Tokenizer;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    bos_token: String,
    eos_token: String,
    chat: Vec<ChatCase>,
}

#[derive(Deserialize)]
struct ChatCase {
    name: String,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    rendered: String,
    /// The rendered text encoded without added special tokens.
    ids: Vec<u32>,
}

fn golden() -> &'static Golden {
    static GOLDEN: OnceLock<Golden> = OnceLock::new();
    GOLDEN.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tokenizer/golden.json");
        let text = std::fs::read_to_string(path).expect("reading golden.json");
        serde_json::from_str(&text).expect("parsing golden.json")
    })
}

fn tok() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| Tokenizer::builtin().expect("the builtin tokenizer loads"))
}

/// The template straight from the file, independent of the tokenizer's loading code.
fn template_from_file() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tokenizer/deepseek-v3/tokenizer_config.json");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    config["chat_template"].as_str().unwrap().to_string()
}

#[test]
fn render_matches_jinja2_exactly() {
    let g = golden();
    let template = template_from_file();
    assert!(g.chat.len() >= 10);
    for case in &g.chat {
        let rendered =
            render(&template, &case.messages, &g.bos_token, &g.eos_token, case.add_generation_prompt)
                .unwrap();
        assert_eq!(
            rendered, case.rendered,
            "{} (add_generation_prompt {})",
            case.name, case.add_generation_prompt
        );
    }
}

#[test]
fn tokenizer_chat_prompt_and_ids_match() {
    let t = tok();
    for case in &golden().chat {
        let label = format!("{} (add_generation_prompt {})", case.name, case.add_generation_prompt);
        assert_eq!(
            t.chat_prompt(&case.messages, case.add_generation_prompt).unwrap(),
            case.rendered,
            "{label}"
        );
        assert_eq!(t.encode_chat(&case.messages, case.add_generation_prompt).unwrap(), case.ids, "{label}");
    }
}

#[test]
fn chat_ids_start_with_a_single_bos() {
    let t = tok();
    let ids = t.encode_chat(&[Message::system("Be brief."), Message::user("Hi")], true).unwrap();
    assert_eq!(ids[0], t.bos_id());
    assert_ne!(ids[1], t.bos_id());
    assert_eq!(*ids.last().unwrap(), 128804, "<｜Assistant｜>");
}

#[test]
fn reasoning_before_think_end_is_dropped_from_history() {
    let t = tok();
    let messages = [
        Message::user("2+2?"),
        Message::assistant("<think>\nTwo plus two.\n</think>\n\nThe answer is 4."),
        Message::user("And 3+3?"),
    ];
    let prompt = t.chat_prompt(&messages, true).unwrap();
    assert!(!prompt.contains("Two plus two"), "{prompt}");
    assert!(prompt.contains("<｜Assistant｜>\n\nThe answer is 4.<｜end▁of▁sentence｜>"), "{prompt}");
}

#[test]
fn messages_serialise_as_hf_dicts() {
    let m: Message = serde_json::from_str(r#"{"role": "assistant", "content": "ok"}"#).unwrap();
    assert_eq!(m, Message::new(Role::Assistant, "ok"));
    assert_eq!(serde_json::to_string(&Message::tool("x")).unwrap(), r#"{"role":"tool","content":"x"}"#);
    assert_eq!(Role::System.as_str(), "system");
    let bad: Result<Message, _> = serde_json::from_str(r#"{"role": "wizard", "content": ""}"#);
    assert!(bad.is_err());
}

#[test]
fn template_errors_are_data_errors() {
    let cases = [
        "{% if %}",                                        // syntax
        "{{ raise_exception('no system role') }}",         // a template rejecting the conversation
        "{{ messages[0].content.nosuchmethod() }}",        // an unknown Python method
        "{% for m in messages %}{{ m.content }}{% endfor", // unterminated
        // 10^10 iterations: stopped by the template's fuel instead of hanging.
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    ];
    for template in cases {
        match render(template, &[Message::user("x")], "<s>", "</s>", false) {
            Err(Error::Data { field, reason, .. }) => {
                assert_eq!(field, "chat_template");
                assert!(!reason.is_empty());
            }
            other => panic!("{template:?}: expected a Data error, got {other:?}"),
        }
    }
    // Output past the bound (1 MiB + 8 bytes per content byte) ends the render: 100,000 × 100 bytes
    // within the fuel, each write checked, nothing past the bound kept.
    let wide = "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}";
    match render(wide, &[Message::user("x")], "<s>", "</s>", false) {
        Err(Error::Data { reason, .. }) => assert!(reason.contains("exceeds 1048584 bytes"), "{reason}"),
        other => panic!("expected the output bound, got {other:?}"),
    }
    // Just under the bound is rendered whole.
    let under = "{% for i in range(10485) %}{{ 'x' * 100 }}{% endfor %}";
    assert_eq!(render(under, &[Message::user("x")], "<s>", "</s>", false).unwrap().len(), 1_048_500);
    match render("{{ raise_exception('no system role') }}", &[], "<s>", "</s>", false) {
        Err(Error::Data { reason, .. }) => assert!(reason.contains("no system role"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn hf_jinja_settings() {
    // trim_blocks: the newline after a block tag goes; lstrip_blocks: the indentation before one goes.
    let template = "{% for m in messages %}\n    {% if m.role == 'user' %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n";
    let rendered = render(template, &[Message::user("a"), Message::user("b")], "", "", false).unwrap();
    assert_eq!(rendered, "[a]\n[b]\n");
    // Python string methods through pycompat, negative indexing, `is defined`, `in`, namespace; booleans
    // and none print as Python prints them. (jinja2 gives exactly these strings.)
    let template = "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}\
                    {{ ns.n }}|{{ 'a,b,c'.split(',')[-1] }}|{{ x is defined }}|{{ 'tool_calls' in messages[0] }}|{{ none }}";
    let rendered = render(template, &[Message::user("a"), Message::user("b")], "", "", true).unwrap();
    assert_eq!(rendered, "2|c|False|False|None");
}
