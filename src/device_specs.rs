//! What the planner (`--place auto`, `dsv3 inspect --place`) knows about devices: the present ones, opened
//! for their memory and peak rates, or the ones `--assume` names, with datasheet names looked up in the
//! CUDA and HIP crates' tables (the model crate parses `--assume` and depends on no backend).

use std::collections::HashMap;
use std::sync::Arc;

use dsv3_core::{Device, Peak};
use dsv3_model::plan::{self, DeviceSpec};

use crate::registry;

/// A datasheet entry by name (`H200`, `h100 pcie`, `MI300X`): its memory and peaks, or the known names.
pub fn datasheet(name: &str) -> Result<(u64, Peak), String> {
    let row = dsv3_backend_cuda::arch::datasheet(name).or_else(|| dsv3_backend_hip::arch::datasheet(name));
    row.map(|d| (d.memory_bytes, d.peak)).ok_or_else(|| {
        let known: Vec<&str> = dsv3_backend_cuda::arch::DATASHEET
            .iter()
            .chain(dsv3_backend_hip::arch::DATASHEET)
            .map(|row| row.0)
            .collect();
        format!("unknown GPU (known: {}; or give MEMORY@BANDWIDTH like 24GB@1TB/s)", known.join(", "))
    })
}

/// `--assume 'cuda:0=H200,cpu=768GB@300GB/s'`.
pub fn assumed(text: &str) -> Result<Vec<DeviceSpec>, String> {
    plan::parse_assume(text, &datasheet).map_err(|e| e.to_string())
}

/// Every device present that can hold model parts, in `--backend auto`'s order of preference (the first is
/// the default of `--place` rules), each opened once into `opened` (by `backend:ordinal`) for its peak
/// rates; the CPU backend measures its own at the first ask, which takes a moment. `cpu-ref` is left out (it
/// is the CPU's memory again, and slow), as are software rasterizers behind a GPU API (the CPU's memory
/// too). A device that fails to open is skipped with a warning. Memory is what the device reports
/// as its total (`DeviceInfo::memory_bytes`), not what is free now: the plan's headroom absorbs the runtime's
/// share, another process's allocations are not seen.
pub fn present(opened: &mut HashMap<String, Arc<dyn Device>>) -> Vec<DeviceSpec> {
    let mut specs = Vec::new();
    for backend in registry::backends().iter().filter(|b| b.name() != "cpu-ref") {
        for info in backend.devices().unwrap_or_default().iter().filter(|d| !registry::is_software(d)) {
            let name = format!("{}:{}", info.backend, info.ordinal);
            let device = match opened.get(&name) {
                Some(d) => d.clone(),
                None => match backend.open(info.ordinal) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!("{name} left out of the plan: {e}");
                        continue;
                    }
                },
            };
            let peak = device.peak();
            let info = device.info();
            specs.push(DeviceSpec::new(
                &name,
                &info.name,
                info.memory_bytes,
                peak.as_ref(),
                "reported by the device",
            ));
            opened.insert(name, device);
        }
    }
    specs
}
