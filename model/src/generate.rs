//! Generation: prefill each prompt in one pass (sequences of different lengths each prefill alone, into
//! their own cache slot), then decode every sequence together, one token per step, sampling on the device.

use std::time::Instant;

use dsv3_core::ops::sampling::{RowSampling, Sample};
use dsv3_core::{DType, Error, Op, Result, Tensor};

use crate::cache::KvCache;
use crate::graph::{Logits, Model};

/// Hard ceiling on new tokens per request.
pub const MAX_NEW_TOKENS_LIMIT: usize = 8192;

/// The smallest temperature other than 0 (greedy). Below it `logits / temperature` overflows f32 for
/// ordinary logits (a subnormal 1e-40 turns every logit into ±inf, softmax into NaN, and sampling into
/// "token 0 forever"); and anything this small is greedy in all but name.
pub const MIN_TEMPERATURE: f32 = 1e-3;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    /// 0: greedy; otherwise at least [`MIN_TEMPERATURE`].
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Tokens that end a sequence (kept in its output).
    pub stop: Vec<u32>,
}

#[derive(Clone, Debug, Default)]
pub struct Output {
    /// New tokens per sequence (prompts excluded).
    pub tokens: Vec<Vec<u32>>,
    pub prompt_tokens: usize,
    pub prefill_secs: f64,
    /// Tokens produced by decode steps (the first token of each sequence comes from its prefill).
    pub decode_tokens: usize,
    pub decode_secs: f64,
    /// Decode steps run (each one forward pass of the whole batch and its sampling).
    pub decode_steps: usize,
    /// Op launches those steps made, over every device of the model.
    pub decode_launches: u64,
    /// Decode steps that ran from a captured graph (see `Model::graph_stats`): 0 where the device cannot
    /// capture, the model spans several devices, or `DSV3_GRAPH=0`.
    pub decode_graph_replays: u64,
}

impl Output {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-9)
    }

    pub fn decode_tok_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_secs.max(1e-9)
    }

    /// Launches per decode step; `None` without a decode step.
    pub fn launches_per_step(&self) -> Option<f64> {
        (self.decode_steps > 0).then(|| self.decode_launches as f64 / self.decode_steps as f64)
    }
}

/// The step's seed: each decode step draws fresh uniforms, reproducibly.
fn step_seed(seed: u64, step: usize) -> u64 {
    seed ^ (step as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn sample(model: &Model, logits: &Tensor, sampling: &Sampling, step: usize) -> Result<Vec<u32>> {
    let out = model.scratch(&[logits.shape[0]], DType::I32)?;
    launch_sample(model, logits, sampling, step, None, &out)?;
    download_ids(model, &out)
}

/// One token per row of `logits` `[R, V]`, row `r` drawn with its own `rows[r]` = (sampling, step) exactly
/// as a batch of that one sequence would draw it: a sequence samples the same tokens whatever row of a
/// batch it is in, and whoever else is in the batch. One launch: the op's shared parameters when every
/// row is greedy (nothing to upload; argmax has no key), else its per-row parameters (the sample op keys
/// a row's uniforms by its seed alone, as a one-row launch, [`Sample`]'s `row_params`).
pub fn sample_rows(model: &Model, logits: &Tensor, rows: &[(Sampling, usize)]) -> Result<Vec<u32>> {
    if logits.shape.first() != Some(&rows.len()) {
        let why = format!("{} sampling choices for logits of shape {:?}", rows.len(), logits.shape);
        return Err(Error::invalid("sample_rows", "rows", why));
    }
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let out = model.scratch(&[rows.len()], DType::I32)?;
    if rows.iter().all(|(s, _)| s.temperature == 0.0) {
        let (sampling, step) = &rows[0];
        launch_sample(model, logits, sampling, *step, None, &out)?;
    } else {
        let params: Vec<RowSampling> = rows
            .iter()
            .map(|(s, step)| RowSampling {
                temperature: s.temperature,
                top_p: s.top_p,
                seed: step_seed(s.seed, *step),
            })
            .collect();
        let table = model.scratch(&[rows.len(), RowSampling::WORDS], DType::I32)?;
        model.stream().upload(
            &table.buffer,
            table.offset,
            bytemuck::cast_slice(&RowSampling::encode(&params)),
        )?;
        launch_sample(model, logits, &rows[0].0, rows[0].1, Some(table), &out)?;
    }
    download_ids(model, &out)
}

/// The sample op with `sampling`'s parameters at `step` (or each row's own, `row_params`).
fn launch_sample(
    model: &Model,
    logits: &Tensor,
    sampling: &Sampling,
    step: usize,
    row_params: Option<Tensor>,
    out: &Tensor,
) -> Result<()> {
    let op = Sample {
        logits: logits.clone(),
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        seed: step_seed(sampling.seed, step),
        row_params,
        out: out.clone(),
    };
    model.launch_on_head(Op::Sample(op))
}

fn download_ids(model: &Model, out: &Tensor) -> Result<Vec<u32>> {
    let mut host = vec![0u8; out.span_bytes()];
    model.stream().download(&out.buffer, out.offset, &mut host)?;
    Ok(host.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as u32).collect())
}

/// Generates for every prompt; `on_token(sequence, token)` sees each new token as it is chosen.
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    request: &Request,
    mut on_token: impl FnMut(usize, u32) -> Result<()>,
) -> Result<Output> {
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let capacity = longest.saturating_add(request.max_new_tokens).min(model.config.max_position_embeddings);
    let mut cache = KvCache::new(model, prompts.len(), capacity.max(1))?;
    generate_cached(model, &mut cache, prompts, request, |b, token| on_token(b, token).map(|()| true))
}

/// [`generate`] into a cache whose sequence `b` may already hold a prefix of its prompt (a prefix cache's
/// rows, [`KvCache::append_rows`]): `prompts[b]` is the rest of the prompt, prefilled after the cached
/// tokens. `on_token` returns whether sequence `b` goes on (a client that went away, a stop string).
/// The cache keeps every token that was fed through the model, for the caller to store.
pub fn generate_cached(
    model: &Model,
    cache: &mut KvCache,
    prompts: &[Vec<u32>],
    request: &Request,
    mut on_token: impl FnMut(usize, u32) -> Result<bool>,
) -> Result<Output> {
    let cfg = &model.config;
    if request.max_new_tokens == 0 || request.max_new_tokens > MAX_NEW_TOKENS_LIMIT {
        let why = format!("{} must be in 1..={MAX_NEW_TOKENS_LIMIT}", request.max_new_tokens);
        return Err(Error::invalid("generate", "max_new_tokens", why));
    }
    let t = request.sampling.temperature;
    if t != 0.0 && (t.is_nan() || t < MIN_TEMPERATURE) {
        let why = format!("{t} must be 0 (greedy) or at least {MIN_TEMPERATURE}");
        return Err(Error::invalid("generate", "temperature", why));
    }
    if prompts.len() != cache.batch() {
        let why = format!("{} prompts for a cache of {} sequences", prompts.len(), cache.batch());
        return Err(Error::invalid("generate", "prompt", why));
    }
    let longest = prompts.iter().zip(cache.lens()).map(|(p, cached)| cached + p.len()).max().unwrap_or(0);
    if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
        return Err(Error::invalid("generate", "prompt", "every prompt needs at least one token"));
    }
    if longest > cfg.max_position_embeddings {
        let why = format!("{longest} tokens exceed the model's context of {}", cfg.max_position_embeddings);
        return Err(Error::invalid("generate", "prompt", why));
    }
    let mut out = Output { tokens: vec![Vec::new(); prompts.len()], ..Output::default() };
    let mut done = vec![false; prompts.len()];

    let start = Instant::now();
    let mut next = Vec::with_capacity(prompts.len());
    for (b, prompt) in prompts.iter().enumerate() {
        let logits = model.forward(&mut cache.slot(b)?, prompt, prompt.len(), Logits::Last)?;
        next.push(sample(model, &logits, &request.sampling, 0)?[0]);
    }
    out.prompt_tokens = prompts.iter().map(Vec::len).sum();
    out.prefill_secs = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let launches = model.launches();
    let replays = model.graph_stats().replays;
    for step in 1.. {
        for (b, &token) in next.iter().enumerate() {
            if done[b] {
                continue;
            }
            out.tokens[b].push(token);
            let go_on = on_token(b, token)?;
            if step > 1 {
                out.decode_tokens += 1;
            }
            done[b] =
                !go_on || request.stop.contains(&token) || out.tokens[b].len() == request.max_new_tokens;
        }
        let room = cache.lens().iter().all(|&l| l < cache.capacity());
        if done.iter().all(|&d| d) || !room {
            break;
        }
        // Finished sequences still ride along (their tokens are ignored): the batch keeps one shape.
        let logits = model.forward(cache, &next, 1, Logits::Last)?;
        next = sample(model, &logits, &request.sampling, step)?;
        out.decode_steps += 1;
    }
    out.decode_secs = start.elapsed().as_secs_f64();
    out.decode_launches = model.launches() - launches;
    out.decode_graph_replays = model.graph_stats().replays - replays;
    Ok(out)
}
