//! Property tests over hostile input on the config + safetensors header path: whatever the bytes,
//! `ModelConfig::from_json` and `Checkpoint::open` (and what a caller then does with an opened checkpoint)
//! return `Ok` or `Err`, never panic. A panic fails the property; proptest then shrinks it to a minimal case.

use std::fs;
use std::path::PathBuf;

use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::fuzzing::{exercise_checkpoint, small_safetensors};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tempfile::TempDir;

const CASES: u32 = 256;

/// Shard names an index might give: the real one, absent ones, ones outside the directory, odd ones.
const SHARD_NAMES: [&str; 8] = [
    "s.safetensors",
    "missing.safetensors",
    "../s.safetensors",
    "",
    "/",
    "a/s.safetensors",
    ".",
    "model.safetensors.index.json",
];

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn v3_config_text() -> String {
    fs::read_to_string(fixtures().join("configs/deepseek-v3.json")).unwrap()
}

fn split(file: &[u8]) -> (Map<String, Value>, Vec<u8>) {
    let n = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&file[8..8 + n]).unwrap(), file[8 + n..].to_vec())
}

fn join(header: &Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    out
}

/// JSON values of the kinds that break parsers: wrong types, huge, negative, fractional, empty.
fn json_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..300).prop_map(Value::from),
        any::<f64>().prop_filter("JSON has no NaN/inf", |x| x.is_finite()).prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..12)
            .prop_map(|b| Value::from(String::from_utf8_lossy(&b).into_owned())),
        proptest::collection::vec(0u64..1 << 20, 0..4).prop_map(|v| json!(v)),
        Just(json!({})),
        Just(json!("yarn")),
        Just(json!("ue8m0")),
    ]
}

/// A mutation of a safetensors file.
#[derive(Clone, Debug)]
enum Mutation {
    /// Overwrite the 8-byte header length.
    HeaderLen(u64),
    /// Move the header length by a small amount.
    HeaderLenDelta(i16),
    /// Overwrite bytes at positions (mod file length).
    Bytes(Vec<(usize, u8)>),
    /// Set a tensor's `data_offsets`.
    Offsets(usize, u64, u64),
    /// Set a tensor's shape.
    Shape(usize, Vec<u64>),
    /// Set a tensor's dtype string.
    DtypeName(usize, &'static str),
    /// Set any field of a tensor entry (or the entry itself) to an arbitrary JSON value.
    Field(usize, &'static str, Value),
    /// Keep only this many bytes (mod length + 1).
    Truncate(usize),
    /// Append bytes.
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let dtypes = prop::sample::select(vec![
        "BF16", "F32", "F8_E4M3", "F64", "I8", "BOOL", "F4", "F6_E2M3", "U64", "bf16", "X",
    ]);
    let fields = prop::sample::select(vec!["dtype", "shape", "data_offsets", "(entry)", "__metadata__"]);
    prop_oneof![
        any::<u64>().prop_map(Mutation::HeaderLen),
        any::<i16>().prop_map(Mutation::HeaderLenDelta),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6).prop_map(Mutation::Bytes),
        (0usize..3, prop_oneof![0u64..64, any::<u64>()], prop_oneof![0u64..64, any::<u64>()])
            .prop_map(|(i, s, e)| Mutation::Offsets(i, s, e)),
        (0usize..3, proptest::collection::vec(prop_oneof![0u64..8, any::<u64>()], 0..4))
            .prop_map(|(i, s)| Mutation::Shape(i, s)),
        (0usize..3, dtypes).prop_map(|(i, d)| Mutation::DtypeName(i, d)),
        (0usize..3, fields, json_value()).prop_map(|(i, f, v)| Mutation::Field(i, f, v)),
        any::<usize>().prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
    ]
}

fn apply(file: &mut Vec<u8>, m: &Mutation) {
    let names = ["model.a.weight", "model.b.weight", "model.c.weight"];
    // Structured mutations need a header that still parses; after a byte-level mutation they are skipped.
    let structured = |file: &mut Vec<u8>, f: &dyn Fn(&mut Map<String, Value>)| {
        let n = file.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
        let parsed = n
            .and_then(|n| file.get(8..8usize.checked_add(n)?))
            .and_then(|h| serde_json::from_slice::<Map<String, Value>>(h).ok());
        if let (Some(mut header), Some(n)) = (parsed, n) {
            f(&mut header);
            let data = file[8 + n..].to_vec();
            *file = join(&header, &data);
        }
    };
    match m {
        Mutation::HeaderLen(n) if file.len() >= 8 => file[..8].copy_from_slice(&n.to_le_bytes()),
        Mutation::HeaderLenDelta(d) if file.len() >= 8 => {
            let n = u64::from_le_bytes(file[..8].try_into().unwrap()).wrapping_add_signed(*d as i64);
            file[..8].copy_from_slice(&n.to_le_bytes());
        }
        Mutation::Bytes(edits) if !file.is_empty() => {
            let len = file.len();
            for &(pos, byte) in edits {
                file[pos % len] = byte;
            }
        }
        Mutation::Offsets(i, s, e) => structured(file, &|h| {
            if let Some(t) = h.get_mut(names[*i]).and_then(Value::as_object_mut) {
                t.insert("data_offsets".into(), json!([s, e]));
            }
        }),
        Mutation::Shape(i, shape) => structured(file, &|h| {
            if let Some(t) = h.get_mut(names[*i]).and_then(Value::as_object_mut) {
                t.insert("shape".into(), json!(shape));
            }
        }),
        Mutation::DtypeName(i, d) => structured(file, &|h| {
            if let Some(t) = h.get_mut(names[*i]).and_then(Value::as_object_mut) {
                t.insert("dtype".into(), json!(d));
            }
        }),
        Mutation::Field(i, field, v) => structured(file, &|h| match *field {
            "(entry)" => drop(h.insert(names[*i].into(), v.clone())),
            "__metadata__" => drop(h.insert("__metadata__".into(), v.clone())),
            _ => {
                if let Some(t) = h.get_mut(names[*i]).and_then(Value::as_object_mut) {
                    t.insert(field.to_string(), v.clone());
                }
            }
        }),
        Mutation::Truncate(n) => {
            let keep = n % (file.len() + 1);
            file.truncate(keep);
        }
        Mutation::Append(bytes) => file.extend(bytes),
        _ => {}
    }
}

/// Byte overwrites, a key whose value is replaced, and a cut-off length.
type ConfigMutation = (Vec<(usize, u8)>, Option<(usize, Value)>, Option<usize>);

fn config_mutation() -> impl Strategy<Value = ConfigMutation> {
    (
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        proptest::option::of((any::<usize>(), json_value())),
        proptest::option::of(any::<usize>()),
    )
}

proptest! {
    // No regression files: a failing case is printed, shrunk, in the test output.
    #![proptest_config(ProptestConfig {
        cases: CASES,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Arbitrary bytes as config text.
    #[test]
    fn config_from_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = ModelConfig::from_json(&String::from_utf8_lossy(&bytes), "fuzz.json");
    }

    /// The real V3 config with a key's value replaced (possibly inside a nested object), bytes overwritten
    /// and the text cut short.
    #[test]
    fn config_from_mutated_v3((edits, replace, cut) in config_mutation()) {
        let mut v: Value = serde_json::from_str(&v3_config_text()).unwrap();
        if let Some((k, value)) = replace {
            let map = v.as_object_mut().unwrap();
            let key = map.keys().nth(k % map.len()).unwrap().clone();
            // Half the time, reach into rope_scaling / quantization_config instead of replacing them whole.
            match map.get_mut(&key).and_then(Value::as_object_mut) {
                Some(inner) if k % 2 == 0 && !inner.is_empty() => {
                    let inner_key = inner.keys().nth(k / 2 % inner.len()).unwrap().clone();
                    inner.insert(inner_key, value);
                }
                _ => drop(map.insert(key, value)),
            }
        }
        let mut text = v.to_string().into_bytes();
        let len = text.len();
        for (pos, byte) in edits {
            text[pos % len] = byte;
        }
        if let Some(cut) = cut {
            text.truncate(cut % (len + 1));
        }
        let _ = ModelConfig::from_json(&String::from_utf8_lossy(&text), "fuzz.json");
    }

    /// A valid safetensors file with one to three mutations, opened as a checkpoint.
    #[test]
    fn checkpoint_from_mutated_file(mutations in proptest::collection::vec(mutation(), 1..4)) {
        let mut file = small_safetensors();
        for m in &mutations {
            apply(&mut file, m);
        }
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("model.safetensors"), &file).unwrap();
        exercise_checkpoint(dir.path());
    }

    /// An index with arbitrary tensor → file entries next to one valid shard.
    #[test]
    fn checkpoint_from_random_index(
        entries in proptest::collection::vec(
            (
                prop::sample::select(vec!["model.a.weight", "model.b.weight", "model.c.weight", "x", ""]),
                prop::sample::select(SHARD_NAMES.to_vec()),
            ),
            0..5,
        ),
        garbage in proptest::option::of(json_value()),
    ) {
        let dir = TempDir::new().unwrap();
        fs::write(dir.path().join("s.safetensors"), small_safetensors()).unwrap();
        let index = match garbage {
            Some(v) => json!({"weight_map": v}),
            None => {
                let map: Map<String, Value> =
                    entries.iter().map(|(n, f)| (n.to_string(), json!(f))).collect();
                json!({ "weight_map": map })
            }
        };
        fs::write(dir.path().join("model.safetensors.index.json"), index.to_string()).unwrap();
        exercise_checkpoint(dir.path());
    }
}

/// The mutations above reach the interesting errors, not only "invalid JSON": a sanity check that the
/// structured mutations produce files `Checkpoint::open` rejects for the stated reason.
#[test]
fn structured_mutations_hit_their_target() {
    let dir = TempDir::new().unwrap();
    let open = |file: &[u8]| {
        fs::write(dir.path().join("model.safetensors"), file).unwrap();
        Checkpoint::open(dir.path()).map(|_| ())
    };
    assert!(open(&small_safetensors()).is_ok());
    let (header, data) = split(&small_safetensors());
    let field_of = |r: dsv3_core::Result<()>| match r {
        Err(dsv3_core::Error::Data { field, .. }) => field,
        other => panic!("expected a Data error, got {other:?}"),
    };
    let mut file = join(&header, &data);
    apply(&mut file, &Mutation::Shape(2, vec![u64::MAX, 3]));
    assert_eq!(field_of(open(&file)), "model.c.weight");
    let mut file = join(&header, &data);
    apply(&mut file, &Mutation::Offsets(1, 0, u64::MAX));
    assert_eq!(field_of(open(&file)), "model.b.weight");
    let mut file = join(&header, &data);
    apply(&mut file, &Mutation::DtypeName(0, "X"));
    assert_eq!(field_of(open(&file)), "model.a.weight");
    let mut file = join(&header, &data);
    apply(&mut file, &Mutation::HeaderLen(u64::MAX));
    assert_eq!(field_of(open(&file)), "(header)");
}
