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

/// Renders `template` over `messages` as transformers' `apply_chat_template(..., tokenize=False)` does.
///
/// The result holds the special tokens as text (the DeepSeek template writes `bos_token` itself), so it
/// must be encoded *without* adding special tokens (`Tokenizer::encode(text, false)`), as transformers
/// does. Errors (template syntax, a failing `raise_exception(...)`) are [`Error::Data`] with field
/// `chat_template`; the file is named `(chat template)` here, and `Tokenizer::chat_prompt` names the
/// `tokenizer_config.json` it came from instead. A template that runs out of fuel (see
/// [`TEMPLATE_FUEL_BASE`]) is such an error too.
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
    compiled
        .render(context! {
            messages => messages,
            bos_token => bos_token,
            eos_token => eos_token,
            add_generation_prompt => add_generation_prompt,
        })
        .map_err(template_error)
}

fn template_error(e: minijinja::Error) -> Error {
    // `Display` gives the kind, the detail and the template line.
    Error::Data { file: "(chat template)".into(), field: "chat_template".into(), reason: e.to_string() }
}
