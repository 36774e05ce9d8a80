//! The device plumbing: uploads, downloads and copies at any byte offset and length, ops whose arguments
//! share buffers at unaligned offsets, checks the kernels make on the device (reported at `sync`), buffer
//! errors, and discovery without a Vulkan driver.

mod common;

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_backend_wgpu::WgpuBackend;
use dsv3_core::ops::{ActQuant, Add, Cast, Embedding, ScaleFormat};
use dsv3_core::{Backend, Buffer, DType, Device, Error, Op, Tensor};
use half::bf16;
use std::sync::Arc;

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn upload(dev: &Arc<dyn Device>, bytes: &[u8]) -> Buffer {
    let b = dev.alloc(bytes.len()).unwrap();
    dev.default_stream().upload(&b, 0, bytes).unwrap();
    b
}

fn download(dev: &Arc<dyn Device>, b: &Buffer) -> Vec<u8> {
    let mut out = vec![0u8; b.len()];
    dev.default_stream().download(b, 0, &mut out).unwrap();
    out
}

#[test]
fn uploads_and_downloads_at_any_offset_and_length() {
    let Some(dev) = common::device() else { return };
    let base = pattern(67, 1);
    for offset in 0..9 {
        for len in [0, 1, 2, 3, 4, 5, 7, 13, 40] {
            let b = upload(&dev, &base);
            let data = pattern(len, 200);
            dev.default_stream().upload(&b, offset, &data).unwrap();
            let mut expect = base.clone();
            expect[offset..offset + len].copy_from_slice(&data);
            assert_eq!(download(&dev, &b), expect, "offset {offset} len {len}");
            let mut part = vec![0u8; len];
            dev.default_stream().download(&b, offset, &mut part).unwrap();
            assert_eq!(part, data);
        }
    }
}

#[test]
fn copies_between_and_within_buffers() {
    let Some(dev) = common::device() else { return };
    let s = dev.default_stream();
    let src = pattern(50, 3);
    for (so, d0, n) in [(0, 0, 48), (1, 2, 13), (3, 0, 20), (4, 8, 16), (5, 11, 30)] {
        // Between two buffers.
        let a = upload(&dev, &src);
        let b = upload(&dev, &pattern(50, 90));
        s.copy(&a, so, &b, d0, n).unwrap();
        let mut expect = pattern(50, 90);
        expect[d0..d0 + n].copy_from_slice(&src[so..so + n]);
        assert_eq!(download(&dev, &b), expect, "between: {so} -> {d0}, {n} bytes");
        // Within one buffer, overlapping ranges included (memmove semantics).
        let c = upload(&dev, &src);
        s.copy(&c, so, &c, d0, n).unwrap();
        let mut expect = src.clone();
        expect.copy_within(so..so + n, d0);
        assert_eq!(download(&dev, &c), expect, "within: {so} -> {d0}, {n} bytes");
    }
}

#[test]
fn buffer_errors_are_typed() {
    let Some(dev) = common::device() else { return };
    let s = dev.default_stream();
    let b = dev.alloc(10).unwrap();
    assert!(matches!(s.upload(&b, 8, &[0; 4]), Err(Error::Buffer { .. })));
    let mut out = [0u8; 4];
    assert!(matches!(s.download(&b, 7, &mut out), Err(Error::Buffer { .. })));
    let cpu = CpuBackend::new(Mode::Fast).open(0).unwrap().alloc(10).unwrap();
    assert!(matches!(s.copy(&cpu, 0, &b, 0, 4), Err(Error::Buffer { .. })));
}

fn bf16_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| bf16::from_f32(*x).to_le_bytes()).collect()
}

/// Runs `make(dev)`'s op on wgpu and on the CPU oracle with the same buffer contents, and returns both
/// downloads of the buffer the op writes.
fn on_both(make: impl Fn(&Arc<dyn Device>) -> (Op, Buffer)) -> Option<(Vec<u8>, Vec<u8>)> {
    let dev = common::device()?;
    let cpu = CpuBackend::new(Mode::Reference).open(0).unwrap();
    let mut results = Vec::new();
    for d in [&dev, &cpu] {
        let (op, out) = make(d);
        let s = d.default_stream();
        s.launch(&op).unwrap();
        s.sync().unwrap();
        results.push(download(d, &out));
    }
    let cpu_out = results.pop().unwrap();
    Some((results.pop().unwrap(), cpu_out))
}

#[test]
fn arguments_sharing_a_buffer_at_unaligned_offsets() {
    // add: a, b and out in one buffer; out starts in the middle of the word that ends a.
    let values: Vec<f32> = (0..5).map(|i| i as f32 * 1.25 - 2.0).collect();
    let mut bytes = bf16_bytes(&values); // a: bytes 0..10
    bytes.extend(bf16_bytes(&[0.0; 5])); // out: bytes 10..20 (shares bytes 8..12 with a)
    bytes.extend(bf16_bytes(&values.iter().map(|v| v * 3.0).collect::<Vec<_>>())); // b: 20..30
    bytes.extend([0x5a; 3]); // a tail the op must not touch
    let Some((gpu, cpu)) = on_both(|d| {
        let buf = upload(d, &bytes);
        let t = |offset, shape: &[usize]| Tensor::contiguous(buf.clone(), offset, shape, DType::BF16);
        (Op::Add(Add { a: t(0, &[1, 5]), b: t(20, &[1, 5]), out: t(10, &[1, 5]) }), buf.clone())
    }) else {
        return;
    };
    assert_eq!(gpu, cpu);

    // act_quant: x, codes and scales in one buffer, codes at an odd byte offset.
    let x: Vec<f32> = (0..2 * 130).map(|i| ((i * 7919) % 1000) as f32 / 37.0 - 13.0).collect();
    let mut bytes: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect(); // 0..1040
    bytes.extend([0u8; 1 + 260 + 3 + 16]); // codes at 1041, scales at 1304
    let Some((gpu, cpu)) = on_both(|d| {
        let buf = upload(d, &bytes);
        let op = ActQuant {
            x: Tensor::contiguous(buf.clone(), 0, &[2, 130], DType::F32),
            codes: Tensor::contiguous(buf.clone(), 1041, &[2, 130], DType::F8E4M3Fn),
            scales: Tensor::contiguous(buf.clone(), 1304, &[2, 2], DType::F32),
            scale_format: ScaleFormat::F32,
        };
        (Op::ActQuant(op), buf.clone())
    }) else {
        return;
    };
    assert_eq!(gpu, cpu);

    // cast into a strided-by-nothing fp8 view right after its bf16 source, sharing a word.
    let Some((gpu, cpu)) = on_both(|d| {
        let mut bytes = bf16_bytes(&values);
        bytes.extend([0x11; 9]);
        let buf = upload(d, &bytes);
        let op = Cast {
            x: Tensor::contiguous(buf.clone(), 0, &[5], DType::BF16),
            out: Tensor::contiguous(buf.clone(), 11, &[5], DType::F8E5M2),
        };
        (Op::Cast(op), buf.clone())
    }) else {
        return;
    };
    assert_eq!(gpu, cpu);
}

#[test]
fn device_side_checks_fail_at_sync_and_the_stream_recovers() {
    let Some(dev) = common::device() else { return };
    let s = dev.default_stream();
    let table = upload(&dev, &[0u8; 4 * 8 * 3]);
    let ids = upload(&dev, &[1i32, 7, -1].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let out = dev.alloc(4 * 3 * 3).unwrap();
    let op = Op::Embedding(Embedding {
        table: Tensor::contiguous(table.clone(), 0, &[8, 3], DType::F32),
        ids: Tensor::contiguous(ids, 0, &[3], DType::I32),
        out: Tensor::contiguous(out.clone(), 0, &[3, 3], DType::F32),
    });
    s.launch(&op).expect("the ids are only known on the device");
    match s.sync() {
        Err(Error::InvalidArgument { op: "embedding", arg: "ids", reason }) => {
            assert!(reason.contains("element 2 is -1"), "{reason}")
        }
        other => panic!("expected the device to report ids[2] = -1, got {other:?}"),
    }
    // Reported once; later work on the stream is unaffected.
    s.sync().unwrap();
    let good = upload(&dev, &[1i32, 7, 0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
    let op = Op::Embedding(Embedding {
        table: Tensor::contiguous(table, 0, &[8, 3], DType::F32),
        ids: Tensor::contiguous(good, 0, &[3], DType::I32),
        out: Tensor::contiguous(out, 0, &[3, 3], DType::F32),
    });
    s.launch(&op).unwrap();
    s.sync().unwrap();
}

/// Per-row sampling parameters are checked in the kernel: a bad row is reported at sync, naming
/// `row_params` and the row; the good row is drawn.
#[test]
fn a_bad_per_row_sampling_entry_is_reported_at_sync() {
    use dsv3_core::ops::{RowSampling, Sample};
    let Some(dev) = common::device() else { return };
    let s = dev.default_stream();
    let good = RowSampling { temperature: 0.7, top_p: 0.9, seed: 3 };
    let words = RowSampling::encode(&[good, RowSampling { top_p: 1.5, ..good }]);
    let params = upload(&dev, &words.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>());
    let logits = upload(
        &dev,
        &[0.5f32, 1.0, -1.0, 2.0, 0.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>(),
    );
    let out = upload(&dev, &[0xff; 8]);
    let op = Op::Sample(Sample {
        logits: Tensor::contiguous(logits, 0, &[2, 3], DType::F32),
        temperature: 1.0,
        top_p: 1.0,
        seed: 0,
        row_params: Some(Tensor::contiguous(params, 0, &[2, RowSampling::WORDS], DType::I32)),
        out: Tensor::contiguous(out.clone(), 0, &[2], DType::I32),
    });
    s.launch(&op).expect("the entries are only read on the device");
    match s.sync() {
        Err(Error::InvalidArgument { op: "sample", arg: "row_params", reason }) => {
            assert!(reason.contains("element 1"), "{reason}")
        }
        other => panic!("expected the device to report row_params row 1, got {other:?}"),
    }
    let ids = download(&dev, &out);
    assert!((0..3).contains(&i32::from_le_bytes(ids[..4].try_into().unwrap())), "the good row is drawn");
    assert_eq!(ids[4..], [0xff; 4], "the bad row is left unwritten");
}

#[test]
fn discovery_without_a_driver_is_unavailable_not_a_panic() {
    // In a child process whose Vulkan loader is pointed at a driver manifest that does not exist.
    if std::env::var_os("DSV3_WGPU_CHILD").is_some() {
        match WgpuBackend::new().devices() {
            Err(Error::Unavailable { backend, reason }) => {
                assert_eq!(backend, "wgpu");
                assert!(!reason.is_empty());
                println!("CHILD-OK unavailable: {reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "discovery_without_a_driver_is_unavailable_not_a_panic", "--nocapture"])
        .env("DSV3_WGPU_CHILD", "1")
        .env("VK_ICD_FILENAMES", "/nonexistent/dsv3-no-driver.json")
        .env("VK_DRIVER_FILES", "/nonexistent/dsv3-no-driver.json")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("CHILD-OK"), "child failed:\n{text}");
    println!("{}", text.lines().find(|l| l.contains("CHILD-OK")).unwrap_or_default());
}
