//! Opening and validating safetensors checkpoints: the two fixtures must pass; every kind of bad input
//! (built in a temp dir from modified copies of the fixtures) must give an `Error::Data` that names the file
//! and the tensor, never a panic.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use dsv3_core::{DType, Error, Result};
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::layout::{self, Kind};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Map, Value};
use tempfile::TempDir;

/// A checkpoint's tensors held in memory, to be modified and written back.
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn read_tensors(path: &Path) -> Tensors {
    let bytes = fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Tensors =
        st.iter().map(|(n, t)| (n.to_string(), t.dtype(), t.shape().to_vec(), t.data().to_vec())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_tensors(path: &Path, tensors: &Tensors) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn config(fixture_name: &str, edit: impl FnOnce(&mut Map<String, Value>)) -> ModelConfig {
    let text = fs::read_to_string(fixture(fixture_name).join("config.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    edit(v.as_object_mut().unwrap());
    ModelConfig::from_json(&v.to_string(), "config.json").unwrap()
}

/// A temp dir holding `tensors` as `model.safetensors`.
fn single(tensors: &Tensors) -> TempDir {
    let dir = TempDir::new().unwrap();
    write_tensors(&dir.path().join("model.safetensors"), tensors);
    dir
}

fn remove(t: &mut Tensors, name: &str) {
    let before = t.len();
    t.retain(|e| e.0 != name);
    assert_eq!(t.len(), before - 1, "{name} not in the fixture");
}

fn replace(t: &mut Tensors, name: &str, dtype: Dtype, shape: &[usize], bytes: Vec<u8>) {
    let e = t.iter_mut().find(|e| e.0 == name).unwrap_or_else(|| panic!("{name} not in the fixture"));
    *e = (name.to_string(), dtype, shape.to_vec(), bytes);
}

fn set_f32(t: &mut Tensors, name: &str, index: usize, value: f32) {
    let e = t.iter_mut().find(|e| e.0 == name).unwrap();
    assert_eq!(e.1, Dtype::F32);
    e.3[4 * index..4 * index + 4].copy_from_slice(&value.to_le_bytes());
}

/// Rewrites the header JSON of a safetensors file in place, keeping its data section.
fn edit_header(path: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let bytes = fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut header);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    fs::write(path, out).unwrap();
}

fn offsets(header: &Map<String, Value>, name: &str) -> (u64, u64) {
    let o = &header[name]["data_offsets"];
    (o[0].as_u64().unwrap(), o[1].as_u64().unwrap())
}

fn data_error<T: std::fmt::Debug>(r: Result<T>) -> (String, String, String) {
    match r {
        Err(Error::Data { file, field, reason }) => (file, field, reason),
        other => panic!("expected Error::Data, got {other:?}"),
    }
}

/// The problems `validate` listed, by category title ("missing", "wrong dtype", ...).
fn sections(reason: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = String::new();
    for line in reason.lines().skip(1) {
        match line.strip_prefix("  ") {
            Some(item) => out.entry(current.clone()).or_default().push(item.to_string()),
            None => current = line.split(" (").next().unwrap().trim_end_matches(':').to_string(),
        }
    }
    out
}

#[test]
fn fixtures_open_and_validate() {
    for (name, tensors) in [("tiny-dsv3", 259), ("tiny-dsv3-bf16", 53)] {
        let dir = fixture(name);
        let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let ckpt = Checkpoint::open(&dir).unwrap();
        ckpt.validate(&cfg, false).unwrap();
        ckpt.validate(&cfg, true).unwrap(); // no MTP layers in either
        assert_eq!(ckpt.len(), tensors);
        assert_eq!(ckpt.names().len(), tensors);
        // The data section is everything after the 8-byte length and the header.
        let file = fs::read(dir.join("model.safetensors")).unwrap();
        let header_len = u64::from_le_bytes(file[..8].try_into().unwrap());
        assert_eq!(ckpt.total_bytes(), file.len() as u64 - 8 - header_len);
        assert_eq!(ckpt.bytes_by_dtype().values().sum::<u64>(), ckpt.total_bytes());
        // Each tensor's bytes are the ones in the file.
        for (n, dtype, shape, bytes) in read_tensors(&dir.join("model.safetensors")) {
            let t = ckpt.tensor(&n).unwrap();
            assert_eq!((t.name, &t.shape, t.bytes), (n.as_str(), &shape, bytes.as_slice()));
            assert_eq!(t.dtype.name(), dsv3_model::checkpoint::dtype_label(dtype));
            assert!(t.file.ends_with("model.safetensors"));
        }
    }
    let fp8 = Checkpoint::open(&fixture("tiny-dsv3")).unwrap();
    let w = fp8.tensor("model.layers.0.self_attn.q_b_proj.weight").unwrap();
    assert_eq!((w.dtype, w.shape.as_slice()), (DType::F8E4M3Fn, &[192, 96][..]));
    let s = fp8.tensor("model.layers.0.self_attn.q_b_proj.weight_scale_inv").unwrap();
    assert_eq!((s.dtype, s.shape.as_slice()), (DType::F32, &[2, 1][..]), "partial 128-block grid");
}

#[test]
fn no_checkpoint_in_dir() {
    let dir = TempDir::new().unwrap();
    let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!((file.as_str(), field.as_str()), (dir.path().to_str().unwrap(), "(checkpoint)"));
    assert!(reason.contains("model.safetensors.index.json"), "{reason}");
}

#[test]
fn header_offset_past_the_end() {
    let dir = single(&read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors")));
    let path = dir.path().join("model.safetensors");
    let data_len = fs::metadata(&path).unwrap().len()
        - 8
        - u64::from_le_bytes(fs::read(&path).unwrap()[..8].try_into().unwrap());
    // Same size, moved to start where the data section ends.
    edit_header(&path, |h| {
        let (s, e) = offsets(h, "model.norm.weight");
        h["model.norm.weight"]["data_offsets"] = json!([data_len, data_len + (e - s)]);
    });
    let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!(PathBuf::from(file), path);
    assert_eq!(field, "model.norm.weight");
    assert!(reason.contains("past the end"), "{reason}");
}

#[test]
fn truncated_file() {
    let dir = single(&read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors")));
    let path = dir.path().join("model.safetensors");
    let bytes = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Map<String, Value> = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let last =
        header.keys().filter(|k| *k != "__metadata__").max_by_key(|k| offsets(&header, k).1).unwrap().clone();

    fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!((PathBuf::from(file), field), (path.clone(), last));
    assert!(reason.contains("truncated"), "{reason}");

    // Cut inside the header: the declared header length runs past the end.
    fs::write(&path, &bytes[..8 + n / 2]).unwrap();
    let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!((PathBuf::from(file), field.as_str()), (path.clone(), "(header)"));
    assert!(reason.contains("past the end of the file"), "{reason}");

    // Shorter than the length prefix itself; and empty.
    for len in [5, 0] {
        fs::write(&path, &bytes[..len]).unwrap();
        let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
        assert_eq!((PathBuf::from(file), field.as_str()), (path.clone(), "(header)"));
        assert!(reason.contains("8-byte header length"), "{reason}");
    }
}

#[test]
fn overlapping_ranges() {
    let dir = single(&read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors")));
    let path = dir.path().join("model.safetensors");
    // Two norms of the same size: point the second at the first one's bytes.
    edit_header(&path, |h| {
        let (s, e) = offsets(h, "model.layers.0.input_layernorm.weight");
        h["model.layers.1.input_layernorm.weight"]["data_offsets"] = json!([s, e]);
    });
    let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!(PathBuf::from(file), path);
    assert_eq!(field, "model.layers.1.input_layernorm.weight");
    assert!(
        reason.contains("overlap") && reason.contains("model.layers.0.input_layernorm.weight"),
        "{reason}"
    );
}

#[test]
fn header_size_disagrees_with_shape() {
    let dir = single(&read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors")));
    let path = dir.path().join("model.safetensors");
    edit_header(&path, |h| h["model.norm.weight"]["shape"] = json!([193]));
    let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!((PathBuf::from(file), field.as_str()), (path.clone(), "model.norm.weight"));
    assert!(reason.contains("384 bytes") && reason.contains("386"), "{reason}");

    // A dtype safetensors does not know is named with its tensor too.
    let dir = single(&read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors")));
    let path = dir.path().join("model.safetensors");
    edit_header(&path, |h| h["lm_head.weight"]["dtype"] = json!("Q4_K"));
    let (_, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!(field, "lm_head.weight", "{reason}");

    fs::write(&path, [&9u64.to_le_bytes()[..], b"{not json"].concat()).unwrap();
    let (_, field, _) = data_error(Checkpoint::open(dir.path()));
    assert_eq!(field, "(header)");
}

#[test]
fn norm_stored_as_i32() {
    let mut t = read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors"));
    replace(&mut t, "model.layers.0.input_layernorm.weight", Dtype::I32, &[192], vec![0; 192 * 4]);
    let dir = single(&t);
    let cfg = config("tiny-dsv3-bf16", |_| {});
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    let (file, field, reason) = data_error(ckpt.validate(&cfg, false));
    assert_eq!((file.as_str(), field.as_str()), (dir.path().to_str().unwrap(), "tensors"));
    let s = sections(&reason);
    assert_eq!(s.len(), 1, "{reason}");
    assert_eq!(
        s["wrong dtype"],
        ["`model.layers.0.input_layernorm.weight` in model.safetensors: i32, expected bf16, f16 or f32"]
    );
}

#[test]
fn fp8_weights_without_quantization_config() {
    let dir = fixture("tiny-dsv3");
    let cfg = config("tiny-dsv3", |m| drop(m.remove("quantization_config")));
    let (_, _, reason) = data_error(Checkpoint::open(&dir).unwrap().validate(&cfg, false));
    let s = sections(&reason);
    // Every FP8 projection is named (the list is capped at 20 plus a count); their scale grids are not
    // reported as unexpected on top.
    assert_eq!(s.keys().collect::<Vec<_>>(), ["wrong dtype"], "{reason}");
    assert!(reason.contains("wrong dtype (120):"), "{reason}");
    assert_eq!(s["wrong dtype"].len(), 21);
    assert_eq!(s["wrong dtype"][20], "... and 100 more");
    assert!(s["wrong dtype"][0].contains("f8e4m3fn, but config.json has no quantization_config"), "{reason}");
}

#[test]
fn wrong_shape() {
    let mut t = read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors"));
    let name = "model.layers.0.self_attn.o_proj.weight";
    let bytes = t.iter().find(|e| e.0 == name).unwrap().3.clone();
    replace(&mut t, name, Dtype::BF16, &[64, 192], bytes); // transposed
    let dir = single(&t);
    let (_, _, reason) =
        data_error(Checkpoint::open(dir.path()).unwrap().validate(&config("tiny-dsv3-bf16", |_| {}), false));
    assert_eq!(
        sections(&reason)["wrong shape"],
        [format!("`{name}` in model.safetensors: [64, 192], expected [192, 64]")]
    );
}

#[test]
fn missing_and_unexpected_reported_together() {
    let mut t = read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors"));
    remove(&mut t, "model.layers.1.mlp.experts.3.up_proj.weight");
    remove(&mut t, "lm_head.weight");
    t.push(("model.layers.0.self_attn.rotary_emb.inv_freq".into(), Dtype::F32, vec![8], vec![0; 32]));
    let dir = single(&t);
    let (_, _, reason) =
        data_error(Checkpoint::open(dir.path()).unwrap().validate(&config("tiny-dsv3-bf16", |_| {}), false));
    assert!(reason.starts_with("3 problem(s)"), "{reason}");
    let s = sections(&reason);
    assert_eq!(
        s["missing"],
        ["`model.layers.1.mlp.experts.3.up_proj.weight` [96, 192]", "`lm_head.weight` [384, 192]"]
    );
    assert_eq!(s["unexpected"], ["`model.layers.0.self_attn.rotary_emb.inv_freq` in model.safetensors"]);
}

#[test]
fn scale_grid_problems() {
    let mut t = read_tensors(&fixture("tiny-dsv3").join("model.safetensors"));
    let l = "model.layers.0.";
    remove(&mut t, &format!("{l}mlp.gate_proj.weight_scale_inv"));
    replace(&mut t, &format!("{l}mlp.up_proj.weight_scale_inv"), Dtype::BF16, &[4, 2], vec![0x80; 16]);
    // The grid of down_proj [256, 512] is [2, 4].
    replace(&mut t, &format!("{l}mlp.down_proj.weight_scale_inv"), Dtype::F32, &[4, 2], vec![0; 32]);
    set_f32(&mut t, &format!("{l}self_attn.o_proj.weight_scale_inv"), 1, f32::NAN);
    set_f32(&mut t, &format!("{l}self_attn.q_a_proj.weight_scale_inv"), 0, -1.0);
    set_f32(&mut t, &format!("{l}self_attn.kv_b_proj.weight_scale_inv"), 0, 0.0);
    let dir = single(&t);
    let (_, _, reason) =
        data_error(Checkpoint::open(dir.path()).unwrap().validate(&config("tiny-dsv3", |_| {}), false));
    let s = sections(&reason);
    assert_eq!(
        s["missing"],
        [format!(
            "`{l}mlp.gate_proj.weight_scale_inv` [4, 2] (scale grid of the FP8 weight in model.safetensors)"
        )]
    );
    assert_eq!(
        s["wrong dtype"],
        [format!("`{l}mlp.up_proj.weight_scale_inv` in model.safetensors: bf16, expected f32")]
    );
    assert_eq!(
        s["wrong shape"],
        [format!("`{l}mlp.down_proj.weight_scale_inv` in model.safetensors: [4, 2], expected [2, 4]")]
    );
    let corrupt = &s["corrupt scales"];
    assert_eq!(corrupt.len(), 3, "{reason}");
    for (name, value) in [
        ("self_attn.o_proj", "element 1 is NaN"),
        ("self_attn.q_a_proj", "element 0 is -1"),
        ("self_attn.kv_b_proj", "element 0 is 0"),
    ] {
        assert!(
            corrupt.iter().any(|c| c.contains(&format!("`{l}{name}.weight_scale_inv`")) && c.contains(value)),
            "{name}: {reason}"
        );
    }
}

#[test]
fn scale_grid_for_a_bf16_weight_is_unexpected() {
    let mut t = read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors"));
    t.push(("model.layers.0.mlp.gate_proj.weight_scale_inv".into(), Dtype::F32, vec![3, 2], vec![0; 24]));
    let dir = single(&t);
    let (_, _, reason) =
        data_error(Checkpoint::open(dir.path()).unwrap().validate(&config("tiny-dsv3-bf16", |_| {}), false));
    assert_eq!(
        sections(&reason)["unexpected"],
        [concat!(
            "`model.layers.0.mlp.gate_proj.weight_scale_inv` in model.safetensors: ",
            "a scale grid for a weight stored as bf16"
        )]
    );
}

#[test]
fn dtype_dsv3_does_not_read() {
    let mut t = read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors"));
    let name = "model.layers.0.input_layernorm.weight";
    replace(&mut t, name, Dtype::F64, &[192], vec![0; 192 * 8]);
    let dir = single(&t);
    let ckpt = Checkpoint::open(dir.path()).unwrap(); // opening is fine: only this tensor is unreadable
    let (file, field, reason) = data_error(ckpt.tensor(name));
    assert_eq!((PathBuf::from(file), field.as_str()), (dir.path().join("model.safetensors"), name));
    assert!(reason.contains("F64"), "{reason}");
    let (_, _, reason) = data_error(ckpt.validate(&config("tiny-dsv3-bf16", |_| {}), false));
    assert!(sections(&reason)["wrong dtype"][0].contains("F64, expected bf16"), "{reason}");
    let (file, field, _) = data_error(ckpt.tensor("model.nope"));
    assert_eq!((PathBuf::from(file), field.as_str()), (dir.path().to_path_buf(), "model.nope"));
}

#[test]
fn mtp_tensors_recognised_and_skipped_unless_asked() {
    let cfg = config("tiny-dsv3-bf16", |m| drop(m.insert("num_nextn_predict_layers".into(), json!(1))));
    let mut t = read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors"));
    let dir = single(&t);
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    ckpt.validate(&cfg, false).unwrap();
    let (_, _, reason) = data_error(ckpt.validate(&cfg, true));
    // Every MTP tensor is missing (the printed list stops at 20), and nothing else is wrong.
    let mtp_specs = layout::tensor_table(&cfg).into_iter().filter(|s| s.mtp).count();
    assert!(reason.starts_with(&format!("{mtp_specs} problem(s)")), "{reason}");
    assert!(reason.contains(&format!("missing ({mtp_specs}):")), "{reason}");
    assert_eq!(sections(&reason)["missing"][0], "`model.layers.2.input_layernorm.weight` [192]");
    drop(ckpt);

    // With the MTP layer stored (bf16 zeros), it is not "unexpected" when skipped, and passes when checked.
    for spec in layout::tensor_table(&cfg).into_iter().filter(|s| s.mtp) {
        assert!(spec.kind == Kind::Float || spec.kind == Kind::Linear);
        let bytes = vec![0; spec.numel() * 2];
        t.push((spec.name, Dtype::BF16, spec.shape, bytes));
    }
    let dir = single(&t);
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    ckpt.validate(&cfg, false).unwrap();
    ckpt.validate(&cfg, true).unwrap();
    // Without MTP in the config, the same tensors are unexpected.
    let (_, _, reason) = data_error(ckpt.validate(&config("tiny-dsv3-bf16", |_| {}), false));
    assert!(
        sections(&reason)["unexpected"].iter().any(|u| u.contains("model.layers.2.eh_proj.weight")),
        "{reason}"
    );
}

/// The bf16 fixture split over two shards with an index, as HF writes large checkpoints.
fn sharded() -> (TempDir, Tensors, Map<String, Value>) {
    let t = read_tensors(&fixture("tiny-dsv3-bf16").join("model.safetensors"));
    let dir = TempDir::new().unwrap();
    let names = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let mut weight_map = Map::new();
    for (i, shard) in names.iter().enumerate() {
        let part: Tensors =
            t.iter().enumerate().filter(|(j, _)| j % 2 == i).map(|(_, e)| e.clone()).collect();
        for e in &part {
            weight_map.insert(e.0.clone(), json!(shard));
        }
        write_tensors(&dir.path().join(shard), &part);
    }
    write_index(dir.path(), &weight_map);
    (dir, t, weight_map)
}

fn write_index(dir: &Path, weight_map: &Map<String, Value>) {
    let index = json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

#[test]
fn sharded_checkpoint_opens_and_validates() {
    let (dir, t, _) = sharded();
    let ckpt = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.files().len(), 2);
    assert_eq!(ckpt.len(), t.len());
    ckpt.validate(&config("tiny-dsv3-bf16", |_| {}), false).unwrap();
    for (name, _, shape, bytes) in &t {
        let r = ckpt.tensor(name).unwrap();
        assert_eq!((&r.shape, r.bytes), (shape, bytes.as_slice()));
    }
    // Tensors are listed shard by shard.
    let first = ckpt.names()[0];
    assert!(ckpt.tensor(first).unwrap().file.ends_with("model-00001-of-00002.safetensors"));
}

#[test]
fn sharded_checkpoint_errors_name_shard_and_tensor() {
    let shard2 = "model-00002-of-00002.safetensors";

    // A missing shard.
    let (dir, _, weight_map) = sharded();
    fs::remove_file(dir.path().join(shard2)).unwrap();
    let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!(PathBuf::from(file), dir.path().join(shard2));
    assert_eq!(weight_map[&field], shard2, "names a tensor the index puts in that shard");
    assert!(reason.contains("does not exist"), "{reason}");

    // The index names a tensor the shard does not hold.
    let (dir, _, mut weight_map) = sharded();
    weight_map.insert("model.layers.0.mlp.fake.weight".into(), json!(shard2));
    write_index(dir.path(), &weight_map);
    let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!(
        (PathBuf::from(file), field.as_str()),
        (dir.path().join(shard2), "model.layers.0.mlp.fake.weight")
    );
    assert!(reason.contains("does not hold it"), "{reason}");

    // A shard holds a tensor the index does not list.
    let (dir, t, mut weight_map) = sharded();
    let dropped = &t[1].0; // odd index: in shard 2
    weight_map.remove(dropped);
    write_index(dir.path(), &weight_map);
    let (file, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!((PathBuf::from(file), &field), (dir.path().join(shard2), dropped));
    assert!(reason.contains("does not list it"), "{reason}");

    // The index points a tensor at the other shard.
    let (dir, t, mut weight_map) = sharded();
    weight_map.insert(t[0].0.clone(), json!(shard2));
    write_index(dir.path(), &weight_map);
    let (_, field, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!(field, t[0].0);
    assert!(reason.contains(&format!("maps it to {shard2}")), "{reason}");

    // A file name that leaves the directory.
    let (dir, t, mut weight_map) = sharded();
    weight_map.insert(t[0].0.clone(), json!("../model-00001-of-00002.safetensors"));
    write_index(dir.path(), &weight_map);
    let (file, field, _) = data_error(Checkpoint::open(dir.path()));
    assert!(file.ends_with("model.safetensors.index.json"));
    assert_eq!(field, format!("weight_map.{}", t[0].0));

    // A corrupt shard is named by its own path.
    let (dir, _, _) = sharded();
    let bytes = fs::read(dir.path().join(shard2)).unwrap();
    fs::write(dir.path().join(shard2), &bytes[..bytes.len() - 1]).unwrap();
    let (file, _, reason) = data_error(Checkpoint::open(dir.path()));
    assert_eq!(PathBuf::from(file), dir.path().join(shard2));
    assert!(reason.contains("truncated"), "{reason}");

    // An index that is not JSON, or has no weight_map.
    for text in ["{", r#"{"metadata": {}}"#, r#"{"weight_map": {"a": 3}}"#, r#"{"weight_map": {}}"#] {
        let (dir, _, _) = sharded();
        fs::write(dir.path().join("model.safetensors.index.json"), text).unwrap();
        let (file, field, _) = data_error(Checkpoint::open(dir.path()));
        assert!(file.ends_with("model.safetensors.index.json"), "{text}");
        assert!(["(json)", "weight_map", "weight_map.a"].contains(&field.as_str()), "{text}: {field}");
    }
}
