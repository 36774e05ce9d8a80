//! What a saved run says about where it ran: the machine, its devices, and the commit of the binary.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use dsv3_core::Device;

use super::results::{self, DeviceEntry, Machine, ModelEntry, Peak, Row, Run};

/// A run made by this process, now, on this machine: the format, the time, the commit, the flags and the
/// machine filled in around what the bench measured.
pub fn run(kind: &str, devices: Vec<DeviceEntry>, model: ModelEntry, rows: Vec<Row>) -> Run {
    Run {
        format: results::FORMAT.into(),
        version: results::VERSION,
        kind: kind.into(),
        created_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        commit: commit(),
        flags: std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect(),
        machine: machine(),
        devices,
        model,
        rows,
        absent_peers: Vec::new(),
    }
}

pub fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok();
    Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        os: match kernel {
            Some(release) => format!("{} {}", std::env::consts::OS, release.trim()),
            None => std::env::consts::OS.to_string(),
        },
        arch: std::env::consts::ARCH.to_string(),
    }
}

/// Prefixes of the capability features that carry a driver or runtime version.
const DRIVER_FEATURES: [&str; 6] = ["driver ", "vulkan ", "nvrtc ", "HIP runtime", "hiprtc", "acl-"];

pub fn device(device: &dyn Device) -> DeviceEntry {
    let info = device.info();
    DeviceEntry {
        id: device.id().to_string(),
        name: info.name.clone(),
        arch: info.arch.clone(),
        driver: device
            .capabilities()
            .features
            .iter()
            .filter(|f| DRIVER_FEATURES.iter().any(|p| f.starts_with(p)))
            .cloned()
            .collect(),
        memory_bytes: info.memory_bytes,
        peak: device.peak().map(|p| Peak {
            bytes_per_s: p.bytes_per_s,
            f32_flops: p.f32_flops,
            bf16_flops: p.bf16_flops,
            fp8_flops: p.fp8_flops,
            source: p.source,
        }),
    }
}

/// `git describe --always --dirty` of the source tree this binary was built from, asked at run time: a
/// value fixed at build time would go stale, as cargo does not rebuild on a commit. `unknown` when git or
/// the tree is absent (an installed binary).
pub fn commit() -> String {
    Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}
