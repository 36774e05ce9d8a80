//! From a request body to what the engine runs: JSON parsed with the failing field named, the model
//! checked, the prompt tokenized (chat template or plain text), and every sampling field checked against
//! OpenAI's ranges and the model's context. Every refusal is a 400/404 [`ApiError`] naming the field.

use std::time::{SystemTime, UNIX_EPOCH};

use dsv3_model::chat::Message;
use dsv3_model::generate::{Sampling, MAX_NEW_TOKENS_LIMIT, MIN_TEMPERATURE};
use dsv3_model::tokenizer::{BosPolicy, Tokenizer};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::api::{CompletionRequest, Content, Prompt, Stop};
use crate::error::ApiError;

/// `max_tokens` when the request gives none (DeepSeek's API default).
pub const DEFAULT_MAX_TOKENS: usize = 4096;
/// OpenAI's limit on stop strings.
const MAX_STOP_STRINGS: usize = 4;

/// What the checks need to know of the server.
pub struct Limits<'a> {
    /// The model id clients must name.
    pub model: &'a str,
    /// Tokens a request may have, prompt and output together: the server's `--context` (a slot's size, at
    /// most the model's positions).
    pub context: usize,
    /// Embedding rows: token ids must be below it.
    pub vocab: usize,
}

/// One generation, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub prompt: Vec<u32>,
    /// Already capped so that prompt + output fit the context.
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Text that ends the output where it first appears (excluded from it).
    pub stop: Vec<String>,
}

/// A checked request: the generation and how to answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Checked {
    pub generation: Generation,
    pub stream: bool,
    pub include_usage: bool,
}

/// Parses JSON into `T`; a syntax error or a field of the wrong type is a 400 naming the field's path.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        // Only a value of the wrong type or shape has a field to name; a syntax error has none.
        let param = (e.inner().classify() == Category::Data).then(|| e.path().to_string());
        ApiError::malformed(param, format!("the request body is not a valid request: {}", e.inner()))
    })
}

/// A chat completion: `messages` through the chat template.
pub fn chat(req: CompletionRequest, limits: &Limits, tokenizer: &Tokenizer) -> Result<Checked, ApiError> {
    let Some(messages) = &req.messages else {
        return Err(ApiError::invalid("messages", "a chat completion needs `messages`"));
    };
    if messages.is_empty() {
        return Err(ApiError::invalid("messages", "at least one message is needed"));
    }
    let messages = messages
        .iter()
        .enumerate()
        .map(|(i, m)| Ok(Message::new(m.role, message_text(m.content.as_ref(), i)?)))
        .collect::<Result<Vec<_>, ApiError>>()?;
    let prompt = tokenizer
        .encode_chat(&messages, true)
        .map_err(|e| ApiError::invalid("messages", format!("the chat template refused them: {e}")))?;
    checked(prompt, "messages", &req, limits)
}

/// A text completion: `prompt` as text (no chat template) or token ids.
pub fn completion(
    req: CompletionRequest,
    limits: &Limits,
    tokenizer: &Tokenizer,
) -> Result<Checked, ApiError> {
    let prompt = match &req.prompt {
        None => return Err(ApiError::invalid("prompt", "a text completion needs `prompt`")),
        Some(Prompt::Text(text)) => tokenizer
            .encode_prompt(text, BosPolicy::FromConfig)
            .map_err(|e| ApiError::invalid("prompt", format!("it could not be tokenized: {e}")))?,
        Some(Prompt::Tokens(ids)) => {
            if let Some(id) = ids.iter().find(|&&id| id as usize >= limits.vocab) {
                let why = format!("token id {id} is not below the vocabulary size {}", limits.vocab);
                return Err(ApiError::invalid("prompt", why));
            }
            ids.clone()
        }
    };
    checked(prompt, "prompt", &req, limits)
}

/// A message's text: a string, or its text parts joined.
fn message_text(content: Option<&Content>, index: usize) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(Content::Text(text)) => Ok(text.clone()),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, part)| match (part.kind.as_str(), &part.text) {
                ("text", Some(text)) => Ok(text.as_str()),
                _ => Err(ApiError::invalid(
                    format!("messages[{index}].content[{j}]"),
                    format!("only text parts are supported, not `{}` without text", part.kind),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.concat()),
    }
}

fn checked(
    prompt: Vec<u32>,
    prompt_field: &str,
    s: &CompletionRequest,
    limits: &Limits,
) -> Result<Checked, ApiError> {
    if s.model != limits.model {
        return Err(ApiError::unknown_model(&s.model, limits.model));
    }
    if prompt.is_empty() {
        return Err(ApiError::invalid(prompt_field, "the prompt has no tokens"));
    }
    if prompt.len() >= limits.context {
        let why = format!(
            "the prompt has {} tokens; the server's context is {} tokens, output included",
            prompt.len(),
            limits.context
        );
        return Err(ApiError::invalid(prompt_field, why));
    }
    let (field, asked) = match (s.max_completion_tokens, s.max_tokens) {
        (Some(n), _) => ("max_completion_tokens", Some(n)),
        (None, n) => ("max_tokens", n),
    };
    let asked = asked.unwrap_or(DEFAULT_MAX_TOKENS as u64);
    if asked == 0 || asked > MAX_NEW_TOKENS_LIMIT as u64 {
        return Err(ApiError::invalid(field, format!("{asked} is not in 1..={MAX_NEW_TOKENS_LIMIT}")));
    }
    if s.n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid("n", "only one choice per request (n = 1) is supported"));
    }
    let temperature = s.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid("temperature", format!("{temperature} is not in [0, 2]")));
    }
    let top_p = s.top_p.unwrap_or(1.0);
    if top_p.is_nan() || top_p <= 0.0 || top_p > 1.0 {
        return Err(ApiError::invalid("top_p", format!("{top_p} is not in (0, 1]")));
    }
    let stop = match &s.stop {
        None => Vec::new(),
        Some(Stop::One(text)) => vec![text.clone()],
        Some(Stop::Many(texts)) => texts.clone(),
    };
    if stop.len() > MAX_STOP_STRINGS || stop.iter().any(String::is_empty) {
        let why = format!("at most {MAX_STOP_STRINGS} stop strings, none of them empty");
        return Err(ApiError::invalid("stop", why));
    }
    let sampling = Sampling {
        // Temperatures too small to compute with are greedy in all but name (see MIN_TEMPERATURE).
        temperature: if temperature < MIN_TEMPERATURE { 0.0 } else { temperature },
        top_p,
        seed: s.seed.unwrap_or_else(clock_seed),
    };
    let room = limits.context - prompt.len();
    Ok(Checked {
        generation: Generation { max_new_tokens: (asked as usize).min(room), prompt, sampling, stop },
        stream: s.stream,
        include_usage: s.stream_options.as_ref().is_some_and(|o| o.include_usage),
    })
}

/// A seed for a request that gives none: sampled requests differ from one another unless asked not to.
fn clock_seed() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}
