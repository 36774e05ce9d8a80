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

/// A unit of the model that is placed whole on one device. A layer's routed experts are one part each
/// (`layers.N.experts.E`): the checkpoint stores them one by one, and a layer's experts may be spread
/// over devices (the most used on a GPU, the rest in host RAM).
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
    /// One routed expert of a MoE layer: (layer, expert id).
    Expert(usize, usize),
    Norm,
    Head,
}

/// The per-layer part kinds, as rules spell them.
const LAYER_PARTS: [&str; 5] = ["attn", "mlp", "router", "shared", "experts"];

impl Part {
    pub fn layer(self) -> Option<usize> {
        match self {
            Part::Attn(l) | Part::Mlp(l) | Part::Router(l) | Part::Shared(l) | Part::Expert(l, _) => Some(l),
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
            Part::Expert(..) => "experts",
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
        Some(if let Some(expert) = mlp.strip_prefix("experts.") {
            let (id, _) = expert.split_once('.')?;
            Part::Expert(layer, id.parse().ok()?)
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
        match (self, self.layer()) {
            (Part::Expert(l, e), _) => write!(f, "layers.{l}.experts.{e}"),
            (_, Some(l)) => write!(f, "layers.{l}.{}", self.kind()),
            (_, None) => f.write_str(self.kind()),
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
                parts.extend((0..moe.n_routed_experts).map(|e| Part::Expert(l, e)));
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
                let expert = match part {
                    Part::Expert(_, e) => self.experts.is_none_or(|r| r.contains(e)),
                    _ => self.experts.is_none(),
                };
                self.layers.is_none_or(|r| r.contains(l))
                    && self.kind.as_deref().is_none_or(|k| k == part.kind())
                    && expert
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
    auto: Option<Auto>,
}

/// What `--place auto` plans with.
#[derive(Clone, Debug, PartialEq)]
struct Auto {
    devices: Vec<crate::plan::DeviceSpec>,
    /// Recorded routing (`--expert-stats`): the most used experts go to the fastest device.
    usage: Option<crate::expert_stats::ExpertStats>,
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
    /// fit being an error of [`Rules::assign`], before anything is loaded. With `usage` (recorded
    /// routing, checked against the model in `assign`) each layer's most used experts go first.
    pub fn auto(
        devices: Vec<crate::plan::DeviceSpec>,
        usage: Option<crate::expert_stats::ExpertStats>,
    ) -> Rules {
        Rules { rules: Vec::new(), auto: Some(Auto { devices, usage }) }
    }

    /// Whether a `--place` value asks for the planner.
    pub fn is_auto(text: &str) -> bool {
        text.trim() == "auto"
    }

    /// The device of every part of a model with `cfg`; parts no rule matches go to `default`. A rule that
    /// matches no part of this model is an error (a typo would otherwise place nothing and say nothing).
    /// `auto` rules plan every part (the default takes none) from the config's size estimate,
    /// and a plan that does not fit is an error naming each device's shortfall.
    pub fn assign(&self, cfg: &ModelConfig, default: &str) -> Result<Assignment> {
        if let Some(Auto { devices, usage }) = &self.auto {
            let fail = |e: crate::plan::PlanError| Error::invalid("place", "auto", e);
            if let Some(usage) = usage {
                usage.check(cfg, "--expert-stats")?;
            }
            // The config's estimate: planning happens before a checkpoint's files are read.
            let sizes = crate::plan::part_sizes(cfg, None, usage.as_ref())?;
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
        Ok(Assignment::from_map(cfg, devices))
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
    /// Routed experts per MoE layer (0 without), to describe a layer's experts as a whole.
    routed_experts: usize,
}

impl Assignment {
    /// Everything on one device.
    pub fn single(cfg: &ModelConfig, device: &str) -> Assignment {
        Assignment::from_map(cfg, parts(cfg).into_iter().map(|p| (p, device.to_string())).collect())
    }

    pub fn from_map(cfg: &ModelConfig, devices: BTreeMap<Part, String>) -> Assignment {
        Assignment { devices, routed_experts: cfg.moe.map_or(0, |m| m.n_routed_experts) }
    }

    /// The device of `part`; `None` for a part this model does not have.
    pub fn device(&self, part: Part) -> Option<&str> {
        self.devices.get(&part).map(String::as_str)
    }

    /// The devices layer `layer`'s routed experts live on, each with its expert ids (ascending), in the
    /// order of the devices' first expert; empty for a dense layer.
    pub fn expert_groups(&self, layer: usize) -> Vec<(&str, Vec<usize>)> {
        let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
        let first = Part::Expert(layer, 0);
        let last = Part::Expert(layer, usize::MAX);
        for (part, device) in self.devices.range(first..=last) {
            let Part::Expert(_, e) = *part else { continue };
            match groups.iter_mut().find(|(d, _)| *d == device.as_str()) {
                Some((_, ids)) => ids.push(e),
                None => groups.push((device, vec![e])),
            }
        }
        groups
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
        self.describe_parts(&self.parts_on(device))
    }

    /// [`describe_parts`] for parts of this model.
    pub fn describe_parts(&self, parts: &[Part]) -> String {
        describe_parts(parts, self.routed_experts)
    }
}

/// Sort key: embed, then layer by layer (attn, mlp, router, shared, experts by id), then norm, head.
fn forward_order(p: Part) -> (usize, usize, usize) {
    let kind = LAYER_PARTS.iter().position(|k| *k == p.kind()).unwrap_or(0);
    match p {
        Part::Embed => (0, 0, 0),
        Part::Norm => (usize::MAX - 1, 0, 0),
        Part::Head => (usize::MAX, 0, 0),
        Part::Expert(l, e) => (1 + l, kind, e),
        _ => (1 + p.layer().unwrap_or(0), kind, 0),
    }
}

/// Consecutive runs of ascending `ids` as inclusive ranges.
fn runs(ids: &[usize]) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for &i in ids {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == i => *last = i,
            _ => out.push((i, i)),
        }
    }
    out
}

/// `embed, layers.0-2.attn, layers.0-2.experts, layers.3.experts.0-31, head`: per part kind, consecutive
/// layers with the same content as ranges. A layer's routed experts (of `routed_experts` per layer) read
/// `experts` when all are here, `experts.A-B` for one range of ids, `experts (N of M)` otherwise.
pub fn describe_parts(parts: &[Part], routed_experts: usize) -> String {
    let mut out: Vec<String> = Vec::new();
    if parts.contains(&Part::Embed) {
        out.push("embed".into());
    }
    for kind in LAYER_PARTS {
        // (layer, what follows `layers.N.`) in layer order.
        let mut per_layer: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for p in parts.iter().filter(|p| p.kind() == kind) {
            let ids = per_layer.entry(p.layer().unwrap_or(0)).or_default();
            if let Part::Expert(_, e) = p {
                ids.push(*e);
            }
        }
        let label = |ids: &mut Vec<usize>| -> String {
            ids.sort_unstable();
            match runs(ids).as_slice() {
                [] => kind.to_string(),
                _ if ids.len() == routed_experts => kind.to_string(),
                [(a, b)] if a == b => format!("{kind}.{a}"),
                [(a, b)] => format!("{kind}.{a}-{b}"),
                _ => format!("{kind} ({} of {routed_experts})", ids.len()),
            }
        };
        let layers: Vec<(usize, String)> =
            per_layer.into_iter().map(|(l, mut ids)| (l, label(&mut ids))).collect();
        let mut i = 0;
        while i < layers.len() {
            let mut j = i;
            while j + 1 < layers.len() && layers[j + 1].0 == layers[j].0 + 1 && layers[j + 1].1 == layers[i].1
            {
                j += 1;
            }
            let what = &layers[i].1;
            out.push(if i == j {
                format!("layers.{}.{what}", layers[i].0)
            } else {
                format!("layers.{}-{}.{what}", layers[i].0, layers[j].0)
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
