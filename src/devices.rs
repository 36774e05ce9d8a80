//! `dsv3 devices`: what is present, what it can do, and why the rest is not.

use crate::registry;
use dsv3_core::Error;

pub fn run() -> i32 {
    for backend in registry::backends() {
        match backend.devices() {
            Ok(devices) => {
                for info in devices {
                    println!("{}:{}  {}", info.backend, info.ordinal, info.name);
                    println!("    vendor   {}", info.vendor);
                    println!("    arch     {}", info.arch);
                    println!("    memory   {:.1} GiB", info.memory_bytes as f64 / (1u64 << 30) as f64);
                    match backend.open(info.ordinal) {
                        Ok(device) => describe(device.as_ref()),
                        Err(e) => println!("    cannot open: {e}"),
                    }
                }
            }
            Err(Error::Unavailable { reason, .. }) => println!("{}  unavailable: {reason}", backend.name()),
            Err(e) => println!("{}  unavailable: {e}", backend.name()),
        }
    }
    for (name, reason) in registry::NOT_BUILT {
        println!("{name}  unavailable: {reason}");
    }
    0
}

fn describe(device: &dyn dsv3_core::Device) {
    let caps = device.capabilities();
    let list = |pred: &dyn Fn(&dsv3_core::DTypeUsage) -> bool| -> String {
        let names: Vec<&str> = caps.dtypes.iter().filter(|(_, u)| pred(u)).map(|(d, _)| d.name()).collect();
        if names.is_empty() {
            "-".into()
        } else {
            names.join(" ")
        }
    };
    println!("    storage  {}", list(&|u| u.storage));
    println!("    compute  {} (others converted to f32)", list(&|u| u.arithmetic));
    println!("    matrix   {}", list(&|u| u.matrix));
    let fp8: Vec<&str> = caps.fp8_formats.iter().map(|f| f.name()).collect();
    println!(
        "    fp8      {}",
        if fp8.is_empty() { "decoded to f32 (no native FP8 arithmetic)".into() } else { fp8.join(" ") }
    );
    println!("    lanes    {} (subgroup / SIMD width)", caps.subgroup_size);
    println!("    graphs   {}", if caps.graph_capture { "capture supported" } else { "no capture" });
    if !caps.features.is_empty() {
        println!("    features {}", caps.features.join(" "));
    }
}
