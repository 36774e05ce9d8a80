//! The fake CANN for the tests: built from `fake_cann/fake_cann.c` with the system C compiler, laid out
//! under CANN's library names, and probed for what it saw. Scenarios that set `FAKE_CANN_*` variables run
//! in a child process (the environment and the fake's counters are per process), started by a parent
//! test that checks the child really ran its one test and passed.

#![allow(dead_code)] // each test binary uses part of this module

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The compiled fake, once per test process (each process gets its own directory, so test binaries
/// running in parallel never share a half-written file).
fn library() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        remove_stale(tmp);
        let dir = tmp.join(format!("fake_cann-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_cann/fake_cann.c");
        let out = dir.join("libfakecann.so");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let result = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&out)
            .arg(&source)
            .arg("-lpthread")
            .output()
            .unwrap_or_else(|e| panic!("cannot run the C compiler `{cc}` to build the fake CANN: {e}"));
        assert!(
            result.status.success(),
            "building the fake CANN failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        out
    })
}

/// Removes the directories of earlier test processes that have exited, so they do not pile up.
fn remove_stale(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("fake_cann-") else { continue };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A directory `name` holding `files`, each a symlink to the one compiled fake. The dynamic loader maps
/// a file once however many names lead to it, so all the "libraries" share the fake's state.
pub fn layout(name: &str, files: &[&str]) -> PathBuf {
    // Tests of one process ask for the same layout concurrently: one of them makes it.
    static MAKING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|poison| poison.into_inner());
    let lib = library();
    let dir = lib.parent().unwrap().join(name);
    if !dir.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        for file in files {
            std::os::unix::fs::symlink(lib, dir.join(file)).unwrap();
        }
    }
    dir
}

/// CANN ≤ 8.1's layout: one aclnn operator library.
pub fn whole() -> PathBuf {
    layout("whole", &["libascendcl.so", "libnnopbase.so", "libopapi.so"])
}

/// CANN 8's layout: the operator library split by domain, no libopapi.so.
pub fn split() -> PathBuf {
    layout(
        "split",
        &[
            "libascendcl.so",
            "libnnopbase.so",
            "libopapi_math.so",
            "libopapi_nn.so",
            "libopapi_transformer.so",
        ],
    )
}

/// Runs the ignored test `name` of this binary in a child process with CANN found in `lib_dir` and the
/// given `FAKE_CANN_*` variables; fails unless exactly that one test ran and passed. Returns its output.
pub fn run_child(name: &str, lib_dir: &Path, vars: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"]);
    // Only what the scenario sets: nothing inherited from the developer's shell.
    for (key, _) in std::env::vars() {
        if key.starts_with("FAKE_CANN_") || key.starts_with("ASCEND_") || key == "DSV3_ASCEND_LIB_DIR" {
            cmd.env_remove(key);
        }
    }
    cmd.env("DSV3_ASCEND_LIB_DIR", lib_dir);
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
    text
}

/// The fake's own counters, reached through the library the backend loaded (the same mapping).
pub struct Probe {
    lib: libloading::Library,
}

impl Probe {
    /// In a child: the fake that `DSV3_ASCEND_LIB_DIR` points at.
    pub fn open() -> Probe {
        let dir =
            std::env::var("DSV3_ASCEND_LIB_DIR").expect("a child test runs with DSV3_ASCEND_LIB_DIR set");
        // SAFETY: the library is the test fake built above; its initialisers do nothing.
        let lib = unsafe { libloading::Library::new(Path::new(&dir).join("libascendcl.so")) }.unwrap();
        Probe { lib }
    }

    /// Live objects of a kind: allocations, tensors, executors, streams, contexts, device_refs.
    pub fn live(&self, what: &str) -> i64 {
        let name = std::ffi::CString::new(what).unwrap();
        // SAFETY: `long fake_cann_live(const char *)` in fake_cann.c; `name` is NUL-terminated and
        // outlives the call.
        unsafe {
            let f = self
                .lib
                .get::<unsafe extern "C" fn(*const std::ffi::c_char) -> i64>(b"fake_cann_live")
                .unwrap();
            f(name.as_ptr())
        }
    }

    pub fn misuse(&self) -> (i64, String) {
        // SAFETY: `long fake_cann_misuse_count(void)` and `const char *fake_cann_last_misuse(void)` in
        // fake_cann.c; the string is a NUL-terminated static buffer, copied at once.
        unsafe {
            let count = self.lib.get::<unsafe extern "C" fn() -> i64>(b"fake_cann_misuse_count").unwrap()();
            let last = self
                .lib
                .get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(b"fake_cann_last_misuse")
                .unwrap()();
            (count, std::ffi::CStr::from_ptr(last).to_string_lossy().into_owned())
        }
    }

    /// Matmuls the fake actually computed.
    pub fn matmul_runs(&self) -> i64 {
        // SAFETY: `long fake_cann_matmul_runs(void)` in fake_cann.c.
        unsafe { self.lib.get::<unsafe extern "C" fn() -> i64>(b"fake_cann_matmul_runs").unwrap()() }
    }

    /// Nothing misused, and nothing left but `executors` leaked executors.
    pub fn assert_released(&self, executors: i64) {
        let (count, last) = self.misuse();
        assert_eq!(count, 0, "the fake saw {count} misuse(s), the last: {last}");
        for what in ["allocations", "tensors", "streams", "contexts", "device_refs"] {
            assert_eq!(self.live(what), 0, "{what} still live after every handle was dropped");
        }
        assert_eq!(self.live("executors"), executors, "executors");
    }
}
