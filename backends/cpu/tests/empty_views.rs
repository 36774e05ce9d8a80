//! Degenerate shapes must neither panic nor misbehave, in both modes: empty outputs whose offset points
//! into another output's bytes, and K = 0 products (which must write zeros, not leave memory as it was).

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::ops::{Activations, Gemm, MoeDispatch, Weights};
use dsv3_core::{Backend, DType, Op, Tensor};

fn modes() -> [Mode; 2] {
    [Mode::Reference, Mode::Fast]
}

#[test]
fn dispatch_of_zero_tokens_with_an_empty_output_inside_another() {
    for mode in modes() {
        let dev = CpuBackend::new(mode).open(0).unwrap();
        let stream = dev.default_stream();
        let buf = dev.alloc(64).unwrap();
        stream.upload(&buf, 0, &[0xEE; 64]).unwrap();
        let experts = 4;
        // expert_offsets covers bytes 0..20; the empty `rows` and `slot_rows` views point into it.
        let op = Op::MoeDispatch(MoeDispatch {
            x: Tensor::contiguous(buf.clone(), 32, &[0, 8], DType::F32),
            ids: Tensor::contiguous(buf.clone(), 48, &[0, 2], DType::I32),
            n_experts: experts,
            rows: Tensor::contiguous(buf.clone(), 8, &[0, 8], DType::F32),
            expert_offsets: Tensor::contiguous(buf.clone(), 0, &[experts + 1], DType::I32),
            slot_rows: Tensor::contiguous(buf.clone(), 12, &[0], DType::I32),
        });
        stream.launch(&op).unwrap();
        let mut offsets = [0u8; 20];
        stream.download(&buf, 0, &mut offsets).unwrap();
        assert_eq!(offsets, [0u8; 20], "{mode:?}: every expert's range is empty");
    }
}

#[test]
fn gemm_with_k_zero_writes_zeros_and_m_zero_writes_nothing() {
    for mode in modes() {
        let dev = CpuBackend::new(mode).open(0).unwrap();
        let stream = dev.default_stream();
        let buf = dev.alloc(256).unwrap();
        stream.upload(&buf, 0, &[0xEE; 256]).unwrap();
        let gemm = |m: usize, k: usize| {
            Op::Gemm(Gemm {
                a: Activations::Dense(Tensor::contiguous(buf.clone(), 0, &[m, k], DType::F32)),
                b: Weights::Dense(Tensor::contiguous(buf.clone(), 0, &[3, k], DType::F32)),
                c: Tensor::contiguous(buf.clone(), 128, &[m, 3], DType::F32),
            })
        };
        stream.launch(&gemm(2, 0)).unwrap();
        let mut c = [0u8; 24];
        stream.download(&buf, 128, &mut c).unwrap();
        assert_eq!(c, [0u8; 24], "{mode:?}: an empty sum is zero");
        stream.upload(&buf, 128, &[0xEE; 24]).unwrap();
        stream.launch(&gemm(0, 5)).unwrap();
        stream.download(&buf, 128, &mut c).unwrap();
        assert_eq!(c, [0xEE; 24], "{mode:?}: no rows, no writes");
    }
}

#[test]
fn a_shape_that_overflows_the_address_space_is_a_typed_error() {
    use dsv3_core::ops::Add;
    use dsv3_core::Error;
    let dev = CpuBackend::new(Mode::Fast).open(0).unwrap();
    let buf = dev.alloc(64).unwrap();
    let huge = Tensor::contiguous(buf.clone(), 0, &[usize::MAX / 2, 4], DType::F32);
    let small = Tensor::contiguous(buf.clone(), 0, &[2, 4], DType::F32);
    let op = Op::Add(Add { a: huge, b: small.clone(), out: small });
    match dev.default_stream().launch(&op) {
        Err(Error::InvalidArgument { op: "add", arg: "a", .. }) => {}
        other => panic!("expected an invalid-argument error naming add/a, got {other:?}"),
    }
}
