//! Graph capture on the host emulator: captured work does not run until replayed, a replay runs it again on
//! whatever its buffers hold then, a graph keeps its buffers alive, kernels' device-side checks still
//! surface at `sync` after a replay, and anything needing the host mid-stream is an error that spoils the
//! capture without leaving the stream in capture mode. On the CPU backend capture is `Unsupported`.

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_core::ops::{Add, Embedding};
use dsv3_core::{Backend, DType, Device, Error, Op, Stream, Tensor};
use std::sync::Arc;

fn emu() -> Arc<dyn Device> {
    EmulatorBackend::new(32).open(0).unwrap()
}

fn tensor(dev: &dyn Device, shape: &[usize], dtype: DType) -> Tensor {
    let bytes = shape.iter().product::<usize>() * dtype.size();
    Tensor::contiguous(dev.alloc(bytes).unwrap(), 0, shape, dtype)
}

fn upload(stream: &dyn Stream, t: &Tensor, values: &[f32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    stream.upload(&t.buffer, t.offset, &bytes).unwrap();
}

fn upload_i32(stream: &dyn Stream, t: &Tensor, values: &[i32]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    stream.upload(&t.buffer, t.offset, &bytes).unwrap();
}

fn download_f32(stream: &dyn Stream, t: &Tensor) -> Vec<f32> {
    let mut bytes = vec![0u8; t.span_bytes()];
    stream.download(&t.buffer, t.offset, &mut bytes).unwrap();
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn add(stream: &dyn Stream, a: &Tensor, b: &Tensor, out: &Tensor) -> dsv3_core::Result<()> {
    stream.launch(&Op::Add(Add { a: a.clone(), b: b.clone(), out: out.clone() }))
}

fn invalid_call(e: Error) -> &'static str {
    match e {
        Error::InvalidArgument { op, arg: "stream", .. } => op,
        other => panic!("expected InvalidArgument on the stream, got {other}"),
    }
}

#[test]
fn the_emulator_says_it_captures() {
    assert!(emu().capabilities().graph_capture);
    assert!(!CpuBackend::new(Mode::Fast).open(0).unwrap().capabilities().graph_capture);
}

#[test]
fn replay_runs_the_captured_work_again_on_new_inputs() {
    let dev = emu();
    let s = dev.default_stream();
    let x = tensor(dev.as_ref(), &[1, 4], DType::F32);
    let out = tensor(dev.as_ref(), &[1, 4], DType::F32);
    upload(s.as_ref(), &x, &[1.0, 2.0, 3.0, 4.0]);
    upload(s.as_ref(), &out, &[0.0; 4]);

    s.begin_capture().unwrap();
    // x + x into a buffer only the graph holds afterwards, then + x: 3x, through a device copy as well.
    let mid = tensor(dev.as_ref(), &[1, 4], DType::F32);
    add(s.as_ref(), &x, &x, &mid).unwrap();
    let copied = tensor(dev.as_ref(), &[1, 4], DType::F32);
    s.copy(&mid.buffer, 0, &copied.buffer, 0, 16).unwrap();
    add(s.as_ref(), &copied, &x, &out).unwrap();
    let graph = s.end_capture().unwrap();
    drop((mid, copied));

    assert_eq!(download_f32(s.as_ref(), &out), [0.0; 4], "captured work does not run until replayed");
    graph.replay().unwrap();
    s.sync().unwrap();
    assert_eq!(download_f32(s.as_ref(), &out), [3.0, 6.0, 9.0, 12.0]);
    upload(s.as_ref(), &x, &[-1.0, 0.5, 10.0, 0.0]);
    graph.replay().unwrap();
    drop(graph); // its work is enqueued: the stream keeps its buffers until the sync
    s.sync().unwrap();
    assert_eq!(download_f32(s.as_ref(), &out), [-3.0, 1.5, 30.0, 0.0]);
}

#[test]
fn device_side_checks_surface_at_sync_after_a_replay() {
    let dev = emu();
    let s = dev.default_stream();
    let table = tensor(dev.as_ref(), &[3, 4], DType::F32);
    upload(s.as_ref(), &table, &(0..12).map(|i| i as f32).collect::<Vec<_>>());
    let ids = tensor(dev.as_ref(), &[2], DType::I32);
    let out = tensor(dev.as_ref(), &[2, 4], DType::F32);
    s.begin_capture().unwrap();
    let op = Embedding { table: table.clone(), ids: ids.clone(), out: out.clone() };
    s.launch(&Op::Embedding(op)).unwrap();
    let graph = s.end_capture().unwrap();

    upload_i32(s.as_ref(), &ids, &[2, 0]);
    graph.replay().unwrap();
    s.sync().unwrap();
    assert_eq!(download_f32(s.as_ref(), &out), [8.0, 9.0, 10.0, 11.0, 0.0, 1.0, 2.0, 3.0]);

    upload_i32(s.as_ref(), &ids, &[1, 3]);
    graph.replay().unwrap();
    match s.sync() {
        Err(Error::InvalidArgument { op: "embedding", arg: "ids", .. }) => {}
        other => panic!("expected the kernel's id check at sync, got {other:?}"),
    }
    s.sync().unwrap();
}

#[test]
fn host_calls_while_capturing_are_errors_and_spoil_the_capture() {
    let dev = emu();
    let s = dev.default_stream();
    let x = tensor(dev.as_ref(), &[1, 4], DType::F32);
    let out = tensor(dev.as_ref(), &[1, 4], DType::F32);
    upload(s.as_ref(), &x, &[1.0, 2.0, 3.0, 4.0]);
    let mut host = [0u8; 16];
    type Call = fn(&dyn Stream, &Tensor, &mut [u8; 16]) -> dsv3_core::Result<()>;
    let calls: [(&str, Call); 4] = [
        ("download", |s, t, h| s.download(&t.buffer, 0, &mut h[..])),
        ("upload", |s, t, h| s.upload(&t.buffer, 0, &h[..])),
        ("sync", |s, _, _| s.sync()),
        ("record", |s, _, _| s.record().map(drop)),
    ];
    for (name, call) in calls {
        s.begin_capture().unwrap();
        add(s.as_ref(), &x, &x, &out).unwrap();
        assert_eq!(invalid_call(call(s.as_ref(), &x, &mut host).unwrap_err()), name);
        let e = s.end_capture().err().expect("a spoilt capture gives no graph");
        assert_eq!(invalid_call(e), "end_capture");
        // The stream left capture mode: it runs work eagerly again.
        add(s.as_ref(), &x, &x, &out).unwrap();
        assert_eq!(download_f32(s.as_ref(), &out), [2.0, 4.0, 6.0, 8.0], "after a spoilt {name}");
    }
}

#[test]
fn a_failing_launch_spoils_the_capture_and_capture_calls_pair_up() {
    let dev = emu();
    let s = dev.default_stream();
    let x = tensor(dev.as_ref(), &[1, 4], DType::F32);
    let wrong = tensor(dev.as_ref(), &[1, 3], DType::F32);
    assert_eq!(invalid_call(s.end_capture().err().unwrap()), "end_capture");
    s.begin_capture().unwrap();
    assert_eq!(invalid_call(s.begin_capture().unwrap_err()), "begin_capture");
    assert!(matches!(add(s.as_ref(), &x, &wrong, &x), Err(Error::InvalidArgument { op: "add", .. })));
    match s.end_capture() {
        Err(Error::InvalidArgument { op: "end_capture", reason, .. }) => {
            assert!(reason.contains("add"), "{reason}")
        }
        Err(other) => panic!("expected the spoilt capture, got {other}"),
        Ok(_) => panic!("a capture with a failed launch gave a graph"),
    }
    s.begin_capture().unwrap();
    let graph = s.end_capture().unwrap();
    graph.replay().unwrap();
    s.sync().unwrap();
}

#[test]
fn the_cpu_backend_cannot_capture() {
    let dev = CpuBackend::new(Mode::Fast).open(0).unwrap();
    let s = dev.default_stream();
    assert!(matches!(s.begin_capture(), Err(Error::Unsupported { op: "begin_capture", .. })));
    assert!(matches!(s.end_capture(), Err(Error::Unsupported { op: "end_capture", .. })));
}
