//! Compiles every kernel variant of the catalog with NVRTC for the given architectures, prints registers,
//! spills and shared memory per kernel (ptxas's report of the static bytes, and the dynamic bytes every
//! launch of the variant gives, `Variant::shared`), optionally writes the CUBINs, and exits non-zero on any
//! compile error, on a kernel file the catalog does not cover, and on a kernel that could not run: one whose
//! registers cannot hold its largest block (`Kernel::max_block`, which the emulator enforces on every
//! launch) in one multiprocessor's register file, that spills registers to local memory, or whose static
//! and dynamic shared memory together exceed what a block of the architecture may use after opting in
//! (`arch::shared_opt_in`; the launch path opts in above 48 KiB). No GPU or driver is needed: ptxas's
//! report (NVRTC's log with `-Xptxas -v`, see nvrtc.rs) carries all of it.
//!
//! `dsv3-check-kernels --arch sm_80 --arch sm_90a [--out DIR]`

use dsv3_backend_cuda::arch;
use dsv3_backend_cuda::nvrtc::{self, Image};
use dsv3_backend_gpu::kernels::{self, Variant};
use dsv3_backend_gpu::runtime::Target;
use std::path::PathBuf;
use std::process::ExitCode;

/// ptxas's resource report for one kernel: registers, spill stores / loads (bytes), static shared memory.
#[derive(Debug, Default, PartialEq)]
struct Usage {
    registers: u32,
    spill_stores: u32,
    spill_loads: u32,
    shared: u32,
    /// Whether the log held the "Used N registers" line at all (without it nothing above was checked).
    reported: bool,
}

/// The number in front of `unit` in `line` ("Used 40 registers, 4096 bytes smem" → 40 / 4096).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let at = line.find(unit)?;
    line[..at].split(|c: char| !c.is_ascii_digit()).rev().find(|s| !s.is_empty())?.parse().ok()
}

/// 32-bit registers in one multiprocessor's register file, and the most one block may use: 64 K on every
/// architecture CI compiles for (sm_80, sm_89, sm_90a; CUDA C Programming Guide, "Technical Specifications per
/// Compute Capability").
const REGISTER_FILE: u32 = 64 * 1024;

/// Registers are given to a warp in units of 256 (the occupancy calculator's "register allocation unit
/// size", per warp): 8 per thread.
const REGISTER_UNIT: u32 = 256;

/// Why a block of `threads` threads of a kernel using `registers` each cannot launch, if it cannot.
fn block_unfit(registers: u32, threads: u32) -> Option<String> {
    let per_warp = (registers * 32).div_ceil(REGISTER_UNIT) * REGISTER_UNIT;
    let needed = threads.div_ceil(32) * per_warp;
    (needed > REGISTER_FILE).then(|| {
        format!(
            "{registers} registers × {threads} threads need {needed} registers (allocated per warp in units of {REGISTER_UNIT}), over the {REGISTER_FILE} of a block: at most {} per thread at this size",
            REGISTER_FILE / threads.div_ceil(32) / REGISTER_UNIT * REGISTER_UNIT / 32
        )
    })
}

/// Why a variant's shared memory, `static_bytes` (ptxas) and `dynamic` (each launch's), cannot be given a
/// block on `arch`, if it cannot: more than the architecture's opt-in limit, or, for an architecture
/// without a known limit, more than the 48 KiB every one gives.
fn shared_unfit(arch: &str, static_bytes: u32, dynamic: u32) -> Option<String> {
    let total = static_bytes as u64 + dynamic as u64;
    let (limit, which) = match arch::shared_opt_in(arch) {
        Some(l) => (l, "its opt-in limit"),
        None => (48 * 1024, "48 KiB (no opt-in limit known for it)"),
    };
    (total > limit as u64).then(|| {
        format!(
            "{static_bytes} bytes of static and {dynamic} of dynamic shared memory per block, over {arch}'s \
             {limit}, {which}"
        )
    })
}

fn parse_usage(log: &str) -> Usage {
    let mut u = Usage::default();
    for line in log.lines() {
        if line.contains("spill stores") {
            u.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            u.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        }
        if line.contains("Used") && line.contains("registers") {
            u.registers = number_before(line, "registers").unwrap_or(0);
            u.reported = true;
            u.shared = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    u
}

fn main() -> ExitCode {
    let mut archs = Vec::new();
    let mut out: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--arch", Some(v)) => archs.push(v),
            ("--out", Some(v)) => out = Some(v.into()),
            _ => {
                eprintln!("usage: dsv3-check-kernels --arch sm_80 [--arch sm_90a ...] [--out DIR]");
                return ExitCode::from(2);
            }
        }
    }
    if archs.is_empty() {
        eprintln!("dsv3-check-kernels: give at least one --arch");
        return ExitCode::from(2);
    }
    let version = match nvrtc::version() {
        Ok((a, b)) => format!("{a}.{b}"),
        Err(e) => {
            eprintln!("dsv3-check-kernels: {e}");
            return ExitCode::FAILURE;
        }
    };
    let catalog = dsv3_backend_gpu::ops::catalog();
    let tile = dsv3_backend_gpu::ops::tile_catalog();
    let mut failures = Vec::new();
    for k in kernels::ALL {
        if !catalog.iter().chain(&tile).any(|v| v.kernel.name == k.name) {
            failures.push(format!(
                "kernels/cuda/{}.cu has no variant in the catalog, so nothing compiles it",
                k.name
            ));
        }
    }
    println!(
        "NVRTC {version}: {} variants (and {} on the tile layer, for sm_80 on) of {} kernel files, for {}",
        catalog.len(),
        tile.len(),
        kernels::ALL.len(),
        archs.join(", ")
    );
    println!(
        "{:<8} {:<70} {:>5} {:>13} {:>8} {:>8}",
        "arch", "variant", "regs", "spill st/ld", "smem", "dyn"
    );
    let mut compiled = 0;
    for arch in &archs {
        let tile = dsv3_backend_gpu::ops::tile_catalog_for(&Target::Cuda { arch: arch.clone() });
        for (i, v) in catalog.iter().chain(&tile).enumerate() {
            check(arch, i, v, out.as_ref(), &mut failures);
            compiled += 1;
        }
    }
    if failures.is_empty() {
        println!("all {compiled} compilations succeeded");
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        ExitCode::FAILURE
    }
}

fn check(arch: &str, index: usize, v: &Variant, out: Option<&PathBuf>, failures: &mut Vec<String>) {
    let source = v.assemble(&Target::Cuda { arch: arch.to_string() });
    match nvrtc::compile(v.kernel.name, &source, arch, true) {
        Ok(c) => {
            let u = parse_usage(&c.log);
            let spills = format!("{}/{}", u.spill_stores, u.spill_loads);
            println!(
                "{arch:<8} {:<70} {:>5} {spills:>13} {:>8} {:>8}",
                v.key(),
                u.registers,
                u.shared,
                v.shared
            );
            if let Some(why) = shared_unfit(arch, u.shared, v.shared) {
                failures.push(format!("{arch} {}: {why}", v.key()));
            }
            if !u.reported {
                failures.push(format!("{arch} {}: ptxas reported no register usage to check", v.key()));
            }
            if let Some(why) = block_unfit(u.registers, v.kernel.max_block) {
                failures.push(format!("{arch} {}: cannot launch its largest block: {why}", v.key()));
            }
            if u.spill_stores + u.spill_loads > 0 {
                failures.push(format!(
                    "{arch} {}: spills registers ({} bytes stored, {} loaded per thread to local memory)",
                    v.key(),
                    u.spill_stores,
                    u.spill_loads
                ));
            }
            let Image::Cubin(bytes) = &c.image else {
                failures.push(format!(
                    "{arch} {}: NVRTC {arch} gave PTX, not a CUBIN (architecture unknown to it)",
                    v.key()
                ));
                return;
            };
            if let Some(dir) = out {
                let path = dir.join(format!("{arch}-{:03}-{}.cubin", index, v.kernel.name));
                if let Err(e) = std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, bytes)) {
                    failures.push(format!("{}: {e}", path.display()));
                }
            }
        }
        Err(log) => {
            println!("{arch:<8} {:<70} FAILED", v.key());
            failures.push(format!("{arch} {}:\n{log}", v.key()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptxas_reports_parse() {
        let log = "ptxas info    : 0 bytes gmem\n\
                   ptxas info    : Compiling entry function 'gemm' for 'sm_90a'\n\
                   ptxas info    : Function properties for gemm\n    \
                   8 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads\n\
                   ptxas info    : Used 128 registers, used 1 barriers, 16640 bytes smem, 400 bytes cmem[0]\n";
        assert_eq!(
            parse_usage(log),
            Usage { registers: 128, spill_stores: 16, spill_loads: 12, shared: 16640, reported: true }
        );
        assert_eq!(parse_usage(""), Usage::default());
    }

    /// Static and dynamic together against the architecture's opt-in limit (sm_89: 99 KiB), or 48 KiB where
    /// none is known.
    #[test]
    fn shared_memory_fits_the_architectures_opt_in_limit() {
        assert_eq!(shared_unfit("sm_89", 1024, 100352), None);
        let why = shared_unfit("sm_89", 1024, 100353).unwrap();
        assert!(why.contains("over sm_89's 101376"), "{why}");
        assert_eq!(shared_unfit("sm_90a", 0, 232448), None);
        assert!(shared_unfit("sm_90a", 1, 232448).is_some());
        assert_eq!(shared_unfit("sm_75", 0, 49152), None);
        assert!(shared_unfit("sm_75", 0, 49153).unwrap().contains("no opt-in limit known"));
    }

    #[test]
    fn blocks_fit_the_register_file_as_warps_are_given_registers() {
        // 64 registers at 1024 threads fill the 64 K exactly; 65 round up to 72 per thread and do not fit.
        assert_eq!(block_unfit(64, 1024), None);
        let why = block_unfit(65, 1024).unwrap();
        assert!(why.contains("73728") && why.contains("at most 64 per thread"), "{why}");
        // 255 (the most ptxas gives a thread) fit at 256 threads, not at 512.
        assert_eq!(block_unfit(255, 256), None);
        assert!(block_unfit(255, 512).unwrap().contains("at most 128 per thread"));
        // A partial warp is given a whole warp's registers.
        assert_eq!(block_unfit(64, 993), None);
        assert!(block_unfit(128, 513).is_some());
    }
}
