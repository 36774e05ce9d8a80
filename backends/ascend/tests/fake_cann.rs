//! The Ascend backend end to end against the fake CANN (`fake_cann/fake_cann.c`), through the real FFI
//! layer: library discovery, device and memory plumbing, aclnnMatmul's two phases, error mapping and
//! release of every resource on every path.
//!
//! Each `#[test]` here is a parent that runs one `#[ignore]`d `child_*` test in a fresh process with the
//! fake's behaviour switches set (see `common::run_child`); the children are not meant to be run alone.

mod common;

use common::{run_child, split, whole, Probe};
use dsv3_backend_ascend::AscendBackend;
use dsv3_conformance::case::Operand;
use dsv3_conformance::cases::{self, gemm, gemm_strided};
use dsv3_conformance::{run_quick_against_oracle, runner, Status};
use dsv3_core::ops::{Activations, Gemm, Weights};
use dsv3_core::{Backend, Buffer, DType, Device, Error, Op, Tensor};
use half::bf16;
use std::sync::Arc;

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect()
}

fn from_bf16_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

/// C[2,3] = A[2,2] · B[3,2]ᵀ on small integers: exact in bf16, so a wrong layout cannot pass.
struct SmallGemm {
    op: Op,
    c: Buffer,
}

const SMALL_C: [f32; 6] = [17.0, 23.0, 29.0, 39.0, 53.0, 67.0];

fn small_gemm(dev: &Arc<dyn Device>) -> SmallGemm {
    let stream = dev.default_stream();
    let upload = |values: &[f32]| {
        let buf = dev.alloc(values.len() * 2).unwrap();
        stream.upload(&buf, 0, &bf16_bytes(values)).unwrap();
        buf
    };
    let a = upload(&[1.0, 2.0, 3.0, 4.0]);
    let b = upload(&[5.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
    let c = upload(&[-1.0; 6]);
    let op = Op::Gemm(Gemm {
        a: Activations::Dense(Tensor::contiguous(a, 0, &[2, 2], DType::BF16)),
        b: Weights::Dense(Tensor::contiguous(b, 0, &[3, 2], DType::BF16)),
        c: Tensor::contiguous(c.clone(), 0, &[2, 3], DType::BF16),
    });
    SmallGemm { op, c }
}

fn download_c(dev: &Arc<dyn Device>, c: &Buffer) -> Vec<f32> {
    let mut bytes = vec![0u8; 12];
    dev.default_stream().download(c, 0, &mut bytes).unwrap();
    from_bf16_bytes(&bytes)
}

fn open_fake() -> Arc<dyn Device> {
    let backend = AscendBackend::new();
    let infos = backend.devices().unwrap();
    assert_eq!(infos.len(), 1, "{infos:?}");
    assert!(infos[0].name.contains("FAKE"), "the fake must name itself: {:?}", infos[0]);
    backend.open(0).unwrap()
}

// ---- the conformance harness on the fake device ----

#[test]
fn conformance_gemm_on_the_fake_device() {
    let out = run_child("child_conformance", &whole(), &[]);
    println!("{out}");
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_conformance() {
    let probe = Probe::open();
    {
        let backend = AscendBackend::new();
        let report = run_quick_against_oracle(&backend);
        println!("{}", report.table());
        assert!(!report.failed(), "conformance failures: {}", report.summary());
        assert_eq!(report.count(Status::Unavailable), 0, "{}", report.summary());
        for r in &report.results {
            assert!(r.device.contains("FAKE"), "rows must name the device as fake: {}", r.device);
        }
        // Exactly the bf16 × bf16 → bf16 gemm cases run, and they pass.
        let mut expected: Vec<String> = cases::quick()
            .iter()
            .filter(|c| c.op == "gemm" && c.dtypes == "a=bf16,b=bf16,c=bf16")
            .map(|c| c.name.clone())
            .collect();
        let mut passed: Vec<String> =
            report.results.iter().filter(|r| r.status == Status::Pass).map(|r| r.case.clone()).collect();
        expected.sort();
        passed.sort();
        assert!(!expected.is_empty());
        assert_eq!(passed, expected);
        // Everything else is unsupported, with the aclnn operator that would serve it.
        for r in report.results.iter().filter(|r| r.status != Status::Pass) {
            assert_eq!(r.status, Status::Unsupported, "{} {}: {}", r.case, r.status.as_str(), r.reason);
            assert!(
                r.reason.contains("aclnn"),
                "{}: the reason should name an aclnn operator: {}",
                r.case,
                r.reason
            );
        }
        assert_eq!(probe.matmul_runs(), expected.len() as i64, "each passing case ran on the fake once");

        // More bf16-output shapes than the quick set has: strided A and C rows, K = 1, 1×1×1, odd edges,
        // a real projection's N.
        let bf = Operand::Dense(DType::BF16);
        let extra = vec![
            gemm_strided(5, 96, 160, bf, bf, DType::BF16, 200, 100),
            gemm(33, 257, 129, bf, bf, DType::BF16),
            gemm(17, 33, 1, bf, bf, DType::BF16),
            gemm(1, 1, 1, bf, bf, DType::BF16),
            gemm(64, 576, 256, bf, bf, DType::BF16),
        ];
        let report = runner::run(&[&backend], &extra, &runner::Options::default());
        println!("{}", report.table());
        assert_eq!(report.count(Status::Pass), extra.len(), "{}", report.table());
    }
    probe.assert_released(0);
}

// ---- the libraries' layout ----

#[test]
fn split_operator_libraries_of_cann_8() {
    run_child("child_split_layout", &split(), &[]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_split_layout() {
    let probe = Probe::open();
    {
        let dev = open_fake();
        let features = &dev.capabilities().features;
        assert!(features.iter().any(|f| f == "aclnnMatmul:libopapi_math.so"), "{features:?}");
        let g = small_gemm(&dev);
        let stream = dev.default_stream();
        stream.launch(&g.op).unwrap();
        stream.sync().unwrap();
        assert_eq!(download_c(&dev, &g.c), SMALL_C);
        // A download waits for earlier work by itself.
        let g2 = small_gemm(&dev);
        stream.launch(&g2.op).unwrap();
        assert_eq!(download_c(&dev, &g2.c), SMALL_C);
        assert_eq!(probe.matmul_runs(), 2);

        // Degenerate shapes: no rows is nothing to do; K = 0 is declined rather than guessed.
        let Op::Gemm(full) = &g.op else { unreachable!() };
        let (a, b) = (full.a.values().buffer.clone(), full.b.values().buffer.clone());
        let no_rows = Op::Gemm(Gemm {
            a: Activations::Dense(Tensor::contiguous(a.clone(), 0, &[0, 2], DType::BF16)),
            b: Weights::Dense(Tensor::contiguous(b.clone(), 0, &[3, 2], DType::BF16)),
            c: Tensor::contiguous(g.c.clone(), 0, &[0, 3], DType::BF16),
        });
        stream.launch(&no_rows).unwrap();
        stream.sync().unwrap();
        let k_zero = Op::Gemm(Gemm {
            a: Activations::Dense(Tensor::contiguous(a, 0, &[2, 0], DType::BF16)),
            b: Weights::Dense(Tensor::contiguous(b, 0, &[3, 0], DType::BF16)),
            c: Tensor::contiguous(g.c.clone(), 0, &[2, 3], DType::BF16),
        });
        assert!(!dev.supports(&k_zero).is_runnable());
        let err = stream.launch(&k_zero).unwrap_err();
        assert!(matches!(err, Error::Unsupported { op: "gemm", .. }), "{err}");
        assert_eq!(probe.matmul_runs(), 2, "neither reached aclnnMatmul");
        assert_eq!(download_c(&dev, &g.c), SMALL_C, "C untouched");
    }
    probe.assert_released(0);
}

// ---- no device, no initialisation ----

#[test]
fn no_device_is_unavailable() {
    run_child("child_no_device", &whole(), &[("FAKE_CANN_DEVICES", "0")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_no_device() {
    let backend = AscendBackend::new();
    let err = backend.devices().unwrap_err();
    let Error::Unavailable { reason, .. } = &err else { panic!("expected Unavailable, got {err}") };
    assert!(reason.contains("no Ascend device"), "{reason}");
    assert!(matches!(backend.open(0), Err(Error::Unavailable { .. })));
    let report = run_quick_against_oracle(&backend);
    assert!(report.count(Status::Unavailable) > 0);
    assert_eq!(report.count(Status::Unavailable), report.results.len(), "{}", report.summary());
}

#[test]
fn failing_acl_init_is_unavailable() {
    run_child("child_init_fails", &whole(), &[("FAKE_CANN_FAIL_INIT", "1")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_init_fails() {
    let err = AscendBackend::new().devices().unwrap_err();
    let Error::Unavailable { reason, .. } = &err else { panic!("expected Unavailable, got {err}") };
    assert!(reason.contains("aclInit failed: error 500004 (ACL_ERROR_DRV_FAILURE)"), "{reason}");
    assert!(reason.contains("FAKE_CANN_FAIL_INIT=1"), "the runtime's own message is kept: {reason}");
}

// ---- allocation failures ----

#[test]
fn failing_allocation_is_out_of_memory() {
    run_child("child_alloc_fails", &whole(), &[("FAKE_CANN_FAIL_MALLOC", "1")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_alloc_fails() {
    let probe = Probe::open();
    {
        let dev = open_fake();
        let err = dev.alloc(1024).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { bytes: 1024, .. }), "{err}");
        // Zero bytes needs no device memory at all.
        let empty = dev.alloc(0).unwrap();
        assert_eq!(empty.len(), 0);
    }
    probe.assert_released(0);
}

#[test]
fn failing_workspace_allocation_releases_the_rest() {
    run_child(
        "child_workspace_alloc_fails",
        &whole(),
        &[("FAKE_CANN_MALLOC_LIMIT", "4096"), ("FAKE_CANN_WORKSPACE_BYTES", "1048576")],
    );
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_workspace_alloc_fails() {
    let probe = Probe::open();
    {
        let dev = open_fake();
        let g = small_gemm(&dev);
        let stream = dev.default_stream();
        let err = stream.launch(&g.op).unwrap_err();
        assert!(matches!(err, Error::OutOfMemory { bytes: 1048576, .. }), "{err}");
        stream.sync().unwrap();
        assert_eq!(download_c(&dev, &g.c), [-1.0; 6], "C is untouched");
    }
    // The first phase's executor cannot be released without running it (CANN has no call for that):
    // the one known leak, host-side. Descriptors and memory are all released.
    probe.assert_released(1);
}

// ---- a failing operator, in each phase ----

#[test]
fn matmul_failing_in_its_first_phase() {
    run_child("child_matmul_fails_first_phase", &whole(), &[("FAKE_CANN_FAIL_MATMUL", "workspace")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_matmul_fails_first_phase() {
    let probe = Probe::open();
    {
        let dev = open_fake();
        let g = small_gemm(&dev);
        let err = dev.default_stream().launch(&g.op).unwrap_err();
        let Error::Kernel { op, kernel, reason, .. } = &err else { panic!("expected Kernel, got {err}") };
        assert_eq!((*op, kernel.as_str()), ("gemm", "aclnnMatmulGetWorkspaceSize"));
        assert!(reason.contains("error 161002 (ACLNN_ERR_PARAM_INVALID)"), "{reason}");
        assert!(reason.contains("FAKE_CANN_FAIL_MATMUL=workspace"), "{reason}");
        // The stream is still usable.
        assert_eq!(download_c(&dev, &g.c), [-1.0; 6]);
    }
    probe.assert_released(0);
}

#[test]
fn matmul_failing_at_launch() {
    run_child("child_matmul_fails_launch", &whole(), &[("FAKE_CANN_FAIL_MATMUL", "launch")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_matmul_fails_launch() {
    let probe = Probe::open();
    {
        let dev = open_fake();
        let g = small_gemm(&dev);
        let err = dev.default_stream().launch(&g.op).unwrap_err();
        let Error::Kernel { kernel, reason, .. } = &err else { panic!("expected Kernel, got {err}") };
        assert_eq!(kernel, "aclnnMatmul");
        assert!(reason.contains("error 361001 (ACLNN_ERR_RUNTIME_ERROR)"), "{reason}");
        assert_eq!(download_c(&dev, &g.c), [-1.0; 6]);
    }
    probe.assert_released(0);
}

#[test]
fn matmul_failing_asynchronously() {
    run_child("child_matmul_fails_async", &whole(), &[("FAKE_CANN_FAIL_MATMUL", "sync")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_matmul_fails_async() {
    let probe = Probe::open();
    {
        let dev = open_fake();
        let stream = dev.default_stream();
        // The error surfaces at `sync`...
        let g = small_gemm(&dev);
        stream.launch(&g.op).unwrap();
        let err = stream.sync().unwrap_err();
        let Error::Kernel { op, kernel, reason, .. } = &err else { panic!("expected Kernel, got {err}") };
        assert_eq!((*op, kernel.as_str()), ("gemm", "aclnnMatmul"));
        assert!(reason.contains("error 507015 (ACL_ERROR_RT_AICORE_EXCEPTION)"), "{reason}");
        assert!(reason.contains("AI Core exception"), "{reason}");
        stream.sync().unwrap();
        // ...or at the next transfer, which waits for the stream first.
        let g2 = small_gemm(&dev);
        stream.launch(&g2.op).unwrap();
        let mut c = vec![0u8; 12];
        let err = stream.download(&g2.c, 0, &mut c).unwrap_err();
        assert!(matches!(err, Error::Kernel { .. }), "{err}");
        assert_eq!(download_c(&dev, &g2.c), [-1.0; 6]);
    }
    probe.assert_released(0);
}
