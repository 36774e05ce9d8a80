//! libamdhip64 and hiprtc, opened at run time with libloading: the entry points this backend calls, each
//! checked to exist before any is called, and the ROCm version of what was loaded.
//!
//! Only struct-free calls are made (device attributes rather than `hipDeviceProp_t` fields), so the same
//! binary runs against ROCm 5, 6 and 7. The one value without an attribute, the architecture name, is read
//! without relying on the struct's layout (`arch::find_arch_name`).

use libloading::Library;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub const BACKEND: &str = "hip";

/// `hipError_t` (a C enum).
pub type HipError = c_int;
pub const HIP_SUCCESS: HipError = 0;
pub const HIP_ERROR_OUT_OF_MEMORY: HipError = 2;
pub const HIP_ERROR_NO_DEVICE: HipError = 100;

/// `hipDeviceAttribute_t` values used here. They are the same in ROCm 5.x and 6.x (ROCm 6 renamed retired
/// entries `...Unused<n>` and appended new ones, keeping every number).
pub const ATTRIBUTE_MULTIPROCESSOR_COUNT: c_int = 63;
pub const ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: c_int = 74;
pub const ATTRIBUTE_WARP_SIZE: c_int = 87;

/// `hipFunction_attribute` `HIP_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES`: a function's static shared memory.
pub const FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: c_int = 1;

/// `hipStreamNonBlocking`: no implicit synchronisation with the null stream.
pub const STREAM_NON_BLOCKING: c_uint = 1;

/// `hipEventDisableTiming`: an event only for synchronisation, the cheapest kind.
pub const EVENT_DISABLE_TIMING: c_uint = 2;

/// `hiprtcResult` success.
pub const HIPRTC_SUCCESS: c_int = 0;

/// An opaque HIP handle or device address (`hipStream_t`, `hipModule_t`, `hipFunction_t`, `hipDeviceptr_t`).
pub type Handle = *mut c_void;

/// Entry points of libamdhip64 this backend calls.
pub const HIP_SYMBOLS: &[&str] = &[
    "hipInit",
    "hipGetErrorName",
    "hipGetErrorString",
    "hipRuntimeGetVersion",
    "hipGetDeviceCount",
    "hipDeviceGet",
    "hipDeviceGetName",
    "hipDeviceTotalMem",
    "hipDeviceGetAttribute",
    "hipSetDevice",
    "hipMalloc",
    "hipFree",
    "hipMemcpyHtoDAsync",
    "hipMemcpyDtoHAsync",
    "hipMemcpyDtoDAsync",
    "hipStreamCreateWithFlags",
    "hipStreamSynchronize",
    "hipStreamDestroy",
    "hipStreamWaitEvent",
    "hipEventCreateWithFlags",
    "hipEventRecord",
    "hipEventSynchronize",
    "hipEventDestroy",
    "hipMemcpyPeerAsync",
    "hipModuleLoadData",
    "hipModuleGetFunction",
    "hipModuleUnload",
    "hipFuncGetAttribute",
    "hipModuleLaunchKernel",
];

/// Stream capture and graphs: optional. A libamdhip64 without them still runs every op; its devices report
/// `graph_capture: false` and capture is `Unsupported`.
pub const GRAPH_SYMBOLS: &[&str] = &[
    "hipStreamBeginCapture",
    "hipStreamEndCapture",
    "hipGraphInstantiate",
    "hipGraphLaunch",
    "hipGraphExecDestroy",
    "hipGraphDestroy",
];

/// `hipStreamCaptureModeRelaxed`.
pub const STREAM_CAPTURE_MODE_RELAXED: c_int = 2;

/// Either fills a `hipDeviceProp_t`, first found first: ROCm 6 introduced a new layout under a new name
/// (`hipGetDeviceProperties` is a macro for it in ROCm 6's headers) and kept the old name with the old layout
/// for binaries built against ROCm 5; ROCm 5 has only the old name.
pub const PROPERTIES_SYMBOLS: [&str; 2] = ["hipGetDevicePropertiesR0600", "hipGetDeviceProperties"];

/// Entry points of hiprtc this backend calls.
/// (Not `hiprtcVersion`: it returns a constant 9.0 in ROCm 5 and 6; the version comes from the file.)
pub const HIPRTC_SYMBOLS: &[&str] = &[
    "hiprtcGetErrorString",
    "hiprtcCreateProgram",
    "hiprtcCompileProgram",
    "hiprtcDestroyProgram",
    "hiprtcGetProgramLogSize",
    "hiprtcGetProgramLog",
    "hiprtcGetCodeSize",
    "hiprtcGetCode",
];

/// A ROCm release as (major, minor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32) -> Version {
        Version { major, minor }
    }

    /// From `HIP_VERSION` as `hipRuntimeGetVersion` reports it: major·10⁷ + minor·10⁵ + patch (ROCm ≥ 5).
    pub fn from_hip_version(v: i64) -> Option<Version> {
        if v < 10_000_000 {
            return None;
        }
        Some(Version::new((v / 10_000_000) as u32, ((v / 100_000) % 100) as u32))
    }

    /// From a library's file name: `libamdhip64.so.5.2.21153` or `libhiprtc.so.6.2.60200` → 5.2 / 6.2.
    /// A name with no minor version (`libamdhip64.so.6`) gives none.
    pub fn from_file_name(path: &Path) -> Option<Version> {
        let name = path.file_name()?.to_str()?;
        let (_, tail) = name.split_once(".so.")?;
        let mut parts = tail.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Version::new(major, minor))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Directories ROCm installs its libraries in, for machines whose loader path lacks them: `$ROCM_PATH/lib`,
/// `$HIP_PATH/lib`, `/opt/rocm/lib` (those that exist).
fn rocm_lib_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["ROCM_PATH", "HIP_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|d| PathBuf::from(d).join("lib"))
        .collect();
    dirs.push("/opt/rocm/lib".into());
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Where libamdhip64 is looked for: `$DSV3_HIP_LIB` alone when set, else the names the dynamic loader
/// resolves (the unversioned name comes with ROCm's -dev packages, the versioned ones with the runtime
/// alone), then ROCm's own directories.
pub fn hip_candidates() -> Vec<String> {
    if let Some(p) = std::env::var_os("DSV3_HIP_LIB") {
        return vec![p.to_string_lossy().into_owned()];
    }
    let mut c: Vec<String> = ["libamdhip64.so", "libamdhip64.so.7", "libamdhip64.so.6", "libamdhip64.so.5"]
        .map(String::from)
        .into();
    c.extend(rocm_lib_dirs().iter().map(|d| d.join("libamdhip64.so").display().to_string()));
    c
}

/// Where hiprtc is looked for: `$DSV3_HIPRTC_LIB` alone when set, else libhiprtc (ROCm 6 and later moved
/// hiprtc into a library of its own), then the HIP runtime's candidates (ROCm 5 has hiprtc inside it).
pub fn hiprtc_candidates() -> Vec<String> {
    if let Some(p) = std::env::var_os("DSV3_HIPRTC_LIB") {
        return vec![p.to_string_lossy().into_owned()];
    }
    let mut c: Vec<String> = ["libhiprtc.so", "libhiprtc.so.7", "libhiprtc.so.6"].map(String::from).into();
    c.extend(rocm_lib_dirs().iter().map(|d| d.join("libhiprtc.so").display().to_string()));
    c.extend(hip_candidates());
    c
}

/// Opens the first candidate that loads and has every symbol of `required`; otherwise says what each
/// candidate lacked (a candidate that does not exist is only listed).
fn open_first(
    candidates: &[String],
    required: &[&str],
    any_of: &[&str],
) -> Result<(Library, String), String> {
    let mut problems = Vec::new();
    let mut absent = Vec::new();
    for name in candidates {
        // SAFETY: loading a ROCm library runs its initialisers, which have no preconditions.
        let lib = match unsafe { Library::new(name.as_str()) } {
            Ok(lib) => lib,
            Err(e) => {
                // libloading's own text is only "dlopen failed"; the loader's message is its source.
                let text = std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string());
                // Only the candidate itself missing is "not found"; a dependency it lacks is a problem to show.
                if text.starts_with(&format!("{name}: cannot open shared object file: No such file")) {
                    absent.push(name.clone());
                } else {
                    problems.push(format!("{name}: {text}"));
                }
                continue;
            }
        };
        // SAFETY: only looks names up.
        let has = |s: &&str| unsafe { lib.get::<*const c_void>(*s) }.is_ok();
        let mut missing: Vec<&str> = required.iter().filter(|s| !has(s)).copied().collect();
        let either = any_of.join(" / ");
        if !any_of.is_empty() && !any_of.iter().any(has) {
            missing.push(&either);
        }
        if missing.is_empty() {
            return Ok((lib, name.clone()));
        }
        problems.push(format!("{name} lacks {}", missing.join(", ")));
    }
    let mut why = Vec::new();
    if !absent.is_empty() {
        why.push(format!("not found: {}", absent.join(", ")));
    }
    why.extend(problems);
    Err(why.join("; "))
}

/// The file a loaded library was mapped from (symbolic links resolved by the loader), found from the
/// address of one of its functions in `/proc/self/maps`; its name carries the full ROCm version.
pub fn mapped_file(addr: usize) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    for line in maps.lines() {
        let mut fields = line.splitn(6, ' ');
        let range = fields.next()?;
        let (start, end) = range.split_once('-')?;
        let (start, end) = (usize::from_str_radix(start, 16).ok()?, usize::from_str_radix(end, 16).ok()?);
        if (start..end).contains(&addr) {
            let path = fields.nth(4)?.trim_start();
            return path.starts_with('/').then(|| PathBuf::from(path));
        }
    }
    None
}

/// Copies the function pointer `name` out of `lib`.
///
/// # Safety
/// `T` must be the function pointer type of the C function `name`, and `lib` must outlive every use of it.
unsafe fn sym<T: Copy>(lib: &Library, name: &str) -> T {
    // The caller checked that every symbol exists (`open_first`), so this cannot fail.
    *lib.get::<T>(name).unwrap_or_else(|e| panic!("{name} vanished from a loaded library: {e}"))
}

fn c_text(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: HIP returns static NUL-terminated strings.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// libamdhip64's entry points.
pub struct Hip {
    /// The file the library was loaded from.
    pub file: PathBuf,
    pub init: unsafe extern "C" fn(c_uint) -> HipError,
    pub get_error_name: unsafe extern "C" fn(HipError) -> *const c_char,
    pub get_error_string: unsafe extern "C" fn(HipError) -> *const c_char,
    pub runtime_get_version: unsafe extern "C" fn(*mut c_int) -> HipError,
    pub get_device_count: unsafe extern "C" fn(*mut c_int) -> HipError,
    pub device_get: unsafe extern "C" fn(*mut c_int, c_int) -> HipError,
    pub device_get_name: unsafe extern "C" fn(*mut c_char, c_int, c_int) -> HipError,
    pub device_total_mem: unsafe extern "C" fn(*mut usize, c_int) -> HipError,
    pub device_get_attribute: unsafe extern "C" fn(*mut c_int, c_int, c_int) -> HipError,
    /// `hipGetDevicePropertiesR0600` or `hipGetDeviceProperties`: writes a struct whose layout is
    /// release-specific; only ever given a buffer far larger than either layout.
    pub get_device_properties: unsafe extern "C" fn(*mut c_void, c_int) -> HipError,
    pub set_device: unsafe extern "C" fn(c_int) -> HipError,
    pub malloc: unsafe extern "C" fn(*mut Handle, usize) -> HipError,
    pub free: unsafe extern "C" fn(Handle) -> HipError,
    pub memcpy_htod_async: unsafe extern "C" fn(Handle, *const c_void, usize, Handle) -> HipError,
    pub memcpy_dtoh_async: unsafe extern "C" fn(*mut c_void, Handle, usize, Handle) -> HipError,
    pub memcpy_dtod_async: unsafe extern "C" fn(Handle, Handle, usize, Handle) -> HipError,
    pub stream_create_with_flags: unsafe extern "C" fn(*mut Handle, c_uint) -> HipError,
    pub stream_synchronize: unsafe extern "C" fn(Handle) -> HipError,
    pub stream_destroy: unsafe extern "C" fn(Handle) -> HipError,
    pub stream_wait_event: unsafe extern "C" fn(Handle, Handle, c_uint) -> HipError,
    pub event_create_with_flags: unsafe extern "C" fn(*mut Handle, c_uint) -> HipError,
    pub event_record: unsafe extern "C" fn(Handle, Handle) -> HipError,
    pub event_synchronize: unsafe extern "C" fn(Handle) -> HipError,
    pub event_destroy: unsafe extern "C" fn(Handle) -> HipError,
    /// (dst, dst device, src, src device, bytes, stream)
    pub memcpy_peer_async: unsafe extern "C" fn(Handle, c_int, Handle, c_int, usize, Handle) -> HipError,
    pub module_load_data: unsafe extern "C" fn(*mut Handle, *const c_void) -> HipError,
    pub module_get_function: unsafe extern "C" fn(*mut Handle, Handle, *const c_char) -> HipError,
    pub module_unload: unsafe extern "C" fn(Handle) -> HipError,
    /// (value out, attribute, function)
    pub func_get_attribute: unsafe extern "C" fn(*mut c_int, c_int, Handle) -> HipError,
    #[allow(clippy::type_complexity)]
    pub module_launch_kernel: unsafe extern "C" fn(
        Handle,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        c_uint,
        Handle,
        *mut *mut c_void,
        *mut *mut c_void,
    ) -> HipError,
    /// The graph entry points, when the library has them all (`GRAPH_SYMBOLS`).
    pub graphs: Option<Graphs>,
    // Last, so that it is dropped after nothing else refers to it (the library is never unloaded anyway:
    // it lives in a static).
    _lib: Library,
}

/// libamdhip64's stream-capture and graph entry points.
pub struct Graphs {
    /// (stream, mode)
    pub stream_begin_capture: unsafe extern "C" fn(Handle, c_int) -> HipError,
    /// (stream, graph out)
    pub stream_end_capture: unsafe extern "C" fn(Handle, *mut Handle) -> HipError,
    /// (executable out, graph, error node out, log buffer, log size)
    pub graph_instantiate:
        unsafe extern "C" fn(*mut Handle, Handle, *mut Handle, *mut c_char, usize) -> HipError,
    /// (executable, stream)
    pub graph_launch: unsafe extern "C" fn(Handle, Handle) -> HipError,
    pub graph_exec_destroy: unsafe extern "C" fn(Handle) -> HipError,
    pub graph_destroy: unsafe extern "C" fn(Handle) -> HipError,
}

impl Hip {
    fn load() -> Result<Hip, String> {
        let candidates = hip_candidates();
        let (lib, name) = open_first(&candidates, HIP_SYMBOLS, &PROPERTIES_SYMBOLS).map_err(|why| {
            format!("libamdhip64 (the ROCm HIP runtime) cannot be used: {why} (install ROCm, or set DSV3_HIP_LIB)")
        })?;
        // SAFETY: every symbol exists (checked by `open_first`) and has the C signature of ROCm's headers;
        // the library is stored with the pointers and never unloaded while they are in use.
        unsafe {
            let props = if lib.get::<*const c_void>(PROPERTIES_SYMBOLS[0]).is_ok() {
                PROPERTIES_SYMBOLS[0]
            } else {
                PROPERTIES_SYMBOLS[1]
            };
            let init: unsafe extern "C" fn(c_uint) -> HipError = sym(&lib, "hipInit");
            Ok(Hip {
                file: mapped_file(init as usize).unwrap_or_else(|| name.into()),
                init,
                get_error_name: sym(&lib, "hipGetErrorName"),
                get_error_string: sym(&lib, "hipGetErrorString"),
                runtime_get_version: sym(&lib, "hipRuntimeGetVersion"),
                get_device_count: sym(&lib, "hipGetDeviceCount"),
                device_get: sym(&lib, "hipDeviceGet"),
                device_get_name: sym(&lib, "hipDeviceGetName"),
                device_total_mem: sym(&lib, "hipDeviceTotalMem"),
                device_get_attribute: sym(&lib, "hipDeviceGetAttribute"),
                get_device_properties: sym(&lib, props),
                set_device: sym(&lib, "hipSetDevice"),
                malloc: sym(&lib, "hipMalloc"),
                free: sym(&lib, "hipFree"),
                memcpy_htod_async: sym(&lib, "hipMemcpyHtoDAsync"),
                memcpy_dtoh_async: sym(&lib, "hipMemcpyDtoHAsync"),
                memcpy_dtod_async: sym(&lib, "hipMemcpyDtoDAsync"),
                stream_create_with_flags: sym(&lib, "hipStreamCreateWithFlags"),
                stream_synchronize: sym(&lib, "hipStreamSynchronize"),
                stream_destroy: sym(&lib, "hipStreamDestroy"),
                stream_wait_event: sym(&lib, "hipStreamWaitEvent"),
                event_create_with_flags: sym(&lib, "hipEventCreateWithFlags"),
                event_record: sym(&lib, "hipEventRecord"),
                event_synchronize: sym(&lib, "hipEventSynchronize"),
                event_destroy: sym(&lib, "hipEventDestroy"),
                memcpy_peer_async: sym(&lib, "hipMemcpyPeerAsync"),
                module_load_data: sym(&lib, "hipModuleLoadData"),
                module_get_function: sym(&lib, "hipModuleGetFunction"),
                module_unload: sym(&lib, "hipModuleUnload"),
                func_get_attribute: sym(&lib, "hipFuncGetAttribute"),
                module_launch_kernel: sym(&lib, "hipModuleLaunchKernel"),
                graphs: GRAPH_SYMBOLS.iter().all(|s| lib.get::<*const c_void>(*s).is_ok()).then(|| Graphs {
                    stream_begin_capture: sym(&lib, "hipStreamBeginCapture"),
                    stream_end_capture: sym(&lib, "hipStreamEndCapture"),
                    graph_instantiate: sym(&lib, "hipGraphInstantiate"),
                    graph_launch: sym(&lib, "hipGraphLaunch"),
                    graph_exec_destroy: sym(&lib, "hipGraphExecDestroy"),
                    graph_destroy: sym(&lib, "hipGraphDestroy"),
                }),
                _lib: lib,
            })
        }
    }

    /// `hipErrorNoDevice: no ROCm-capable device is detected` (the name alone when the text repeats it).
    pub fn error_text(&self, e: HipError) -> String {
        // SAFETY: both accept any value and return static strings (or null).
        let (name, text) = unsafe { (c_text((self.get_error_name)(e)), c_text((self.get_error_string)(e))) };
        let name = if name.is_empty() { format!("hipError {e}") } else { name };
        if text.is_empty() || text == name {
            name
        } else {
            format!("{name}: {text}")
        }
    }

    /// `Ok` for hipSuccess, else a driver error naming the call.
    pub fn check(&self, call: &str, e: HipError) -> dsv3_core::Result<()> {
        if e == HIP_SUCCESS {
            return Ok(());
        }
        Err(dsv3_core::Error::Driver {
            backend: BACKEND.into(),
            call: call.into(),
            reason: self.error_text(e),
        })
    }

    /// The runtime's ROCm version: `hipRuntimeGetVersion`, else the library's file name (Debian's ROCm 5.2
    /// returns success without writing anything on a machine without a GPU).
    pub fn version(&self) -> Option<Version> {
        let mut v: c_int = -1;
        // SAFETY: a valid out-pointer.
        let r = unsafe { (self.runtime_get_version)(&mut v) };
        (if r == HIP_SUCCESS { Version::from_hip_version(v as i64) } else { None })
            .or_else(|| Version::from_file_name(&self.file))
    }
}

/// hiprtc's entry points.
pub struct Rtc {
    /// The file hiprtc was loaded from (libhiprtc, or libamdhip64 in ROCm 5).
    pub file: PathBuf,
    pub get_error_string: unsafe extern "C" fn(c_int) -> *const c_char,
    pub create_program: unsafe extern "C" fn(
        *mut Handle,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> c_int,
    pub compile_program: unsafe extern "C" fn(Handle, c_int, *const *const c_char) -> c_int,
    pub destroy_program: unsafe extern "C" fn(*mut Handle) -> c_int,
    pub get_program_log_size: unsafe extern "C" fn(Handle, *mut usize) -> c_int,
    pub get_program_log: unsafe extern "C" fn(Handle, *mut c_char) -> c_int,
    pub get_code_size: unsafe extern "C" fn(Handle, *mut usize) -> c_int,
    pub get_code: unsafe extern "C" fn(Handle, *mut c_char) -> c_int,
    _lib: Library,
}

impl Rtc {
    fn load() -> Result<Rtc, String> {
        let (lib, name) = open_first(&hiprtc_candidates(), HIPRTC_SYMBOLS, &[]).map_err(|why| {
            format!(
                "hiprtc (libhiprtc, or libamdhip64 in ROCm 5) cannot be used: {why} (set DSV3_HIPRTC_LIB)"
            )
        })?;
        // SAFETY: as for `Hip::load`.
        unsafe {
            let get_error_string: unsafe extern "C" fn(c_int) -> *const c_char =
                sym(&lib, "hiprtcGetErrorString");
            Ok(Rtc {
                file: mapped_file(get_error_string as usize).unwrap_or_else(|| name.into()),
                get_error_string,
                create_program: sym(&lib, "hiprtcCreateProgram"),
                compile_program: sym(&lib, "hiprtcCompileProgram"),
                destroy_program: sym(&lib, "hiprtcDestroyProgram"),
                get_program_log_size: sym(&lib, "hiprtcGetProgramLogSize"),
                get_program_log: sym(&lib, "hiprtcGetProgramLog"),
                get_code_size: sym(&lib, "hiprtcGetCodeSize"),
                get_code: sym(&lib, "hiprtcGetCode"),
                _lib: lib,
            })
        }
    }

    /// The ROCm release hiprtc belongs to: its file's name (`libhiprtc.so.6.2.60200`, or ROCm 5's
    /// `libamdhip64.so.5.2.21153`), else the HIP runtime's version (the same installation, as a rule).
    /// `hiprtcVersion` cannot tell: it returns a constant 9.0 in ROCm 5 and 6.
    pub fn version(&self) -> Option<Version> {
        Version::from_file_name(&self.file).or_else(|| hip().ok()?.version())
    }

    /// `HIPRTC_ERROR_COMPILATION` (or the number when hiprtc has no text for it).
    pub fn error_text(&self, r: c_int) -> String {
        // SAFETY: accepts any value, returns a static string or null.
        let text = c_text(unsafe { (self.get_error_string)(r) });
        if text.is_empty() {
            format!("hiprtc error {r}")
        } else {
            text
        }
    }
}

/// libamdhip64, loaded once per process; the reason when it cannot be.
pub fn hip() -> Result<&'static Hip, String> {
    static HIP: OnceLock<Result<Hip, String>> = OnceLock::new();
    HIP.get_or_init(Hip::load).as_ref().map_err(Clone::clone)
}

/// hiprtc, loaded once per process; the reason when it cannot be.
pub fn rtc() -> Result<&'static Rtc, String> {
    static RTC: OnceLock<Result<Rtc, String>> = OnceLock::new();
    RTC.get_or_init(Rtc::load).as_ref().map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_hip_version_numbers_and_file_names() {
        assert_eq!(Version::from_hip_version(50221153), Some(Version::new(5, 2)));
        assert_eq!(Version::from_hip_version(60241134), Some(Version::new(6, 2)));
        assert_eq!(Version::from_hip_version(70051831), Some(Version::new(7, 0)));
        assert_eq!(Version::from_hip_version(0), None);
        assert_eq!(Version::from_hip_version(-1), None);
        let f = |s: &str| Version::from_file_name(Path::new(s));
        assert_eq!(f("/usr/lib/x86_64-linux-gnu/libamdhip64.so.5.2.21153"), Some(Version::new(5, 2)));
        assert_eq!(f("/opt/rocm-6.2.0/lib/libhiprtc.so.6.2.60200"), Some(Version::new(6, 2)));
        assert_eq!(f("/opt/rocm/lib/libamdhip64.so.6"), None);
        assert_eq!(f("libamdhip64.so"), None);
        assert!(Version::new(6, 0) > Version::new(5, 7) && Version::new(6, 4) > Version::new(6, 0));
        assert_eq!(Version::new(6, 4).to_string(), "6.4");
    }

    #[test]
    fn a_function_address_maps_to_the_file_it_came_from() {
        let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        let f: fn(usize) -> Option<PathBuf> = mapped_file;
        assert_eq!(mapped_file(f as usize), Some(exe));
        assert_eq!(mapped_file(0), None);
    }

    #[test]
    fn an_absent_library_is_listed_not_a_panic() {
        let names = vec!["/nonexistent/libamdhip64.so".to_string()];
        let why = open_first(&names, HIP_SYMBOLS, &[]).err().unwrap();
        assert!(why.contains("not found: /nonexistent/libamdhip64.so"), "{why}");
    }
}
