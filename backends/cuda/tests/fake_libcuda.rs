//! The CUDA backend's host side against a fake libcuda (`fake_cuda/libcuda.c`, built here with the system
//! C compiler): no driver, a driver without a device, an incomplete driver, and a "device" whose memory is
//! host memory and which refuses launches — every path must end in a typed error, never a panic.
//!
//! Each `#[test]` is a parent that runs one `#[ignore]`d `child_*` test in a fresh process (the loader path
//! and cudarc's loaded library are per process) and checks that it really ran and passed.

use dsv3_backend_cuda::CudaBackend;
use dsv3_core::move_check::assert_moves_bitwise;
use dsv3_core::ops::Add;
use dsv3_core::{Backend, DType, Error, Finished, Op, Stream, Support, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Which fake: complete, without cuLaunchKernel (unusable), or without the graph entry points; or complete
/// with a fake libcublasLt beside it (`fake_cuda/libcublasLt.c`), complete or without
/// cublasLtMatrixTransform.
#[derive(Clone, Copy)]
enum Fake {
    Complete,
    Incomplete,
    NoGraphs,
    WithLt,
    WithIncompleteLt,
}

/// Builds `source` (under tests/fake_cuda) as `dir/file` with the system C compiler.
fn compile_fake(source: &str, dir: &Path, file: &str, define: Option<&str>) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_cuda").join(source);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(["-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(dir.join(file))
        .arg(&source);
    cmd.args(define);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
    assert!(
        out.status.success(),
        "building {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fake built as `libcuda.so` / `libcuda.so.1` (and `libcublasLt.so.13`) in a directory of its own.
fn fake(which: Fake) -> PathBuf {
    static DIRS: [OnceLock<PathBuf>; 5] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new(), OnceLock::new()];
    DIRS[which as usize]
        .get_or_init(|| {
            let (kind, define, lt) = match which {
                Fake::Complete => ("complete", None, None),
                Fake::Incomplete => ("incomplete", Some("-DINCOMPLETE"), None),
                Fake::NoGraphs => ("no-graphs", Some("-DNO_GRAPHS"), None),
                Fake::WithLt => ("cublaslt", None, Some(None)),
                Fake::WithIncompleteLt => ("cublaslt-incomplete", None, Some(Some("-DINCOMPLETE"))),
            };
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("fake_cuda-{}-{kind}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            compile_fake("libcuda.c", &dir, "libcuda.so.1", define);
            std::os::unix::fs::symlink("libcuda.so.1", dir.join("libcuda.so")).unwrap();
            if let Some(define) = lt {
                compile_fake("libcublasLt.c", &dir, "libcublasLt.so.13", define);
            }
            dir
        })
        .clone()
}

fn run_child(name: &str, lib_dir: &Path, vars: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    for (key, _) in std::env::vars() {
        if key.starts_with("FAKE_CUDA_")
            || key.starts_with("FAKE_CUBLASLT_")
            || key == "DSV3_CUDA_LIB_DIR"
            || key == "DSV3_CUDA_GEMM"
        {
            cmd.env_remove(key);
        }
    }
    cmd.env("LD_LIBRARY_PATH", lib_dir);
    for (key, value) in vars {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child test `{name}` failed:\n{text}");
    assert!(
        text.contains("running 1 test") && text.contains("test result: ok. 1 passed"),
        "child test `{name}` did not run exactly one passing test:\n{text}"
    );
    dsv3_core::testing::check_child(name, &text);
    text
}

fn unavailable_reason(e: Error) -> String {
    match e {
        Error::Unavailable { backend, reason } => {
            assert_eq!(backend, "cuda");
            reason
        }
        other => panic!("expected Unavailable, got {other}"),
    }
}

#[test]
fn a_machine_without_libcuda_says_so() {
    let empty = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-libcuda");
    std::fs::create_dir_all(&empty).unwrap();
    run_child("child_no_libcuda", &empty, &[]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_no_libcuda() {
    // SAFETY: only probes whether the library can be opened.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        let why = "a real libcuda is installed on this machine: the no-driver path cannot be shown here";
        return dsv3_core::testing::not_run("child_no_libcuda", why);
    }
    let reason = unavailable_reason(CudaBackend::new().devices().unwrap_err());
    assert!(reason.contains("libcuda.so not found"), "{reason}");
    assert!(CudaBackend::new().open(0).is_err());
    dsv3_core::testing::child_ran("child_no_libcuda");
}

#[test]
fn a_driver_without_a_device_is_unavailable_not_a_panic() {
    run_child("child_no_device", &fake(Fake::Complete), &[("FAKE_CUDA_DEVICES", "0")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_no_device() {
    let reason = unavailable_reason(CudaBackend::new().devices().unwrap_err());
    assert!(reason.contains("cuInit") && reason.contains("CUDA_ERROR_NO_DEVICE"), "{reason}");
    assert!(reason.contains("no CUDA-capable device"), "the driver's own text is kept: {reason}");
    assert!(matches!(CudaBackend::new().open(0), Err(Error::Unavailable { .. })));
    dsv3_core::testing::child_ran("child_no_device");
}

#[test]
fn an_incomplete_driver_is_named_not_called() {
    run_child("child_incomplete", &fake(Fake::Incomplete), &[]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_incomplete() {
    let reason = unavailable_reason(CudaBackend::new().devices().unwrap_err());
    assert!(reason.contains("lacks cuLaunchKernel"), "{reason}");
    dsv3_core::testing::child_ran("child_incomplete");
}

#[test]
fn a_device_without_nvrtc_is_listed_as_unable_to_compile() {
    run_child("child_without_nvrtc", &fake(Fake::Complete), &[("DSV3_CUDA_LIB_DIR", "/nonexistent")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_without_nvrtc() {
    if dsv3_backend_cuda::nvrtc::ensure_loaded().is_ok() {
        let why =
            "NVRTC is installed where the backend looks by default: the no-NVRTC path cannot be shown here";
        return dsv3_core::testing::not_run("child_without_nvrtc", why);
    }
    let reason = unavailable_reason(CudaBackend::new().devices().unwrap_err());
    assert!(reason.contains("FAKE CUDA DEVICE") && reason.contains("NVRTC"), "{reason}");
    dsv3_core::testing::child_ran("child_without_nvrtc");
}

/// A counter exported by the fake, read through the copy the backend loaded (same file, same mapping).
fn fake_counter(name: &str) -> i32 {
    // SAFETY: the fake's counters take nothing and return an int.
    unsafe {
        let lib = libloading::Library::new("libcuda.so.1").unwrap();
        let f = lib.get::<unsafe extern "C" fn() -> i32>(name.as_bytes()).unwrap();
        f()
    }
}

/// The NVRTC directory for a child that opens devices; `None` (and the test reported as not run) when this
/// machine has no NVRTC.
fn nvrtc_vars(test: &str) -> Option<Vec<(&'static str, String)>> {
    let lib_dir = std::env::var("DSV3_CUDA_LIB_DIR").ok();
    if lib_dir.is_none() && dsv3_backend_cuda::nvrtc::ensure_loaded().is_err() {
        let msg = "NVRTC not found (set DSV3_CUDA_LIB_DIR; ci/check-cuda-kernels.sh fetches it)";
        dsv3_core::testing::not_run(test, msg);
        return None;
    }
    Some(lib_dir.into_iter().map(|d| ("DSV3_CUDA_LIB_DIR", d)).collect())
}

/// The whole host path on the fake device: discovery, memory, NVRTC compilation of a real kernel,
/// module loading, and a launch the "device" refuses — reported as a kernel error naming the op.
#[test]
fn the_host_path_reaches_the_driver_and_reports_its_errors() {
    let Some(vars) = nvrtc_vars("the_host_path_reaches_the_driver_and_reports_its_errors") else { return };
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_child("child_fake_device", &fake(Fake::Complete), &vars);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_device() {
    let backend = CudaBackend::new();
    let infos = backend.devices().unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].name, "FAKE CUDA DEVICE (dsv3 test)");
    assert_eq!(infos[0].arch, "sm_90a");
    let dev = backend.open(0).unwrap();
    let caps = dev.capabilities();
    assert!(!caps.fp8_formats.is_empty(), "compute capability 9.0 has FP8 tensor cores");
    assert!(caps.features.iter().any(|f| f.starts_with("nvrtc 1")), "{:?}", caps.features);

    // Memory round trip through the driver calls.
    let stream = dev.default_stream();
    let bytes: Vec<u8> = (0..=255).collect();
    let a = dev.alloc(256).unwrap();
    let b = dev.alloc(256).unwrap();
    stream.upload(&a, 0, &bytes).unwrap();
    stream.copy(&a, 16, &b, 0, 240).unwrap();
    let mut back = vec![0u8; 240];
    stream.download(&b, 0, &mut back).unwrap();
    assert_eq!(back, bytes[16..]);

    // A real kernel compiled by NVRTC and loaded; the fake refuses the launch: a typed error, no panic.
    let t = |buf: &dsv3_core::Buffer| Tensor::contiguous(buf.clone(), 0, &[4, 16], DType::F32);
    let c = dev.alloc(256).unwrap();
    let op = Op::Add(Add { a: t(&a), b: t(&b), out: t(&c) });
    assert_eq!(dev.supports(&op), Support::Native);
    match stream.launch(&op) {
        Err(Error::Kernel { backend, op, kernel, reason }) => {
            assert_eq!((backend.as_str(), op), ("cuda", "add"));
            assert!(kernel.starts_with("elementwise"), "{kernel}");
            assert!(
                reason.contains("cuLaunchKernel") && reason.contains("CUDA_ERROR_NOT_SUPPORTED"),
                "{reason}"
            );
        }
        other => panic!("expected the fake's launch error, got {other:?}"),
    }
    stream.sync().unwrap();
    // SAFETY: the fake's counter function, in the library the backend loaded (same mapping).
    let launches = unsafe {
        let lib = libloading::Library::new("libcuda.so.1").unwrap();
        let f = lib.get::<unsafe extern "C" fn() -> i32>(b"fake_cuda_launches").unwrap();
        f()
    };
    assert_eq!(launches, 1);
    dsv3_core::testing::child_ran("child_fake_device");
}

/// The fake driver's record of shared memory: (attribute calls, the attribute's value, the last launch's
/// dynamic shared memory); -1 for a value never set.
fn shared_counts() -> (i32, i32, i32) {
    let c = |name: &str| fake_counter(&format!("fake_cuda_{name}"));
    (c("attribute_sets"), c("dynamic_max"), c("last_shared"))
}

/// A gemm launch the fake refused as it refuses every launch (so every check before it passed: without the
/// opt-in it would be CUDA_ERROR_INVALID_VALUE, as a driver refuses it); the variant that ran.
fn refused_gemm(r: dsv3_core::Result<()>) -> String {
    match r {
        Err(Error::Kernel { backend, op: "gemm", kernel, reason }) => {
            assert_eq!(backend, "cuda");
            assert!(kernel.starts_with("gemm_mma"), "{kernel}");
            assert!(reason.contains("CUDA_ERROR_NOT_SUPPORTED"), "{reason}");
            kernel
        }
        other => panic!("expected the fake's launch error, got {other:?}"),
    }
}

/// Dynamic shared memory on the fake sm_90 (227 KiB per block once opted in; 128 bytes of static shared
/// memory per function): a bf16 prefill GEMM of 128 rows runs gemm_mma.cu's 128-row tile, whose 4-stage
/// ring (60 KiB) is above 48 KiB, so the launch path sets the function's MAX_DYNAMIC_SHARED_SIZE_BYTES to
/// 61440 — once — and the launch gives those bytes; 64 rows, and W8A8 at 128, run the 64-row tile's 30 KiB
/// ring with no attribute call; a launch past the device's limit is an error naming the kernel, before any driver call.
#[test]
fn dynamic_shared_memory_above_48_kib_is_opted_in_once() {
    let test = "dynamic_shared_memory_above_48_kib_is_opted_in_once";
    run_fake_child(test, "child_fake_dynamic_shared", Fake::Complete, &[("FAKE_CUDA_STATIC_SHARED", "128")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_dynamic_shared() {
    use dsv3_backend_gpu::runtime::{Dims, Runtime};
    let backend = CudaBackend::new();
    let dev = backend.open(0).unwrap();
    let stream = dev.default_stream();
    let s = stream.as_ref();
    let (prefill, _c) = Host::new(128, 64, 64, false, 64).op(dev.as_ref(), s, DType::BF16, 64);
    let kernel = refused_gemm(stream.launch(&prefill));
    assert!(kernel.contains("|BM=128|STAGES=4"), "{kernel}");
    assert_eq!(shared_counts(), (1, 61440, 61440), "opted in to the ring's bytes, which the launch gives");
    refused_gemm(stream.launch(&prefill));
    assert_eq!(shared_counts(), (1, 61440, 61440), "the attribute is set once per function");
    let (smaller, _c) = Host::new(64, 64, 64, false, 64).op(dev.as_ref(), s, DType::BF16, 64);
    assert!(refused_gemm(stream.launch(&smaller)).contains("|BM=64|STAGES=3"));
    assert_eq!(shared_counts(), (1, 61440, 30720), "within 48 KiB nothing is set");
    // W8A8 keeps the 64-row tile at any row count (ops/gemm.rs mma_big_form).
    let (w8a8, _c) = Host::new(128, 64, 128, true, 128).op(dev.as_ref(), s, DType::BF16, 64);
    assert!(refused_gemm(stream.launch(&w8a8)).contains("|A_FP8=1|B_FP8=1|GROUPED=0|BM=64|STAGES=3"));
    assert_eq!(shared_counts(), (1, 61440, 30720));
    s.sync().unwrap();
    assert_eq!(fake_counter("fake_cuda_launches"), 4);

    // Past the limit (128 static + 232321 dynamic = one byte over 227 KiB): refused before the driver.
    let rt = backend.runtime(0).unwrap();
    assert_eq!(rt.shared_limits(), dsv3_backend_gpu::SharedLimits { default: 49152, opt_in: 232448 });
    let v = dsv3_backend_gpu::ops::tile_catalog().into_iter().find(|v| v.key().contains("|BM=128|")).unwrap();
    let f = rt.compile("gemm", &v).unwrap();
    let dims = Dims { grid: [1, 1, 1], block: 128, shared: 232448 - 128 + 1 };
    match rt.new_queue().unwrap().launch("gemm", &f, dims, &[0; 20]) {
        Err(Error::Kernel { backend, op, kernel, reason }) => {
            assert_eq!((backend.as_str(), op, kernel), ("cuda", "gemm", v.key()));
            assert!(reason.contains("(128 static + 232321 dynamic), over the 232448"), "{reason}");
        }
        other => panic!("expected the limit's error, got {other:?}"),
    }
    assert_eq!(fake_counter("fake_cuda_launches"), 4, "the driver was not called");
    assert_eq!(shared_counts().0, 1);
    dsv3_core::testing::child_ran("child_fake_dynamic_shared");
}

/// A device whose opt-in limit leaves no room for the 128-row tile's ring (48 KiB, as before Volta): the
/// same 128-row GEMM runs the 64-row tile, no attribute is set.
#[test]
fn without_the_headroom_the_64_row_tile_runs() {
    let test = "without_the_headroom_the_64_row_tile_runs";
    run_fake_child(test, "child_fake_no_headroom", Fake::Complete, &[("FAKE_CUDA_SMEM_OPTIN", "49152")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_no_headroom() {
    let dev = CudaBackend::new().open(0).unwrap();
    let stream = dev.default_stream();
    let (prefill, _c) = Host::new(128, 64, 64, false, 64).op(dev.as_ref(), stream.as_ref(), DType::BF16, 64);
    assert!(refused_gemm(stream.launch(&prefill)).contains("|BM=64|STAGES=3"));
    assert_eq!(shared_counts(), (0, -1, 30720));
    dsv3_core::testing::child_ran("child_fake_no_headroom");
}

/// Events and moves between two fake devices: waits between CUDA streams, of one device or two, are enqueued
/// (cuStreamWaitEvent), never made on the host; a foreign event is waited for on the host; a tensor crosses
/// with one cuMemcpyPeerAsync, bit for bit; every event is destroyed.
#[test]
fn events_and_moves_between_devices_stay_on_the_devices() {
    let Some(mut vars) = nvrtc_vars("events_and_moves_between_devices_stay_on_the_devices") else { return };
    vars.push(("FAKE_CUDA_DEVICES", "2".into()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_child("child_fake_events", &fake(Fake::Complete), &vars);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_events() {
    let backend = CudaBackend::new();
    let (d0, d1) = (backend.open(0).unwrap(), backend.open(1).unwrap());
    let (s0, side, s1) = (d0.default_stream(), d0.new_stream().unwrap(), d1.default_stream());
    let counts = || {
        let c = |name: &str| fake_counter(&format!("fake_cuda_{name}"));
        (c("event_waits"), c("event_syncs"), c("peer_copies"))
    };

    let event = s0.record().unwrap();
    side.wait(event.as_ref()).unwrap();
    s1.wait(event.as_ref()).unwrap();
    assert_eq!(counts(), (2, 0, 0), "same-device and cross-device waits are enqueued on the waiting stream");
    side.wait(&Finished).unwrap();
    event.synchronize().unwrap();
    assert_eq!(counts(), (2, 1, 0), "a foreign event costs no call; the host waits with cuEventSynchronize");
    drop(event);
    assert_eq!(fake_counter("fake_cuda_events_live"), 0);

    assert_moves_bitwise(d0.as_ref(), s0.as_ref(), d1.as_ref(), s1.as_ref());
    assert_eq!(counts(), (4, 1, 1), "one peer copy, after the source's work and before its later work");
    assert_eq!(fake_counter("fake_cuda_events_live"), 0);
    dsv3_core::testing::child_ran("child_fake_events");
}

fn run_fake_child(test: &str, child: &str, which: Fake, extra: &[(&'static str, &str)]) {
    let Some(mut vars) = nvrtc_vars(test) else { return };
    vars.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run_child(child, &fake(which), &vars);
}

fn fake_bytes(dev: &dyn dsv3_core::Device, stream: &dyn Stream, bytes: &[u8]) -> dsv3_core::Buffer {
    let b = dev.alloc(bytes.len()).unwrap();
    stream.upload(&b, 0, bytes).unwrap();
    b
}

fn fake_download(stream: &dyn Stream, b: &dsv3_core::Buffer) -> Vec<u8> {
    let mut back = vec![0u8; b.len()];
    stream.download(b, 0, &mut back).unwrap();
    back
}

/// Capture on the fake driver: a captured device copy is not run until the graph is launched
/// (cuStreamBeginCapture in relaxed mode, cuStreamEndCapture, cuGraphInstantiateWithFlags, cuGraphLaunch),
/// runs again on new contents at each replay, and the graph and its executable are destroyed with it; a
/// launch the driver refuses while capturing spoils the capture (typed errors, nothing leaked), and so does a
/// download.
#[test]
fn stream_capture_becomes_a_cuda_graph() {
    run_fake_child("stream_capture_becomes_a_cuda_graph", "child_fake_graphs", Fake::Complete, &[]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_graphs() {
    let dev = CudaBackend::new().open(0).unwrap();
    assert!(dev.capabilities().graph_capture);
    let stream = dev.default_stream();
    let s = stream.as_ref();
    let a = fake_bytes(dev.as_ref(), s, &[7; 64]);
    let b = fake_bytes(dev.as_ref(), s, &[0; 64]);
    s.begin_capture().unwrap();
    s.copy(&a, 0, &b, 0, 64).unwrap();
    let graph = s.end_capture().unwrap();
    assert_eq!(fake_download(s, &b), [0; 64], "captured, not run");
    graph.replay().unwrap();
    s.sync().unwrap();
    assert_eq!(fake_download(s, &b), [7; 64]);
    s.upload(&a, 0, &[9; 64]).unwrap();
    graph.replay().unwrap();
    s.sync().unwrap();
    assert_eq!(fake_download(s, &b), [9; 64]);
    assert_eq!(fake_counter("fake_cuda_graph_launches"), 2);
    assert_eq!((fake_counter("fake_cuda_graphs_live"), fake_counter("fake_cuda_execs_live")), (1, 1));
    drop(graph);
    assert_eq!((fake_counter("fake_cuda_graphs_live"), fake_counter("fake_cuda_execs_live")), (0, 0));

    // A launch the driver refuses while capturing: the kernel error, then a capture that gives no graph.
    let t = |buf: &dsv3_core::Buffer| Tensor::contiguous(buf.clone(), 0, &[4, 4], DType::F32);
    let op = Op::Add(Add { a: t(&a), b: t(&a), out: t(&b) });
    s.begin_capture().unwrap();
    assert!(matches!(s.launch(&op), Err(Error::Kernel { op: "add", .. })));
    assert!(matches!(s.end_capture(), Err(Error::InvalidArgument { op: "end_capture", .. })));
    // A download while capturing is refused before it reaches the driver.
    s.begin_capture().unwrap();
    let mut host = [0u8; 4];
    assert!(matches!(s.download(&a, 0, &mut host), Err(Error::InvalidArgument { op: "download", .. })));
    assert!(s.end_capture().is_err());
    assert_eq!((fake_counter("fake_cuda_graphs_live"), fake_counter("fake_cuda_execs_live")), (0, 0));
    s.copy(&a, 0, &b, 0, 64).unwrap();
    s.upload(&a, 0, &[3; 64]).unwrap();
    assert_eq!(fake_download(s, &b), [9; 64], "the stream runs work eagerly again");
    dsv3_core::testing::child_ran("child_fake_graphs");
}

#[test]
fn a_graph_the_driver_cannot_instantiate_is_a_driver_error() {
    let test = "a_graph_the_driver_cannot_instantiate_is_a_driver_error";
    run_fake_child(
        test,
        "child_fake_instantiate_fails",
        Fake::Complete,
        &[("FAKE_CUDA_INSTANTIATE_FAILS", "1")],
    );
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_instantiate_fails() {
    let dev = CudaBackend::new().open(0).unwrap();
    let stream = dev.default_stream();
    let s = stream.as_ref();
    let a = fake_bytes(dev.as_ref(), s, &[5; 16]);
    let b = fake_bytes(dev.as_ref(), s, &[0; 16]);
    s.begin_capture().unwrap();
    s.copy(&a, 0, &b, 0, 16).unwrap();
    match s.end_capture() {
        Err(Error::Driver { backend, call, reason }) => {
            assert_eq!((backend.as_str(), call.as_str()), ("cuda", "cuGraphInstantiateWithFlags"));
            assert!(reason.contains("CUDA_ERROR_OUT_OF_MEMORY"), "{reason}");
        }
        Err(other) => panic!("expected the instantiation's driver error, got {other}"),
        Ok(_) => panic!("a graph the driver did not instantiate was returned"),
    }
    assert_eq!(fake_counter("fake_cuda_graphs_live"), 0, "the captured graph is destroyed");
    s.copy(&a, 0, &b, 0, 16).unwrap();
    assert_eq!(fake_download(s, &b), [5; 16], "the stream runs work eagerly again");
    dsv3_core::testing::child_ran("child_fake_instantiate_fails");
}

#[test]
fn a_driver_without_graphs_runs_without_capture() {
    run_fake_child(
        "a_driver_without_graphs_runs_without_capture",
        "child_fake_no_graphs",
        Fake::NoGraphs,
        &[],
    );
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_no_graphs() {
    let dev = CudaBackend::new().open(0).unwrap();
    assert!(!dev.capabilities().graph_capture);
    let stream = dev.default_stream();
    let s = stream.as_ref();
    match s.begin_capture() {
        Err(Error::Unsupported { backend, op: "begin_capture", reason }) => {
            assert_eq!(backend, "cuda");
            assert!(reason.contains("libcuda lacks"), "{reason}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let a = fake_bytes(dev.as_ref(), s, &[1; 16]);
    let b = fake_bytes(dev.as_ref(), s, &[0; 16]);
    s.copy(&a, 0, &b, 0, 16).unwrap();
    assert_eq!(fake_download(s, &b), [1; 16], "the device works without capture");
    dsv3_core::testing::child_ran("child_fake_no_graphs");
}

// cuBLASLt (`src/cublaslt.rs`) against the fake libcublasLt, which computes on the fake device's host
// memory with cuBLASLt's documented semantics: the inputs below are exact in f32 (few significand bits,
// power-of-two scales), so a correctly wired call gives C bit for bit, and a wrong transpose, leading
// dimension, scale mode or scale layout gives other numbers.

/// A value the fake recorded (`fake_lt` in libcublasLt.c), read through the copy the backend loaded.
fn lt(key: &str) -> i64 {
    let key = std::ffi::CString::new(key).unwrap();
    // SAFETY: the fake's `long long fake_lt(const char *)`, in the library the backend loaded.
    unsafe {
        let lib = libloading::Library::new("libcublasLt.so.13").unwrap();
        let f = lib.get::<unsafe extern "C" fn(*const std::ffi::c_char) -> i64>(b"fake_lt").unwrap();
        f(key.as_ptr())
    }
}

/// Whether the loader finds `name` (a fake on LD_LIBRARY_PATH, or a real library installed here).
fn loadable(name: &str) -> bool {
    // SAFETY: loading a (fake or real) cuBLASLt runs no initialiser with preconditions.
    unsafe { libloading::Library::new(name) }.is_ok()
}

/// Deterministic test values: `len` elements of `dtype` from a small generator, exact in f32 products
/// (bf16: eighths in [-1, 1]; e4m3: exponents 2^-1..2^2 with any mantissa and sign).
fn values(dtype: DType, len: usize, seed: u64) -> Vec<u8> {
    let mut bytes = vec![0u8; len * dtype.size()];
    let mut x = seed;
    for i in 0..len {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let r = (x >> 33) as u8;
        match dtype {
            DType::F8E4M3Fn => bytes[i] = (r & 0x80) | ((6 + (r >> 3) % 4) << 3) | (r & 7),
            _ => dtype.write_f64(&mut bytes, i, (r % 17) as f64 / 8.0 - 1.0),
        }
    }
    bytes
}

/// Power-of-two scales 2^-2..2^2.
fn scales(len: usize, seed: u64) -> Vec<u8> {
    (0..len).flat_map(|i| 2f32.powi(((i as u64 * 7 + seed) % 5) as i32 - 2).to_le_bytes()).collect()
}

/// A product's operands as host bytes: values (A with a row pitch), scales when FP8.
struct Host {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<u8>,
    a_pitch: usize,
    a_scales: Option<Vec<u8>>,
    b: Vec<u8>,
    b_scales: Option<Vec<u8>>,
    dtypes: (DType, DType),
}

impl Host {
    fn new(m: usize, n: usize, k: usize, fp8: bool, a_pitch: usize) -> Host {
        let t = if fp8 { DType::F8E4M3Fn } else { DType::BF16 };
        let kb = k.div_ceil(128);
        Host {
            m,
            n,
            k,
            a: values(t, m * a_pitch, 1),
            a_pitch,
            a_scales: fp8.then(|| scales(m * kb, 3)),
            b: values(t, n * k, 2),
            b_scales: fp8.then(|| scales(n.div_ceil(128) * kb, 4)),
            dtypes: (t, t),
        }
    }

    /// C exactly (f64; the inputs make every partial sum exact in f32 too), rounded once to `c`.
    fn expected(&self, c: DType, c_pitch: usize) -> Vec<u8> {
        let (ta, tb) = self.dtypes;
        let kb = self.k.div_ceil(128);
        let f32s = |b: &Option<Vec<u8>>, i: usize| b.as_ref().map_or(1.0, |s| DType::F32.read_f64(s, i));
        let mut out = vec![0u8; self.m * c_pitch * c.size()];
        for i in 0..self.m {
            for j in 0..self.n {
                let mut total = 0.0;
                for b0 in (0..self.k).step_by(128) {
                    let block: f64 = (b0..(b0 + 128).min(self.k))
                        .map(|x| {
                            ta.read_f64(&self.a, i * self.a_pitch + x) * tb.read_f64(&self.b, j * self.k + x)
                        })
                        .sum();
                    let kb_i = b0 / 128;
                    total += block
                        * f32s(&self.a_scales, i * kb + kb_i)
                        * f32s(&self.b_scales, (j / 128) * kb + kb_i);
                }
                c.write_f64(&mut out, i * c_pitch + j, total);
            }
        }
        out
    }

    /// The gemm on `dev` (C `[M, N]` with row pitch `c_pitch`) and its output buffer.
    fn op(
        &self,
        dev: &dyn dsv3_core::Device,
        s: &dyn Stream,
        c: DType,
        c_pitch: usize,
    ) -> (Op, dsv3_core::Buffer) {
        use dsv3_core::ops::{Activations, Gemm, Weights};
        let put = |bytes: &[u8]| fake_bytes(dev, s, bytes);
        let view = |b: dsv3_core::Buffer, shape: &[usize], pitch: usize, dtype| Tensor {
            buffer: b,
            offset: 0,
            shape: shape.to_vec(),
            strides: vec![pitch, 1],
            dtype,
        };
        let kb = self.k.div_ceil(128);
        let a = view(put(&self.a), &[self.m, self.k], self.a_pitch, self.dtypes.0);
        let b = view(put(&self.b), &[self.n, self.k], self.k, self.dtypes.1);
        let a = match &self.a_scales {
            Some(sc) => Activations::Fp8 { codes: a, scales: view(put(sc), &[self.m, kb], kb, DType::F32) },
            None => Activations::Dense(a),
        };
        let b = match &self.b_scales {
            Some(sc) => Weights::BlockFp8 {
                codes: b,
                scales: view(put(sc), &[self.n.div_ceil(128), kb], kb, DType::F32),
            },
            None => Weights::Dense(b),
        };
        let out = dev.alloc(self.m * c_pitch * c.size()).unwrap();
        (Op::Gemm(Gemm { a, b, c: view(out.clone(), &[self.m, self.n], c_pitch, c) }), out)
    }
}

fn device_address(b: &dsv3_core::Buffer) -> i64 {
    b.as_any().downcast_ref::<dsv3_backend_gpu::buffer::GpuBuffer>().unwrap().addr as i64
}

/// Every cuBLASLt object the backend made was destroyed (the handle lives with the device).
fn assert_lt_objects_released() {
    let live: Vec<i64> = ["descs", "layouts", "prefs", "tdescs"].iter().map(|k| lt(k)).collect();
    assert_eq!(live, [0, 0, 0, 0], "matmul descs, layouts, preferences, transform descs left alive");
}

#[test]
fn cublaslt_computes_bf16_gemms_in_the_tn_layout() {
    run_fake_child("cublaslt_computes_bf16_gemms_in_the_tn_layout", "child_lt_bf16", Fake::WithLt, &[]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_lt_bf16() {
    let dev = CudaBackend::new().open(0).unwrap();
    let features = dev.capabilities().features.join(" | ");
    assert!(
        features.contains("cublaslt 12.9.0 (libcublasLt.so.13): bf16 GEMM, block-FP8 GEMM"),
        "{features}"
    );
    let stream = dev.default_stream();
    let s = stream.as_ref();
    // Strided A and C: their pitches must become cuBLASLt's leading dimensions.
    let (m, n, k, a_pitch, c_pitch) = (24, 24, 40, 48, 32);
    let host = Host::new(m, n, k, false, a_pitch);
    for c in [DType::BF16, DType::F32] {
        let (op, out) = host.op(dev.as_ref(), s, c, c_pitch);
        assert_eq!(dev.supports(&op), Support::Library { library: "cublasLt 12.9.0".into() });
        stream.launch(&op).unwrap();
        let got = fake_download(s, &out);
        let want = host.expected(c, c_pitch);
        for i in 0..m {
            let row = |b: &[u8]| b[i * c_pitch * c.size()..(i * c_pitch + n) * c.size()].to_vec();
            assert_eq!(row(&got), row(&want), "C row {i} ({c})");
        }
        // Weights as cuBLASLt's A (K×N, ld K, transposed), activations as its B (K×M, ld = A's pitch),
        // C = D (N×M, ld = C's pitch).
        let recorded: Vec<i64> =
            ["transa", "transb", "a_type", "a_rows", "a_cols", "a_ld", "b_type", "b_rows", "b_cols", "b_ld"]
                .iter()
                .map(|key| lt(key))
                .collect();
        assert_eq!(
            recorded,
            [1, 0, 14, k as i64, n as i64, k as i64, 14, k as i64, m as i64, a_pitch as i64]
        );
        let d_type = if c == DType::BF16 { 14 } else { 0 };
        let c_recorded: Vec<i64> = [
            "c_rows",
            "c_cols",
            "c_ld",
            "d_type",
            "d_ld",
            "c_is_d",
            "compute",
            "scale_type",
            "a_mode",
            "b_mode",
        ]
        .iter()
        .map(|key| lt(key))
        .collect();
        assert_eq!(c_recorded, [n as i64, m as i64, c_pitch as i64, d_type, c_pitch as i64, 1, 68, 0, 0, 0]);
        // The algorithm's workspace (1000 bytes, rounded to 256) from the scratch pool, within the
        // ceiling asked of the heuristic (Hopper: 32 MiB).
        assert_eq!((lt("workspace_size"), lt("max_workspace")), (1024, 32 << 20));
        assert_eq!(lt("min_alignment"), 256, "the operands' alignment, promised to the heuristic");
        assert_ne!(lt("workspace"), 0);
        assert_ne!(lt("stream"), 0, "the queue's stream, not the legacy default stream");
    }
    assert_eq!(lt("matmuls"), 2);
    assert_eq!(lt("heuristics"), 2, "one heuristic query per descriptor, cached after");
    let again = host.op(dev.as_ref(), s, DType::BF16, c_pitch).0;
    stream.launch(&again).unwrap();
    assert_eq!((lt("matmuls"), lt("heuristics")), (3, 2));
    s.sync().unwrap();
    assert_eq!(fake_counter("fake_cuda_launches"), 0, "none of dsv3's kernels ran");
    assert_lt_objects_released();

    // Decode rows (up to 16) stay on dsv3's decode kernel (which the fake driver refuses to launch).
    let decode = Host::new(16, n, k, false, k);
    let (op, _) = decode.op(dev.as_ref(), s, DType::BF16, n);
    assert_eq!(dev.supports(&op), Support::Native);
    assert!(matches!(stream.launch(&op), Err(Error::Kernel { op: "gemm", .. })));
    assert_eq!((fake_counter("fake_cuda_launches"), lt("matmuls")), (1, 3));
    s.sync().unwrap();
    // Buffers hold the runtime: with the last of them, and the device, the handle goes.
    drop((again, op, stream, dev));
    assert_eq!(lt("handles"), 0, "the device's cuBLASLt handle is destroyed with it");
    dsv3_core::testing::child_ran("child_lt_bf16");
}

#[test]
fn cublaslt_computes_deepseeks_block_scaled_fp8() {
    run_fake_child("cublaslt_computes_deepseeks_block_scaled_fp8", "child_lt_fp8", Fake::WithLt, &[]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_lt_fp8() {
    let dev = CudaBackend::new().open(0).unwrap();
    let stream = dev.default_stream();
    let s = stream.as_ref();
    // N = 200: a partial last 128-row block of weights; K = 512: four scale blocks per row.
    let (m, n, k) = (20, 200, 512);
    let host = Host::new(m, n, k, true, k);
    let (op, out) = host.op(dev.as_ref(), s, DType::BF16, n);
    assert_eq!(dev.supports(&op), Support::Library { library: "cublasLt 12.9.0".into() });
    stream.launch(&op).unwrap();
    assert_eq!(fake_download(s, &out), host.expected(DType::BF16, n), "C");
    let Op::Gemm(g) = &op else { unreachable!() };
    let (
        dsv3_core::ops::Activations::Fp8 { scales: sa, .. },
        dsv3_core::ops::Weights::BlockFp8 { scales: sb, .. },
    ) = (&g.a, &g.b)
    else {
        unreachable!()
    };
    // Weights' 128×128 scales as cuBLASLt's A scales, as stored; the activations' transposed M-major into
    // the scratch, whose first 512 bytes (20·4 f32, rounded to 256) they fill, the workspace after them.
    assert_eq!((lt("a_mode"), lt("b_mode"), lt("a_type"), lt("b_type"), lt("d_type")), (5, 4, 28, 28, 14));
    assert_eq!(lt("a_scale"), device_address(&sb.buffer));
    assert_eq!((lt("transforms"), lt("t_transa"), lt("t_src")), (1, 1, device_address(&sa.buffer)));
    assert_eq!((lt("t_rows"), lt("t_cols"), lt("t_ld")), (m as i64, 4, m as i64));
    assert_eq!(lt("b_scale"), lt("t_dst"));
    assert_eq!(lt("workspace"), lt("t_dst") + 512);
    s.sync().unwrap();
    assert_eq!(fake_counter("fake_cuda_launches"), 0, "none of dsv3's kernels ran");
    assert_lt_objects_released();

    // What cuBLASLt is not offered stays on dsv3's kernels: ue8m0 scales, K/128 not a multiple of 4
    // (the weights' scale rows would not be 16-byte aligned), bf16 activations × FP8 weights.
    let ours = |op: &Op| on_our_kernels(&dev.supports(op));
    let mut ue8m0 = op.clone();
    if let Op::Gemm(g) = &mut ue8m0 {
        if let dsv3_core::ops::Weights::BlockFp8 { scales, .. } = &mut g.b {
            scales.dtype = DType::Ue8m0;
        }
    }
    assert!(ours(&ue8m0));
    assert!(ours(&Host::new(m, n, 640, true, 640).op(dev.as_ref(), s, DType::BF16, n).0));
    let mut mixed = Host::new(m, n, k, true, k);
    (mixed.a, mixed.a_scales, mixed.dtypes.0) = (values(DType::BF16, m * k, 5), None, DType::BF16);
    assert!(ours(&mixed.op(dev.as_ref(), s, DType::BF16, n).0));
    dsv3_core::testing::child_ran("child_lt_fp8");
}

/// dsv3's own kernels compute it (natively, or FP8 by decoding, as the device allows), not cuBLASLt.
fn on_our_kernels(support: &Support) -> bool {
    matches!(support, Support::Native | Support::Emulated { .. })
}

#[test]
fn block_fp8_needs_cublaslt_12_9_and_sm_90() {
    let test = "block_fp8_needs_cublaslt_12_9_and_sm_90";
    run_fake_child(test, "child_lt_gates", Fake::WithLt, &[("FAKE_CUBLASLT_VERSION", "120802")]);
    run_fake_child(test, "child_lt_gates", Fake::WithLt, &[("FAKE_CUDA_CC", "8.0")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_lt_gates() {
    let old_arch = std::env::var("FAKE_CUDA_CC").is_ok();
    let dev = CudaBackend::new().open(0).unwrap();
    let features = dev.capabilities().features.join(" | ");
    let why = if old_arch {
        "sm_80: cuBLASLt's VEC128 / BLK128x128 scale modes are Hopper's"
    } else {
        "12.8.2 predates them"
    };
    assert!(features.contains("bf16 GEMM, no block-FP8 GEMM (") && features.contains(why), "{features}");
    let stream = dev.default_stream();
    let s = stream.as_ref();
    let fp8 = Host::new(24, 128, 512, true, 512).op(dev.as_ref(), s, DType::BF16, 128).0;
    assert!(on_our_kernels(&dev.supports(&fp8)), "{:?}", dev.supports(&fp8));
    let bf16 = Host::new(24, 128, 512, false, 512).op(dev.as_ref(), s, DType::BF16, 128).0;
    assert!(matches!(dev.supports(&bf16), Support::Library { .. }));
    stream.launch(&bf16).unwrap();
    let ceiling = if old_arch { 4 << 20 } else { 32 << 20 };
    assert_eq!(lt("max_workspace"), ceiling, "the workspace ceiling asked of the heuristic");
    dsv3_core::testing::child_ran("child_lt_gates");
}

#[test]
fn without_cublaslt_every_gemm_stays_on_our_kernels() {
    let test = "without_cublaslt_every_gemm_stays_on_our_kernels";
    run_fake_child(test, "child_lt_unusable", Fake::Complete, &[]);
    run_fake_child(test, "child_lt_unusable", Fake::WithIncompleteLt, &[]);
    run_fake_child(test, "child_lt_unusable", Fake::WithLt, &[("DSV3_CUDA_GEMM", "ours")]);
    run_fake_child(test, "child_lt_unusable", Fake::WithLt, &[("FAKE_CUBLASLT_FAIL", "cublasLtCreate")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_lt_unusable() {
    let fail = std::env::var("FAKE_CUBLASLT_FAIL").ok();
    let present = loadable("libcublasLt.so.13");
    let dev = CudaBackend::new().open(0).unwrap();
    let features = dev.capabilities().features.join(" | ");
    let expected = if std::env::var("DSV3_CUDA_GEMM").is_ok() {
        "cublaslt: not used (DSV3_CUDA_GEMM=ours)"
    } else if fail.is_some() {
        // The library is fine, the device's handle could not be made: listed, but its GEMMs are ours.
        "cublaslt 12.9.0"
    } else if present {
        "libcublasLt.so.13 lacks cublasLtMatrixTransform"
    } else {
        if loadable("libcublasLt.so.12") {
            let why = "a real cuBLASLt is on the loader path: its absence cannot be shown here";
            return dsv3_core::testing::not_run("child_lt_unusable", why);
        }
        "cublaslt: libcublasLt.so.13 / .12 not found"
    };
    assert!(features.contains(expected), "{features}");
    let stream = dev.default_stream();
    let s = stream.as_ref();
    let (op, _) = Host::new(24, 128, 512, false, 512).op(dev.as_ref(), s, DType::BF16, 128);
    assert_eq!(dev.supports(&op), Support::Native);
    assert!(matches!(stream.launch(&op), Err(Error::Kernel { op: "gemm", .. })));
    assert_eq!(fake_counter("fake_cuda_launches"), 1, "dsv3's kernel was launched");
    if present {
        assert_eq!((lt("matmuls"), lt("heuristics")), (0, 0));
    }
    dsv3_core::testing::child_ran("child_lt_unusable");
}

/// Each cuBLASLt call the backend makes for a block-FP8 GEMM, in order.
const LT_CALLS: &[&str] = &[
    "cublasLtMatmulDescCreate",
    "cublasLtMatmulDescSetAttribute",
    "cublasLtMatrixLayoutCreate",
    "cublasLtMatmulPreferenceCreate",
    "cublasLtMatmulPreferenceSetAttribute",
    "cublasLtMatmulAlgoGetHeuristic",
    "cublasLtMatrixTransformDescCreate",
    "cublasLtMatrixTransformDescSetAttribute",
    "cublasLtMatrixTransform",
    "cublasLtMatmul",
];

#[test]
fn a_failing_cublaslt_call_falls_back_to_our_kernels() {
    for call in LT_CALLS {
        run_fake_child(
            "a_failing_cublaslt_call_falls_back_to_our_kernels",
            "child_lt_call_fails",
            Fake::WithLt,
            &[("FAKE_CUBLASLT_FAIL", call)],
        );
    }
    run_fake_child(
        "a_failing_cublaslt_call_falls_back_to_our_kernels",
        "child_lt_call_fails",
        Fake::WithLt,
        &[("FAKE_CUBLASLT_NO_ALGO", "1")],
    );
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_lt_call_fails() {
    let dev = CudaBackend::new().open(0).unwrap();
    let stream = dev.default_stream();
    let s = stream.as_ref();
    let (op, _) = Host::new(20, 128, 512, true, 512).op(dev.as_ref(), s, DType::BF16, 128);
    // Calls made while planning (descriptors, heuristic) decline the GEMM at once; calls made while
    // enqueueing fail once, after which the GEMM is no longer offered.
    let planned = matches!(dev.supports(&op), Support::Library { .. });
    assert!(matches!(stream.launch(&op), Err(Error::Kernel { op: "gemm", .. })), "dsv3's kernel ran instead");
    assert_eq!(fake_counter("fake_cuda_launches"), 1);
    assert!(on_our_kernels(&dev.supports(&op)), "{:?}", dev.supports(&op));
    assert_eq!(lt("matmuls"), 0);
    let fail = std::env::var("FAKE_CUBLASLT_FAIL").unwrap_or_default();
    assert_eq!(planned, fail.contains("Transform") || fail == "cublasLtMatmul", "{fail}");
    assert_lt_objects_released();
    dsv3_core::testing::child_ran("child_lt_call_fails");
}

#[test]
fn required_cublaslt_reports_instead_of_falling_back() {
    let test = "required_cublaslt_reports_instead_of_falling_back";
    let required = [("DSV3_CUDA_GEMM", "cublaslt")];
    run_fake_child(test, "child_lt_required", Fake::WithLt, &required);
    for fail in ["cublasLtMatmul", "cublasLtCreate"] {
        run_fake_child(test, "child_lt_required", Fake::WithLt, &[required[0], ("FAKE_CUBLASLT_FAIL", fail)]);
    }
    run_fake_child(test, "child_lt_required", Fake::Complete, &required);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_lt_required() {
    let fail = std::env::var("FAKE_CUBLASLT_FAIL").unwrap_or_default();
    let opened = CudaBackend::new().open(0);
    let present = loadable("libcublasLt.so.13");
    if fail == "cublasLtCreate" || !present {
        let Err(Error::Unavailable { reason, .. }) = opened else { panic!("expected Unavailable") };
        let why = if present { "cublasLtCreate: CUBLAS_STATUS_NOT_SUPPORTED" } else { "not found" };
        assert!(reason.starts_with("DSV3_CUDA_GEMM=cublaslt: ") && reason.contains(why), "{reason}");
        return dsv3_core::testing::child_ran("child_lt_required");
    }
    let dev = opened.unwrap();
    let stream = dev.default_stream();
    let s = stream.as_ref();
    // What cuBLASLt cannot compute is unsupported, with the reason, rather than run on dsv3's kernels.
    let (odd, _) = Host::new(20, 128, 640, true, 640).op(dev.as_ref(), s, DType::BF16, 128);
    match dev.supports(&odd) {
        Support::Unsupported { reason } => {
            assert!(reason.starts_with("DSV3_CUDA_GEMM=cublaslt: K = 640"), "{reason}")
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(matches!(stream.launch(&odd), Err(Error::Unsupported { op: "gemm", .. })));
    let (op, _) = Host::new(20, 128, 512, true, 512).op(dev.as_ref(), s, DType::BF16, 128);
    match stream.launch(&op) {
        Ok(()) => assert!(fail.is_empty()),
        Err(Error::Driver { backend, call, reason }) => {
            assert_eq!(
                (backend.as_str(), call.as_str(), fail.as_str()),
                ("cuda", "cublasLtMatmul", "cublasLtMatmul")
            );
            assert!(reason.contains("CUBLAS_STATUS_NOT_SUPPORTED"), "{reason}");
        }
        Err(other) => panic!("expected the cublasLtMatmul error, got {other}"),
    }
    assert_eq!(fake_counter("fake_cuda_launches"), 0, "none of dsv3's kernels ran");
    dsv3_core::testing::child_ran("child_lt_required");
}

/// The conformance runner on the fake device: cuBLASLt's results pass, said to be cuBLASLt's, under the
/// `gemm_tensor_core` rule — and only gemm's rows get it.
#[test]
fn conformance_holds_cublaslt_results_to_their_own_rule() {
    let test = "conformance_holds_cublaslt_results_to_their_own_rule";
    run_fake_child(test, "child_lt_conformance", Fake::WithLt, &[]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_lt_conformance() {
    use dsv3_conformance::case::Operand;
    use dsv3_conformance::gen::ScaleStore;
    use dsv3_conformance::{cases, runner, tolerance, Status};
    let backend = CudaBackend::new();
    let (bf16, fp8) =
        (Operand::Dense(DType::BF16), Operand::Fp8(dsv3_core::Fp8Format::E4M3Fn, ScaleStore::F32));
    let set = [
        cases::gemm(64, 256, 1024, bf16, bf16, DType::F32),
        cases::gemm(32, 576, 512, fp8, fp8, DType::BF16),
    ];
    let report = runner::run(&[&backend], &set, &runner::Options::default());
    assert_eq!(report.results.len(), 2);
    for (row, (block_fp8, count)) in report.results.iter().zip([(false, 64 * 256), (true, 32 * 576)]) {
        assert_eq!(row.status, Status::Pass, "{}: {}", row.case, row.reason);
        assert!(row.reason.contains("native via cublasLt 12.9.0"), "{}", row.reason);
        let k = if block_fp8 { 512 } else { 1024 };
        let c = if block_fp8 { DType::BF16 } else { DType::F32 };
        assert_eq!(
            row.tolerance,
            Some(tolerance::gemm_tensor_core(k, block_fp8, c, count).nmse),
            "{}",
            row.case
        );
    }
    assert_eq!(lt("matmuls"), 2);
    // The runner's inputs start 64 bytes into their buffers (NaN padding): the heuristic was told, and
    // the fake refuses pointers less aligned than the algorithm was chosen for.
    assert_eq!(lt("min_alignment"), 64);
    dsv3_core::testing::child_ran("child_lt_conformance");
}
