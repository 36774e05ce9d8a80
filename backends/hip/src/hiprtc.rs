//! hiprtc: compiling a kernel variant to a code object for one architecture, cached on disk keyed by
//! architecture, hiprtc's ROCm version and file, options and source (as `dsv3-backend-cuda`'s NVRTC).
//!
//! hiprtc aborts the process when asked for an architecture it does not know (ROCm 5.2 and gfx942, for
//! one), so every compilation first checks the architecture against hiprtc's ROCm version
//! (`arch::check_compiler`) and refuses with the reason instead.

use crate::api::{self, Handle, Version, HIPRTC_SUCCESS};
use crate::arch;
use dsv3_backend_gpu::disk_cache;
use std::ffi::{c_char, c_int, CString};
use std::sync::Mutex;

/// Why a compilation did not produce a code object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtcError {
    /// hiprtc cannot be loaded.
    Unavailable(String),
    /// This hiprtc is too old for the architecture (it would abort the process): not attempted.
    Unsupported(String),
    /// hiprtc ran and failed (its log included).
    Failed(String),
}

impl std::fmt::Display for RtcError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            RtcError::Unavailable(s) | RtcError::Unsupported(s) | RtcError::Failed(s) => f.write_str(s),
        }
    }
}

/// hiprtc's ROCm version (`None` when neither `hiprtcVersion` nor the library's file name tells).
pub fn version() -> Result<Option<Version>, String> {
    Ok(api::rtc()?.version())
}

/// How dsv3 names the loaded hiprtc in `dsv3 devices` and cache keys: `hiprtc 6.2 (/opt/rocm/lib/...)`.
pub fn describe() -> Result<String, String> {
    let rtc = api::rtc()?;
    let v = rtc.version().map_or("of unknown version".to_string(), |v| v.to_string());
    Ok(format!("hiprtc {v} ({})", rtc.file.display()))
}

/// hiprtc's options for `arch` (a target id such as `gfx942:sramecc+:xnack-`: code for exactly the
/// device's target features).
pub fn options(arch: &str) -> Vec<String> {
    vec![format!("--offload-arch={arch}"), "-O3".into(), "-std=c++17".into()]
}

/// Compiles `source` (one assembled variant named `name`) for `arch`, from the disk cache when an identical
/// compilation was done before; the code object (an ELF that `hipModuleLoadData` takes).
pub fn compile(name: &str, source: &str, arch: &str) -> Result<Vec<u8>, RtcError> {
    let rtc = api::rtc().map_err(RtcError::Unavailable)?;
    arch::check_compiler(arch, rtc.version()).map_err(RtcError::Unsupported)?;
    let opts = options(arch);
    let compiler = describe().map_err(RtcError::Unavailable)?;
    let key = disk_cache::hash(&[source.as_bytes(), compiler.as_bytes(), opts.join(" ").as_bytes()]);
    let path = disk_cache::path(&format!("hip-{}-{name}", arch.replace(':', "_")), &key, ".hsaco");
    if let Some(bytes) = disk_cache::read(&path) {
        return Ok(bytes);
    }
    // hiprtc's thread safety across ROCm releases is [UNCONFIRMED]; compilations are rare (once per variant
    // and machine), so they take turns.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let code = {
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        compile_uncached(rtc, name, source, &opts)?
    };
    disk_cache::write(&path, &code);
    Ok(code)
}

fn compile_uncached(rtc: &api::Rtc, name: &str, source: &str, opts: &[String]) -> Result<Vec<u8>, RtcError> {
    let failed = |call: &str, r: c_int| RtcError::Failed(format!("{call}: {}", rtc.error_text(r)));
    let src =
        CString::new(source).map_err(|_| RtcError::Failed("kernel source contains a NUL byte".into()))?;
    let file = CString::new(format!("{name}.cu")).map_err(|e| RtcError::Failed(e.to_string()))?;
    let copts: Vec<CString> = opts
        .iter()
        .map(|o| CString::new(o.as_str()))
        .collect::<Result<_, _>>()
        .map_err(|e| RtcError::Failed(e.to_string()))?;
    let ptrs: Vec<*const c_char> = copts.iter().map(|o| o.as_ptr()).collect();
    let mut prog: Handle = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated strings and an out-pointer; no headers are passed.
    let r = unsafe {
        (rtc.create_program)(&mut prog, src.as_ptr(), file.as_ptr(), 0, std::ptr::null(), std::ptr::null())
    };
    if r != HIPRTC_SUCCESS {
        return Err(failed("hiprtcCreateProgram", r));
    }
    // SAFETY: `prog` is a live program; the option pointers outlive the call.
    let compiled = unsafe { (rtc.compile_program)(prog, ptrs.len() as c_int, ptrs.as_ptr()) };
    let result = if compiled != HIPRTC_SUCCESS {
        Err(RtcError::Failed(format!("{}:\n{}", rtc.error_text(compiled), program_log(rtc, prog))))
    } else {
        code(rtc, prog)
    };
    // SAFETY: destroys the program created above, once.
    unsafe { (rtc.destroy_program)(&mut prog) };
    result
}

fn program_log(rtc: &api::Rtc, prog: Handle) -> String {
    let mut size = 0usize;
    // SAFETY: live program, valid out-pointer.
    if unsafe { (rtc.get_program_log_size)(prog, &mut size) } != HIPRTC_SUCCESS || size == 0 {
        return String::new();
    }
    let mut buf = vec![0u8; size];
    // SAFETY: the buffer has the size hiprtc reported.
    unsafe { (rtc.get_program_log)(prog, buf.as_mut_ptr() as *mut c_char) };
    String::from_utf8_lossy(&buf).trim_end_matches('\0').trim().to_string()
}

fn code(rtc: &api::Rtc, prog: Handle) -> Result<Vec<u8>, RtcError> {
    let mut size = 0usize;
    // SAFETY: live, compiled program; valid out-pointer.
    let r = unsafe { (rtc.get_code_size)(prog, &mut size) };
    if r != HIPRTC_SUCCESS {
        return Err(RtcError::Failed(format!("hiprtcGetCodeSize: {}", rtc.error_text(r))));
    }
    if size == 0 {
        return Err(RtcError::Failed("hiprtc produced an empty code object".into()));
    }
    let mut buf = vec![0u8; size];
    // SAFETY: the buffer has the size hiprtc reported.
    let r = unsafe { (rtc.get_code)(prog, buf.as_mut_ptr() as *mut c_char) };
    if r != HIPRTC_SUCCESS {
        return Err(RtcError::Failed(format!("hiprtcGetCode: {}", rtc.error_text(r))));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_name_the_whole_target_id() {
        let o = options("gfx942:sramecc+:xnack-");
        assert_eq!(o[0], "--offload-arch=gfx942:sramecc+:xnack-");
        assert!(o.contains(&"-O3".to_string()));
    }
}
