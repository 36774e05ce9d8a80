//! Events and cross-device moves of the GPU layer, on the host emulator (its queues run work when it is
//! enqueued, so these tests check what is waited for and what is copied, not timing):
//! * an event recorded on one stream orders another stream's later work, on the same device and across
//!   devices; events of a foreign backend (the CPU) are waited for on the host, in both directions;
//! * `move_tensor` copies directly between emulator devices and between CPU devices (the backend's
//!   `copy_from_peer` path), through the host between the two backends, bit for bit every way.

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_core::move_check::assert_moves_bitwise;
use dsv3_core::ops::Add;
use dsv3_core::{transfer, Backend, Buffer, DType, Device, Error, Finished, Op, Stream, Tensor};
use std::sync::Arc;

fn emu() -> Arc<dyn Device> {
    EmulatorBackend::new(32).open(0).unwrap()
}

fn cpu() -> Arc<dyn Device> {
    CpuBackend::new(Mode::Fast).open(0).unwrap()
}

fn upload_f32(dev: &dyn Device, stream: &dyn Stream, values: &[f32]) -> Tensor {
    let t = Tensor::contiguous(dev.alloc(values.len() * 4).unwrap(), 0, &[1, values.len()], DType::F32);
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    stream.upload(&t.buffer, 0, &bytes).unwrap();
    t
}

fn download_f32(stream: &dyn Stream, t: &Tensor) -> Vec<f32> {
    let mut bytes = vec![0u8; t.span_bytes()];
    stream.download(&t.buffer, t.offset, &mut bytes).unwrap();
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn add(dev: &dyn Device, stream: &dyn Stream, a: &Tensor, b: &Tensor) -> Tensor {
    let out = Tensor::contiguous(dev.alloc(a.span_bytes()).unwrap(), 0, &a.shape, DType::F32);
    stream.launch(&Op::Add(Add { a: a.clone(), b: b.clone(), out: out.clone() })).unwrap();
    out
}

/// Stream `first` computes x + x, `second` waits for its event and adds x again: 3x only if the wait
/// ordered `second`'s launch after `first`'s.
fn chain(dev: &dyn Device, first: &dyn Stream, second: &dyn Stream) -> Vec<f32> {
    let x = upload_f32(dev, first, &[1.0, -2.0, 0.5, 8.0]);
    let twice = add(dev, first, &x, &x);
    second.wait(first.record().unwrap().as_ref()).unwrap();
    let thrice = add(dev, second, &twice, &x);
    download_f32(second, &thrice)
}

#[test]
fn an_event_orders_another_streams_work() {
    let dev = emu();
    let side = dev.new_stream().unwrap();
    assert_eq!(chain(dev.as_ref(), dev.default_stream().as_ref(), side.as_ref()), [3.0, -6.0, 1.5, 24.0]);
    assert_eq!(chain(dev.as_ref(), side.as_ref(), dev.default_stream().as_ref()), [3.0, -6.0, 1.5, 24.0]);
}

#[test]
fn a_gpu_event_waits_across_devices_and_on_the_host() {
    let (a, b) = (emu(), emu());
    let x = upload_f32(a.as_ref(), a.default_stream().as_ref(), &[4.0, 5.0]);
    let y = add(a.as_ref(), a.default_stream().as_ref(), &x, &x);
    let event = a.default_stream().record().unwrap();
    b.default_stream().wait(event.as_ref()).unwrap();
    event.synchronize().unwrap();
    let moved =
        transfer::move_tensor(&y, a.default_stream().as_ref(), b.as_ref(), b.default_stream().as_ref())
            .unwrap();
    assert_eq!(download_f32(b.default_stream().as_ref(), &moved), [8.0, 10.0]);
}

#[test]
fn events_of_a_foreign_backend_are_waited_for_on_the_host() {
    let (gpu, host) = (emu(), cpu());
    // A CPU event (work already finished) waited for by an emulator stream, and an emulator event by a CPU
    // stream (the trait's host wait).
    let cpu_event = host.default_stream().record().unwrap();
    assert!(cpu_event.as_any().is::<Finished>(), "the CPU records finished events");
    gpu.default_stream().wait(cpu_event.as_ref()).unwrap();
    gpu.default_stream().wait(&Finished).unwrap();
    let gpu_event = gpu.default_stream().record().unwrap();
    assert!(!gpu_event.as_any().is::<Finished>(), "the GPU stream records its queue's events");
    host.default_stream().wait(gpu_event.as_ref()).unwrap();
}

/// Whether the destination's stream has a direct path from `src`'s device (asked with a 4-byte copy into
/// a scratch buffer of `dst`).
fn direct(src: &dyn Device, dst: &dyn Device) -> bool {
    let from = src.alloc(4).unwrap();
    src.default_stream().upload(&from, 0, &[1, 2, 3, 4]).unwrap();
    let to = dst.alloc(4).unwrap();
    let copied = dst.default_stream().copy_from_peer(src.default_stream().as_ref(), &from, 0, &to, 0, 4);
    match copied {
        None => false,
        Some(result) => {
            result.unwrap();
            let mut back = [0u8; 4];
            dst.default_stream().download(&to, 0, &mut back).unwrap();
            assert_eq!(back, [1, 2, 3, 4]);
            true
        }
    }
}

#[test]
fn tensors_move_bit_for_bit_on_every_path() {
    let (emu_a, emu_b, cpu_a, cpu_b) = (emu(), emu(), cpu(), cpu());
    let hip_emu = EmulatorBackend::new(64).open(0).unwrap();
    let pairs = [
        (&emu_a, &emu_b, true),
        (&emu_a, &hip_emu, true),
        (&cpu_a, &cpu_b, true),
        (&cpu_a, &emu_a, false),
        (&emu_a, &cpu_a, false),
        (&emu_a, &emu_a, false),
    ];
    for (src, dst, want_direct) in pairs {
        let path = format!("{} -> {}", src.id(), dst.id());
        if src.id() != dst.id() {
            assert_eq!(direct(src.as_ref(), dst.as_ref()), want_direct, "{path}: direct path");
        }
        assert_moves_bitwise(
            src.as_ref(),
            src.default_stream().as_ref(),
            dst.as_ref(),
            dst.default_stream().as_ref(),
        );
    }
}

#[test]
fn a_peer_copy_checks_both_ranges() {
    for (src, dst) in [(emu(), emu()), (cpu(), cpu())] {
        let (from, to): (Buffer, Buffer) = (src.alloc(64).unwrap(), dst.alloc(64).unwrap());
        let stream = dst.default_stream();
        let src_stream = src.default_stream();
        for (src_offset, dst_offset) in [(32, 0), (0, 32)] {
            match stream.copy_from_peer(src_stream.as_ref(), &from, src_offset, &to, dst_offset, 48) {
                Some(Err(Error::Buffer { reason, .. })) => assert!(reason.contains("outside"), "{reason}"),
                other => panic!("{}: expected a range error, got {:?}", dst.id(), other.map(|r| r.err())),
            }
        }
        // The destination must be the stream's own device's.
        match stream.copy_from_peer(src_stream.as_ref(), &from, 0, &from, 0, 8) {
            Some(Err(Error::Buffer { reason, .. })) => assert!(reason.contains("belongs to"), "{reason}"),
            other => panic!("{}: expected an ownership error, got {:?}", dst.id(), other.map(|r| r.err())),
        }
    }
}
