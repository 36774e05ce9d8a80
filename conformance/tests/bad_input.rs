//! Bad input yields typed errors naming the op and the argument — never a panic — on both CPU modes.

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::ops::{Activations, BatchedGemm, CacheAppend, Embedding, Gemm, Weights};
use dsv3_core::{Backend, DType, Device, Error, Op, Tensor};
use std::sync::Arc;

fn devices() -> Vec<Arc<dyn Device>> {
    [Mode::Reference, Mode::Fast].into_iter().map(|m| CpuBackend::new(m).open(0).unwrap()).collect()
}

fn f32_tensor(dev: &Arc<dyn Device>, shape: &[usize], values: &[f32]) -> Tensor {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let buffer = dev.alloc(bytes.len().max(4)).unwrap();
    dev.default_stream().upload(&buffer, 0, &bytes).unwrap();
    Tensor::contiguous(buffer, 0, shape, DType::F32)
}

fn out(dev: &Arc<dyn Device>, shape: &[usize], dtype: DType) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::contiguous(dev.alloc(n * dtype.size()).unwrap(), 0, shape, dtype)
}

/// A valid 2×3 · (4×3)ᵀ f32 gemm.
fn gemm(dev: &Arc<dyn Device>) -> Gemm {
    Gemm {
        a: Activations::Dense(f32_tensor(dev, &[2, 3], &[1.0; 6])),
        b: Weights::Dense(f32_tensor(dev, &[4, 3], &[0.5; 12])),
        c: out(dev, &[2, 4], DType::F32),
    }
}

fn launch(dev: &Arc<dyn Device>, op: Gemm) -> Result<(), Error> {
    dev.default_stream().launch(&Op::Gemm(op))
}

fn assert_invalid(r: Result<(), Error>, op: &str, arg: &str) {
    match r {
        Err(Error::InvalidArgument { op: o, arg: a, .. }) if o == op && a == arg => {}
        other => panic!("expected InvalidArgument {{ op: {op}, arg: {arg} }}, got {other:?}"),
    }
}

#[test]
fn valid_gemm_runs() {
    for dev in devices() {
        launch(&dev, gemm(&dev)).unwrap();
    }
}

#[test]
fn wrong_dtype() {
    for dev in devices() {
        let mut g = gemm(&dev);
        g.c = out(&dev, &[2, 4], DType::I32);
        assert_invalid(launch(&dev, g), "gemm", "c");
    }
}

#[test]
fn wrong_shape() {
    for dev in devices() {
        let mut g = gemm(&dev);
        g.c = out(&dev, &[2, 5], DType::F32);
        assert_invalid(launch(&dev, g), "gemm", "c");
        let mut g = gemm(&dev);
        g.b = Weights::Dense(f32_tensor(&dev, &[4, 2], &[0.5; 8]));
        assert_invalid(launch(&dev, g), "gemm", "b");
    }
}

#[test]
fn out_of_bounds_view() {
    for dev in devices() {
        let mut g = gemm(&dev);
        let Activations::Dense(a) = &mut g.a else { unreachable!() };
        a.offset = 8; // the 24-byte view now ends 8 bytes past its 24-byte buffer
        assert_invalid(launch(&dev, g), "gemm", "a");
    }
}

#[test]
fn misaligned_view() {
    for dev in devices() {
        let mut g = gemm(&dev);
        let buffer = dev.alloc(2 * 4 * 4 + 2).unwrap();
        g.c = Tensor::contiguous(buffer, 2, &[2, 4], DType::F32);
        assert_invalid(launch(&dev, g), "gemm", "c");
    }
}

#[test]
fn overlapping_output() {
    for dev in devices() {
        let mut g = gemm(&dev);
        // c written over a's bytes.
        let a = g.a.values().clone();
        let buffer = dev.alloc(64).unwrap();
        g.a = Activations::Dense(Tensor::contiguous(buffer.clone(), 0, &a.shape, DType::F32));
        g.c = Tensor::contiguous(buffer, 16, &[2, 4], DType::F32);
        assert_invalid(launch(&dev, g), "gemm", "c");
    }
}

#[test]
fn non_finite_input() {
    for dev in devices() {
        let mut g = gemm(&dev);
        g.a = Activations::Dense(f32_tensor(&dev, &[2, 3], &[1.0, 2.0, f32::NAN, 4.0, 5.0, 6.0]));
        match launch(&dev, g) {
            Err(Error::NonFinite { op: "gemm", arg: "a", index: 2, value }) if value.is_nan() => {}
            other => panic!("{}: expected NonFinite {{ gemm, a, 2 }}, got {other:?}", dev.info().backend),
        }
        let mut g = gemm(&dev);
        g.a = Activations::Dense(f32_tensor(&dev, &[2, 3], &[1.0, 2.0, 3.0, f32::INFINITY, 5.0, 6.0]));
        assert!(matches!(launch(&dev, g), Err(Error::NonFinite { op: "gemm", arg: "a", index: 3, .. })));
    }
}

#[test]
fn wrong_device() {
    let [reference, fast] = &devices()[..] else { unreachable!() };
    let mut g = gemm(reference);
    g.c = out(fast, &[2, 4], DType::F32);
    assert_invalid(launch(reference, g), "gemm", "c");
}

#[test]
fn id_out_of_range() {
    for dev in devices() {
        let table = f32_tensor(&dev, &[4, 2], &[1.0; 8]);
        let ids_buf = dev.alloc(8).unwrap();
        dev.default_stream()
            .upload(&ids_buf, 0, &[1i32, 4].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>())
            .unwrap();
        let ids = Tensor::contiguous(ids_buf, 0, &[2], DType::I32);
        let op = Op::Embedding(Embedding { table, ids, out: out(&dev, &[2, 2], DType::F32) });
        assert_invalid(dev.default_stream().launch(&op), "embedding", "ids");
    }
}

/// A valid batch of 2 × (3×4 · (5×4)ᵀ) f32 products, and the same batch with its operands replaced.
fn batched(dev: &Arc<dyn Device>) -> BatchedGemm {
    BatchedGemm {
        a: f32_tensor(dev, &[2, 3, 4], &[1.0; 24]),
        b: f32_tensor(dev, &[2, 5, 4], &[0.5; 40]),
        c: out(dev, &[2, 3, 5], DType::F32),
    }
}

#[test]
fn batched_gemm_layouts_are_checked() {
    for dev in devices() {
        let stream = dev.default_stream();
        stream.launch(&Op::BatchedGemm(batched(&dev))).unwrap();
        // c with batch stride 0: both batches would write the same elements.
        let mut g = batched(&dev);
        g.c.strides = vec![0, 5, 1];
        assert_invalid(stream.launch(&Op::BatchedGemm(g)), "batched_gemm", "c");
        // c rows interleaved with a stride shorter than a row: elements shared between rows.
        let mut g = batched(&dev);
        g.c = Tensor { strides: vec![15, 3, 1], ..g.c };
        assert_invalid(stream.launch(&Op::BatchedGemm(g)), "batched_gemm", "c");
        // b's batch is not a contiguous [N, K] matrix.
        let mut g = batched(&dev);
        g.b = Tensor { shape: vec![2, 5, 2], strides: vec![20, 4, 1], ..g.b };
        assert_invalid(stream.launch(&Op::BatchedGemm(g)), "batched_gemm", "b");
        // a batch count that differs between a and b.
        let mut g = batched(&dev);
        g.b = f32_tensor(&dev, &[1, 5, 4], &[0.5; 20]);
        assert_invalid(stream.launch(&Op::BatchedGemm(g)), "batched_gemm", "b");
        // elements of a row not adjacent.
        let mut g = batched(&dev);
        g.a = Tensor { shape: vec![2, 3, 2], strides: vec![12, 4, 2], ..g.a };
        assert_invalid(stream.launch(&Op::BatchedGemm(g)), "batched_gemm", "a");
        // One b for both batches (batch stride 0) is a valid layout.
        let mut g = batched(&dev);
        g.b =
            Tensor { shape: vec![2, 5, 4], strides: vec![0, 4, 1], ..f32_tensor(&dev, &[5, 4], &[0.5; 20]) };
        stream.launch(&Op::BatchedGemm(g)).unwrap();
    }
}

/// cache_append's contract by hand (the oracle itself is checked here, not against itself): rows land at
/// `kv_lens[b] − T + t`, every other position keeps its value; a length outside `T..=L` is an error that
/// writes nothing.
#[test]
fn cache_append_writes_its_rows_and_nothing_else() {
    for dev in devices() {
        let stream = dev.default_stream();
        let before: Vec<f32> = (0..12).map(|i| -(i as f32)).collect();
        let op = |lens: &[f32]| {
            let lens: Vec<u8> = lens.iter().flat_map(|&l| (l as i32).to_le_bytes()).collect();
            let kv_lens = Tensor::contiguous(dev.alloc(8).unwrap(), 0, &[2], DType::I32);
            stream.upload(&kv_lens.buffer, 0, &lens).unwrap();
            CacheAppend {
                rows: f32_tensor(&dev, &[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]),
                kv_lens,
                cache: f32_tensor(&dev, &[2, 3, 2], &before),
                block_table: None,
            }
        };
        let read = |t: &Tensor| {
            let mut bytes = vec![0u8; 48];
            stream.download(&t.buffer, 0, &mut bytes).unwrap();
            bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>()
        };
        let good = op(&[1.0, 3.0]);
        stream.launch(&Op::CacheAppend(good.clone())).unwrap();
        let mut want = before.clone();
        want[0..2].copy_from_slice(&[1.0, 2.0]); // sequence 0, position 0
        want[10..12].copy_from_slice(&[3.0, 4.0]); // sequence 1, position 2
        assert_eq!(read(&good.cache), want);
        for lens in [[0.0, 3.0], [1.0, 4.0]] {
            let bad = op(&lens);
            assert_invalid(stream.launch(&Op::CacheAppend(bad.clone())), "cache_append", "kv_lens");
            assert_eq!(read(&bad.cache), before, "lengths {lens:?}: nothing written");
        }
    }
}

/// A paged cache_append writes through the block table; an entry outside the pool, or two sequences
/// writing one row of a shared page, is an error that writes nothing.
#[test]
fn paged_cache_append_checks_its_block_table() {
    for dev in devices() {
        let stream = dev.default_stream();
        // A pool of 3 pages of 2 positions, rows 2 wide.
        let before: Vec<f32> = (0..12).map(|i| -(i as f32)).collect();
        let op = |lens: [i32; 2], table: [i32; 4]| {
            let i32s = |shape: &[usize], v: &[i32]| {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                let t = Tensor::contiguous(dev.alloc(bytes.len()).unwrap(), 0, shape, DType::I32);
                stream.upload(&t.buffer, 0, &bytes).unwrap();
                t
            };
            CacheAppend {
                rows: f32_tensor(&dev, &[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]),
                kv_lens: i32s(&[2], &lens),
                cache: f32_tensor(&dev, &[3, 2, 2], &before),
                block_table: Some(i32s(&[2, 2], &table)),
            }
        };
        let read = |t: &Tensor| {
            let mut bytes = vec![0u8; 48];
            stream.download(&t.buffer, 0, &mut bytes).unwrap();
            bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<f32>>()
        };
        // Sequence 0's position 2 is page 0, row 0; sequence 1's position 0 is page 1, row 0.
        let good = op([3, 1], [2, 0, 1, -1]);
        stream.launch(&Op::CacheAppend(good.clone())).unwrap();
        let mut want = before.clone();
        want[0..2].copy_from_slice(&[1.0, 2.0]);
        want[4..6].copy_from_slice(&[3.0, 4.0]);
        assert_eq!(read(&good.cache), want);
        // Page 3 is past the pool; page 1 shared by both sequences' position 0.
        for (lens, table) in [([3, 1], [2, 3, 1, -1]), ([1, 1], [1, 0, 1, -1])] {
            let bad = op(lens, table);
            assert_invalid(stream.launch(&Op::CacheAppend(bad.clone())), "cache_append", "block_table");
            assert_eq!(read(&bad.cache), before, "table {table:?}: nothing written");
        }
    }
}

/// Per-row sampling parameters are read where they are used: an entry outside the rules (temperature
/// negative or NaN, top_p 0 or above 1) is an error naming `row_params` and the row; the scalar ones are
/// checked at launch as before.
#[test]
fn sample_checks_each_rows_parameters() {
    use dsv3_core::ops::{RowSampling, Sample};
    for dev in devices() {
        let stream = dev.default_stream();
        let op = |rows: &[RowSampling]| {
            let bytes: Vec<u8> = RowSampling::encode(rows).iter().flat_map(|x| x.to_le_bytes()).collect();
            let params =
                Tensor::contiguous(dev.alloc(bytes.len()).unwrap(), 0, &[2, RowSampling::WORDS], DType::I32);
            stream.upload(&params.buffer, 0, &bytes).unwrap();
            Sample {
                logits: f32_tensor(&dev, &[2, 3], &[0.5, 1.0, -1.0, 2.0, 0.0, 1.0]),
                temperature: 1.0,
                top_p: 1.0,
                seed: 0,
                row_params: Some(params),
                out: out(&dev, &[2], DType::I32),
            }
        };
        let good = RowSampling { temperature: 0.0, top_p: 1.0, seed: 1 };
        stream
            .launch(&Op::Sample(op(&[good, RowSampling { temperature: 0.9, top_p: 0.5, seed: 2 }])))
            .unwrap();
        for bad in [-1.0, f32::NAN]
            .map(|t| RowSampling { temperature: t, ..good })
            .into_iter()
            .chain([0.0, 1.5].map(|p| RowSampling { top_p: p, ..good }))
        {
            let r = stream.launch(&Op::Sample(op(&[good, bad])));
            assert!(r.as_ref().is_err_and(|e| e.to_string().contains("row 1")), "{bad:?}: {r:?}");
            assert_invalid(r, "sample", "row_params");
        }
        let mut scalar = op(&[good, good]);
        scalar.top_p = 0.0;
        assert_invalid(stream.launch(&Op::Sample(scalar)), "sample", "top_p");
    }
}
