//! The tokenizer of a DeepSeek checkpoint: HF `tokenizer.json` (byte-level BPE, run by the `tokenizers`
//! crate) plus what `tokenizer_config.json` says about special tokens and the chat template.
//!
//! # BOS for a plain prompt
//!
//! DeepSeek-V3's files add no BOS to plain text. `tokenizer.json`'s post-processor is `ByteLevel`, which
//! adds no tokens, and `tokenizer_config.json` says `"add_bos_token": false`; transformers'
//! `tokenizer(text)` on these files gives no BOS (checked with transformers 4.57.6, whose
//! `LlamaTokenizerFast` rebuilds the post-processor from `add_bos_token`, and 5.24.0: both return the bare
//! ids, recorded as `hf_input_ids` in `tests/fixtures/tokenizer/golden.json`). The chat template writes
//! `bos_token` itself, so a chat prompt starts with BOS either way.
//!
//! So `dsv3 generate --prompt TEXT` should encode with [`BosPolicy::FromConfig`]: its ids are then
//! exactly HF's `tokenizer(TEXT)`, the reference other implementations are compared against (no BOS for
//! DeepSeek-V3; BOS for a checkpoint whose config says `add_bos_token: true`). Every chat prompt starts
//! with BOS, so a model may continue raw text better with it: a `--bos` switch ([`BosPolicy::Always`])
//! is worth offering. `--chat` goes through [`Tokenizer::encode_chat`], which adds nothing beyond what
//! the template writes.
//!
//! # Special tokens in `encode(text, true)`
//!
//! When `tokenizer_config.json` has `add_bos_token` or `add_eos_token` (DeepSeek-V3's has both, with
//! `tokenizer_class` `LlamaTokenizerFast`), they decide, as in transformers 4.x, whose
//! `LlamaTokenizerFast` replaces `tokenizer.json`'s post-processor with exactly those tokens (a missing one
//! takes that class's default: BOS yes, EOS no). Without either key `tokenizer.json`'s own post-processor
//! decides, as for any other fast tokenizer. (transformers 5.24 ignores the flags for a ByteLevel
//! `tokenizer.json`; both versions agree when the flags match the post-processor, as DeepSeek-V3's do.)
//! Text is never inspected: a prompt that already starts with the BOS text gets a second BOS, as in
//! transformers.

use std::path::Path;

use dsv3_core::{Error, Result};
use serde_json::Value;

use crate::chat::{self, Message};

/// The DeepSeek-V3 tokenizer, compiled in so the binary needs no files beside a checkpoint's weights.
const BUILTIN_TOKENIZER_JSON: &[u8] = include_bytes!("../tokenizer/deepseek-v3/tokenizer.json");
const BUILTIN_CONFIG_JSON: &str = include_str!("../tokenizer/deepseek-v3/tokenizer_config.json");
const BUILTIN_DIR: &str = "(builtin deepseek-v3)";

/// Whether [`Tokenizer::encode_prompt`] puts BOS in front of a plain (non-chat) prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BosPolicy {
    /// What the checkpoint's files say: exactly [`Tokenizer::encode`]`(text, true)`, i.e. HF's
    /// `tokenizer(text)`. No BOS for DeepSeek-V3.
    FromConfig,
    /// BOS, then the text's tokens.
    Always,
    /// The text's tokens only.
    Never,
}

/// What `encode(text, true)` adds around the text's tokens.
#[derive(Clone, Copy, Debug)]
enum AddSpecial {
    /// `add_bos_token` / `add_eos_token` from `tokenizer_config.json`.
    Flags { bos: bool, eos: bool },
    /// `tokenizer.json`'s post-processor.
    PostProcessor,
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// `tokenizer.json` and `tokenizer_config.json` as errors name them.
    file: String,
    config_file: String,
    bos_token: String,
    eos_token: String,
    bos_id: u32,
    eos_id: u32,
    add_special: AddSpecial,
    chat_template: Option<String>,
}

impl Tokenizer {
    /// The DeepSeek-V3 tokenizer and chat template embedded in the binary.
    pub fn builtin() -> Result<Tokenizer> {
        Tokenizer::from_parts(
            BUILTIN_TOKENIZER_JSON,
            &format!("{BUILTIN_DIR}/tokenizer.json"),
            BUILTIN_CONFIG_JSON,
            &format!("{BUILTIN_DIR}/tokenizer_config.json"),
            None,
        )
    }

    /// The tokenizer used with a model: the checkpoint directory's own (`dir`), else the built-in one when
    /// the embedding has DeepSeek-V3's rows (the built-in model, `--random-weights`, the test fixtures);
    /// `None` when neither applies, and the model runs from token ids.
    pub fn for_model(dir: Option<&Path>, embedding_rows: usize) -> Result<Option<Tokenizer>> {
        if let Some(t) = dir.map(Tokenizer::from_dir).transpose()?.flatten() {
            return Ok(Some(t));
        }
        match embedding_rows {
            crate::builtin::VOCAB => Tokenizer::builtin().map(Some),
            _ => Ok(None),
        }
    }

    /// A checkpoint directory's tokenizer: `tokenizer.json` plus `tokenizer_config.json`. `Ok(None)` when
    /// the directory has no `tokenizer.json` (the caller may fall back to [`Tokenizer::builtin`]); an
    /// error when `tokenizer.json` is there but `tokenizer_config.json` is not, since BOS, EOS and the
    /// chat template come from it. A config without `chat_template` takes `chat_template.jinja` from the
    /// same directory when present (where newer transformers saves it).
    pub fn from_dir(dir: &Path) -> Result<Option<Tokenizer>> {
        let tokenizer_path = dir.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Ok(None);
        }
        let config_path = dir.join("tokenizer_config.json");
        if !config_path.is_file() {
            return Err(Error::Data {
                file: config_path.display().to_string(),
                field: "(file)".into(),
                reason: "missing; it must accompany tokenizer.json (BOS, EOS and the chat template are \
                         there)"
                    .into(),
            });
        }
        let tokenizer_json = read(&tokenizer_path)?;
        let config_json = String::from_utf8(read(&config_path)?).map_err(|e| Error::Data {
            file: config_path.display().to_string(),
            field: "(json)".into(),
            reason: format!("not UTF-8: {e}"),
        })?;
        let template_path = dir.join("chat_template.jinja");
        let template_file = if template_path.is_file() {
            let text = String::from_utf8(read(&template_path)?).map_err(|e| Error::Data {
                file: template_path.display().to_string(),
                field: "(template)".into(),
                reason: format!("not UTF-8: {e}"),
            })?;
            Some(text)
        } else {
            None
        };
        Tokenizer::from_parts(
            &tokenizer_json,
            &tokenizer_path.display().to_string(),
            &config_json,
            &config_path.display().to_string(),
            template_file,
        )
        .map(Some)
    }

    /// Builds from the two files' contents; `file` / `config_file` name them in errors.
    fn from_parts(
        tokenizer_json: &[u8],
        file: &str,
        config_json: &str,
        config_file: &str,
        template_file: Option<String>,
    ) -> Result<Tokenizer> {
        let inner = tokenizers::Tokenizer::from_bytes(tokenizer_json).map_err(|e| Error::Data {
            file: file.into(),
            field: "(json)".into(),
            reason: format!("not a tokenizer the `tokenizers` crate can load: {e}"),
        })?;
        let config = TokenizerConfig::parse(config_json, config_file)?;
        let lookup = |token: &str, field: &str| {
            inner.token_to_id(token).ok_or_else(|| Error::Data {
                file: config_file.into(),
                field: field.into(),
                reason: format!("{token:?} is not a token of {file}"),
            })
        };
        let bos_id = lookup(&config.bos_token, "bos_token")?;
        let eos_id = lookup(&config.eos_token, "eos_token")?;
        let add_special = match (config.add_bos_token, config.add_eos_token) {
            (None, None) => AddSpecial::PostProcessor,
            // LlamaTokenizerFast's defaults for a missing flag.
            (bos, eos) => AddSpecial::Flags { bos: bos.unwrap_or(true), eos: eos.unwrap_or(false) },
        };
        Ok(Tokenizer {
            inner,
            file: file.into(),
            config_file: config_file.into(),
            bos_token: config.bos_token,
            eos_token: config.eos_token,
            bos_id,
            eos_id,
            add_special,
            chat_template: config.chat_template.or(template_file),
        })
    }

    /// The token ids of `text`. With `add_special`, the special tokens the checkpoint's files ask for
    /// (see the module docs; none for DeepSeek-V3), as HF's `tokenizer(text)`; without, only the text's
    /// own tokens, as HF's `tokenizer(text, add_special_tokens=False)`. Special tokens written in the
    /// text (`<｜User｜>`) become their ids either way.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        match (add_special, self.add_special) {
            (false, _) => self.encode_raw(text, false),
            (true, AddSpecial::PostProcessor) => self.encode_raw(text, true),
            (true, AddSpecial::Flags { bos, eos }) => {
                let mut ids = Vec::new();
                if bos {
                    ids.push(self.bos_id);
                }
                ids.extend(self.encode_raw(text, false)?);
                if eos {
                    ids.push(self.eos_id);
                }
                Ok(ids)
            }
        }
    }

    /// A plain (non-chat) prompt's ids, with BOS as `bos` says. `dsv3 generate --prompt` uses
    /// [`BosPolicy::FromConfig`] (the module docs say why).
    pub fn encode_prompt(&self, text: &str, bos: BosPolicy) -> Result<Vec<u32>> {
        match bos {
            BosPolicy::FromConfig => self.encode(text, true),
            BosPolicy::Never => self.encode(text, false),
            BosPolicy::Always => {
                let mut ids = vec![self.bos_id];
                ids.extend(self.encode(text, false)?);
                Ok(ids)
            }
        }
    }

    fn encode_raw(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        // encode_fast: the same ids without computing character offsets, which nothing here uses.
        let encoding = self.inner.encode_fast(text, add_special_tokens).map_err(|e| Error::Data {
            file: self.file.clone(),
            field: "(encode)".into(),
            reason: format!("encoding {} bytes of text failed: {e}", text.len()),
        })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens included (lossless: `decode(encode(t, false)) == t`). A
    /// sequence that ends inside a UTF-8 character decodes that character as U+FFFD; use
    /// [`StreamDecoder`] to decode while generating. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        for &id in ids {
            self.check_id(id)?;
        }
        self.decode_checked(ids)
    }

    fn decode_checked(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Data {
            file: self.file.clone(),
            field: "decoder".into(),
            reason: format!("decoding {} ids failed: {e}", ids.len()),
        })
    }

    /// `tokenizers` skips unknown ids silently when decoding; a caller of [`Tokenizer::decode`] should hear
    /// about one instead (the embedding has padding rows past the vocabulary; [`StreamDecoder`] shows
    /// them as placeholders).
    fn check_id(&self, id: u32) -> Result<()> {
        if self.inner.id_to_token(id).is_none() {
            return Err(Error::Data {
                file: self.file.clone(),
                field: "model.vocab".into(),
                reason: format!("token id {id} is not in the vocabulary ({} ids)", self.vocab_size()),
            });
        }
        Ok(())
    }

    /// `tokenizer_config.json`'s `bos_token`, looked up in the vocabulary (0 for DeepSeek-V3).
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// `tokenizer_config.json`'s `eos_token`, looked up in the vocabulary (1 for DeepSeek-V3).
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// Ids the tokenizer knows, added tokens included (128,815 for DeepSeek-V3, whose embedding has
    /// 129,280 rows; the rows past the vocabulary are padding: [`Tokenizer::decode`] refuses them, and
    /// [`StreamDecoder`] shows them as [`unknown_id_placeholder`]).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The chat template, if the checkpoint has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// The conversation rendered through the checkpoint's chat template (see [`chat::render`]).
    pub fn chat_prompt(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let Some(template) = self.chat_template.as_deref() else {
            return Err(Error::Data {
                file: self.config_file.clone(),
                field: "chat_template".into(),
                reason: "absent: this checkpoint has no chat template".into(),
            });
        };
        chat::render(template, messages, &self.bos_token, &self.eos_token, add_generation_prompt).map_err(
            |e| match e {
                // Name the file the template came from.
                Error::Data { field, reason, .. } => {
                    Error::Data { file: self.config_file.clone(), field, reason }
                }
                other => other,
            },
        )
    }

    /// The conversation's ids: [`Tokenizer::chat_prompt`] encoded without added special tokens, since
    /// the template writes BOS itself (transformers' `apply_chat_template(tokenize=True)` does the same).
    pub fn encode_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<Vec<u32>> {
        self.encode(&self.chat_prompt(messages, add_generation_prompt)?, false)
    }

    /// A decoder for generated ids, one at a time.
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder { tokenizer: self, ids: Vec::new(), prefix_ids: 0, prefix: String::new() }
    }
}

fn read(path: &Path) -> Result<Vec<u8>> {
    crate::files::read_capped(path, crate::files::TOKENIZER_LIMIT)
}

/// How [`StreamDecoder`] shows a generated id that has no tokenizer entry: visible, and distinct from any
/// text the byte-level vocabulary produces on its own only by coincidence of bytes.
pub fn unknown_id_placeholder(id: u32) -> String {
    format!("<unk:{id}>")
}

/// Turns generated ids into text as they come. Byte-level BPE can split one UTF-8 character over several
/// tokens (an emoji is often three), so a step emits only text that is complete.
///
/// The method is that of tokenizers' `DecodeStream` (which transformers' streamers also follow): keep a
/// window of recent ids whose first `prefix_ids` are context already emitted, decoding to `prefix`;
/// after each id decode the whole window and emit what goes past `prefix`, unless the text ends in
/// U+FFFD (an unfinished character). Decoding with emitted ids in front keeps decoders that treat a
/// sequence's first token specially (SentencePiece's leading space) from changing text mid-stream. A
/// text that really ends in U+FFFD is held back until the next id or [`StreamDecoder::finish`].
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    /// Context ids (already emitted) followed by ids not yet emitted.
    ids: Vec<u32>,
    /// How many of `ids` are context.
    prefix_ids: usize,
    /// What the context ids decode to.
    prefix: String,
}

impl StreamDecoder<'_> {
    /// Takes the next id; returns the text it completes (often empty). An id the tokenizer has no entry
    /// for (DeepSeek-V3's embedding has 465 padding rows past its 128,815 ids, and a model may choose one)
    /// is shown as [`unknown_id_placeholder`] after whatever the earlier ids had not yet emitted (a
    /// partial character as U+FFFD): generation goes on rather than losing everything streamed so far.
    /// On a decoding error the decoder is left as it was.
    pub fn step(&mut self, id: u32) -> Result<String> {
        if self.tokenizer.check_id(id).is_err() {
            let mut text = self.pending_text()?;
            text.push_str(&unknown_id_placeholder(id));
            // The placeholder is not BPE output: decoding starts afresh after it.
            self.ids.clear();
            self.prefix_ids = 0;
            self.prefix.clear();
            return Ok(text);
        }
        self.ids.push(id);
        let new = match self.completed_text() {
            Ok(Some(new)) => new,
            Ok(None) => return Ok(String::new()),
            Err(e) => {
                self.ids.pop();
                return Err(e);
            }
        };
        // What was just emitted becomes the next context; older context is no longer needed, and
        // dropping it keeps every decode short.
        self.ids.drain(..self.prefix_ids);
        self.prefix_ids = self.ids.len();
        self.prefix = self.tokenizer.decode_checked(&self.ids)?;
        Ok(new)
    }

    /// The text past `prefix` if the window decodes to more text that does not end inside a character.
    fn completed_text(&self) -> Result<Option<String>> {
        let text = self.tokenizer.decode_checked(&self.ids)?;
        if text.len() <= self.prefix.len() || text.ends_with('\u{FFFD}') {
            return Ok(None);
        }
        self.past_prefix(&text).map(Some)
    }

    /// The text of the ids not yet emitted, even if it ends inside a UTF-8 character (decoded as
    /// U+FFFD then): call it when generation stops.
    pub fn finish(self) -> Result<String> {
        self.pending_text()
    }

    /// The text of the ids not yet emitted, a partial character as U+FFFD.
    fn pending_text(&self) -> Result<String> {
        let text = self.tokenizer.decode_checked(&self.ids)?;
        if text.len() <= self.prefix.len() {
            return Ok(String::new());
        }
        self.past_prefix(&text)
    }

    fn past_prefix(&self, text: &str) -> Result<String> {
        // Appending ids to a sequence that decodes to complete characters only appends text, for the
        // byte-level decoder at least; a decoder that rewrites earlier text is reported, not papered over.
        match text.strip_prefix(self.prefix.as_str()) {
            Some(new) => Ok(new.to_string()),
            None => Err(Error::Data {
                file: self.tokenizer.file.clone(),
                field: "decoder".into(),
                reason: format!(
                    "decoding {:?} gave {text:?}, which does not extend the text already emitted ({:?})",
                    self.ids, self.prefix
                ),
            }),
        }
    }
}

/// The fields of `tokenizer_config.json` this crate uses.
struct TokenizerConfig {
    add_bos_token: Option<bool>,
    add_eos_token: Option<bool>,
    bos_token: String,
    eos_token: String,
    chat_template: Option<String>,
}

impl TokenizerConfig {
    fn parse(text: &str, file: &str) -> Result<TokenizerConfig> {
        let err =
            |field: &str, reason: String| Error::Data { file: file.into(), field: field.into(), reason };
        let value: Value =
            serde_json::from_str(text).map_err(|e| err("(json)", format!("not valid JSON: {e}")))?;
        let Some(map) = value.as_object() else {
            return Err(err("(root)", "not a JSON object".into()));
        };
        let flag = |key: &str| match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(err(key, format!("expected true or false, found {other}"))),
        };
        // A special token is written either as its text or as an AddedToken object with `content`.
        let token = |key: &str| match map.get(key) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Object(o)) => match o.get("content") {
                Some(Value::String(s)) => Ok(s.clone()),
                _ => Err(err(key, "an AddedToken object without a string `content`".into())),
            },
            None | Some(Value::Null) => Err(err(key, "absent; the tokenizer needs it".into())),
            Some(other) => Err(err(key, format!("expected a string or an AddedToken object, found {other}"))),
        };
        // Either one template, or a list of named ones of which transformers uses "default".
        let chat_template = match map.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(list)) => {
                let default = list.iter().find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
                match default.and_then(|t| t.get("template")).and_then(Value::as_str) {
                    Some(s) => Some(s.to_string()),
                    None => {
                        return Err(err(
                            "chat_template",
                            "a list of templates without a {name: \"default\", template: ...} entry".into(),
                        ))
                    }
                }
            }
            Some(other) => {
                return Err(err("chat_template", format!("expected a string or a list, found {other}")))
            }
        };
        Ok(TokenizerConfig {
            add_bos_token: flag("add_bos_token")?,
            add_eos_token: flag("add_eos_token")?,
            bos_token: token("bos_token")?,
            eos_token: token("eos_token")?,
            chat_template,
        })
    }
}
