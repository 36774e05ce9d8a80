//! Incomplete CANN installs: each is `Error::Unavailable` saying what is missing where, never a panic.
//! These never call into the fake (loading stops before aclInit), so they run in this process.

mod common;

use common::layout;
use dsv3_backend_ascend::{AscendBackend, SearchDir};
use dsv3_core::{Backend, Error};
use std::path::Path;
use std::process::Command;

fn unavailable_reason(dir: &Path) -> String {
    let backend = AscendBackend::with_search_dirs(vec![SearchDir {
        origin: "test".into(),
        path: Some(dir.to_path_buf()),
    }]);
    match backend.devices() {
        Err(Error::Unavailable { reason, .. }) => reason,
        other => panic!("expected Unavailable for {}, got {other:?}", dir.display()),
    }
}

#[test]
fn runtime_without_the_tensor_library() {
    let reason = unavailable_reason(&layout("only_acl", &["libascendcl.so"]));
    assert!(reason.contains("libnnopbase.so") && reason.contains("missing"), "{reason}");
}

#[test]
fn runtime_without_any_operator_library() {
    let reason = unavailable_reason(&layout("no_opapi", &["libascendcl.so", "libnnopbase.so"]));
    for lib in ["libopapi.so", "libopapi_math.so", "libopapi_nn.so", "libopapi_transformer.so"] {
        assert!(reason.contains(lib), "{reason}");
    }
}

#[test]
fn operator_library_without_matmul() {
    let dir = layout("empty_opapi", &["libascendcl.so", "libnnopbase.so"]);
    let source = dir.join("empty.c");
    std::fs::write(&source, "int dsv3_fake_empty;\n").unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(dir.join("libopapi.so"))
        .arg(&source)
        .status()
        .unwrap();
    assert!(status.success());
    let reason = unavailable_reason(&dir);
    assert!(reason.contains("aclnnMatmulGetWorkspaceSize"), "{reason}");
}
