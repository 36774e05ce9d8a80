//! What an AMD architecture means for dsv3: its name as the runtime reports it, the ROCm release whose
//! compiler knows it, the FP8 format its matrix cores compute in, and datasheet peaks.

use crate::api::Version;
use dsv3_backend_gpu::device::{Datasheet, DatasheetRow};
use dsv3_core::{Fp8Format, Peak};

/// Bytes given to `hipGetDeviceProperties`. The struct is about 800 bytes in ROCm 5 and about 1.5 KiB in
/// ROCm 6 (`hipDeviceProp_tR0600`); the margin covers later growth, since the runtime writes as much as its
/// own layout says.
pub const PROPERTIES_BUFFER: usize = 16 << 10;

/// The architecture name (`gfx942:sramecc+:xnack-`, the `gcnArchName` field) in a buffer filled by
/// `hipGetDeviceProperties`.
///
/// The name has no attribute that works across releases (`hipDeviceAttributeGcnArchName` became
/// `hipDeviceAttributeUnused5` in ROCm 6), and the field's offset changed when ROCm 6 reordered the struct.
/// So the buffer is scanned for what only that field holds: `gfx` at the start of a word, 3 or 4 hex digits,
/// `:feature+` / `:feature-` target features, then the terminating NUL. The device's marketing name cannot
/// match by accident (it never ends in such a token).
pub fn find_arch_name(buf: &[u8]) -> Option<String> {
    let mut i = 0;
    while i + 3 <= buf.len() {
        if &buf[i..i + 3] == b"gfx" && (i == 0 || !buf[i - 1].is_ascii_alphanumeric()) {
            if let Some(end) = arch_token_end(&buf[i..]) {
                return Some(String::from_utf8_lossy(&buf[i..i + end]).into_owned());
            }
        }
        i += 1;
    }
    None
}

/// Length of the target id at the start of `s` (`gfx` + hex digits + features) when a NUL ends it.
fn arch_token_end(s: &[u8]) -> Option<usize> {
    let mut n = 3;
    let digits = s[n..].iter().take_while(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c)).count();
    if !(3..=4).contains(&digits) {
        return None;
    }
    n += digits;
    // Target features: `:name+` or `:name-`.
    while s.get(n) == Some(&b':') {
        let name = s[n + 1..].iter().take_while(|c| c.is_ascii_lowercase()).count();
        let sign = s.get(n + 1 + name).copied();
        if name == 0 || !matches!(sign, Some(b'+') | Some(b'-')) {
            return None;
        }
        n += name + 2;
    }
    (s.get(n) == Some(&0)).then_some(n)
}

/// The processor without target features: `gfx942:sramecc+:xnack-` → `gfx942`.
pub fn base(arch: &str) -> &str {
    arch.split(':').next().unwrap_or(arch)
}

/// The first ROCm release whose compiler (hiprtc) knows `arch`. hiprtc aborts the whole process when asked
/// to compile for an architecture it does not know, so this is checked before every compilation.
///
/// * gfx940 / gfx941 / gfx942 (MI300): 6.0, the first release supporting MI300. Debian's hiprtc 5.2 aborts
///   for all three; whether AMD's 5.5–5.7 compilers already knew them is [UNCONFIRMED] — refusing them is
///   the safe side.
/// * gfx950 (MI350 / MI355X): 6.4 (AMD's rocm-amdgpu-bench built gfx950 binaries with ROCm 6.4; MI350 is
///   supported officially from ROCm 7.0).
/// * gfx1100–gfx1103 (RDNA3): 5.5 [UNCONFIRMED]; Debian's hiprtc 5.2 aborts for gfx1100.
/// * gfx1150 / gfx1151 (RDNA3.5): 6.2 [UNCONFIRMED]. gfx1200 / gfx1201 (RDNA4): 6.4 [UNCONFIRMED].
/// * Everything up to gfx90a and the RDNA1/2 parts (gfx10xx): any ROCm 5 (5.2's hiprtc compiles them).
/// * An architecture this table does not know is newer than it: 7.0, the newest release it accounts for.
pub fn min_rocm(arch: &str) -> Version {
    let arch = base(arch);
    let known_to_rocm5 = |a: &str| {
        matches!(a, "gfx900" | "gfx902" | "gfx904" | "gfx906" | "gfx908" | "gfx909" | "gfx90a" | "gfx90c")
            || (a.starts_with("gfx10") && a.len() == 7)
    };
    match arch {
        "gfx940" | "gfx941" | "gfx942" => Version::new(6, 0),
        "gfx950" => Version::new(6, 4),
        "gfx1100" | "gfx1101" | "gfx1102" | "gfx1103" => Version::new(5, 5),
        "gfx1150" | "gfx1151" => Version::new(6, 2),
        "gfx1200" | "gfx1201" => Version::new(6, 4),
        a if known_to_rocm5(a) => Version::new(5, 0),
        _ => Version::new(7, 0),
    }
}

/// Whether hiprtc of ROCm `rocm` may be asked to compile for `arch`; the reason, naming both versions,
/// when not (or when the version is unknown and `arch` needs more than ROCm 5).
pub fn check_compiler(arch: &str, rocm: Option<Version>) -> Result<(), String> {
    let need = min_rocm(arch);
    match rocm {
        Some(have) if have >= need => Ok(()),
        Some(have) => Err(format!(
            "{} needs ROCm >= {need}, but hiprtc is from ROCm {have} (it would abort the process on an \
             architecture it does not know): install a newer ROCm",
            base(arch)
        )),
        None if need <= Version::new(5, 0) => Ok(()),
        None => Err(format!(
            "{} needs ROCm >= {need}, and hiprtc's ROCm version could not be determined (hiprtcVersion and \
             its file name say nothing)",
            base(arch)
        )),
    }
}

/// FP8 formats the matrix cores of `arch` compute in, preferred first. MI300 (gfx940–942) has the "fnuz"
/// variants (bias 8, max 240, NaN = 0x80; its e5m2fnuz is not one of dsv3's dtypes); MI350 (gfx950) and
/// RDNA4 (gfx12) use the OCP formats, as NVIDIA does. dsv3's kernels decode FP8 in software, bit-exactly for
/// every format, so this says what the hardware offers, not what runs.
pub fn fp8_formats(arch: &str) -> Vec<Fp8Format> {
    match base(arch) {
        "gfx940" | "gfx941" | "gfx942" => vec![Fp8Format::E4M3Fnuz],
        "gfx950" => vec![Fp8Format::E4M3Fn, Fp8Format::E5M2],
        a if a.starts_with("gfx12") => vec![Fp8Format::E4M3Fn, Fp8Format::E5M2],
        _ => Vec::new(),
    }
}

/// The line `dsv3 devices` shows for FP8.
pub fn fp8_feature(arch: &str) -> String {
    match base(arch) {
        "gfx940" | "gfx941" | "gfx942" => "fp8: e4m3fnuz (MI300)".into(),
        "gfx950" => "fp8: e4m3fn e5m2 (OCP, MI350)".into(),
        a if a.starts_with("gfx12") => "fp8: e4m3fn e5m2 (OCP, RDNA4)".into(),
        _ => "fp8: none in hardware (decoded in software)".into(),
    }
}

/// Whether `arch` has matrix instructions taking f16 / bf16: MFMA on CDNA (gfx908 on), WMMA on RDNA3 / 4.
pub fn has_f16_matrix(arch: &str) -> bool {
    let a = base(arch);
    matches!(a, "gfx908" | "gfx90a" | "gfx940" | "gfx941" | "gfx942" | "gfx950")
        || a.starts_with("gfx11")
        || a.starts_with("gfx12")
}

/// Datasheets of AMD Instinct parts, matched on the runtime's device name or an `--assume` name (the most
/// specific entry first): (name fragment, f32 vector TFLOP/s, bf16 matrix TFLOP/s, fp8 matrix TFLOP/s,
/// memory TB/s, memory GB). The f32 figure is AMD's "FP32 vector", which counts packed (dual) FP32 from
/// CDNA3 on. Each row is CUs × peak clock × operations per CU and clock, which reproduces AMD's published
/// figures; the MI350 rows are [UNCONFIRMED] against a datasheet. Memory sizes are AMD's product pages
/// (MI300X 192 GB and MI325X 256 GB as in /work/shared/docs/performance-anchors.md §0; MI300A's 128 GB is
/// shared with its CPU cores).
pub const DATASHEET: &[DatasheetRow] = &[
    ("MI355X", 157.3, 2516.6, 5033.2, 8.0, 288.0),
    ("MI350X", 144.2, 2307.2, 4614.4, 8.0, 288.0),
    ("MI325X", 163.4, 1307.4, 2614.9, 6.0, 256.0),
    ("MI300X", 163.4, 1307.4, 2614.9, 5.3, 192.0),
    ("MI300A", 122.6, 980.6, 1961.2, 5.3, 128.0),
    ("MI250X", 47.9, 383.0, 0.0, 3.2768, 128.0),
    ("MI250", 45.3, 362.1, 0.0, 3.2768, 128.0),
    ("MI210", 22.6, 181.0, 0.0, 1.6384, 64.0),
];

/// The datasheet row of a device name; unknown parts get none.
pub fn datasheet(name: &str) -> Option<Datasheet> {
    dsv3_backend_gpu::device::datasheet("AMD", DATASHEET, name)
}

/// Dense datasheet peaks, for "% of peak" figures.
pub fn datasheet_peak(name: &str) -> Option<Peak> {
    datasheet(name).map(|d| d.peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A properties buffer like the runtime's: the marketing name at the start, numbers (with non-zero
    /// bytes) in between, the architecture name at `offset`.
    fn props(name: &str, arch: &str, offset: usize) -> Vec<u8> {
        let mut buf = vec![0u8; PROPERTIES_BUFFER];
        buf[..name.len()].copy_from_slice(name.as_bytes());
        for (i, b) in buf[256..offset].iter_mut().enumerate() {
            *b = (i * 37 % 251) as u8;
        }
        buf[offset..offset + arch.len()].copy_from_slice(arch.as_bytes());
        buf[offset + arch.len()] = 0;
        buf
    }

    #[test]
    fn the_architecture_name_is_found_wherever_the_layout_puts_it() {
        // ROCm 5's layout (offset 396) and ROCm 6's (well past 1 KiB), and a field after other bytes.
        for offset in [396, 1160, 4000] {
            let buf = props("AMD Instinct MI300X", "gfx942:sramecc+:xnack-", offset);
            assert_eq!(find_arch_name(&buf).as_deref(), Some("gfx942:sramecc+:xnack-"), "offset {offset}");
        }
        assert_eq!(
            find_arch_name(&props("AMD Radeon RX 7900 XTX", "gfx1100", 396)).as_deref(),
            Some("gfx1100")
        );
        assert_eq!(
            find_arch_name(&props("", "gfx90a:sramecc+:xnack-", 1160)).as_deref(),
            Some("gfx90a:sramecc+:xnack-")
        );
    }

    #[test]
    fn look_alikes_are_not_taken_for_the_architecture() {
        // A name mentioning the architecture is not the field: it does not end there.
        let buf = props("AMD Radeon Graphics (gfx1103)", "gfx1103", 396);
        assert_eq!(find_arch_name(&buf).as_deref(), Some("gfx1103"));
        let buf = props("Device gfx90a-ish", "gfx908:sramecc-:xnack-", 800);
        assert_eq!(find_arch_name(&buf).as_deref(), Some("gfx908:sramecc-:xnack-"));
        // No architecture at all, too few or too many digits, a malformed feature, a word containing gfx.
        assert_eq!(find_arch_name(&vec![0u8; PROPERTIES_BUFFER]), None);
        for bad in ["gfx9\0", "gfx12345\0", "gfx942:sramecc\0", "xgfx942\0", "gfx942:\0", "gfx94g\0"] {
            assert_eq!(find_arch_name(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(find_arch_name(b"gfx"), None);
        assert_eq!(find_arch_name(b"gfx942"), None, "no terminating NUL");
        assert_eq!(find_arch_name(b"gfx942\0").as_deref(), Some("gfx942"));
    }

    #[test]
    fn compilers_too_old_for_an_architecture_are_refused_naming_both_versions() {
        let v = |a, b| Some(Version::new(a, b));
        assert!(check_compiler("gfx90a:sramecc+:xnack-", v(5, 2)).is_ok());
        assert!(check_compiler("gfx1030", v(5, 2)).is_ok());
        assert!(check_compiler("gfx90a", None).is_ok(), "every ROCm 5 knows gfx90a");
        let why = check_compiler("gfx942:sramecc+:xnack-", v(5, 2)).unwrap_err();
        assert!(why.contains("gfx942") && why.contains(">= 6.0") && why.contains("ROCm 5.2"), "{why}");
        assert!(check_compiler("gfx942", v(6, 0)).is_ok());
        assert!(check_compiler("gfx942", v(5, 7)).is_err());
        assert!(check_compiler("gfx950", v(6, 2)).unwrap_err().contains(">= 6.4"));
        assert!(check_compiler("gfx950", v(6, 4)).is_ok());
        assert!(check_compiler("gfx1100", v(5, 2)).is_err());
        assert!(check_compiler("gfx942", None).unwrap_err().contains("could not be determined"));
        assert!(check_compiler("gfx1250", v(6, 4)).unwrap_err().contains(">= 7.0"), "unknown = newest");
        assert_eq!(base("gfx942:sramecc+:xnack-"), "gfx942");
        assert_eq!(base("gfx1100"), "gfx1100");
    }

    #[test]
    fn fp8_formats_by_architecture() {
        assert_eq!(fp8_formats("gfx942:sramecc+:xnack-"), vec![Fp8Format::E4M3Fnuz]);
        assert_eq!(fp8_formats("gfx940"), vec![Fp8Format::E4M3Fnuz]);
        assert_eq!(fp8_formats("gfx950"), vec![Fp8Format::E4M3Fn, Fp8Format::E5M2]);
        assert_eq!(fp8_formats("gfx1201"), vec![Fp8Format::E4M3Fn, Fp8Format::E5M2]);
        assert!(fp8_formats("gfx90a").is_empty() && fp8_formats("gfx1100").is_empty());
        assert_eq!(fp8_feature("gfx942"), "fp8: e4m3fnuz (MI300)");
        assert!(has_f16_matrix("gfx90a") && has_f16_matrix("gfx1100") && !has_f16_matrix("gfx1030"));
    }

    #[test]
    fn datasheet_names_match_the_most_specific_entry() {
        assert_eq!(datasheet_peak("AMD Instinct MI300X").unwrap().bytes_per_s, 5.3e12);
        assert_eq!(datasheet_peak("AMD Instinct MI300X VF").unwrap().fp8_flops, 2614.9e12);
        assert_eq!(datasheet_peak("AMD Instinct MI250X/MI250").unwrap().f32_flops, 47.9e12);
        assert_eq!(datasheet_peak("AMD Instinct MI250").unwrap().f32_flops, 45.3e12);
        assert!(datasheet_peak("AMD Radeon RX 7900 XTX").is_none());
        assert_eq!(datasheet("mi300x").unwrap().memory_bytes, 192_000_000_000);
    }
}
