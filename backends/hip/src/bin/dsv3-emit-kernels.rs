//! Writes every kernel variant of the catalog as a HIP translation unit, for an offline compiler (hipcc) to
//! check, with the tile layer's variants (MFMA) for the architectures that have it (gfx90a, gfx94x):
//! `DIR/<arch>/NNN-<kernel>.hip`, and `DIR/<arch>/index.tsv` with one `NNN<TAB>variant<TAB>dynamic` line
//! per file (`dynamic`: the bytes of dynamic shared memory each launch gives, `Variant::shared`, which the
//! LDS check adds to the compiler's static bytes). Exits non-zero when a kernel file has no variant in the catalog (nothing would compile it). Needs
//! neither ROCm nor a GPU.
//!
//! With `--hiprtc` it also compiles every variant in this process with hiprtc, as the backend does at run
//! time (hiprtc sees the sources without `hip_runtime.h`, unlike hipcc), and fails on any error. An
//! architecture this hiprtc is too old for is skipped with the reason (hiprtc would abort the process).
//!
//! `dsv3-emit-kernels --arch gfx90a [--arch gfx940] [--warp 64] --out DIR [--hiprtc]`

use dsv3_backend_gpu::kernels::{self, Variant};
use dsv3_backend_gpu::runtime::Target;
use dsv3_backend_hip::hiprtc::{self, RtcError};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Kernel files neither the catalog nor the tile layer's catalog covers.
fn uncovered(catalog: &[Variant]) -> Vec<&'static str> {
    let tile = dsv3_backend_gpu::ops::tile_catalog();
    let covered = |name: &str| catalog.iter().chain(&tile).any(|v| v.kernel.name == name);
    kernels::ALL.iter().filter(|k| !covered(k.name)).map(|k| k.name).collect()
}

fn emit(dir: &Path, target: &Target, catalog: &[Variant]) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mut index = String::new();
    for (i, v) in catalog.iter().enumerate() {
        std::fs::write(dir.join(format!("{i:03}-{}.hip", v.kernel.name)), v.assemble(target))?;
        index.push_str(&format!("{i:03}\t{}\t{}\n", v.key(), v.shared));
    }
    std::fs::write(dir.join("index.tsv"), index)?;
    Ok(catalog.len())
}

/// Compiles every variant for `target` with hiprtc; the failures.
fn compile_all(target: &Target, catalog: &[Variant]) -> Vec<String> {
    let arch = target.arch();
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for v in catalog {
        match hiprtc::compile(v.kernel.name, &v.assemble(target), arch) {
            Ok(_) => {}
            Err(RtcError::Unsupported(why)) => {
                println!("hiprtc: {arch} skipped: {why}");
                return failures;
            }
            Err(e) => failures.push(format!("hiprtc {arch} {}:\n{e}", v.key())),
        }
    }
    let compiler = hiprtc::describe().unwrap_or_default();
    println!(
        "{compiler}: {} of {} variants compiled for {arch} in {:.1} s",
        catalog.len() - failures.len(),
        catalog.len(),
        started.elapsed().as_secs_f64()
    );
    failures
}

fn main() -> ExitCode {
    let mut archs = Vec::new();
    let mut warp = 64u32;
    let mut out: Option<PathBuf> = None;
    let mut with_hiprtc = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--hiprtc" {
            with_hiprtc = true;
            continue;
        }
        match (a.as_str(), args.next()) {
            ("--arch", Some(v)) => archs.push(v),
            ("--warp", Some(v)) if v == "32" || v == "64" => warp = v.parse().unwrap_or(64),
            ("--out", Some(v)) => out = Some(v.into()),
            _ => {
                eprintln!(
                    "usage: dsv3-emit-kernels --arch gfx90a [--arch gfx940 ...] [--warp 32|64] --out DIR"
                );
                return ExitCode::from(2);
            }
        }
    }
    let Some(out) = out.filter(|_| !archs.is_empty()) else {
        eprintln!("dsv3-emit-kernels: give at least one --arch, and --out");
        return ExitCode::from(2);
    };
    let catalog = dsv3_backend_gpu::ops::catalog();
    let mut failed = false;
    for name in uncovered(&catalog) {
        eprintln!("FAILED: kernels/cuda/{name}.cu has no variant in the catalog, so nothing compiles it");
        failed = true;
    }
    for arch in &archs {
        let target = Target::Hip { arch: arch.clone(), warp };
        let mut catalog = catalog.clone();
        catalog.extend(dsv3_backend_gpu::ops::tile_catalog_for(&target));
        match emit(&out.join(arch), &target, &catalog) {
            Ok(n) => println!("{n} variants of {} kernel files for {arch} (wave{warp})", kernels::ALL.len()),
            Err(e) => {
                eprintln!("FAILED: writing {}: {e}", out.join(arch).display());
                failed = true;
            }
        }
        if with_hiprtc {
            for f in compile_all(&target, &catalog) {
                eprintln!("FAILED: {f}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_file_has_a_variant_and_variants_are_written_for_hip() {
        let catalog = dsv3_backend_gpu::ops::catalog();
        assert_eq!(uncovered(&catalog), Vec::<&str>::new());
        let dir = std::env::temp_dir().join(format!("dsv3-emit-test-{}", std::process::id()));
        let n = emit(&dir, &Target::Hip { arch: "gfx90a".into(), warp: 64 }, &catalog[..1]).unwrap();
        assert_eq!(n, 1);
        let src = std::fs::read_to_string(dir.join(format!("000-{}.hip", catalog[0].kernel.name))).unwrap();
        assert!(src.contains("#define DSV3_HIP 1") && src.contains("#define DSV3_WARP 64"));
        let index = std::fs::read_to_string(dir.join("index.tsv")).unwrap();
        assert_eq!(index, format!("000\t{}\t0\n", catalog[0].key()));
        let _ = std::fs::remove_dir_all(&dir);
        // With no catalog, every file but the tile layer's (covered by its own catalog) is uncovered.
        let tile = dsv3_backend_gpu::ops::tile_catalog();
        let portable = kernels::ALL.iter().filter(|k| !tile.iter().any(|v| v.kernel.name == k.name));
        assert_eq!(uncovered(&[]), portable.map(|k| k.name).collect::<Vec<_>>());
    }
}
