//! rms_norm, softmax, rope and embedding on the host emulator against the CPU oracle: the quick set, the
//! DeepSeek-V3 shapes that stay cheap here, and the device-side check of embedding's ids.

mod common;

use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_conformance::{cases, Case};
use dsv3_core::ops::{CacheAppend, Embedding};
use dsv3_core::{Backend, DType, Error, Op, Tensor};

/// The full set's cases whose names start with one of `prefixes` (each must match at least one).
fn full_cases(prefixes: &[&str]) -> Vec<Case> {
    let set: Vec<Case> =
        cases::full().into_iter().filter(|c| prefixes.iter().any(|p| c.name.starts_with(p))).collect();
    for p in prefixes {
        assert!(set.iter().any(|c| c.name.starts_with(p)), "no full-set case {p}");
    }
    set
}

#[test]
fn rms_norm() {
    common::check_quick("rms_norm");
    // V3's hidden, q_lora and kv_lora widths over 64 tokens.
    common::check_cases(32, "rms_norm", &full_cases(&["rms_norm(r=64,"]));
}

#[test]
fn softmax() {
    common::check_quick("softmax");
    // The vocabulary: 1024-thread blocks.
    for warp in [32, 64] {
        common::check_cases(warp, "softmax", &full_cases(&["softmax(r=4,n=129280"]));
    }
}

#[test]
fn rope() {
    common::check_quick("rope");
    // 128 heads as a view into q at V3's positions (up to 163840 rad), and the single k_pe head.
    common::check_cases(32, "rope", &full_cases(&["rope(t=128,h=128", "rope(t=128,h=1,"]));
}

#[test]
fn embedding() {
    common::check_quick("embedding");
}

fn upload(dev: &std::sync::Arc<dyn dsv3_core::Device>, bytes: &[u8]) -> dsv3_core::Buffer {
    let b = dev.alloc(bytes.len()).unwrap();
    dev.default_stream().upload(&b, 0, bytes).unwrap();
    b
}

#[test]
fn embedding_ids_are_checked_on_the_device() {
    let dev = EmulatorBackend::new(32).open(0).unwrap();
    let s = dev.default_stream();
    let table: Vec<u8> = (0..8 * 3).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let table = upload(&dev, &table);
    let out = dev.alloc(4 * 3 * 3).unwrap();
    let op = |ids: &[i32]| {
        let ids: Vec<u8> = ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        Op::Embedding(Embedding {
            table: Tensor::contiguous(table.clone(), 0, &[8, 3], DType::F32),
            ids: Tensor::contiguous(upload(&dev, &ids), 0, &[3], DType::I32),
            out: Tensor::contiguous(out.clone(), 0, &[3, 3], DType::F32),
        })
    };
    s.launch(&op(&[1, 7, -1])).expect("the ids are only known on the device");
    match s.sync() {
        Err(Error::InvalidArgument { op: "embedding", arg: "ids", reason }) => {
            assert!(reason.contains("0..8") && reason.contains("element 2, value -1"), "{reason}")
        }
        other => panic!("expected the device to report ids[2] = -1, got {other:?}"),
    }
    s.launch(&op(&[0, 8, 2])).unwrap();
    match s.sync() {
        Err(Error::InvalidArgument { reason, .. }) => {
            assert!(reason.contains("element 1, value 8"), "{reason}")
        }
        other => panic!("expected the device to report ids[1] = 8, got {other:?}"),
    }
    // Reported once; later work on the stream is unaffected.
    s.sync().unwrap();
    s.launch(&op(&[7, 0, 2])).unwrap();
    s.sync().unwrap();
    let mut got = vec![0u8; 4 * 9];
    s.download(&out, 0, &mut got).unwrap();
    let got: Vec<f32> = got.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    assert_eq!(got, [21.0, 22.0, 23.0, 0.0, 1.0, 2.0, 6.0, 7.0, 8.0]);
}

#[test]
fn cache_append_lengths_are_checked_on_the_device() {
    let dev = EmulatorBackend::new(32).open(0).unwrap();
    let s = dev.default_stream();
    let rows: Vec<u8> = (0..2 * 2 * 4).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let rows = upload(&dev, &rows);
    let cache = upload(&dev, &[0u8; 4 * 2 * 5 * 4]);
    let lens = |lens: &[i32]| {
        let bytes: Vec<u8> = lens.iter().flat_map(|v| v.to_le_bytes()).collect();
        Tensor::contiguous(upload(&dev, &bytes), 0, &[2], DType::I32)
    };
    let op = |kv_lens| {
        Op::CacheAppend(CacheAppend {
            rows: Tensor::contiguous(rows.clone(), 0, &[2, 2, 4], DType::F32),
            kv_lens,
            cache: Tensor::contiguous(cache.clone(), 0, &[2, 5, 4], DType::F32),
            block_table: None,
        })
    };
    s.launch(&op(lens(&[2, 6]))).expect("the lengths are only known on the device");
    match s.sync() {
        Err(Error::InvalidArgument { op: "cache_append", arg: "kv_lens", reason }) => {
            assert!(reason.contains("2..=5") && reason.contains("element 1, value 6"), "{reason}")
        }
        other => panic!("expected the device to report kv_lens[1] = 6, got {other:?}"),
    }
    s.launch(&op(lens(&[2, 5]))).unwrap();
    s.sync().unwrap();
    let mut got = vec![0u8; 4 * 2 * 5 * 4];
    s.download(&cache, 0, &mut got).unwrap();
    let got: Vec<f32> = got.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    // Sequence 0 at positions 0..2, sequence 1 at 3..5 (the bad launch wrote only sequence 0, the same rows).
    let mut want = vec![0.0f32; 40];
    want[0..8].copy_from_slice(&(0..8).map(|v| v as f32).collect::<Vec<_>>());
    want[32..40].copy_from_slice(&(8..16).map(|v| v as f32).collect::<Vec<_>>());
    assert_eq!(got, want);
}
