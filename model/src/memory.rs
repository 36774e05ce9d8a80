//! Whether a model fits a device, asked before anything is allocated: a model larger than the machine
//! otherwise grows until the kernel's OOM killer ends it (and whatever runs beside it).

use dsv3_core::{Device, DeviceInfo, Error, Result};

/// Refuses, with the shortfall, when `bytes` (what a load will place on `device`) exceed the device's
/// memory. A device that does not report its memory (`memory_bytes` 0) is not judged. For a placement over
/// several devices, call it once per device with that device's share.
pub fn check_fits(bytes: u64, device: &DeviceInfo) -> Result<()> {
    let have = device.memory_bytes;
    if have == 0 || bytes <= have {
        return Ok(());
    }
    Err(Error::invalid(
        "load",
        "model",
        format!(
            "needs {:.2} GB on {}:{} ({}), which has {:.2} GB: {:.2} GB short",
            bytes as f64 / 1e9,
            device.backend,
            device.ordinal,
            device.name,
            have as f64 / 1e9,
            (bytes - have) as f64 / 1e9
        ),
    ))
}

/// [`check_fits`] for a placement: `loads` gives each device's weight bytes. Devices whose buffers are host
/// RAM (`Capabilities::host_memory`: cpu, cpu-ref, the emulators, a software Vulkan driver) draw on one
/// pool: their bytes are summed and judged against the largest memory any of them reports, the error
/// naming them all.
pub fn check_placement(loads: &[(u64, &dyn Device)]) -> Result<()> {
    let (host, own): (Vec<_>, Vec<_>) = loads.iter().partition(|(_, d)| d.capabilities().host_memory);
    for (bytes, device) in own {
        check_fits(bytes, device.info())?;
    }
    let Some((_, largest)) = host.iter().max_by_key(|(_, d)| d.info().memory_bytes) else { return Ok(()) };
    let mut pool = largest.info().clone();
    if host.len() > 1 {
        let names: Vec<String> = host.iter().map(|(_, d)| d.id().to_string()).collect();
        pool.name = format!("host memory shared by {}", names.join(", "));
    }
    check_fits(host.iter().map(|(b, _)| b).sum(), &pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(memory_bytes: u64) -> DeviceInfo {
        DeviceInfo {
            backend: "cpu",
            ordinal: 0,
            name: "test".into(),
            vendor: "test".into(),
            arch: "test".into(),
            memory_bytes,
        }
    }

    #[test]
    fn a_model_larger_than_the_device_is_refused_with_the_shortfall() {
        let err = check_fits(700_000_000_000, &device(24_000_000_000)).unwrap_err().to_string();
        assert!(
            err.contains("needs 700.00 GB") && err.contains("cpu:0") && err.contains("676.00 GB short"),
            "{err}"
        );
        check_fits(24_000_000_000, &device(24_000_000_000)).unwrap();
        // Unknown memory is not judged.
        check_fits(u64::MAX, &device(0)).unwrap();
    }
}
