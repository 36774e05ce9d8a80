//! Compiles every kernel variant of the catalog with NVRTC for the given architectures, prints registers,
//! spills and shared memory per kernel (ptxas's report), optionally writes the CUBINs, and exits non-zero
//! on any compile error or on a kernel file the catalog does not cover. No GPU or driver is needed.
//!
//! `dsv3-check-kernels --arch sm_80 --arch sm_90a [--out DIR]`

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
}

/// The number in front of `unit` in `line` ("Used 40 registers, 4096 bytes smem" → 40 / 4096).
fn number_before(line: &str, unit: &str) -> Option<u32> {
    let at = line.find(unit)?;
    line[..at].split(|c: char| !c.is_ascii_digit()).rev().find(|s| !s.is_empty())?.parse().ok()
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
    let mut failures = Vec::new();
    for k in kernels::ALL {
        if !catalog.iter().any(|v| v.kernel.name == k.name) {
            failures.push(format!(
                "kernels/cuda/{}.cu has no variant in the catalog, so nothing compiles it",
                k.name
            ));
        }
    }
    println!(
        "NVRTC {version}: {} variants of {} kernel files, for {}",
        catalog.len(),
        kernels::ALL.len(),
        archs.join(", ")
    );
    println!("{:<8} {:<70} {:>5} {:>13} {:>8}", "arch", "variant", "regs", "spill st/ld", "smem");
    for arch in &archs {
        for (i, v) in catalog.iter().enumerate() {
            check(arch, i, v, out.as_ref(), &mut failures);
        }
    }
    if failures.is_empty() {
        println!("all {} compilations succeeded", catalog.len() * archs.len());
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
            println!("{arch:<8} {:<70} {:>5} {spills:>13} {:>8}", v.key(), u.registers, u.shared);
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
            Usage { registers: 128, spill_stores: 16, spill_loads: 12, shared: 16640 }
        );
        assert_eq!(parse_usage(""), Usage::default());
    }
}
