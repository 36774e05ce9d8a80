//! Where each part of the model runs. Every part has a name (`embed`, `layers.3.attn`, `layers.3.experts`,
//! `head`, …); placement rules `PATTERN=DEVICE`, comma-separated, map parts to device names (`cpu`,
//! `wgpu:0`, `cuda:1`, …), first match wins, and a final `*` rule for the default device is implied.
//!
//! A layer's residual stream lives with its attention: `layers.N.attn` holds the attention projections,
//! both of the layer's norms and its latent cache; the feed-forward parts (`mlp`, or `router`, `shared`,
//! `experts`) take the normalized hidden state from there and hand their output back.
//!
//! Nothing here opens a device: rules become an [`Assignment`] (part → device name) against a config, and
//! the caller opens the devices it names (`crate::graph::Model::load_placed`).

use std::collections::BTreeMap;
use std::fmt;

use dsv3_core::{Error, Result};

use crate::config::ModelConfig;

/// A unit of the model that is placed whole on one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Part {
    Embed,
    /// Attention projections, both norms of the layer, and its latent cache.
    Attn(usize),
    /// The dense feed-forward network of a dense layer.
    Mlp(usize),
    /// The MoE gate (router weights and correction bias).
    Router(usize),
    /// The shared experts of a MoE layer.
    Shared(usize),
    /// The routed experts of a MoE layer.
    Experts(usize),
    Norm,
    Head,
}

/// The per-layer part kinds, as rules spell them.
const LAYER_PARTS: [&str; 5] = ["attn", "mlp", "router", "shared", "experts"];

impl Part {
    pub fn layer(self) -> Option<usize> {
        match self {
            Part::Attn(l) | Part::Mlp(l) | Part::Router(l) | Part::Shared(l) | Part::Experts(l) => Some(l),
            Part::Embed | Part::Norm | Part::Head => None,
        }
    }

    /// `attn`, `experts`, … for layer parts; `embed`, `norm`, `head` otherwise.
    pub fn kind(self) -> &'static str {
        match self {
            Part::Embed => "embed",
            Part::Attn(_) => "attn",
            Part::Mlp(_) => "mlp",
            Part::Router(_) => "router",
            Part::Shared(_) => "shared",
            Part::Experts(_) => "experts",
            Part::Norm => "norm",
            Part::Head => "head",
        }
    }

    /// The part a checkpoint tensor belongs to (HF names); `None` for tensors the main model does not load
    /// (multi-token-prediction layers) and names that are not DeepSeek's.
    pub fn of_tensor(cfg: &ModelConfig, name: &str) -> Option<Part> {
        match name {
            "model.embed_tokens.weight" => return Some(Part::Embed),
            "model.norm.weight" => return Some(Part::Norm),
            "lm_head.weight" => return Some(Part::Head),
            _ => {}
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (layer, rest) = rest.split_once('.')?;
        let layer: usize = layer.parse().ok()?;
        if layer >= cfg.num_hidden_layers {
            return None;
        }
        let attn = ["self_attn.", "input_layernorm.", "post_attention_layernorm."];
        if attn.iter().any(|prefix| rest.starts_with(prefix)) {
            return Some(Part::Attn(layer));
        }
        let mlp = rest.strip_prefix("mlp.")?;
        Some(if mlp.starts_with("experts.") {
            Part::Experts(layer)
        } else if mlp.starts_with("shared_experts.") {
            Part::Shared(layer)
        } else if mlp.starts_with("gate.") {
            Part::Router(layer)
        } else {
            Part::Mlp(layer)
        })
    }
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer() {
            Some(l) => write!(f, "layers.{l}.{}", self.kind()),
            None => f.write_str(self.kind()),
        }
    }
}

/// Every part of a model with this config, in the order a forward pass runs them.
pub fn parts(cfg: &ModelConfig) -> Vec<Part> {
    let mut parts = vec![Part::Embed];
    for l in 0..cfg.num_hidden_layers {
        parts.push(Part::Attn(l));
        match cfg.moe.filter(|_| cfg.is_moe_layer(l)) {
            None => parts.push(Part::Mlp(l)),
            Some(moe) => {
                parts.push(Part::Router(l));
                if moe.n_shared_experts > 0 {
                    parts.push(Part::Shared(l));
                }
                parts.push(Part::Experts(l));
            }
        }
    }
    parts.push(Part::Norm);
    parts.push(Part::Head);
    parts
}

/// An inclusive range of indices, `A-B` or a single `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Range {
    first: usize,
    last: usize,
}

impl Range {
    fn parse(s: &str) -> Option<Range> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let (first, last) = (a.parse().ok()?, b.parse().ok()?);
        (first <= last).then_some(Range { first, last })
    }

    fn contains(self, i: usize) -> bool {
        (self.first..=self.last).contains(&i)
    }
}

/// What a rule's left-hand side selects.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    /// `None`: any layer (a bare part name, `*`, `layers.*`); top-level parts match only `None` layers.
    layers: Option<Range>,
    /// `None`: every part (of the selected layers, or of the model for `*`).
    kind: Option<String>,
    /// `layers.N.experts.A-B`: a range of routed-expert ids.
    experts: Option<Range>,
    /// `*` alone: matches top-level parts too.
    everything: bool,
}

impl Pattern {
    fn parse(text: &str) -> std::result::Result<Pattern, String> {
        let any = Pattern { layers: None, kind: None, experts: None, everything: false };
        if text == "*" {
            return Ok(Pattern { everything: true, ..any });
        }
        let segments: Vec<&str> = text.split('.').collect();
        let kind_known = |k: &str| k == "*" || LAYER_PARTS.contains(&k);
        let (layers, rest) = match segments.as_slice() {
            ["layers", sel, rest @ ..] => {
                let layers = match *sel {
                    "*" => None,
                    s => Some(Range::parse(s).ok_or_else(|| format!("`{s}` is not a layer or range A-B"))?),
                };
                (layers, rest)
            }
            [top] if ["embed", "norm", "head"].contains(top) => {
                return Ok(Pattern { kind: Some(top.to_string()), ..any });
            }
            rest => (None, rest),
        };
        let (kind, experts) = match rest {
            [] => (None, None),
            [k] if kind_known(k) => ((*k != "*").then(|| k.to_string()), None),
            ["experts", range] => {
                let r = Range::parse(range)
                    .ok_or_else(|| format!("`{range}` is not an expert id or range A-B"))?;
                (Some("experts".to_string()), Some(r))
            }
            _ => {
                return Err(format!(
                    "unknown part `{text}` (parts: embed, norm, head, *, and per layer {} — as `experts`, \
                     `layers.3.attn`, `layers.0-2`, `layers.*.experts`, `layers.5.experts.0-63`)",
                    LAYER_PARTS.join(", ")
                ))
            }
        };
        if layers.is_none() && kind.is_none() && segments.first() != Some(&"layers") {
            return Err(format!("unknown part `{text}`"));
        }
        Ok(Pattern { layers, kind, experts, everything: false })
    }

    fn matches(&self, part: Part) -> bool {
        if self.everything {
            return true;
        }
        match part.layer() {
            None => self.layers.is_none() && self.kind.as_deref() == Some(part.kind()),
            Some(l) => {
                self.layers.is_none_or(|r| r.contains(l))
                    && self.kind.as_deref().is_none_or(|k| k == part.kind())
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Rule {
    text: String,
    pattern: Pattern,
    device: String,
}

/// Placement rules as given by `--place`: `PATTERN=DEVICE` rules, or `auto` (the planner, `crate::plan`,
/// against the devices it was given).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rules {
    rules: Vec<Rule>,
    auto: Option<Vec<crate::plan::DeviceSpec>>,
}

/// A device name as `dsv3 devices` prints it, `backend:ordinal`; a bare backend name means ordinal 0.
pub fn canonical_device(name: &str) -> std::result::Result<String, String> {
    let (backend, ordinal) = name.split_once(':').unwrap_or((name, "0"));
    let valid = !backend.is_empty()
        && backend.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && ordinal.parse::<usize>().is_ok();
    if !valid {
        return Err(format!("`{name}` is not a device name (like cpu, wgpu:0, cuda:1)"));
    }
    Ok(format!("{backend}:{}", ordinal.parse::<usize>().unwrap_or(0)))
}

impl Rules {
    /// `PATTERN=DEVICE[,PATTERN=DEVICE…]`. Errors name the rule.
    pub fn parse(text: &str) -> Result<Rules> {
        let mut rules = Vec::new();
        for item in text.split(',').map(str::trim) {
            let fail = |why: String| Error::invalid("place", "rule", format!("`{item}`: {why}"));
            let (pattern, device) =
                item.split_once('=').ok_or_else(|| fail("expected PATTERN=DEVICE".into()))?;
            let pattern = Pattern::parse(pattern.trim()).map_err(fail)?;
            let device = canonical_device(device.trim()).map_err(fail)?;
            rules.push(Rule { text: item.to_string(), pattern, device });
        }
        Ok(Rules { rules, auto: None })
    }

    /// `--place auto`: each model's parts placed by `crate::plan::auto` on `devices`, a plan that does not
    /// fit being an error of [`Rules::assign`], before anything is loaded.
    pub fn auto(devices: Vec<crate::plan::DeviceSpec>) -> Rules {
        Rules { rules: Vec::new(), auto: Some(devices) }
    }

    /// Whether a `--place` value asks for the planner.
    pub fn is_auto(text: &str) -> bool {
        text.trim() == "auto"
    }

    /// The device of every part of a model with `cfg`; parts no rule matches go to `default`. A rule that
    /// matches no part of this model is an error (a typo would otherwise place nothing and say nothing), as
    /// is a range of expert ids that is not the whole layer: one layer's experts are not split over
    /// devices yet. `auto` rules plan every part (the default takes none) from the config's size estimate,
    /// and a plan that does not fit is an error naming each device's shortfall.
    pub fn assign(&self, cfg: &ModelConfig, default: &str) -> Result<Assignment> {
        if let Some(devices) = &self.auto {
            let fail = |e: crate::plan::PlanError| Error::invalid("place", "auto", e);
            // The config's estimate: planning happens before a checkpoint's files are read.
            let sizes = crate::plan::part_sizes(cfg, None)?;
            let plan = crate::plan::auto(cfg, &sizes, devices).map_err(fail)?;
            if !plan.fits() {
                return Err(fail(crate::plan::PlanError::DoesNotFit(plan.shortfalls())));
            }
            return Ok(plan.assignment);
        }
        let default = canonical_device(default).map_err(|why| Error::invalid("place", "device", why))?;
        let all = parts(cfg);
        let mut devices = BTreeMap::new();
        for &part in &all {
            let rule = self.rules.iter().find(|r| r.pattern.matches(part));
            if let (Some(rule), Part::Experts(_)) = (rule, part) {
                if let Some(r) = rule.pattern.experts {
                    let n = cfg.moe.map_or(0, |m| m.n_routed_experts);
                    if r.first != 0 || r.last + 1 != n {
                        let why = format!(
                            "`{}`: experts {}-{} of {n}: splitting one layer's routed experts over devices \
                             is not supported yet; place the layer's experts whole (`layers.N.experts`)",
                            rule.text, r.first, r.last
                        );
                        return Err(Error::invalid("place", "rule", why));
                    }
                }
            }
            devices.insert(part, rule.map_or_else(|| default.clone(), |r| r.device.clone()));
        }
        for rule in &self.rules {
            if !all.iter().any(|&p| rule.pattern.matches(p)) {
                let why = format!(
                    "`{}` matches no part of this model ({} layers, parts: {})",
                    rule.text,
                    cfg.num_hidden_layers,
                    kinds_present(&all)
                );
                return Err(Error::invalid("place", "rule", why));
            }
        }
        Ok(Assignment { devices })
    }
}

fn kinds_present(parts: &[Part]) -> String {
    let mut kinds: Vec<&str> = Vec::new();
    for p in parts {
        if !kinds.contains(&p.kind()) {
            kinds.push(p.kind());
        }
    }
    kinds.join(", ")
}

/// The device name of every part of one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    devices: BTreeMap<Part, String>,
}

impl Assignment {
    /// Everything on one device.
    pub fn single(cfg: &ModelConfig, device: &str) -> Assignment {
        Assignment { devices: parts(cfg).into_iter().map(|p| (p, device.to_string())).collect() }
    }

    pub fn from_map(devices: BTreeMap<Part, String>) -> Assignment {
        Assignment { devices }
    }

    /// The device of `part`; `None` for a part this model does not have.
    pub fn device(&self, part: Part) -> Option<&str> {
        self.devices.get(&part).map(String::as_str)
    }

    /// The distinct devices, in the order of their first part in a forward pass.
    pub fn device_names(&self) -> Vec<&str> {
        let mut order: Vec<(&Part, &str)> = self.devices.iter().map(|(p, d)| (p, d.as_str())).collect();
        order.sort_by_key(|(p, _)| forward_order(**p));
        let mut names: Vec<&str> = Vec::new();
        for (_, d) in order {
            if !names.contains(&d) {
                names.push(d);
            }
        }
        names
    }

    /// Parts per device, in forward order.
    pub fn parts_on(&self, device: &str) -> Vec<Part> {
        let mut parts: Vec<Part> =
            self.devices.iter().filter(|(_, d)| *d == device).map(|(p, _)| *p).collect();
        parts.sort_by_key(|p| forward_order(*p));
        parts
    }

    pub fn iter(&self) -> impl Iterator<Item = (Part, &str)> {
        self.devices.iter().map(|(p, d)| (*p, d.as_str()))
    }

    /// A compact description: `layers.0-2.attn` style ranges per device, for messages and the plan table.
    pub fn describe(&self, device: &str) -> String {
        describe_parts(&self.parts_on(device))
    }
}

/// Sort key: embed, then layer by layer (attn, mlp, router, shared, experts), then norm, head.
fn forward_order(p: Part) -> (usize, usize) {
    let kind = LAYER_PARTS.iter().position(|k| *k == p.kind()).unwrap_or(0);
    match p {
        Part::Embed => (0, 0),
        Part::Norm => (usize::MAX - 1, 0),
        Part::Head => (usize::MAX, 0),
        _ => (1 + p.layer().unwrap_or(0), kind),
    }
}

/// `embed, layers.0-2.attn, layers.0-2.experts, head`: per part kind, consecutive layers as ranges.
pub fn describe_parts(parts: &[Part]) -> String {
    let mut out: Vec<String> = Vec::new();
    if parts.contains(&Part::Embed) {
        out.push("embed".into());
    }
    for kind in LAYER_PARTS {
        let mut layers: Vec<usize> =
            parts.iter().filter(|p| p.kind() == kind).filter_map(|p| p.layer()).collect();
        layers.sort_unstable();
        let mut i = 0;
        while i < layers.len() {
            let mut j = i;
            while j + 1 < layers.len() && layers[j + 1] == layers[j] + 1 {
                j += 1;
            }
            out.push(if i == j {
                format!("layers.{}.{kind}", layers[i])
            } else {
                format!("layers.{}-{}.{kind}", layers[i], layers[j])
            });
            i = j + 1;
        }
    }
    for top in [Part::Norm, Part::Head] {
        if parts.contains(&top) {
            out.push(top.to_string());
        }
    }
    out.join(", ")
}
