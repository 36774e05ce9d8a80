//! How often each routed expert is chosen: written by `dsv3 generate --record-expert-stats FILE` from the
//! model's recorded routing, read by the planner (`--expert-stats FILE`) to put each layer's most used
//! experts on the fast device and to predict how many expert bytes a token reads where.
//!
//! The file is JSON:
//! `{"format":"dsv3-expert-stats","version":1,"n_routed_experts":E,"top_k":K,"tokens":T,
//!   "layers":{"3":[c0,…,cE-1],…}}` — per MoE layer, the number of token rows that chose each expert
//! (each row chooses `top_k`, so a layer's counts sum to `top_k · tokens`).

use std::collections::BTreeMap;
use std::path::Path;

use dsv3_core::{Error, Result};
use serde_json::{json, Value};

use crate::config::ModelConfig;
use crate::files::{read_text_capped, CONFIG_LIMIT};

const FORMAT: &str = "dsv3-expert-stats";
const VERSION: u64 = 1;

/// Routing counts of one model shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertStats {
    pub n_routed_experts: usize,
    pub top_k: usize,
    /// Token rows routed (the same in every MoE layer).
    pub tokens: u64,
    /// Per MoE layer, how many token rows chose each expert.
    pub counts: BTreeMap<usize, Vec<u64>>,
}

impl ExpertStats {
    /// No tokens yet, for a model with `cfg` (an error for a dense model: there is nothing to count).
    pub fn new(cfg: &ModelConfig) -> Result<ExpertStats> {
        let moe = cfg.moe.ok_or_else(|| {
            Error::invalid("expert-stats", "model", "a dense model has no routed experts to count")
        })?;
        let counts = (0..cfg.num_hidden_layers)
            .filter(|&l| cfg.is_moe_layer(l))
            .map(|l| (l, vec![0; moe.n_routed_experts]))
            .collect();
        Ok(ExpertStats { n_routed_experts: moe.n_routed_experts, top_k: moe.route.top_k, tokens: 0, counts })
    }

    /// Adds routing recorded by the model (`Model::take_routes`: one `[rows, top_k]` id array per MoE layer
    /// run, layers in order, forward passes one after another).
    pub fn add_routes(&mut self, routes: &[Vec<i32>]) -> Result<()> {
        let layers: Vec<usize> = self.counts.keys().copied().collect();
        if !routes.len().is_multiple_of(layers.len().max(1)) {
            let why = format!("{} routing records for {} MoE layers", routes.len(), layers.len());
            return Err(Error::invalid("expert-stats", "routes", why));
        }
        for pass in routes.chunks(layers.len().max(1)) {
            let rows = pass.first().map_or(0, |ids| ids.len() / self.top_k.max(1));
            for (layer, ids) in layers.iter().zip(pass) {
                let counts = self.counts.get_mut(layer).expect("layers come from counts");
                if ids.len() != rows * self.top_k {
                    let why =
                        format!("layer {layer}: {} ids for {rows} rows of top {}", ids.len(), self.top_k);
                    return Err(Error::invalid("expert-stats", "routes", why));
                }
                for &id in ids {
                    let slot = usize::try_from(id).ok().and_then(|e| counts.get_mut(e)).ok_or_else(|| {
                        Error::invalid("expert-stats", "routes", format!("layer {layer}: expert id {id}"))
                    })?;
                    *slot += 1;
                }
            }
            self.tokens += rows as u64;
        }
        Ok(())
    }

    /// The share of tokens that choose expert `expert` of layer `layer` (its expected reads per decoded
    /// token); `None` when the layer is not counted or no token was.
    pub fn usage(&self, layer: usize, expert: usize) -> Option<f64> {
        let count = *self.counts.get(&layer)?.get(expert)?;
        (self.tokens > 0).then(|| count as f64 / self.tokens as f64)
    }

    /// Fails, naming `file` and the field, when these counts are not for a model with `cfg`.
    pub fn check(&self, cfg: &ModelConfig, file: &str) -> Result<()> {
        let fresh = ExpertStats::new(cfg)?;
        let fail =
            |field: &str, reason: String| Error::Data { file: file.into(), field: field.into(), reason };
        if self.n_routed_experts != fresh.n_routed_experts || self.top_k != fresh.top_k {
            return Err(fail(
                "n_routed_experts",
                format!(
                    "counts of {} experts (top {}), the model has {} (top {})",
                    self.n_routed_experts, self.top_k, fresh.n_routed_experts, fresh.top_k
                ),
            ));
        }
        let (have, want): (Vec<_>, Vec<_>) = (self.counts.keys().collect(), fresh.counts.keys().collect());
        if have != want {
            return Err(fail("layers", format!("MoE layers {have:?}, the model's are {want:?}")));
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        let layers: serde_json::Map<String, Value> =
            self.counts.iter().map(|(l, c)| (l.to_string(), json!(c))).collect();
        json!({
            "format": FORMAT,
            "version": VERSION,
            "n_routed_experts": self.n_routed_experts,
            "top_k": self.top_k,
            "tokens": self.tokens,
            "layers": layers,
        })
        .to_string()
    }

    /// Parses [`ExpertStats::to_json`]'s text; errors name `file` and the field.
    pub fn from_json(text: &str, file: &str) -> Result<ExpertStats> {
        let fail =
            |field: &str, reason: String| Error::Data { file: file.into(), field: field.into(), reason };
        let v: Value = serde_json::from_str(text).map_err(|e| fail("(file)", format!("not JSON: {e}")))?;
        if v["format"] != FORMAT || v["version"] != VERSION {
            return Err(fail("format", format!("not a {FORMAT} file of version {VERSION}")));
        }
        let number = |field: &str| {
            v[field].as_u64().ok_or_else(|| fail(field, "expected a non-negative integer".into()))
        };
        let (n, top_k, tokens) = (number("n_routed_experts")?, number("top_k")?, number("tokens")?);
        let layers = v["layers"].as_object().ok_or_else(|| fail("layers", "expected an object".into()))?;
        let mut counts = BTreeMap::new();
        for (key, list) in layers {
            let field = format!("layers.{key}");
            let layer: usize = key.parse().map_err(|_| fail(&field, "not a layer index".into()))?;
            let list = list.as_array().ok_or_else(|| fail(&field, "expected an array of counts".into()))?;
            let values: Vec<u64> = list.iter().filter_map(Value::as_u64).collect();
            if values.len() != list.len() || values.len() as u64 != n {
                return Err(fail(&field, format!("expected {n} non-negative integer counts")));
            }
            let total: u128 = values.iter().map(|&c| c as u128).sum();
            if total != tokens as u128 * top_k as u128 {
                let why =
                    format!("counts sum to {total}, not top_k · tokens = {}", tokens as u128 * top_k as u128);
                return Err(fail(&field, why));
            }
            counts.insert(layer, values);
        }
        Ok(ExpertStats { n_routed_experts: n as usize, top_k: top_k as usize, tokens, counts })
    }

    pub fn load(path: &Path) -> Result<ExpertStats> {
        ExpertStats::from_json(&read_text_capped(path, CONFIG_LIMIT)?, &path.display().to_string())
    }

    /// [`ExpertStats::load`], then [`ExpertStats::check`] against the model with `cfg`.
    pub fn load_for(path: &Path, cfg: &ModelConfig) -> Result<ExpertStats> {
        let stats = ExpertStats::load(path)?;
        stats.check(cfg, &path.display().to_string())?;
        Ok(stats)
    }
}
