//! The presence rule every wgpu test follows: without a Vulkan driver a test prints, loudly, that it did
//! not run and why, and returns — except under `CI=true`, where the driver is part of the environment
//! (ci/test.sh installs lavapipe) and its absence fails the test.

#![allow(dead_code)]

use dsv3_backend_wgpu::{Options, WgpuBackend};
use dsv3_core::{Backend, Device, Error};
use std::sync::Arc;

fn present(backend: WgpuBackend) -> Option<WgpuBackend> {
    let reason = match backend.devices() {
        Ok(d) if !d.is_empty() => return Some(backend),
        Ok(_) => "no device".to_string(),
        Err(Error::Unavailable { reason, .. }) => reason,
        Err(e) => e.to_string(),
    };
    dsv3_core::testing::not_run(
        "a wgpu test",
        &format!(
            "wgpu unavailable: {reason} (ci/test.sh installs mesa-vulkan-drivers, which CI=true requires)"
        ),
    );
    None
}

/// The backend, or `None` (after the loud message) when no Vulkan driver is present outside CI.
pub fn backend() -> Option<WgpuBackend> {
    present(WgpuBackend::new())
}

/// The backend with every storage binding capped at `bytes`.
pub fn backend_with_binding_limit(bytes: u64) -> Option<WgpuBackend> {
    present(WgpuBackend::with_binding_limit(bytes))
}

pub fn device() -> Option<Arc<dyn Device>> {
    backend().map(|b| b.open(0).expect("a listed adapter opens"))
}

/// The backend with its kernels' paths for devices without subgroup operations.
pub fn backend_without_subgroups() -> Option<WgpuBackend> {
    present(WgpuBackend::with_options(Options { no_subgroups: true, ..Options::default() }))
}
