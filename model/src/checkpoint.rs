//! A safetensors checkpoint on disk, memory-mapped: `model.safetensors`, or shards listed by
//! `model.safetensors.index.json`.
//!
//! Nothing is read into RAM but the headers: a tensor is a borrowed slice of the mapping, so opening the
//! 163 shards (~640 GB) of DeepSeek-V3 costs a few hundred kilobytes, and the pages of a tensor are read
//! from disk when the loader first touches them. The `safetensors` crate parses and validates each header
//! (offsets contiguous and inside the file, sizes consistent with dtype × shape); when it rejects one, the
//! header is read again here only to name the tensor at fault.
//!
//! `validate` checks the whole checkpoint against the tensor table the config implies
//! ([`layout::tensor_table`]) and reports every problem at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

use dsv3_core::{DType, Error, Result};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorInfo};
use serde_json::{Map, Value};

use crate::config::ModelConfig;
use crate::layout::{self, Kind, TensorSpec};

/// The single-file checkpoint name and the shard index name HF writes.
pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Bytes before the header JSON: its length as a little-endian u64.
const LEN_BYTES: usize = 8;

/// How many problems of each kind `validate` prints before summarising the rest as a count.
const LIST_CAP: usize = 20;

/// One tensor of the checkpoint, borrowing the memory-mapped file.
#[derive(Clone, Debug)]
pub struct TensorRef<'a> {
    pub name: &'a str,
    /// The file that holds it.
    pub file: &'a Path,
    pub dtype: DType,
    pub shape: Vec<usize>,
    /// Exactly `shape.product() × dtype.size()` bytes, little-endian, row-major.
    pub bytes: &'a [u8],
}

/// One memory-mapped safetensors file.
struct Shard {
    path: PathBuf,
    map: Mmap,
}

/// Where a tensor lives: file, stored dtype (kept as the file says, so that a dtype dsv3 does not read is
/// reported by name when that tensor is asked for, not when the file is opened), shape, absolute byte range.
struct Entry {
    name: String,
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    range: Range<usize>,
}

pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    /// Ordered by (shard, offset): reading tensors in this order reads each file front to back.
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .field("files", &self.shards.len())
            .field("tensors", &self.entries.len())
            .finish()
    }
}

fn data_error(file: &Path, field: &str, reason: impl Into<String>) -> Error {
    Error::Data { file: file.display().to_string(), field: field.to_string(), reason: reason.into() }
}

/// The dsv3 dtype of a safetensors dtype, `None` for those no DeepSeek checkpoint uses and dsv3 cannot read.
pub fn core_dtype(dtype: Dtype) -> Option<DType> {
    Some(match dtype {
        Dtype::F32 => DType::F32,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::F8_E4M3 => DType::F8E4M3Fn,
        Dtype::F8_E4M3FNUZ => DType::F8E4M3Fnuz,
        Dtype::F8_E5M2 => DType::F8E5M2,
        Dtype::F8_E8M0 => DType::Ue8m0,
        Dtype::I32 => DType::I32,
        Dtype::I64 => DType::I64,
        Dtype::U8 => DType::U8,
        _ => return None,
    })
}

/// The name a dtype is reported under: dsv3's (`bf16`, `f8e4m3fn`) when it reads it, else the safetensors
/// spelling (`F64`, `BOOL`), so both kinds can be listed side by side without colliding.
pub fn dtype_label(dtype: Dtype) -> String {
    match core_dtype(dtype) {
        Some(d) => d.name().to_string(),
        None => format!("{dtype:?}"),
    }
}

impl Checkpoint {
    /// Opens the checkpoint in `dir`: `model.safetensors` if present (transformers looks for it first), else
    /// the shards named by `model.safetensors.index.json`.
    pub fn open(dir: &Path) -> Result<Checkpoint> {
        let single = dir.join(SINGLE_FILE);
        let index = dir.join(INDEX_FILE);
        if single.is_file() {
            let shard = map_shard(&single)?;
            let mut ckpt = Checkpoint {
                dir: dir.to_path_buf(),
                shards: Vec::new(),
                entries: Vec::new(),
                by_name: HashMap::new(),
            };
            ckpt.add_shard(shard.0, shard.1);
            ckpt.finish();
            Ok(ckpt)
        } else if index.is_file() {
            open_sharded(dir, &index)
        } else {
            Err(data_error(
                dir,
                "(checkpoint)",
                format!("neither {SINGLE_FILE} nor {INDEX_FILE} is in this directory"),
            ))
        }
    }

    fn add_shard(&mut self, shard: Shard, entries: Vec<(String, TensorInfo)>) {
        let index = self.shards.len();
        self.shards.push(shard);
        self.entries.extend(entries.into_iter().map(|(name, info)| Entry {
            name,
            shard: index,
            dtype: info.dtype,
            shape: info.shape,
            range: info.data_offsets.0..info.data_offsets.1,
        }));
    }

    fn finish(&mut self) {
        self.entries.sort_by_key(|e| (e.shard, e.range.start));
        self.by_name = self.entries.iter().enumerate().map(|(i, e)| (e.name.clone(), i)).collect();
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The safetensors files, in the order tensors are listed.
    pub fn files(&self) -> Vec<&Path> {
        self.shards.iter().map(|s| s.path.as_path()).collect()
    }

    /// Every tensor name, in file order then offset order (the order to read them in).
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Bytes of tensor data over all files (headers excluded).
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.range.len() as u64).sum()
    }

    /// Bytes of tensor data per stored dtype, keyed by [`dtype_label`].
    pub fn bytes_by_dtype(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for e in &self.entries {
            *out.entry(dtype_label(e.dtype)).or_insert(0) += e.range.len() as u64;
        }
        out
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).map(|&i| &self.entries[i])
    }

    fn path_of(&self, e: &Entry) -> &Path {
        &self.shards[e.shard].path
    }

    /// The tensor `name`; an error names the checkpoint and the tensor if it is absent, or its file and the
    /// tensor if it is stored in a dtype dsv3 does not read.
    pub fn tensor(&self, name: &str) -> Result<TensorRef<'_>> {
        let Some(e) = self.entry(name) else {
            return Err(data_error(&self.dir, name, "no such tensor in the checkpoint"));
        };
        let file = self.path_of(e);
        let dtype = core_dtype(e.dtype).ok_or_else(|| {
            data_error(file, name, format!("stored as {:?}, a dtype dsv3 does not read", e.dtype))
        })?;
        // The range was validated against the mapping's length when the file was opened.
        let bytes = &self.shards[e.shard].map[e.range.clone()];
        Ok(TensorRef { name: &e.name, file, dtype, shape: e.shape.clone(), bytes })
    }

    /// Checks every tensor the config implies: present, exact shape, a dtype its kind allows, and for FP8
    /// projections a well-formed `_scale_inv` companion. Tensors the table does not know are reported too.
    /// MTP tensors are recognised (never "unexpected") but checked only when `include_mtp`.
    /// All problems are collected and returned as one error, so a broken conversion is diagnosed in one run.
    pub fn validate(&self, cfg: &ModelConfig, include_mtp: bool) -> Result<()> {
        let mut p = Problems::default();
        // Names the table accounts for (checked, or skipped as MTP); everything else is unexpected.
        let mut accounted: HashSet<String> = HashSet::new();
        for spec in layout::tensor_table(cfg) {
            let scale = (spec.kind == Kind::Linear).then(|| layout::scale_companion(&spec));
            accounted.insert(spec.name.clone());
            if let Some((scale_name, _)) = &scale {
                accounted.insert(scale_name.clone());
            }
            if spec.mtp && !include_mtp {
                continue;
            }
            match self.entry(&spec.name) {
                None => p.missing.push(format!("`{}` {:?}", spec.name, spec.shape)),
                Some(e) => self.check_tensor(cfg, &spec, e, scale.as_ref(), &mut p),
            }
        }
        for e in &self.entries {
            if !accounted.contains(&e.name) {
                p.unexpected.push(format!("`{}` in {}", e.name, self.file_name(e)));
            }
        }
        if p.is_empty() {
            return Ok(());
        }
        Err(data_error(&self.dir, "tensors", p.render()))
    }

    fn file_name(&self, e: &Entry) -> String {
        let path = self.path_of(e);
        path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }

    fn check_tensor(
        &self,
        cfg: &ModelConfig,
        spec: &TensorSpec,
        e: &Entry,
        scale: Option<&(String, Vec<usize>)>,
        p: &mut Problems,
    ) {
        let file = self.file_name(e);
        if e.shape != spec.shape {
            p.shape.push(format!("`{}` in {file}: {:?}, expected {:?}", spec.name, e.shape, spec.shape));
        }
        let dtype = core_dtype(e.dtype);
        let float = matches!(dtype, Some(DType::BF16 | DType::F16 | DType::F32));
        let fp8 = dtype == Some(DType::F8E4M3Fn);
        match spec.kind {
            Kind::Float if !float => p.dtype.push(format!(
                "`{}` in {file}: {}, expected bf16, f16 or f32",
                spec.name,
                dtype_label(e.dtype)
            )),
            Kind::Linear if fp8 && cfg.quantization.is_none() => p.dtype.push(format!(
                "`{}` in {file}: f8e4m3fn, but config.json has no quantization_config \
                 (expected bf16, f16 or f32)",
                spec.name
            )),
            Kind::Linear if !float && !fp8 => p.dtype.push(format!(
                "`{}` in {file}: {}, expected bf16, f16, f32{}",
                spec.name,
                dtype_label(e.dtype),
                if cfg.quantization.is_some() { " or f8e4m3fn" } else { "" }
            )),
            _ => {}
        }
        let Some((scale_name, grid)) = scale else { return };
        match self.entry(scale_name) {
            // Only an FP8 weight has a scale grid. When the weight is FP8 without quantization_config, its
            // dtype error above already says what is wrong; the grid is not checked then.
            None if fp8 && cfg.quantization.is_some() => {
                p.missing.push(format!("`{scale_name}` {grid:?} (scale grid of the FP8 weight in {file})"))
            }
            None => {}
            Some(s) if !fp8 => p.unexpected.push(format!(
                "`{scale_name}` in {}: a scale grid for a weight stored as {}",
                self.file_name(s),
                dtype_label(e.dtype)
            )),
            Some(s) if cfg.quantization.is_some() => self.check_scale(scale_name, grid, s, p),
            Some(_) => {}
        }
    }

    fn check_scale(&self, name: &str, grid: &[usize], s: &Entry, p: &mut Problems) {
        let file = self.file_name(s);
        if s.dtype != Dtype::F32 {
            p.dtype.push(format!("`{name}` in {file}: {}, expected f32", dtype_label(s.dtype)));
            return;
        }
        if s.shape != grid {
            p.shape.push(format!("`{name}` in {file}: {:?}, expected {grid:?}", s.shape));
            return;
        }
        // Scales are ~1/16384 of the weights, so reading them all is cheap. A scale multiplies a whole
        // 128×128 block: NaN/inf poisons it, and a scale ≤ 0 (negative, or zero: the quantizer clamps amax
        // away from 0) never comes out of a real quantizer, so both mean the file is corrupt.
        let bytes = &self.shards[s.shard].map[s.range.clone()];
        let bad = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && *v > 0.0));
        if let Some((i, v)) = bad {
            p.scales.push(format!(
                "`{name}` in {file}: element {i} is {v}; a weight scale must be finite and > 0"
            ));
        }
    }
}

/// Problems found by `validate`, by category.
#[derive(Default)]
struct Problems {
    missing: Vec<String>,
    unexpected: Vec<String>,
    shape: Vec<String>,
    dtype: Vec<String>,
    scales: Vec<String>,
}

impl Problems {
    fn categories(&self) -> [(&'static str, &Vec<String>); 5] {
        [
            ("missing", &self.missing),
            ("unexpected (not in the tensor table of config.json)", &self.unexpected),
            ("wrong shape", &self.shape),
            ("wrong dtype", &self.dtype),
            ("corrupt scales", &self.scales),
        ]
    }

    fn is_empty(&self) -> bool {
        self.categories().iter().all(|(_, v)| v.is_empty())
    }

    fn render(&self) -> String {
        let total: usize = self.categories().iter().map(|(_, v)| v.len()).sum();
        let mut out = format!("{total} problem(s) against the tensor table of config.json");
        for (title, list) in self.categories() {
            if list.is_empty() {
                continue;
            }
            out.push_str(&format!("\n{title} ({}):", list.len()));
            for item in list.iter().take(LIST_CAP) {
                out.push_str(&format!("\n  {item}"));
            }
            if list.len() > LIST_CAP {
                out.push_str(&format!("\n  ... and {} more", list.len() - LIST_CAP));
            }
        }
        out
    }
}

/// Maps one safetensors file and parses its header; tensor ranges come back absolute (into the mapping).
fn map_shard(path: &Path) -> Result<(Shard, Vec<(String, TensorInfo)>)> {
    let file = File::open(path)
        .map_err(|source| Error::Io { context: format!("opening {}", path.display()), source })?;
    let len = file
        .metadata()
        .map_err(|source| Error::Io { context: format!("reading the size of {}", path.display()), source })?
        .len();
    if len < LEN_BYTES as u64 {
        return Err(data_error(
            path,
            "(header)",
            format!("the file is {len} bytes, shorter than the 8-byte header length"),
        ));
    }
    // SAFETY: the mapping is only sound while the file is not modified or truncated underneath it (a write
    // would change tensors we already validated; a truncation turns reads into SIGBUS). Checkpoints are
    // read-only inputs that nothing in dsv3 writes; the invariant is that no other process rewrites the file
    // while this `Checkpoint` is alive. The length was checked non-zero above.
    let map = unsafe { Mmap::map(&file) }
        .map_err(|source| Error::Io { context: format!("memory-mapping {}", path.display()), source })?;
    let (header_len, metadata) = SafeTensors::read_metadata(&map).map_err(|e| header_error(path, &map, e))?;
    // read_metadata checked that the data section ends exactly at the end of the file, so these additions
    // stay within the mapping's length and cannot overflow.
    let base = LEN_BYTES + header_len;
    let entries = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| {
            let (start, end) = info.data_offsets;
            let info = TensorInfo {
                dtype: info.dtype,
                shape: info.shape.clone(),
                data_offsets: (base + start, base + end),
            };
            (name, info)
        })
        .collect();
    Ok((Shard { path: path.to_path_buf(), map }, entries))
}

/// Turns a safetensors header error into one that names the file and, where one is at fault, the tensor.
fn header_error(path: &Path, map: &[u8], err: SafeTensorError) -> Error {
    let declared = map.get(..LEN_BYTES).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes).unwrap_or(0);
    let after_len = map.len().saturating_sub(LEN_BYTES);
    match err {
        SafeTensorError::HeaderTooSmall => {
            data_error(path, "(header)", "the file is shorter than the 8-byte header length")
        }
        SafeTensorError::HeaderTooLarge => data_error(
            path,
            "(header)",
            format!("declared header length {declared} exceeds the safetensors limit of 100,000,000 bytes"),
        ),
        SafeTensorError::InvalidHeaderLength => data_error(
            path,
            "(header)",
            format!(
                "declared header length {declared} runs past the end of the file ({after_len} bytes after \
                 the length): truncated or corrupt"
            ),
        ),
        SafeTensorError::InvalidHeader(e) => {
            data_error(path, "(header)", format!("the header is not UTF-8: {e}"))
        }
        other => match locate_fault(map) {
            Some((tensor, reason)) => data_error(path, &tensor, reason),
            None => {
                let field = match &other {
                    SafeTensorError::InvalidOffset(name) => name.clone(),
                    _ => "(header)".to_string(),
                };
                data_error(path, &field, format!("invalid safetensors header: {other}"))
            }
        },
    }
}

/// Re-reads a header that safetensors rejected, to find which tensor is at fault and say how. `None` when
/// nothing tensor-specific is wrong (the caller then reports the crate's own message).
fn locate_fault(map: &[u8]) -> Option<(String, String)> {
    let declared = u64::from_le_bytes(map.get(..LEN_BYTES)?.try_into().ok()?);
    let header_end = LEN_BYTES.checked_add(usize::try_from(declared).ok()?)?;
    let header = map.get(LEN_BYTES..header_end)?;
    let data_len = map.len() - header_end;
    let table: Map<String, Value> = match serde_json::from_slice(header) {
        Ok(t) => t,
        Err(e) => return Some(("(header)".into(), format!("the header is not a JSON object: {e}"))),
    };
    let mut infos = Vec::new();
    for (name, value) in table {
        if name == "__metadata__" {
            continue;
        }
        match serde_json::from_value::<TensorInfo>(value) {
            Ok(info) => infos.push((name, info)),
            Err(e) => {
                return Some((name, format!("malformed header entry (dtype, shape, data_offsets): {e}")))
            }
        }
    }
    for (name, info) in &infos {
        let (start, end) = info.data_offsets;
        let bits = info
            .shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .and_then(|n| n.checked_mul(info.dtype.bitsize()));
        let Some(bits) = bits else {
            return Some((name.clone(), format!("shape {:?} overflows when sized", info.shape)));
        };
        if !bits.is_multiple_of(8) {
            return Some((
                name.clone(),
                format!("{:?} {:?} does not fill whole bytes", info.dtype, info.shape),
            ));
        }
        if end < start {
            return Some((name.clone(), format!("data_offsets [{start}, {end}] end before they start")));
        }
        if end - start != bits / 8 {
            return Some((
                name.clone(),
                format!(
                    "data_offsets [{start}, {end}] hold {} bytes, but {:?} {:?} needs {}",
                    end - start,
                    info.dtype,
                    info.shape,
                    bits / 8
                ),
            ));
        }
        if end > data_len {
            return Some((
                name.clone(),
                format!(
                    "data_offsets [{start}, {end}] run past the end of the data section ({data_len} bytes): \
                     the file is truncated or the header corrupt"
                ),
            ));
        }
    }
    infos.sort_by_key(|(_, info)| info.data_offsets);
    // Overlaps first: they are the more specific fault (a moved tensor also leaves a gap elsewhere).
    for pair in infos.windows(2) {
        let ((a, ai), (b, bi)) = (&pair[0], &pair[1]);
        if bi.data_offsets.0 < ai.data_offsets.1 {
            return Some((
                b.clone(),
                format!("data_offsets {:?} overlap those of `{a}` {:?}", bi.data_offsets, ai.data_offsets),
            ));
        }
    }
    let mut pos = 0;
    for (name, info) in &infos {
        if info.data_offsets.0 != pos {
            return Some((
                name.clone(),
                format!("data_offsets {:?} leave a gap after byte {pos}", info.data_offsets),
            ));
        }
        pos = info.data_offsets.1;
    }
    if pos != data_len {
        return Some((
            "(data)".into(),
            format!("the tensors cover {pos} bytes but the data section has {data_len}"),
        ));
    }
    None
}

/// Opens the shards named by the index, checking that the index and the shards agree exactly.
fn open_sharded(dir: &Path, index_path: &Path) -> Result<Checkpoint> {
    let text = crate::files::read_text_capped(index_path, crate::files::CONFIG_LIMIT)?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|e| data_error(index_path, "(json)", format!("not valid JSON: {e}")))?;
    let Some(weight_map) = value.get("weight_map").and_then(Value::as_object) else {
        return Err(data_error(index_path, "weight_map", "missing, or not an object of tensor name → file"));
    };
    // tensor → file, as the index says; files in sorted order so tensors come out in a stable order.
    let mut wanted: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, file) in weight_map {
        let Some(file) = file.as_str() else {
            return Err(data_error(
                index_path,
                &format!("weight_map.{name}"),
                format!("must be a file name, got {file}"),
            ));
        };
        // A shard must be a plain file name in this directory: an index must not reach elsewhere.
        let plain =
            matches!(Path::new(file).components().collect::<Vec<_>>().as_slice(), [Component::Normal(_)]);
        if !plain {
            return Err(data_error(
                index_path,
                &format!("weight_map.{name}"),
                format!("`{file}` is not a file name in this directory"),
            ));
        }
        wanted.entry(file).or_default().push(name);
    }
    if wanted.is_empty() {
        return Err(data_error(index_path, "weight_map", "lists no tensors"));
    }
    let mut ckpt = Checkpoint {
        dir: dir.to_path_buf(),
        shards: Vec::new(),
        entries: Vec::new(),
        by_name: HashMap::new(),
    };
    for (file, names) in wanted {
        let path = dir.join(file);
        if !path.is_file() {
            return Err(data_error(
                &path,
                names[0],
                format!(
                    "this shard, listed in {INDEX_FILE} for {} tensor(s) including this one, does not exist",
                    names.len()
                ),
            ));
        }
        let (shard, entries) = map_shard(&path)?;
        let present: HashSet<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(absent) = names.iter().find(|n| !present.contains(**n)) {
            return Err(data_error(
                &path,
                absent,
                format!("{INDEX_FILE} maps this tensor to this shard, which does not hold it"),
            ));
        }
        // A tensor in a shard that the index maps elsewhere (or nowhere) is a duplicate or a stale file:
        // which copy is meant cannot be known.
        if let Some((stray, _)) =
            entries.iter().find(|(n, _)| weight_map.get(n).and_then(Value::as_str) != Some(file))
        {
            let listed = weight_map.get(stray).and_then(Value::as_str);
            let reason = match listed {
                Some(other) => format!("this shard holds the tensor, but {INDEX_FILE} maps it to {other}"),
                None => format!("this shard holds the tensor, but {INDEX_FILE} does not list it"),
            };
            return Err(data_error(&path, stray, reason));
        }
        ckpt.add_shard(shard, entries);
    }
    ckpt.finish();
    Ok(ckpt)
}
