//! The HIP backend's host side against the system's real libamdhip64 (Debian's ROCm 5.2, no AMD GPU here)
//! and against a fake (`fake_hip/libamdhip64.c`, built here with the system C compiler): no library, no
//! device, an incomplete library, no hiprtc, a hiprtc too old for the device, and a "device" whose memory
//! is host memory and which refuses launches — every path must end in a typed error, never a panic.
//!
//! Each `#[test]` is a parent that runs one `#[ignore]`d `child_*` test in a fresh process (the library a
//! process loads, its environment and hiprtc's aborts are per process) and checks that it ran and passed.

use dsv3_backend_gpu::kernels::{Variant, ELEMENTWISE};
use dsv3_backend_gpu::runtime::{Runtime, Target};
use dsv3_backend_hip::runtime::HipRuntime;
use dsv3_backend_hip::HipBackend;
use dsv3_core::move_check::assert_moves_bitwise;
use dsv3_core::ops::Add;
use dsv3_core::{Backend, DType, Error, Finished, Fp8Format, Op, Stream, Support, Tensor};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Which fake: complete, without hipModuleLaunchKernel (unusable), or without the graph entry points.
#[derive(Clone, Copy)]
enum Fake {
    Complete,
    Incomplete,
    NoGraphs,
}

/// The fake built as `libamdhip64.so` in a directory of its own.
fn fake(which: Fake) -> PathBuf {
    static LIBS: [OnceLock<PathBuf>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    LIBS[which as usize]
        .get_or_init(|| {
            let (kind, define) = match which {
                Fake::Complete => ("complete", None),
                Fake::Incomplete => ("incomplete", Some("-DINCOMPLETE")),
                Fake::NoGraphs => ("no-graphs", Some("-DNO_GRAPHS")),
            };
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("fake_hip-{}-{kind}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_hip/libamdhip64.c");
            let lib = dir.join("libamdhip64.so");
            let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
            let mut cmd = Command::new(&cc);
            cmd.args(["-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o"]).arg(&lib).arg(&source);
            cmd.args(define);
            let out = cmd.output().unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}`: {e}"));
            assert!(
                out.status.success(),
                "building the fake libamdhip64 failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            lib
        })
        .clone()
}

/// A real hiprtc on this machine: `$DSV3_TEST_HIPRTC`, else ROCm 6+'s libhiprtc or ROCm 5's libamdhip64
/// in the usual places (Debian's `libamdhip64-dev`, or /opt/rocm).
fn real_hiprtc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DSV3_TEST_HIPRTC") {
        return Some(p.into());
    }
    [
        "/opt/rocm/lib/libhiprtc.so",
        "/usr/lib/x86_64-linux-gnu/libamdhip64.so.5",
        "/opt/rocm/lib/libamdhip64.so.5",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Says loudly that a test did not run for lack of a real hiprtc; under CI=true that is a failure.
fn without_real_hiprtc(test: &str) {
    let msg = "no real hiprtc on this machine (ci/check-hip-kernels.sh installs Debian's libamdhip64-dev)";
    dsv3_core::testing::not_run(test, msg);
}

/// Runs the ignored test `name` in a fresh process with only `vars` of the variables the backend and the
/// fake read, and a kernel cache of its own.
fn run_child(name: &str, vars: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    for (key, _) in std::env::vars() {
        if key.starts_with("FAKE_HIP")
            || key.starts_with("EXPECT_")
            || key == "DSV3_HIP_LIB"
            || key == "DSV3_HIPRTC_LIB"
        {
            cmd.env_remove(key);
        }
    }
    let cache =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hip-kernels-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    cmd.env("DSV3_KERNEL_CACHE", &cache);
    for (key, value) in vars {
        cmd.env(key, value);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child test `{name}` failed ({}):\n{text}", out.status);
    assert!(
        text.contains("running 1 test") && text.contains("test result: ok. 1 passed"),
        "child test `{name}` did not run exactly one passing test:\n{text}"
    );
    dsv3_core::testing::check_child(name, &text);
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn unavailable_reason(e: Error) -> String {
    match e {
        Error::Unavailable { backend, reason } => {
            assert_eq!(backend, "hip");
            reason
        }
        other => panic!("expected Unavailable, got {other}"),
    }
}

fn add_op(dev: &dyn dsv3_core::Device) -> (Op, Vec<dsv3_core::Buffer>) {
    let bufs: Vec<_> = (0..3).map(|_| dev.alloc(256).unwrap()).collect();
    let t = |b: &dsv3_core::Buffer| Tensor::contiguous(b.clone(), 0, &[4, 16], DType::F32);
    (Op::Add(Add { a: t(&bufs[0]), b: t(&bufs[1]), out: t(&bufs[2]) }), bufs)
}

/// A counter exported by the fake, read through the copy the backend loaded (same file, same mapping).
fn fake_counter(lib: &str, name: &str) -> i32 {
    // SAFETY: the fake's counters take nothing and return an int.
    unsafe {
        let lib = libloading::Library::new(lib).unwrap();
        let f = lib.get::<unsafe extern "C" fn() -> i32>(name).unwrap();
        f()
    }
}

#[test]
fn the_real_library_without_a_gpu_is_unavailable_not_a_panic() {
    run_child("child_real_library", &[]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_real_library() {
    if let Err(why) = dsv3_backend_hip::api::hip() {
        let why = format!(
            "no libamdhip64 on this machine ({why}): the no-GPU path of a real library cannot be shown here"
        );
        return dsv3_core::testing::not_run("the real library", &why);
    }
    match HipBackend::new().devices() {
        Ok(devices) => {
            let why =
                format!("a real AMD GPU is present ({devices:?}): the no-GPU path cannot be shown here");
            return dsv3_core::testing::not_run("the real library", &why);
        }
        Err(e) => {
            let reason = unavailable_reason(e);
            assert!(reason.contains("no AMD GPU") && reason.contains("hipErrorNoDevice"), "{reason}");
            assert!(matches!(HipBackend::new().open(0), Err(Error::Unavailable { .. })));
        }
    }
    dsv3_core::testing::child_ran("child_real_library");
}

#[test]
fn a_machine_without_libamdhip64_says_so() {
    run_child("child_no_library", &[("DSV3_HIP_LIB", "/nonexistent/libamdhip64.so")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_no_library() {
    let reason = unavailable_reason(HipBackend::new().devices().unwrap_err());
    assert!(
        reason.contains("libamdhip64") && reason.contains("not found: /nonexistent/libamdhip64.so"),
        "{reason}"
    );
    assert!(reason.contains("DSV3_HIP_LIB"), "says how to point at one: {reason}");
    assert!(matches!(HipBackend::new().open(0), Err(Error::Unavailable { .. })));
    let rt = HipRuntime::open(0, Target::Hip { arch: "gfx90a".into(), warp: 64 });
    assert!(matches!(rt, Err(Error::Unavailable { .. })));
    dsv3_core::testing::child_ran("child_no_library");
}

#[test]
fn a_runtime_without_a_device_is_unavailable_not_a_panic() {
    run_child("child_no_device", &[("DSV3_HIP_LIB", s(&fake(Fake::Complete))), ("FAKE_HIP_DEVICES", "0")]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_no_device() {
    let reason = unavailable_reason(HipBackend::new().devices().unwrap_err());
    assert!(reason.contains("hipGetDeviceCount") && reason.contains("hipErrorNoDevice"), "{reason}");
    assert!(
        reason.contains("no ROCm-capable device is detected"),
        "the runtime's own text is kept: {reason}"
    );
    assert!(matches!(HipBackend::new().open(0), Err(Error::Unavailable { .. })));
    dsv3_core::testing::child_ran("child_no_device");
}

#[test]
fn an_incomplete_library_is_named_not_called() {
    run_child("child_incomplete", &[("DSV3_HIP_LIB", s(&fake(Fake::Incomplete)))]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_incomplete() {
    let reason = unavailable_reason(HipBackend::new().devices().unwrap_err());
    assert!(reason.contains("lacks hipModuleLaunchKernel"), "{reason}");
    dsv3_core::testing::child_ran("child_incomplete");
}

#[test]
fn a_device_without_hiprtc_is_listed_as_unable_to_compile() {
    run_child(
        "child_without_hiprtc",
        &[("DSV3_HIP_LIB", s(&fake(Fake::Complete))), ("DSV3_HIPRTC_LIB", "/nonexistent/libhiprtc.so")],
    );
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_without_hiprtc() {
    let reason = unavailable_reason(HipBackend::new().devices().unwrap_err());
    assert!(reason.contains("FAKE HIP DEVICE (dsv3 test) (gfx90a:sramecc+:xnack-)"), "{reason}");
    assert!(reason.contains("cannot compile kernels") && reason.contains("hiprtc"), "{reason}");
    dsv3_core::testing::child_ran("child_without_hiprtc");
}

/// The whole host path on the fake device with the fake's hiprtc: discovery, properties, memory, and a
/// compilation hiprtc refuses — a kernel error with hiprtc's log.
#[test]
fn the_host_path_reaches_the_runtime_and_reports_its_errors() {
    let lib = fake(Fake::Complete);
    run_child("child_fake_device", &[("DSV3_HIP_LIB", s(&lib)), ("DSV3_HIPRTC_LIB", s(&lib))]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_device() {
    let backend = HipBackend::new();
    let infos = backend.devices().unwrap();
    assert_eq!(infos.len(), 1);
    assert_eq!(infos[0].name, "FAKE HIP DEVICE (dsv3 test)");
    assert_eq!((infos[0].arch.as_str(), infos[0].vendor.as_str()), ("gfx90a", "AMD"));
    assert_eq!(infos[0].memory_bytes, 1 << 30);
    let dev = backend.open(0).unwrap();
    let caps = dev.capabilities();
    assert_eq!(caps.subgroup_size, 64);
    assert!(caps.fp8_formats.is_empty(), "MI200 has no FP8 matrix cores");
    for f in ["gfx90a:sramecc+:xnack-", "104 CUs", "wave64", "fp8: none in hardware (decoded in software)"] {
        assert!(caps.features.iter().any(|x| x == f), "{f} in {:?}", caps.features);
    }
    assert!(caps.features.iter().any(|f| f == "HIP runtime 6.2"), "{:?}", caps.features);
    assert!(caps.features.iter().any(|f| f.starts_with("hiprtc 6.2 (")), "{:?}", caps.features);
    assert!(caps.usage(DType::BF16).matrix && !caps.usage(DType::F8E4M3Fn).matrix);

    // Memory round trip through the runtime's calls; an allocation past the device's memory is typed.
    let stream = dev.default_stream();
    let bytes: Vec<u8> = (0..=255).collect();
    let a = dev.alloc(256).unwrap();
    let b = dev.alloc(256).unwrap();
    stream.upload(&a, 0, &bytes).unwrap();
    stream.copy(&a, 16, &b, 0, 240).unwrap();
    let mut back = vec![0u8; 240];
    stream.download(&b, 0, &mut back).unwrap();
    assert_eq!(back, bytes[16..]);
    match dev.alloc(2 << 30) {
        Err(Error::OutOfMemory { backend, bytes }) => assert_eq!((backend.as_str(), bytes), ("hip", 2 << 30)),
        other => panic!("expected OutOfMemory, got {:?}", other.err()),
    }

    // hiprtc fails the compilation: a kernel error naming the op and the variant, with hiprtc's log.
    let (op, _bufs) = add_op(dev.as_ref());
    assert_eq!(dev.supports(&op), Support::Native);
    match stream.launch(&op) {
        Err(Error::Kernel { backend, op, kernel, reason }) => {
            assert_eq!((backend.as_str(), op), ("hip", "add"));
            assert!(kernel.starts_with("elementwise"), "{kernel}");
            assert!(reason.contains("hiprtc for gfx90a:sramecc+:xnack-"), "{reason}");
            assert!(
                reason.contains("HIPRTC_ERROR_COMPILATION") && reason.contains("compiles nothing"),
                "{reason}"
            );
        }
        other => panic!("expected hiprtc's compile error, got {other:?}"),
    }
    stream.sync().unwrap();
    assert_eq!(fake_counter(&std::env::var("DSV3_HIP_LIB").unwrap(), "fake_hip_launches"), 0);
    dsv3_core::testing::child_ran("child_fake_device");
}

/// Events and moves between two fake devices: a wait between streams of one device is enqueued
/// (hipStreamWaitEvent); across devices, which HIP does not document for stream waits, and for foreign
/// events, the host waits; a tensor crosses with one hipMemcpyPeerAsync, bit for bit; every event is destroyed.
#[test]
fn events_wait_on_the_device_and_tensors_move_peer_to_peer() {
    let lib = fake(Fake::Complete);
    let vars = [("DSV3_HIP_LIB", s(&lib)), ("DSV3_HIPRTC_LIB", s(&lib)), ("FAKE_HIP_DEVICES", "2")];
    run_child("child_fake_events", &vars);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_events() {
    let backend = HipBackend::new();
    let (d0, d1) = (backend.open(0).unwrap(), backend.open(1).unwrap());
    let (s0, side, s1) = (d0.default_stream(), d0.new_stream().unwrap(), d1.default_stream());
    let lib = std::env::var("DSV3_HIP_LIB").unwrap();
    let count = |name: &str| fake_counter(&lib, &format!("fake_hip_{name}"));
    let counts = || (count("event_waits"), count("event_syncs"), count("peer_copies"));

    let event = s0.record().unwrap();
    side.wait(event.as_ref()).unwrap();
    assert_eq!(counts(), (1, 0, 0), "a wait between streams of one device is enqueued");
    s1.wait(event.as_ref()).unwrap();
    assert_eq!(counts(), (1, 1, 0), "another device's event is waited for on the host");
    side.wait(&Finished).unwrap();
    assert_eq!(counts(), (1, 1, 0), "a foreign, finished event costs no call");
    drop(event);
    assert_eq!(count("events_live"), 0);

    assert_moves_bitwise(d0.as_ref(), s0.as_ref(), d1.as_ref(), s1.as_ref());
    assert_eq!(counts(), (1, 3, 1), "one peer copy, ordered by two host waits (two devices)");
    assert_eq!(count("events_live"), 0);
    dsv3_core::testing::child_ran("child_fake_events");
}

/// The fake runtime with the machine's real hiprtc: a real kernel compiled for gfx90a, cached, loaded as a
/// module, and a launch the "device" refuses — reported as a kernel error naming the op.
#[test]
fn a_real_hiprtc_compiles_for_the_fake_device() {
    let Some(rtc) = real_hiprtc() else {
        return without_real_hiprtc("a_real_hiprtc_compiles_for_the_fake_device");
    };
    run_child(
        "child_real_hiprtc",
        &[("DSV3_HIP_LIB", s(&fake(Fake::Complete))), ("DSV3_HIPRTC_LIB", s(&rtc))],
    );
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_real_hiprtc() {
    let backend = HipBackend::new();
    let dev = backend.open(0).unwrap();
    let features = &dev.capabilities().features;
    println!("features: {features:?}");
    let stream = dev.default_stream();
    let (op, _bufs) = add_op(dev.as_ref());
    let refused = |r: dsv3_core::Result<()>| match r {
        Err(Error::Kernel { backend, op, kernel, reason }) => {
            assert_eq!((backend.as_str(), op), ("hip", "add"));
            assert!(kernel.starts_with("elementwise"), "{kernel}");
            assert!(
                reason.contains("hipModuleLaunchKernel") && reason.contains("hipErrorNotSupported"),
                "{reason}"
            );
        }
        other => panic!("expected the fake's launch error, got {other:?}"),
    };
    refused(stream.launch(&op));
    stream.sync().unwrap();
    let lib = std::env::var("DSV3_HIP_LIB").unwrap();
    assert_eq!(fake_counter(&lib, "fake_hip_launches"), 1);
    assert_eq!(fake_counter(&lib, "fake_hip_modules"), 1, "the code object was loaded as a module");

    // The code object is in the disk cache; a second device loads it from there.
    let cache = PathBuf::from(std::env::var("DSV3_KERNEL_CACHE").unwrap());
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let file = cached[0].to_string_lossy().into_owned();
    assert!(
        file.starts_with("hip-gfx90a_sramecc+_xnack--elementwise-") && file.ends_with(".hsaco"),
        "{file}"
    );
    let code = std::fs::read(cache.join(&file)).unwrap();
    assert_eq!(&code[..4], b"\x7fELF");
    drop((stream, dev));
    assert_eq!(fake_counter(&lib, "fake_hip_modules"), 0, "dropping the device unloads its modules");
    let dev = backend.open(0).unwrap();
    let (op, _bufs) = add_op(dev.as_ref());
    refused(dev.default_stream().launch(&op));
    assert_eq!(fake_counter(&lib, "fake_hip_launches"), 2);
    dsv3_core::testing::child_ran("child_real_hiprtc");
}

/// Dynamic shared memory on the fake gfx90a (64 KiB of LDS per workgroup, 256 bytes of static shared memory
/// per function) with the machine's real hiprtc: a bf16 prefill GEMM of 128 rows runs gemm_mma.cu's 128-row
/// tile, and its 60 KiB ring goes to hipModuleLaunchKernel as the launch's dynamic LDS with no attribute
/// call (AMD has nothing to opt in to); at the runtime, a launch filling the LDS exactly reaches the
/// runtime, one byte more is refused naming the kernel before it is called.
#[test]
fn dynamic_lds_goes_to_the_launch_up_to_64_kib() {
    let Some(rtc) = real_hiprtc() else {
        return without_real_hiprtc("dynamic_lds_goes_to_the_launch_up_to_64_kib");
    };
    let lib = fake(Fake::Complete);
    let vars = [("DSV3_HIP_LIB", s(&lib)), ("DSV3_HIPRTC_LIB", s(&rtc)), ("FAKE_HIP_STATIC_SHARED", "256")];
    run_child("child_dynamic_lds", &vars);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_dynamic_lds() {
    use dsv3_backend_gpu::runtime::Dims;
    use dsv3_core::ops::{Activations, Gemm, Weights};
    let lib = std::env::var("DSV3_HIP_LIB").unwrap();
    let count = |name: &str| fake_counter(&lib, &format!("fake_hip_{name}"));
    let refused = |r: dsv3_core::Result<()>| match r {
        Err(Error::Kernel { backend, kernel, reason, .. }) => {
            assert_eq!(backend, "hip");
            assert!(reason.contains("hipErrorNotSupported"), "{reason}");
            kernel
        }
        other => panic!("expected the fake's launch error, got {other:?}"),
    };
    let dev = HipBackend::new().open(0).unwrap();
    let t = |shape: &[usize]| {
        let buf = dev.alloc(shape.iter().product::<usize>() * 2).unwrap();
        Tensor::contiguous(buf, 0, shape, DType::BF16)
    };
    let (a, b, c) = (t(&[128, 64]), t(&[64, 64]), t(&[128, 64]));
    let op = Op::Gemm(Gemm { a: Activations::Dense(a), b: Weights::Dense(b), c });
    let kernel = refused(dev.default_stream().launch(&op));
    assert!(kernel.starts_with("gemm_mma") && kernel.contains("|BM=128|STAGES=4"), "{kernel}");
    assert_eq!((count("last_shared"), count("attribute_sets")), (61440, 0));

    let target = Target::Hip { arch: "gfx90a:sramecc+:xnack-".into(), warp: 64 };
    let rt = HipRuntime::open(0, target).unwrap();
    let lds = dsv3_backend_gpu::SharedLimits { default: 65536, opt_in: 65536 };
    assert_eq!(rt.shared_limits(), lds);
    let v = dsv3_backend_gpu::ops::tile_catalog().into_iter().find(|v| v.key() == kernel).unwrap();
    let f = rt.compile("gemm", &v).unwrap();
    let queue = rt.new_queue().unwrap();
    let params = [0u64; 20];
    let launch =
        |shared: u32| queue.launch("gemm", &f, Dims { grid: [1, 1, 1], block: 256, shared }, &params);
    refused(launch(65536 - 256));
    assert_eq!((count("launches"), count("last_shared")), (2, 65280));
    match launch(65536 - 256 + 1) {
        Err(Error::Kernel { backend, op, kernel: k, reason }) => {
            assert_eq!((backend.as_str(), op, k), ("hip", "gemm", kernel));
            assert!(reason.contains("(256 static + 65281 dynamic), over the 65536"), "{reason}");
        }
        other => panic!("expected the LDS limit's error, got {other:?}"),
    }
    assert_eq!((count("launches"), count("attribute_sets")), (2, 0), "the runtime was not called");
    dsv3_core::testing::child_ran("child_dynamic_lds");
}

/// hiprtc too old for the device's architecture (it would abort the process): the backend refuses, naming
/// both versions, and never calls it. The fake's hiprtc aborts on gfx942 as the real ROCm 5.2 does.
#[test]
fn a_hiprtc_too_old_for_the_architecture_is_never_called() {
    let lib = fake(Fake::Complete);
    let out = run_child(
        "child_too_old",
        &[
            ("DSV3_HIP_LIB", s(&lib)),
            ("DSV3_HIPRTC_LIB", s(&lib)),
            ("FAKE_HIP_ARCH", "gfx942:sramecc+:xnack-"),
            ("FAKE_HIP_VERSION", "50221153"),
            ("FAKE_HIPRTC_KNOWS", "gfx90a"),
        ],
    );
    assert!(out.contains("hiprtc ROCm 5.2: refused"), "{out}");
}

/// A hiprtc whose ROCm version nothing tells is not trusted with an architecture newer than ROCm 5.
#[test]
fn a_hiprtc_of_unknown_version_is_not_trusted_with_gfx942() {
    let lib = fake(Fake::Complete);
    let out = run_child(
        "child_too_old",
        &[
            ("DSV3_HIP_LIB", s(&lib)),
            ("DSV3_HIPRTC_LIB", s(&lib)),
            ("FAKE_HIP_ARCH", "gfx942:sramecc+:xnack-"),
            ("FAKE_HIP_VERSION", "none"),
            ("FAKE_HIPRTC_KNOWS", "gfx90a"),
        ],
    );
    assert!(out.contains("hiprtc could not be determined: refused"), "{out}");
}

/// The same with the machine's real hiprtc (Debian's ROCm 5.2, whose version only its file name tells).
#[test]
fn a_real_hiprtc_too_old_for_the_architecture_is_never_called() {
    let Some(rtc) = real_hiprtc() else {
        return without_real_hiprtc("a_real_hiprtc_too_old_for_the_architecture_is_never_called");
    };
    let lib = fake(Fake::Complete);
    let vars = [("DSV3_HIP_LIB", s(&lib)), ("DSV3_HIPRTC_LIB", s(&rtc)), ("FAKE_HIP_ARCH", "gfx942")];
    let out = run_child("child_too_old", &vars);
    // A hiprtc from ROCm >= 6 knows gfx942: the child reported a skip (passed on above), nothing to check.
    assert!(out.contains(": refused") || out.contains(dsv3_core::testing::SKIP_MARKER), "{out}");
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_too_old() {
    let version = dsv3_backend_hip::hiprtc::version().unwrap();
    if version.is_some_and(|v| v.major >= 6) {
        let why = format!("hiprtc is from ROCm {}: it knows gfx942, nothing to refuse", version.unwrap());
        return dsv3_core::testing::not_run("child_too_old", &why);
    }
    // What the refusal must say about hiprtc's version.
    let have = version.map_or("could not be determined".to_string(), |v| format!("ROCm {v}"));
    let reason = unavailable_reason(HipBackend::new().devices().unwrap_err());
    assert!(reason.contains("cannot compile kernels for it"), "{reason}");
    assert!(reason.contains("gfx942 needs ROCm >= 6.0") && reason.contains(&have), "{reason}");
    // A runtime made for the device anyway refuses to compile: Unsupported, with both versions.
    let arch = std::env::var("FAKE_HIP_ARCH").unwrap();
    let rt = HipRuntime::open(0, Target::Hip { arch, warp: 64 }).unwrap();
    let v = Variant::new(ELEMENTWISE).ty("a", DType::F32).konst("OP", 0);
    match rt.compile("add", &v) {
        Err(Error::Unsupported { backend, op, reason }) => {
            assert_eq!((backend.as_str(), op), ("hip", "add"));
            assert!(reason.contains(">= 6.0") && reason.contains(&have), "{reason}");
        }
        Err(other) => panic!("expected Unsupported, got {other}"),
        Ok(_) => panic!("expected Unsupported, got a kernel"),
    }
    println!("hiprtc {have}: refused");
    dsv3_core::testing::child_ran("child_too_old");
}

/// The FP8 format each architecture computes in, as `dsv3 devices` shows it, and the wavefront width.
#[test]
fn fp8_formats_and_wave_width_follow_the_architecture() {
    let lib = fake(Fake::Complete);
    let cases = [
        ("gfx942:sramecc+:xnack-", "64", "e4m3fnuz", "fp8: e4m3fnuz (MI300)"),
        ("gfx950:sramecc+:xnack-", "64", "e4m3fn e5m2", "fp8: e4m3fn e5m2 (OCP, MI350)"),
        ("gfx1201", "32", "e4m3fn e5m2", "fp8: e4m3fn e5m2 (OCP, RDNA4)"),
        ("gfx1100", "32", "", "fp8: none in hardware (decoded in software)"),
    ];
    for (arch, warp, fp8, feature) in cases {
        run_child(
            "child_fp8_formats",
            &[
                ("DSV3_HIP_LIB", s(&lib)),
                ("DSV3_HIPRTC_LIB", s(&lib)),
                ("FAKE_HIP_ARCH", arch),
                ("FAKE_HIP_WARP", warp),
                ("FAKE_HIP_VERSION", "60442134"),
                ("EXPECT_FP8", fp8),
                ("EXPECT_FEATURE", feature),
            ],
        );
    }
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fp8_formats() {
    let env = |k: &str| std::env::var(k).unwrap();
    let dev = HipBackend::new().open(0).unwrap();
    let caps = dev.capabilities();
    let names: Vec<&str> = caps.fp8_formats.iter().map(|f| f.name()).collect();
    assert_eq!(names.join(" "), env("EXPECT_FP8"));
    assert!(caps.features.contains(&env("EXPECT_FEATURE")), "{:?}", caps.features);
    assert_eq!(caps.subgroup_size.to_string(), env("FAKE_HIP_WARP"));
    assert_eq!(dev.info().arch, env("FAKE_HIP_ARCH").split(':').next().unwrap());
    let fnuz = caps.fp8_formats.contains(&Fp8Format::E4M3Fnuz);
    assert_eq!(caps.usage(DType::F8E4M3Fnuz).matrix, fnuz);
    assert_eq!(caps.usage(DType::F8E4M3Fn).matrix, !fnuz && !caps.fp8_formats.is_empty());
    dsv3_core::testing::child_ran("child_fp8_formats");
}

fn bytes_on(dev: &dyn dsv3_core::Device, stream: &dyn Stream, bytes: &[u8]) -> dsv3_core::Buffer {
    let b = dev.alloc(bytes.len()).unwrap();
    stream.upload(&b, 0, bytes).unwrap();
    b
}

fn bytes_of(stream: &dyn Stream, b: &dsv3_core::Buffer) -> Vec<u8> {
    let mut back = vec![0u8; b.len()];
    stream.download(b, 0, &mut back).unwrap();
    back
}

/// Capture on the fake runtime: a captured device copy runs only when the graph is launched
/// (hipStreamBeginCapture in relaxed mode, hipStreamEndCapture, hipGraphInstantiate, hipGraphLaunch), again
/// on new contents at each replay; graph and executable are destroyed with it; a download while capturing
/// is refused and spoils the capture.
#[test]
fn stream_capture_becomes_a_hip_graph() {
    let lib = fake(Fake::Complete);
    run_child("child_fake_graphs", &[("DSV3_HIP_LIB", s(&lib)), ("DSV3_HIPRTC_LIB", s(&lib))]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_graphs() {
    let dev = HipBackend::new().open(0).unwrap();
    assert!(dev.capabilities().graph_capture);
    let lib = std::env::var("DSV3_HIP_LIB").unwrap();
    let count = |name: &str| fake_counter(&lib, &format!("fake_hip_{name}"));
    let stream = dev.default_stream();
    let st = stream.as_ref();
    let a = bytes_on(dev.as_ref(), st, &[7; 64]);
    let b = bytes_on(dev.as_ref(), st, &[0; 64]);
    st.begin_capture().unwrap();
    st.copy(&a, 0, &b, 0, 64).unwrap();
    let graph = st.end_capture().unwrap();
    assert_eq!(bytes_of(st, &b), [0; 64], "captured, not run");
    graph.replay().unwrap();
    st.sync().unwrap();
    assert_eq!(bytes_of(st, &b), [7; 64]);
    st.upload(&a, 0, &[9; 64]).unwrap();
    graph.replay().unwrap();
    st.sync().unwrap();
    assert_eq!(bytes_of(st, &b), [9; 64]);
    assert_eq!((count("graph_launches"), count("graphs_live"), count("execs_live")), (2, 1, 1));
    drop(graph);
    assert_eq!((count("graphs_live"), count("execs_live")), (0, 0));

    st.begin_capture().unwrap();
    let mut host = [0u8; 4];
    assert!(matches!(st.download(&a, 0, &mut host), Err(Error::InvalidArgument { op: "download", .. })));
    assert!(matches!(st.end_capture(), Err(Error::InvalidArgument { op: "end_capture", .. })));
    assert_eq!(
        (count("graphs_live"), count("execs_live")),
        (0, 0),
        "the spoilt capture's graph is destroyed"
    );
    dsv3_core::testing::child_ran("child_fake_graphs");
}

#[test]
fn a_graph_the_runtime_cannot_instantiate_is_a_driver_error() {
    let lib = fake(Fake::Complete);
    let vars = [("DSV3_HIP_LIB", s(&lib)), ("DSV3_HIPRTC_LIB", s(&lib)), ("FAKE_HIP_INSTANTIATE_FAILS", "1")];
    run_child("child_fake_instantiate_fails", &vars);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_instantiate_fails() {
    let dev = HipBackend::new().open(0).unwrap();
    let lib = std::env::var("DSV3_HIP_LIB").unwrap();
    let stream = dev.default_stream();
    let st = stream.as_ref();
    let a = bytes_on(dev.as_ref(), st, &[5; 16]);
    let b = bytes_on(dev.as_ref(), st, &[0; 16]);
    st.begin_capture().unwrap();
    st.copy(&a, 0, &b, 0, 16).unwrap();
    match st.end_capture() {
        Err(Error::Driver { backend, call, reason }) => {
            assert_eq!((backend.as_str(), call.as_str()), ("hip", "hipGraphInstantiate"));
            assert!(reason.contains("hipErrorOutOfMemory"), "{reason}");
        }
        Err(other) => panic!("expected the instantiation's driver error, got {other}"),
        Ok(_) => panic!("a graph the runtime did not instantiate was returned"),
    }
    assert_eq!(fake_counter(&lib, "fake_hip_graphs_live"), 0, "the captured graph is destroyed");
    st.copy(&a, 0, &b, 0, 16).unwrap();
    assert_eq!(bytes_of(st, &b), [5; 16], "the stream runs work eagerly again");
    dsv3_core::testing::child_ran("child_fake_instantiate_fails");
}

#[test]
fn a_runtime_without_graphs_runs_without_capture() {
    let lib = fake(Fake::NoGraphs);
    run_child("child_fake_no_graphs", &[("DSV3_HIP_LIB", s(&lib)), ("DSV3_HIPRTC_LIB", s(&lib))]);
}

#[test]
#[ignore = "run by its parent test in a child process"]
fn child_fake_no_graphs() {
    let dev = HipBackend::new().open(0).unwrap();
    assert!(!dev.capabilities().graph_capture);
    assert!(dev.capabilities().features.iter().any(|f| f.starts_with("no graph capture: libamdhip64 lacks")));
    let stream = dev.default_stream();
    let st = stream.as_ref();
    match st.begin_capture() {
        Err(Error::Unsupported { backend, op: "begin_capture", reason }) => {
            assert_eq!(backend, "hip");
            assert!(reason.contains("hipStreamBeginCapture"), "{reason}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let a = bytes_on(dev.as_ref(), st, &[1; 16]);
    let b = bytes_on(dev.as_ref(), st, &[0; 16]);
    st.copy(&a, 0, &b, 0, 16).unwrap();
    assert_eq!(bytes_of(st, &b), [1; 16], "the device works without capture");
    dsv3_core::testing::child_ran("child_fake_no_graphs");
}
