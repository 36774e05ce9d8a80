//! The saved form of a bench run: one self-describing JSON document (format name and version, the machine,
//! its devices and drivers, the commit, the command line, and per row the raw samples with their summary),
//! so that two runs from different machines or commits can be compared without anything but the files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::stats;

/// The `format` field of every saved run.
pub const FORMAT: &str = "dsv3-bench";
/// The schema version this build writes and reads. A change that renames or removes a field bumps it.
pub const VERSION: u32 = 1;

/// The largest results file read: real runs are a few kilobytes per row.
const MAX_FILE_BYTES: u64 = 64 << 20;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    pub format: String,
    pub version: u32,
    /// What was measured: `model` (`dsv3 bench model`).
    pub kind: String,
    /// When the run finished, seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// `git describe --always --dirty` of the source tree the binary was built from, or `unknown`.
    pub commit: String,
    /// The command line after the program name, as given.
    pub flags: Vec<String>,
    pub machine: Machine,
    pub devices: Vec<DeviceEntry>,
    pub model: ModelEntry,
    pub rows: Vec<Row>,
    /// `bench ops --peer`: each row a peer was asked for and could not time, with the reason (the rows it
    /// did time are in `rows`). `compare` leaves these out: there is no figure to compare.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub absent_peers: Vec<AbsentPeer>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsentPeer {
    /// `faer`, `torch`.
    pub peer: String,
    /// The name of our row it would have stood beside.
    pub row: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// The CPU's model name (`/proc/cpuinfo`), or `unknown`.
    pub cpu: String,
    /// Hardware threads this process may use.
    pub cores: usize,
    /// `linux`, `macos`, … with the kernel release where it is known.
    pub os: String,
    pub arch: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceEntry {
    /// `backend:ordinal`, as `dsv3 devices` prints it.
    pub id: String,
    pub name: String,
    pub arch: String,
    /// The driver or runtime versions the device reports (Vulkan driver, NVRTC, HIP runtime, ACL); empty
    /// for the CPU.
    pub driver: Vec<String>,
    pub memory_bytes: u64,
    /// The rates the rooflines divide by; `None` when the device does not know them.
    pub peak: Option<Peak>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peak {
    pub bytes_per_s: f64,
    pub f32_flops: f64,
    pub bf16_flops: f64,
    pub fp8_flops: f64,
    /// `measured …` or `datasheet …`.
    pub source: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// `built-in`, the checkpoint directory or the config file.
    pub source: String,
    pub arch: String,
    pub layers: usize,
    pub weight_bytes: u64,
    /// The numeric path (`f32`, `bf16`, `w8a8`) and what it means.
    pub dtype_path: String,
    pub numerics: String,
}

/// One measured figure: its samples (one per repetition) and their summary, with the roofline beside it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    /// `prefill` or `decode`.
    pub phase: String,
    pub prompt: usize,
    pub gen: usize,
    pub batch: usize,
    /// `tok/s` for model rows, `calls/s` for op rows: higher is better.
    pub unit: String,
    pub samples: Vec<f64>,
    pub mean: f64,
    pub stddev: f64,
    pub median: f64,
    pub roofline: Option<Roofline>,
    /// What identifies an op row (`bench ops`: phase, shape, part, case and device); model rows are
    /// identified by phase, prompt, generation and batch alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An op row's op (`gemm`, `mla_attention`) and device (`cpu:0`), for the ops roofline chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// A peer's row (`bench ops --peer`): what the peer ran (`faer 0.24 f32 matmul`); its samples are the
    /// peer's, its name is our row's with `: peer NAME` after it, so `compare` matches it across runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roofline {
    /// The rate the devices' peaks allow for this row's work, in the row's unit.
    pub rate: f64,
    /// `memory` (weight bytes over bandwidth) or `compute` (FLOPs over peak) — whichever takes longer.
    pub bound: String,
    /// The row's mean over `rate`.
    pub fraction: f64,
    /// The work of one pass (a prompt's prefill, a decode step of the batch) the bound is computed from:
    /// its tokens, FLOPs and weight bytes read, over every device. Achieved FLOP/s is
    /// `mean / tokens × flops`.
    pub tokens: usize,
    pub flops: f64,
    pub bytes: f64,
}

impl Row {
    /// A row from its samples (at least one); the summary is computed here, never taken from elsewhere.
    pub fn new(phase: &str, (prompt, gen, batch): (usize, usize, usize), samples: Vec<f64>) -> Row {
        let s = stats::summarize(&samples).unwrap_or(stats::Summary { mean: 0.0, stddev: 0.0, median: 0.0 });
        Row {
            phase: phase.to_string(),
            prompt,
            gen,
            batch,
            unit: "tok/s".into(),
            samples,
            mean: s.mean,
            stddev: s.stddev,
            median: s.median,
            roofline: None,
            name: None,
            op: None,
            device: None,
            peer: None,
        }
    }

    /// What identifies the row across runs: `decode p512 n128 b8`, or an op row's name.
    pub fn key(&self) -> String {
        match &self.name {
            Some(name) => name.clone(),
            None => format!("{} p{} n{} b{}", self.phase, self.prompt, self.gen, self.batch),
        }
    }

    /// A peer's row: the peer's name (`faer`, `transformers`) and the key of our row it stands beside,
    /// from its name (`<our key>: peer <peer>`).
    pub fn peer_of(&self) -> Option<(&str, &str)> {
        self.peer.as_ref()?;
        let (ours, peer) = self.name.as_deref()?.rsplit_once(": peer ")?;
        Some((peer, ours))
    }
}

/// Why a results file cannot be used. Each names the file, and the field where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    #[error("{file}: {source}")]
    Read { file: PathBuf, source: std::io::Error },
    #[error("{file}: larger than {MAX_FILE_BYTES} bytes, not a dsv3 bench result")]
    TooLarge { file: PathBuf },
    #[error("{file}: field `{field}`: {reason}")]
    Field { file: PathBuf, field: String, reason: String },
}

impl Run {
    /// Our row (not a peer's) with this key.
    pub fn ours(&self, key: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.peer.is_none() && r.key() == key)
    }

    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialization cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Reads and checks a saved run: the format and version, then every row's samples (non-empty,
    /// finite, positive), whose summary is recomputed rather than trusted.
    pub fn load(file: &Path) -> Result<Run, ResultsError> {
        let read = |source| ResultsError::Read { file: file.to_path_buf(), source };
        let meta = std::fs::metadata(file).map_err(read)?;
        if meta.len() > MAX_FILE_BYTES {
            return Err(ResultsError::TooLarge { file: file.to_path_buf() });
        }
        let text = std::fs::read(file).map_err(read)?;
        Run::parse(file, &text)
    }

    fn parse(file: &Path, text: &[u8]) -> Result<Run, ResultsError> {
        let field = |field: &str, reason: String| ResultsError::Field {
            file: file.to_path_buf(),
            field: field.to_string(),
            reason,
        };
        // The format is checked first so that some other JSON gets "not a dsv3 bench result", not a
        // missing field.
        let value: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| field("(document)", format!("not JSON: {e}")))?;
        let shown = |v: Option<&serde_json::Value>| v.map_or("absent".to_string(), |v| v.to_string());
        match value.get("format") {
            Some(f) if *f == FORMAT => {}
            other => {
                let why = format!("{}, expected \"{FORMAT}\" (not a dsv3 bench result)", shown(other));
                return Err(field("format", why));
            }
        }
        match value.get("version") {
            Some(v) if *v == VERSION => {}
            other => {
                return Err(field("version", format!("{}, this build reads version {VERSION}", shown(other))))
            }
        }
        let mut run: Run = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            field(&path, e.into_inner().to_string())
        })?;
        let mut keys = std::collections::HashSet::new();
        for (i, row) in run.rows.iter_mut().enumerate() {
            let Some(summary) = stats::summarize(&row.samples) else {
                return Err(field(&format!("rows[{i}].samples"), "no samples".into()));
            };
            if let Some(bad) = row.samples.iter().find(|x| !x.is_finite() || **x <= 0.0) {
                return Err(field(&format!("rows[{i}].samples"), format!("{bad} is not a positive rate")));
            }
            if !keys.insert(row.key()) {
                return Err(field(&format!("rows[{i}]"), format!("`{}` appears twice", row.key())));
            }
            (row.mean, row.stddev, row.median) = (summary.mean, summary.stddev, summary.median);
        }
        Ok(run)
    }
}
