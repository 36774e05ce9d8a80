//! Chat prompts: a checkpoint's Jinja chat template (`chat_template` in `tokenizer_config.json`) rendered
//! the way HuggingFace transformers renders it.
//!
//! transformers renders with jinja2's `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)`
//! and passes `messages`, `bos_token`, `eos_token` and `add_generation_prompt`. minijinja is a Rust
//! implementation of the same language; what the DeepSeek-V3 template needs beyond minijinja's core
//! (`namespace`, `in`, `is defined`, `is none`, negative indexing are core) is Python's `str.split`, which
//! `minijinja-contrib`'s `pycompat` method callback provides. `tests/chat.rs` checks the output against
//! jinja2's byte for byte.
//!
//! Not supported: assistant `tool_calls` (a [`Message`] is a role and a text), and the `tojson` filter
//! (minijinja builds it only with its `json` feature); the DeepSeek-V3 template needs neither.

use dsv3_core::{Error, Result};
use minijinja::value::ValueKind;
use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};

/// Who wrote a message. Serialised lowercase (`"user"`), as the templates compare it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    /// The output of a tool call, fed back to the model.
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One turn of a conversation; serialises to `{"role": ..., "content": ...}`, the shape HF passes to the
/// template (and the shape a conversation JSON file has).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

impl Message {
    pub fn new(role: Role, content: impl Into<String>) -> Message {
        Message { role, content: content.into() }
    }
    pub fn system(content: impl Into<String>) -> Message {
        Message::new(Role::System, content)
    }
    pub fn user(content: impl Into<String>) -> Message {
        Message::new(Role::User, content)
    }
    pub fn assistant(content: impl Into<String>) -> Message {
        Message::new(Role::Assistant, content)
    }
    pub fn tool(content: impl Into<String>) -> Message {
        Message::new(Role::Tool, content)
    }
}

/// Instructions a chat template may execute: this many, plus [`TEMPLATE_FUEL_PER_MESSAGE`] per message.
pub const TEMPLATE_FUEL_BASE: u64 = 1_000_000;
pub const TEMPLATE_FUEL_PER_MESSAGE: u64 = 10_000;

/// Bytes a rendered prompt may take: this many, plus [`TEMPLATE_OUTPUT_PER_CONTENT_BYTE`] per byte of the
/// messages' contents. A template wraps each message in a few markers (DeepSeek-V3's adds ~30 bytes per
/// message; one that repeats the system text per turn stays within 8×), so only a template built to blow
/// up its output reaches the bound; it then stops with an error instead of filling memory.
pub const TEMPLATE_OUTPUT_BASE: usize = 1 << 20;
pub const TEMPLATE_OUTPUT_PER_CONTENT_BYTE: usize = 8;

/// Renders `template` over `messages` as transformers' `apply_chat_template(..., tokenize=False)` does.
///
/// The result holds the special tokens as text (the DeepSeek template writes `bos_token` itself), so it
/// must be encoded *without* adding special tokens (`Tokenizer::encode(text, false)`), as transformers
/// does. Errors (template syntax, a failing `raise_exception(...)`) are [`Error::Data`] with field
/// `chat_template`; the file is named `(chat template)` here, and `Tokenizer::chat_prompt` names the
/// `tokenizer_config.json` it came from instead. A template that runs out of fuel (see
/// [`TEMPLATE_FUEL_BASE`]) or writes more than its output bound (see [`TEMPLATE_OUTPUT_BASE`]) is such an
/// error too. Fuel and the output bound do not bound the strings a template builds without printing them
/// (`{% set ns.s = ns.s ~ ns.s %}` in a loop doubles one per instruction; minijinja has no memory limit):
/// the template is part of the checkpoint the user chose to run.
pub fn render(
    template: &str,
    messages: &[Message],
    bos_token: &str,
    eos_token: &str,
    add_generation_prompt: bool,
) -> Result<String> {
    let mut env = Environment::new();
    // A template is code from the checkpoint: bound its work so a loop without end is an error, not a
    // hang. DeepSeek-V3's template spends a few hundred instructions per message.
    env.set_fuel(Some(TEMPLATE_FUEL_BASE + TEMPLATE_FUEL_PER_MESSAGE * messages.len() as u64));
    // transformers' settings. jinja2 also drops one trailing newline of the template source
    // (keep_trailing_newline=False), which is minijinja's default too.
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    // Python string methods (`content.split('</think>')`) the templates call.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // Printed values as Python prints them (`True`, `None`; minijinja would write `true`, `none`).
    // Only `{{ value }}` output is covered: `value ~ ''` and `|string` still give minijinja's spelling.
    env.set_formatter(|out, state, value| match value.kind() {
        ValueKind::Bool => out.write_str(if value.is_true() { "True" } else { "False" }).map_err(Into::into),
        ValueKind::None => out.write_str("None").map_err(Into::into),
        _ => minijinja::escape_formatter(out, state, value),
    });
    // transformers provides `raise_exception(msg)` to templates that reject a conversation.
    env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
        Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("template raised: {msg}")))
    });
    let compiled = env.template_from_str(template).map_err(template_error)?;
    let content: usize = messages.iter().map(|m| m.content.len()).sum();
    let limit = TEMPLATE_OUTPUT_BASE.saturating_add(content.saturating_mul(TEMPLATE_OUTPUT_PER_CONTENT_BYTE));
    let mut out = BoundedOutput { bytes: Vec::new(), limit, overflowed: false };
    let context = context! {
        messages => messages,
        bos_token => bos_token,
        eos_token => eos_token,
        add_generation_prompt => add_generation_prompt,
    };
    let rendered = compiled.render_captured_to(context, &mut out).map(drop);
    match rendered {
        Ok(()) => {
            String::from_utf8(out.bytes).map_err(|_| data_error("the rendered prompt is not UTF-8".into()))
        }
        Err(_) if out.overflowed => Err(data_error(format!(
            "the rendered prompt exceeds {limit} bytes ({TEMPLATE_OUTPUT_BASE} + \
             {TEMPLATE_OUTPUT_PER_CONTENT_BYTE} per byte of message content)"
        ))),
        Err(e) => Err(template_error(e)),
    }
}

/// The rendered prompt, refusing to grow past `limit` bytes: the write that would cross it fails, which
/// ends the render, and says so in `overflowed`.
struct BoundedOutput {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl std::io::Write for BoundedOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.limit - self.bytes.len() {
            self.overflowed = true;
            return Err(std::io::Error::other("chat template output bound reached"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn template_error(e: minijinja::Error) -> Error {
    // `Display` gives the kind, the detail and the template line.
    data_error(e.to_string())
}

fn data_error(reason: String) -> Error {
    Error::Data { file: "(chat template)".into(), field: "chat_template".into(), reason }
}
