//! The OpenAI wire types this server reads and writes, as serde structs. Requests name only the fields
//! the server acts on; any other field a client sends (OpenAI's list keeps growing) is ignored, as
//! OpenAI-compatible servers do. A field of the wrong type is an error naming it (`crate::error`).

use serde::{Deserialize, Serialize};

/// `stop`: one string or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// A message's content: a string, or OpenAI's list of parts of which only text parts are understood.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessage {
    pub role: dsv3_model::chat::Role,
    pub content: Option<Content>,
}

/// `prompt`: text, or token ids.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// A chat or text completion request: chat needs `messages`, text needs `prompt` (one struct rather than
/// two sharing a flattened part, because serde's `flatten` loses the path of a bad field).
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    pub model: String,
    pub messages: Option<Vec<ChatMessage>>,
    pub prompt: Option<Prompt>,
    pub max_tokens: Option<u64>,
    /// The newer name of `max_tokens` in OpenAI's chat API; it wins when both are given.
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PromptTokensDetails {
    pub cached_tokens: usize,
}

/// Token counts: OpenAI's fields, DeepSeek's cache split, and OpenAI's `cached_tokens` (the same number as
/// `prompt_cache_hit_tokens`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_cache_hit_tokens: usize,
    pub prompt_cache_miss_tokens: usize,
    pub prompt_tokens_details: PromptTokensDetails,
}

impl Usage {
    pub fn new(prompt_tokens: usize, cache_hit_tokens: usize, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
            prompt_cache_hit_tokens: cache_hit_tokens,
            prompt_cache_miss_tokens: prompt_tokens - cache_hit_tokens,
            prompt_tokens_details: PromptTokensDetails { cached_tokens: cache_hit_tokens },
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// EOS or a stop string.
    Stop,
    /// `max_tokens` or the context ran out.
    Length,
    /// The server is shutting down.
    Abort,
}

#[derive(Clone, Debug, Serialize)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: FinishReason,
}

/// What every completion response and stream chunk has around its choices (`chat.completion`,
/// `chat.completion.chunk`, `text_completion`).
#[derive(Clone, Debug, Serialize)]
pub struct Completion<Choice> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    /// On a whole response; on a stream only in the last chunk, when `stream_options.include_usage` asks
    /// (and `null` before it, as OpenAI).
    pub usage: Option<Usage>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub finish_reason: Option<FinishReason>,
}

/// A text completion's choice, whole or streamed.
#[derive(Clone, Debug, Serialize)]
pub struct TextChoice {
    pub index: u32,
    pub text: String,
    pub logprobs: Option<()>,
    pub finish_reason: Option<FinishReason>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}
