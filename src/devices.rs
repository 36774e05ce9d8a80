//! `dsv3 devices`: what is present, what it can do, and why the rest is not.

use crate::out::outln;
use crate::registry;
use dsv3_core::Error;

pub fn run() -> i32 {
    crate::finish("devices", try_run().map(|()| 0))
}

fn try_run() -> Result<(), String> {
    for backend in registry::backends() {
        match backend.devices() {
            Ok(devices) => {
                for info in devices {
                    outln!("{}:{}  {}", info.backend, info.ordinal, info.name)?;
                    outln!("    vendor   {}", info.vendor)?;
                    outln!("    arch     {}", info.arch)?;
                    outln!("    memory   {:.1} GiB", info.memory_bytes as f64 / (1u64 << 30) as f64)?;
                    match backend.open(info.ordinal) {
                        Ok(device) => describe(device.as_ref())?,
                        Err(e) => outln!("    cannot open: {e}")?,
                    }
                }
            }
            Err(Error::Unavailable { reason, .. }) => outln!("{}  unavailable: {reason}", backend.name())?,
            Err(e) => outln!("{}  unavailable: {e}", backend.name())?,
        }
    }
    for (name, reason) in registry::NOT_BUILT {
        outln!("{name}  unavailable: {reason}")?;
    }
    Ok(())
}

fn describe(device: &dyn dsv3_core::Device) -> Result<(), String> {
    let caps = device.capabilities();
    let list = |pred: &dyn Fn(&dsv3_core::DTypeUsage) -> bool| -> String {
        let names: Vec<&str> = caps.dtypes.iter().filter(|(_, u)| pred(u)).map(|(d, _)| d.name()).collect();
        if names.is_empty() {
            "-".into()
        } else {
            names.join(" ")
        }
    };
    outln!("    storage  {}", list(&|u| u.storage))?;
    outln!("    compute  {} (others converted to f32)", list(&|u| u.arithmetic))?;
    outln!("    matrix   {}", list(&|u| u.matrix))?;
    let fp8: Vec<&str> = caps.fp8_formats.iter().map(|f| f.name()).collect();
    outln!(
        "    fp8      {}",
        if fp8.is_empty() { "decoded to f32 (no native FP8 arithmetic)".into() } else { fp8.join(" ") }
    )?;
    outln!("    lanes    {} (subgroup / SIMD width)", caps.subgroup_size)?;
    outln!("    graphs   {}", if caps.graph_capture { "capture supported" } else { "no capture" })?;
    if !caps.features.is_empty() {
        outln!("    features {}", caps.features.join(" "))?;
    }
    Ok(())
}
