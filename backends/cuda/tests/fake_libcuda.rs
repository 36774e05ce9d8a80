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

/// Which fake: complete, without cuLaunchKernel (unusable), or without the graph entry points.
#[derive(Clone, Copy)]
enum Fake {
    Complete,
    Incomplete,
    NoGraphs,
}

/// The fake built as `libcuda.so` / `libcuda.so.1` in a directory of its own.
fn fake(which: Fake) -> PathBuf {
    static DIRS: [OnceLock<PathBuf>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    DIRS[which as usize]
        .get_or_init(|| {
            let (kind, define) = match which {
                Fake::Complete => ("complete", None),
                Fake::Incomplete => ("incomplete", Some("-DINCOMPLETE")),
                Fake::NoGraphs => ("no-graphs", Some("-DNO_GRAPHS")),
            };
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("fake_cuda-{}-{kind}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_cuda/libcuda.c");
            let lib = dir.join("libcuda.so.1");
            let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
            let mut cmd = Command::new(&cc);
            cmd.args(["-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o"]).arg(&lib).arg(&source);
            cmd.args(define);
            let out = cmd.output().unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
            assert!(
                out.status.success(),
                "building the fake libcuda failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::os::unix::fs::symlink("libcuda.so.1", dir.join("libcuda.so")).unwrap();
            dir
        })
        .clone()
}

fn run_child(name: &str, lib_dir: &Path, vars: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    for (key, _) in std::env::vars() {
        if key.starts_with("FAKE_CUDA_") || key == "DSV3_CUDA_LIB_DIR" {
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
