//! What a compute capability means for dsv3: the architecture kernels compile for, whether FP8 tensor
//! cores exist, and datasheet peaks for "% of peak" figures.

use dsv3_backend_gpu::device::{Datasheet, DatasheetRow};
use dsv3_core::Peak;

/// The NVRTC architecture for a compute capability. Hopper and Blackwell datacenter parts get the
/// arch-specific `a` targets (wgmma, TMA multicast and tcgen05 are only reachable through them).
pub fn arch_name(major: i32, minor: i32) -> String {
    match (major, minor) {
        (9, 0) | (10, 0) | (10, 3) | (12, 0) | (12, 1) => format!("sm_{major}{minor}a"),
        _ => format!("sm_{major}{minor}"),
    }
}

/// FP8 (e4m3 / e5m2) tensor-core instructions exist from Ada (8.9) and Hopper (9.0) on.
pub fn has_fp8_tensor_cores(major: i32, minor: i32) -> bool {
    (major, minor) >= (8, 9)
}

/// Shared memory one block may use once its function opts in, static and dynamic together (CUDA C
/// Programming Guide, "Technical Specifications per Compute Capability"; a device reports the same as
/// `CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN`): what `dsv3-check-kernels` holds each variant
/// to. `None` for an architecture not listed.
pub fn shared_opt_in(arch: &str) -> Option<u32> {
    let sm = arch.strip_prefix("sm_")?.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let kib = match sm {
        "80" => 163,
        "86" | "89" | "120" => 99,
        "90" | "100" => 227,
        _ => return None,
    };
    Some(kib * 1024)
}

/// Datasheets of parts dsv3 is likely to meet, matched on the driver's device name or an `--assume` name
/// (the most specific name first): (name fragment, f32 FMA TFLOP/s, bf16 tensor TFLOP/s, fp8 tensor
/// TFLOP/s, memory TB/s, memory GB). Memory sizes are NVIDIA's product pages (H100 NVL 94 GB, H20 96 GB;
/// A100 and A800 also come with 40 GB, the row is the 80 GB part).
pub const DATASHEET: &[DatasheetRow] = &[
    ("H200", 67.0, 989.0, 1979.0, 4.8, 141.0),
    ("H100 PCIe", 51.0, 756.0, 1513.0, 2.0, 80.0),
    ("H100 NVL", 60.0, 835.0, 1671.0, 3.9, 94.0),
    ("H100", 67.0, 989.0, 1979.0, 3.35, 80.0),
    ("H800", 67.0, 989.0, 1979.0, 3.35, 80.0),
    ("H20", 44.0, 148.0, 296.0, 4.0, 96.0),
    ("A100", 19.5, 312.0, 0.0, 2.039, 80.0),
    ("A800", 19.5, 312.0, 0.0, 2.039, 80.0),
    ("L40S", 91.6, 362.0, 733.0, 0.864, 48.0),
];

/// The datasheet row of a device name; unknown parts get none.
pub fn datasheet(name: &str) -> Option<Datasheet> {
    dsv3_backend_gpu::device::datasheet("NVIDIA", DATASHEET, name)
}

/// Dense datasheet peaks, for "% of peak" figures.
pub fn datasheet_peak(name: &str) -> Option<Peak> {
    datasheet(name).map(|d| d.peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_and_fp8_by_compute_capability() {
        assert_eq!(arch_name(8, 0), "sm_80");
        assert_eq!(arch_name(8, 9), "sm_89");
        assert_eq!(arch_name(9, 0), "sm_90a");
        assert_eq!(arch_name(10, 0), "sm_100a");
        assert!(!has_fp8_tensor_cores(8, 0) && !has_fp8_tensor_cores(8, 6));
        assert!(has_fp8_tensor_cores(8, 9) && has_fp8_tensor_cores(9, 0) && has_fp8_tensor_cores(10, 0));
    }

    #[test]
    fn shared_memory_per_block_after_opting_in() {
        assert_eq!(shared_opt_in("sm_80"), Some(166912));
        assert_eq!(shared_opt_in("sm_89"), Some(101376));
        assert_eq!(shared_opt_in("sm_90a"), Some(232448));
        assert_eq!(shared_opt_in("sm_75"), None);
        assert_eq!(shared_opt_in("gfx90a"), None);
    }

    #[test]
    fn datasheet_names_match_the_most_specific_entry() {
        assert_eq!(datasheet_peak("NVIDIA H200").unwrap().bytes_per_s, 4.8e12);
        assert_eq!(datasheet_peak("NVIDIA H100 PCIe").unwrap().bf16_flops, 756e12);
        assert_eq!(datasheet_peak("NVIDIA H100 80GB HBM3").unwrap().bytes_per_s, 3.35e12);
        assert!(datasheet_peak("NVIDIA GeForce RTX 3060").is_none());
        // `--assume` names: case does not matter, memory comes with the peaks.
        assert_eq!(datasheet("h200").unwrap().memory_bytes, 141_000_000_000);
        assert_eq!(datasheet("H100").unwrap().memory_bytes, 80_000_000_000);
    }
}
