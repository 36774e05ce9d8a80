//! NVRTC: finding the library and the CUDA headers, compiling a kernel variant to a CUBIN for one
//! architecture (or to PTX when this NVRTC does not know the architecture, for the driver to compile), and
//! caching the result on disk keyed by architecture, NVRTC version, options and source.
//!
//! The library is searched where CUDA installs it and where pip puts it (`nvidia-cuda-nvrtc` wheels, which
//! PyTorch brings along): a copy found by path is loaded before cudarc looks it up by name, and the dynamic
//! loader then hands cudarc that same copy.

use cudarc::nvrtc::sys;
use dsv3_backend_gpu::disk_cache;
use dsv3_core::{Error, Result};
use std::ffi::{c_char, c_int, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const BACKEND: &str = "cuda";

/// Directories CUDA libraries live in, most specific first: `$DSV3_CUDA_LIB_DIR`, `$CUDA_HOME/lib64`,
/// `$CUDA_PATH/lib64`, `/usr/local/cuda/lib64`, then pip's `nvidia/cu13/lib` and `nvidia/cuda_nvrtc/lib`
/// under Python's site directories (system, user, `$VIRTUAL_ENV`, `$CONDA_PREFIX`).
pub fn library_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    if let Some(d) = env("DSV3_CUDA_LIB_DIR") {
        dirs.push(d);
    }
    for k in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(d) = env(k) {
            dirs.push(d.join("lib64"));
            dirs.push(d.join("lib"));
        }
    }
    dirs.push("/usr/local/cuda/lib64".into());
    for site in python_site_dirs() {
        for sub in ["nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib", "nvidia/cu12/lib"] {
            dirs.push(site.join(sub));
        }
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

fn python_site_dirs() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = vec!["/usr/local/lib".into(), "/usr/lib".into(), "/opt/conda/lib".into()];
    for k in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(p) = std::env::var_os(k) {
            roots.push(PathBuf::from(p).join("lib"));
        }
    }
    if let Some(h) = std::env::var_os("HOME") {
        roots.push(PathBuf::from(h).join(".local/lib"));
    }
    let mut sites = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else { continue };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("python3") {
                sites.push(e.path().join("site-packages"));
                sites.push(e.path().join("dist-packages"));
            }
        }
    }
    sites.retain(|d| d.is_dir());
    sites
}

/// Makes NVRTC loadable by cudarc, or says why it is not. Call before any other function here.
pub fn ensure_loaded() -> Result<()> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            // SAFETY: probing only dlopens candidate names; nothing is called.
            if unsafe { sys::is_culib_present() } {
                return Ok(());
            }
            let mut tried = Vec::new();
            for dir in library_dirs() {
                for name in ["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"] {
                    let path = dir.join(name);
                    if !path.exists() {
                        continue;
                    }
                    // NVRTC opens its builtins library by name at compile time, which some wheels' RUNPATH
                    // does not reach: load it from the same directory first.
                    preload_builtins(&dir);
                    // SAFETY: loading NVRTC runs no initialisers with preconditions. The handle is leaked
                    // on purpose: cudarc keeps using this copy for the life of the process.
                    match unsafe { libloading::Library::new(&path) } {
                        Ok(lib) => {
                            std::mem::forget(lib);
                            // SAFETY: as above.
                            if unsafe { sys::is_culib_present() } {
                                return Ok(());
                            }
                        }
                        Err(e) => tried.push(format!("{}: {e}", path.display())),
                    }
                }
            }
            Err(format!(
                "NVRTC (libnvrtc.so.13 / .12) not found on the loader path nor in {} (set DSV3_CUDA_LIB_DIR, or \
                 `pip install nvidia-cuda-nvrtc`){}",
                if library_dirs().is_empty() { "any CUDA or pip directory".to_string() } else {
                    library_dirs().iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                },
                if tried.is_empty() { String::new() } else { format!("; failed: {}", tried.join("; ")) }
            ))
        })
        .clone()
        .map_err(|reason| Error::Unavailable { backend: BACKEND.into(), reason })
}

fn preload_builtins(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name().to_string_lossy().starts_with("libnvrtc-builtins.so") {
            // SAFETY: as for NVRTC itself; leaked so that NVRTC's later lookup by name finds this copy.
            if let Ok(lib) = unsafe { libloading::Library::new(e.path()) } {
                std::mem::forget(lib);
            }
        }
    }
}

/// NVRTC's version as (major, minor).
pub fn version() -> Result<(i32, i32)> {
    ensure_loaded()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    let r = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    check(r, "nvrtcVersion")?;
    Ok((major, minor))
}

/// Compute capabilities NVRTC can compile SASS for (e.g. 75, 80, 86, 89, 90, 100, 120).
pub fn supported_archs() -> Result<Vec<i32>> {
    ensure_loaded()?;
    let mut n: c_int = 0;
    // SAFETY: valid out-pointer.
    check(unsafe { sys::nvrtcGetNumSupportedArchs(&mut n) }, "nvrtcGetNumSupportedArchs")?;
    let mut archs = vec![0 as c_int; n.max(0) as usize];
    // SAFETY: the buffer holds the number of entries NVRTC just reported.
    check(unsafe { sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) }, "nvrtcGetSupportedArchs")?;
    Ok(archs)
}

fn check(r: sys::nvrtcResult, call: &str) -> Result<()> {
    if r == sys::nvrtcResult::NVRTC_SUCCESS {
        return Ok(());
    }
    Err(Error::Driver { backend: BACKEND.into(), call: call.into(), reason: format!("{r:?}") })
}

/// A CUDA include directory holding `cuda_fp8.h` and `cuda_bf16.h`: `$DSV3_CUDA_INCLUDE`,
/// `$CUDA_HOME/include`, `$CUDA_PATH/include`, `/usr/local/cuda/include`, then pip's `nvidia/cu13/include`
/// (`nvidia-cuda-runtime`) next to the library directories. dsv3's kernels decode every number format
/// themselves and compile without these headers; they are found, passed to NVRTC, and shown by
/// `dsv3 devices` for kernels that use CUDA's intrinsic types.
pub fn include_dir() -> std::result::Result<PathBuf, String> {
    // Searched once per process: it walks Python's site directories, and every kernel compilation asks.
    static FOUND: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    FOUND.get_or_init(find_include_dir).clone()
}

fn find_include_dir() -> std::result::Result<PathBuf, String> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("DSV3_CUDA_INCLUDE") {
        candidates.push(d.into());
    }
    for k in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(d) = std::env::var_os(k) {
            candidates.push(PathBuf::from(d).join("include"));
        }
    }
    candidates.push("/usr/local/cuda/include".into());
    for lib in library_dirs() {
        if let Some(parent) = lib.parent() {
            candidates.push(parent.join("include"));
        }
    }
    for site in python_site_dirs() {
        candidates.push(site.join("nvidia/cu13/include"));
        candidates.push(site.join("nvidia/cuda_runtime/include"));
    }
    let has = |d: &Path| d.join("cuda_fp8.h").is_file() && d.join("cuda_bf16.h").is_file();
    candidates.iter().find(|d| has(d)).cloned().ok_or_else(|| {
        "cuda_fp8.h / cuda_bf16.h not found (set DSV3_CUDA_INCLUDE or CUDA_HOME, or `pip install \
         nvidia-cuda-runtime`)"
            .to_string()
    })
}

/// What NVRTC produced.
pub enum Image {
    /// Machine code for the requested architecture.
    Cubin(Vec<u8>),
    /// PTX (NUL-terminated) for the driver to compile: this NVRTC does not know the device's architecture.
    Ptx(Vec<u8>),
}

impl Image {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Image::Cubin(b) | Image::Ptx(b) => b,
        }
    }
}

/// The result of one compilation: the image and NVRTC's log (with `verbose`, ptxas's register and spill
/// report per kernel).
pub struct Compiled {
    pub image: Image,
    pub log: String,
}

/// NVRTC's version (major, minor) and the architectures it compiles SASS for.
type Toolchain = (i32, i32, Vec<i32>);

/// NVRTC's version and supported architectures, asked once per process (every compilation needs them).
fn toolchain() -> std::result::Result<(i32, i32, &'static [i32]), String> {
    static TOOLCHAIN: OnceLock<std::result::Result<Toolchain, String>> = OnceLock::new();
    let found = TOOLCHAIN.get_or_init(|| {
        let (major, minor) = version().map_err(|e| e.to_string())?;
        Ok((major, minor, supported_archs().map_err(|e| e.to_string())?))
    });
    match found {
        Ok((major, minor, archs)) => Ok((*major, *minor, archs.as_slice())),
        Err(e) => Err(e.clone()),
    }
}

/// `sm_90a` → ("90", "a"): the numeric part and the suffix.
fn split_arch(arch: &str) -> Option<(i32, &str)> {
    let rest = arch.strip_prefix("sm_")?;
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    Some((rest[..digits].parse().ok()?, &rest[digits..]))
}

/// NVRTC options for `arch`: SASS when NVRTC supports it, else PTX for the newest virtual architecture it
/// supports at or below the device's (the driver then compiles it).
pub fn options(
    arch: &str,
    supported: &[i32],
    verbose: bool,
) -> std::result::Result<(Vec<String>, bool), String> {
    let (cc, _) = split_arch(arch).ok_or_else(|| format!("`{arch}` is not an sm_XY architecture"))?;
    let mut opts = vec!["--std=c++17".to_string()];
    let sass = supported.contains(&cc);
    if sass {
        opts.push(format!("--gpu-architecture={arch}"));
    } else {
        let best = supported.iter().copied().filter(|&a| a <= cc).max().ok_or_else(|| {
            format!("NVRTC supports none of the architectures up to {arch} (it knows {supported:?})")
        })?;
        opts.push(format!("--gpu-architecture=compute_{best}"));
    }
    if let Ok(inc) = include_dir() {
        opts.push(format!("-I{}", inc.display()));
    }
    if verbose && sass {
        opts.push("--ptxas-options=-v".into());
    }
    Ok((opts, sass))
}

/// Compiles `source` (one assembled variant named `name`) for `arch`, from the disk cache when an identical
/// compilation was done before. `verbose` asks ptxas for its resource report (never cached).
pub fn compile(name: &str, source: &str, arch: &str, verbose: bool) -> std::result::Result<Compiled, String> {
    let (major, minor, supported) = toolchain()?;
    let (opts, sass) = options(arch, supported, verbose)?;
    let nvrtc = format!("nvrtc {major}.{minor}");
    let key = disk_cache::hash(&[source.as_bytes(), nvrtc.as_bytes(), opts.join(" ").as_bytes()]);
    let path = disk_cache::path(&format!("cuda-{arch}-{name}"), &key, if sass { ".cubin" } else { ".ptx" });
    if !verbose {
        if let Some(bytes) = disk_cache::read(&path) {
            let image = if sass { Image::Cubin(bytes) } else { Image::Ptx(bytes) };
            return Ok(Compiled { image, log: String::new() });
        }
    }
    let compiled = compile_uncached(name, source, &opts, sass)?;
    disk_cache::write(&path, compiled.image.bytes());
    Ok(compiled)
}

fn compile_uncached(
    name: &str,
    source: &str,
    opts: &[String],
    sass: bool,
) -> std::result::Result<Compiled, String> {
    let src = CString::new(source).map_err(|_| "kernel source contains a NUL byte".to_string())?;
    let file = CString::new(format!("{name}.cu")).map_err(|e| e.to_string())?;
    let copts: Vec<CString> =
        opts.iter().map(|o| CString::new(o.as_str())).collect::<Result<_, _>>().map_err(|e| e.to_string())?;
    let ptrs: Vec<*const c_char> = copts.iter().map(|o| o.as_ptr()).collect();
    let mut prog: sys::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated strings and an out-pointer; no headers are passed.
    let r = unsafe {
        sys::nvrtcCreateProgram(&mut prog, src.as_ptr(), file.as_ptr(), 0, std::ptr::null(), std::ptr::null())
    };
    if r != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcCreateProgram: {r:?}"));
    }
    // SAFETY: `prog` is a live program; the option pointers outlive the call.
    let compiled = unsafe { sys::nvrtcCompileProgram(prog, ptrs.len() as c_int, ptrs.as_ptr()) };
    let log = program_log(prog);
    let result = if compiled != sys::nvrtcResult::NVRTC_SUCCESS {
        Err(format!("{compiled:?}:\n{log}"))
    } else {
        image(prog, sass).map(|image| Compiled { image, log })
    };
    // SAFETY: destroys the program created above, once.
    unsafe { sys::nvrtcDestroyProgram(&mut prog) };
    result
}

fn program_log(prog: sys::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: live program, valid out-pointer.
    if unsafe { sys::nvrtcGetProgramLogSize(prog, &mut size) } != sys::nvrtcResult::NVRTC_SUCCESS || size == 0
    {
        return String::new();
    }
    let mut buf = vec![0u8; size];
    // SAFETY: the buffer has the size NVRTC reported.
    unsafe { sys::nvrtcGetProgramLog(prog, buf.as_mut_ptr() as *mut c_char) };
    String::from_utf8_lossy(&buf).trim_end_matches('\0').trim().to_string()
}

fn image(prog: sys::nvrtcProgram, sass: bool) -> std::result::Result<Image, String> {
    let mut size = 0usize;
    // SAFETY: live, compiled program; out-pointer valid; buffers sized as NVRTC reports.
    unsafe {
        if sass {
            let r = sys::nvrtcGetCUBINSize(prog, &mut size);
            if r != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(format!("nvrtcGetCUBINSize: {r:?}"));
            }
            let mut buf = vec![0u8; size];
            let r = sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char);
            if r != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(format!("nvrtcGetCUBIN: {r:?}"));
            }
            Ok(Image::Cubin(buf))
        } else {
            let r = sys::nvrtcGetPTXSize(prog, &mut size);
            if r != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(format!("nvrtcGetPTXSize: {r:?}"));
            }
            let mut buf = vec![0u8; size];
            let r = sys::nvrtcGetPTX(prog, buf.as_mut_ptr() as *mut c_char);
            if r != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(format!("nvrtcGetPTX: {r:?}"));
            }
            Ok(Image::Ptx(buf))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_nvrtc_knows_compile_to_sass_others_to_ptx_for_the_driver() {
        let supported = [75, 80, 86, 89, 90, 100];
        let (o, sass) = options("sm_90a", &supported, true).unwrap();
        assert!(
            sass && o.contains(&"--gpu-architecture=sm_90a".to_string())
                && o.contains(&"--ptxas-options=-v".to_string())
        );
        let (o, sass) = options("sm_120a", &supported, true).unwrap();
        assert!(!sass && o.contains(&"--gpu-architecture=compute_100".to_string()));
        assert!(!o.iter().any(|x| x.starts_with("--ptxas")), "no ptxas without SASS");
        assert!(options("sm_70", &supported, false).is_err());
        assert!(options("gfx90a", &supported, false).is_err());
        assert_eq!(split_arch("sm_100a"), Some((100, "a")));
        assert_eq!(split_arch("sm_80"), Some((80, "")));
    }
}
