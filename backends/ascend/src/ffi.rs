//! CANN's C API as this crate uses it, loaded with `dlopen` at run time. Every `unsafe` of the crate is in
//! this file: the library loading, the symbol table and one thin method per C call. The rest of the crate
//! sees safe methods that return `dsv3_core::Error`.
//!
//! Signatures are transcribed from CANN's public headers (`acl/acl_base.h`, `acl/acl_rt.h`,
//! `aclnn/acl_meta.h`, `aclnnop/aclnn_matmul.h`) as documented for CANN 8.x; enum arguments are C `int`s.

use dsv3_core::{Error, Result};
use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::ManuallyDrop;
use std::path::{Path, PathBuf};

pub(crate) const BACKEND: &str = "ascend";

// aclError / aclnnStatus values (0 is success).
const ACL_SUCCESS: i32 = 0;
const ACL_ERROR_REPEAT_INITIALIZE: i32 = 100002;
const ACL_ERROR_BAD_ALLOC: i32 = 200000;
const ACL_ERROR_RT_MEMORY_ALLOCATION: i32 = 207001;

// aclDataType, aclFormat, aclrtMemMallocPolicy, aclrtMemcpyKind, aclrtMemAttr.
pub(crate) const ACL_FLOAT16: c_int = 1;
pub(crate) const ACL_BF16: c_int = 27;
const ACL_FORMAT_ND: c_int = 2;
const ACL_MEM_MALLOC_HUGE_FIRST: c_int = 0;
const ACL_HBM_MEM: c_int = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CopyKind {
    HostToDevice = 1,
    DeviceToHost = 2,
    DeviceToDevice = 3,
}

/// aclnn's `cubeMathType`: 0 = KEEP_DTYPE, compute in the operands' own dtype (for bf16 / f16 the cube
/// unit accumulates in f32).
pub(crate) const CUBE_KEEP_DTYPE: i8 = 0;

/// Names of the codes a user is likely to meet, so an error reads without the header at hand.
fn code_name(code: i32) -> Option<&'static str> {
    Some(match code {
        100000 => "ACL_ERROR_INVALID_PARAM",
        100001 => "ACL_ERROR_UNINITIALIZE",
        100002 => "ACL_ERROR_REPEAT_INITIALIZE",
        107000 => "ACL_ERROR_RT_PARAM_INVALID",
        107001 => "ACL_ERROR_RT_INVALID_DEVICEID",
        107002 => "ACL_ERROR_RT_CONTEXT_NULL",
        107003 => "ACL_ERROR_RT_STREAM_CONTEXT",
        161001 => "ACLNN_ERR_PARAM_NULLPTR",
        161002 => "ACLNN_ERR_PARAM_INVALID",
        200000 => "ACL_ERROR_BAD_ALLOC",
        200001 => "ACL_ERROR_API_NOT_SUPPORT",
        200002 => "ACL_ERROR_INVALID_DEVICE",
        207000 => "ACL_ERROR_RT_FEATURE_NOT_SUPPORT",
        207001 => "ACL_ERROR_RT_MEMORY_ALLOCATION",
        207004 => "ACL_ERROR_RT_NO_DEVICE",
        361001 => "ACLNN_ERR_RUNTIME_ERROR",
        500000 => "ACL_ERROR_INTERNAL_ERROR",
        500001 => "ACL_ERROR_FAILURE",
        500003 => "ACL_ERROR_RT_FAILURE",
        500004 => "ACL_ERROR_DRV_FAILURE",
        507000 => "ACL_ERROR_RT_INTERNAL_ERROR",
        507014 => "ACL_ERROR_RT_AICORE_TIMEOUT",
        507015 => "ACL_ERROR_RT_AICORE_EXCEPTION",
        507899 => "ACL_ERROR_RT_DRV_INTERNAL_ERROR",
        561000 => "ACLNN_ERR_INNER",
        _ => return None,
    })
}

/// An opaque CANN handle or device address (context, stream, device memory, tensor descriptor,
/// executor).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Raw(pub(crate) *mut c_void);

impl Raw {
    pub(crate) fn null() -> Raw {
        Raw(std::ptr::null_mut())
    }

    pub(crate) fn is_null(self) -> bool {
        self.0.is_null()
    }

    /// The address `bytes` further on. Only ever passed back to CANN, never dereferenced here, so plain
    /// address arithmetic is enough.
    pub(crate) fn byte_add(self, bytes: usize) -> Raw {
        Raw(self.0.cast::<u8>().wrapping_add(bytes).cast())
    }
}

// SAFETY: a CANN handle is a token the runtime accepts from any thread. This crate makes the owning
// context current on the calling thread before each use (`Context::enter`), and serialises each stream's
// calls behind its own lock, so moving or sharing the token between threads adds no data race.
unsafe impl Send for Raw {}
// SAFETY: as above; `Raw` itself is an immutable address.
unsafe impl Sync for Raw {}

type InitFn = unsafe extern "C" fn(config_path: *const c_char) -> i32;
type GetDeviceCountFn = unsafe extern "C" fn(count: *mut u32) -> i32;
/// aclrtSetDevice, aclrtResetDevice.
type DeviceFn = unsafe extern "C" fn(device_id: i32) -> i32;
type CreateContextFn = unsafe extern "C" fn(context: *mut *mut c_void, device_id: i32) -> i32;
/// aclrtDestroyContext, aclrtSetCurrentContext, aclrtFree, aclrtDestroyStream, aclrtSynchronizeStream.
type HandleFn = unsafe extern "C" fn(handle: *mut c_void) -> i32;
type MallocFn = unsafe extern "C" fn(dev_ptr: *mut *mut c_void, size: usize, policy: c_int) -> i32;
type MemcpyFn = unsafe extern "C" fn(
    dst: *mut c_void,
    dest_max: usize,
    src: *const c_void,
    count: usize,
    kind: c_int,
) -> i32;
type CreateStreamFn = unsafe extern "C" fn(stream: *mut *mut c_void) -> i32;
/// aclGetRecentErrMsg, aclrtGetSocName: a string owned by the runtime, or null.
type StringFn = unsafe extern "C" fn() -> *const c_char;
type GetVersionFn = unsafe extern "C" fn(major: *mut i32, minor: *mut i32, patch: *mut i32) -> i32;
type GetMemInfoFn = unsafe extern "C" fn(attr: c_int, free: *mut usize, total: *mut usize) -> i32;
type CreateTensorFn = unsafe extern "C" fn(
    view_dims: *const i64,
    view_dims_num: u64,
    data_type: c_int,
    stride: *const i64,
    offset: i64,
    format: c_int,
    storage_dims: *const i64,
    storage_dims_num: u64,
    tensor_data: *mut c_void,
) -> *mut c_void;
type DestroyTensorFn = unsafe extern "C" fn(tensor: *const c_void) -> i32;
type MatmulWorkspaceFn = unsafe extern "C" fn(
    self_: *const c_void,
    mat2: *const c_void,
    out: *mut c_void,
    cube_math_type: i8,
    workspace_size: *mut u64,
    executor: *mut *mut c_void,
) -> i32;
/// The second phase of every aclnn operator.
type LaunchFn = unsafe extern "C" fn(
    workspace: *mut c_void,
    workspace_size: u64,
    executor: *mut c_void,
    stream: *mut c_void,
) -> i32;

/// The resolved entry points. Every field's type is the C prototype of the symbol named in `Cann::load`.
struct Api {
    init: InitFn,
    get_device_count: GetDeviceCountFn,
    set_device: DeviceFn,
    reset_device: DeviceFn,
    create_context: CreateContextFn,
    destroy_context: HandleFn,
    set_current_context: HandleFn,
    malloc: MallocFn,
    free: HandleFn,
    memcpy: MemcpyFn,
    create_stream: CreateStreamFn,
    destroy_stream: HandleFn,
    synchronize_stream: HandleFn,
    recent_err_msg: StringFn,
    // Not in every CANN release: asked for, used when present.
    soc_name: Option<StringFn>,
    get_version: Option<GetVersionFn>,
    get_mem_info: Option<GetMemInfoFn>,
    // libnnopbase.so
    create_tensor: CreateTensorFn,
    destroy_tensor: DestroyTensorFn,
    // libopapi.so (or one of CANN 8's split libopapi_*.so)
    matmul_workspace: MatmulWorkspaceFn,
    matmul: LaunchFn,
}

/// The aclnn operator libraries, whole (CANN ≤ 8.1) or split by domain (CANN 8.x), in search order.
pub(crate) const OPAPI_LIBS: &[&str] =
    &["libopapi.so", "libopapi_math.so", "libopapi_nn.so", "libopapi_transformer.so"];

/// A loaded CANN: its entry points and where they came from.
pub(crate) struct Cann {
    api: Api,
    pub(crate) dir: PathBuf,
    /// The library that exported aclnnMatmul.
    pub(crate) matmul_lib: &'static str,
    /// `aclrtGetVersion`: the ACL interface version (not the toolkit's release number).
    pub(crate) acl_version: Option<(i32, i32, i32)>,
    /// Never closed: CANN's runtime starts threads and registers exit handlers, so unloading it while the
    /// process runs is not something it supports. The libraries stay mapped until exit, as a normally
    /// linked program's would, which also keeps every pointer in `api` valid.
    _libs: Vec<ManuallyDrop<Library>>,
}

/// `dlopen(path, RTLD_NOW | RTLD_GLOBAL)`: global, as a program linked against CANN would see it, because
/// CANN loads operator kernels later that resolve symbols against the libraries already in the process.
#[cfg(unix)]
fn open(path: &Path) -> std::result::Result<Library, String> {
    use libloading::os::unix::{Library as UnixLibrary, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading runs the library's initialisers. The file is CANN's own library (or the test fake),
    // found where the user's environment points; the process extends it the trust any program linked
    // against CANN does. Nothing in this crate relies on state the initialisers could break.
    let lib = unsafe { UnixLibrary::open(Some(path), RTLD_NOW | RTLD_GLOBAL) };
    lib.map(Library::from).map_err(|e| format!("cannot load {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn open(_path: &Path) -> std::result::Result<Library, String> {
    Err("CANN is only published for Linux".into())
}

/// # Safety
/// `T` must be the exact C prototype (as an `unsafe extern "C" fn` type) of the symbol `name`, and `lib`
/// must stay loaded for as long as the returned pointer is used.
unsafe fn get<T: Copy>(lib: &Library, file: &str, name: &str) -> std::result::Result<T, String> {
    // SAFETY: forwarded to the caller (see above).
    let symbol = unsafe { lib.get::<T>(name.as_bytes()) };
    symbol.map(|s| *s).map_err(|e| format!("{file} does not export {name}: {e}"))
}

/// # Safety
/// As [`get`].
unsafe fn get_optional<T: Copy>(lib: &Library, name: &str) -> Option<T> {
    // SAFETY: forwarded to the caller (see above).
    unsafe { lib.get::<T>(name.as_bytes()) }.ok().map(|s| *s)
}

impl Cann {
    /// Loads CANN from `dir` (which holds `libascendcl.so`) and initialises ACL. The `Err` is a sentence
    /// for `Error::Unavailable`.
    pub(crate) fn load(dir: &Path) -> std::result::Result<Cann, String> {
        const ACL: &str = "libascendcl.so";
        const NNOPBASE: &str = "libnnopbase.so";
        if !dir.join(NNOPBASE).is_file() {
            return Err(format!("{NNOPBASE} (aclnn tensor descriptors) is missing there"));
        }
        let opapi_present: Vec<&'static str> =
            OPAPI_LIBS.iter().copied().filter(|f| dir.join(f).is_file()).collect();
        if opapi_present.is_empty() {
            return Err(format!("no aclnn operator library there (looked for {})", OPAPI_LIBS.join(", ")));
        }
        let acl = open(&dir.join(ACL))?;
        let nnopbase = open(&dir.join(NNOPBASE))?;
        let mut opapi = Vec::new();
        for file in &opapi_present {
            opapi.push((*file, open(&dir.join(file))?));
        }
        // aclnnMatmul is in libopapi.so, or in whichever split library this release put it.
        let mut matmul = None;
        for (file, lib) in &opapi {
            // SAFETY: the two prototypes are aclnn_matmul.h's; `lib` is kept loaded in `_libs` below.
            let pair = unsafe {
                (
                    get_optional::<MatmulWorkspaceFn>(lib, "aclnnMatmulGetWorkspaceSize"),
                    get_optional::<LaunchFn>(lib, "aclnnMatmul"),
                )
            };
            if let (Some(ws), Some(launch)) = pair {
                matmul = Some((*file, ws, launch));
                break;
            }
        }
        let Some((matmul_lib, matmul_workspace, matmul)) = matmul else {
            return Err(format!(
                "none of {} exports aclnnMatmulGetWorkspaceSize and aclnnMatmul",
                opapi_present.join(", ")
            ));
        };
        // SAFETY: each field's type is the prototype of the symbol named beside it, transcribed from
        // acl_base.h / acl_rt.h / acl_meta.h; the libraries are kept loaded in `_libs` for the life of the
        // process, so the pointers never dangle.
        let api = unsafe {
            Api {
                init: get(&acl, ACL, "aclInit")?,
                get_device_count: get(&acl, ACL, "aclrtGetDeviceCount")?,
                set_device: get(&acl, ACL, "aclrtSetDevice")?,
                reset_device: get(&acl, ACL, "aclrtResetDevice")?,
                create_context: get(&acl, ACL, "aclrtCreateContext")?,
                destroy_context: get(&acl, ACL, "aclrtDestroyContext")?,
                set_current_context: get(&acl, ACL, "aclrtSetCurrentContext")?,
                malloc: get(&acl, ACL, "aclrtMalloc")?,
                free: get(&acl, ACL, "aclrtFree")?,
                memcpy: get(&acl, ACL, "aclrtMemcpy")?,
                create_stream: get(&acl, ACL, "aclrtCreateStream")?,
                destroy_stream: get(&acl, ACL, "aclrtDestroyStream")?,
                synchronize_stream: get(&acl, ACL, "aclrtSynchronizeStream")?,
                recent_err_msg: get(&acl, ACL, "aclGetRecentErrMsg")?,
                soc_name: get_optional(&acl, "aclrtGetSocName"),
                get_version: get_optional(&acl, "aclrtGetVersion"),
                get_mem_info: get_optional(&acl, "aclrtGetMemInfo"),
                create_tensor: get(&nnopbase, NNOPBASE, "aclCreateTensor")?,
                destroy_tensor: get(&nnopbase, NNOPBASE, "aclDestroyTensor")?,
                matmul_workspace,
                matmul,
            }
        };
        let mut libs = vec![ManuallyDrop::new(acl), ManuallyDrop::new(nnopbase)];
        libs.extend(opapi.into_iter().map(|(_, lib)| ManuallyDrop::new(lib)));
        let mut cann = Cann { api, dir: dir.to_path_buf(), matmul_lib, acl_version: None, _libs: libs };
        // SAFETY: aclInit takes an optional path to a JSON config; null means none.
        let code = unsafe { (cann.api.init)(std::ptr::null()) };
        // ACL is initialised once per process and never finalised here (aclFinalize would pull the
        // runtime from under any other user in the process); a second initialisation says so and is fine.
        if code != ACL_SUCCESS && code != ACL_ERROR_REPEAT_INITIALIZE {
            return Err(format!("aclInit failed: {}", cann.describe(code)));
        }
        cann.acl_version = cann.version();
        Ok(cann)
    }

    /// The runtime's message for the latest failure on this thread (empty when it has none).
    fn recent_error(&self) -> String {
        // SAFETY: no arguments; the result is null or a NUL-terminated string owned by the runtime that
        // stays valid until the next ACL call on this thread. It is copied before any other call.
        let ptr = unsafe { (self.api.recent_err_msg)() };
        if ptr.is_null() {
            return String::new();
        }
        // SAFETY: non-null and NUL-terminated, per the above.
        unsafe { CStr::from_ptr(ptr) }.to_string_lossy().trim().to_string()
    }

    /// "error 207001 (ACL_ERROR_RT_MEMORY_ALLOCATION): <the runtime's message>".
    pub(crate) fn describe(&self, code: i32) -> String {
        let name = code_name(code).map_or(String::new(), |n| format!(" ({n})"));
        match self.recent_error() {
            msg if msg.is_empty() => format!("error {code}{name}"),
            msg => format!("error {code}{name}: {msg}"),
        }
    }

    fn check(&self, call: &str, code: i32) -> Result<()> {
        if code == ACL_SUCCESS {
            return Ok(());
        }
        Err(Error::Driver { backend: BACKEND.into(), call: call.into(), reason: self.describe(code) })
    }

    pub(crate) fn device_count(&self) -> Result<u32> {
        let mut count = 0u32;
        // SAFETY: `count` is a valid out-pointer for the call's duration.
        let code = unsafe { (self.api.get_device_count)(&mut count) };
        self.check("aclrtGetDeviceCount", code)?;
        Ok(count)
    }

    pub(crate) fn set_device(&self, ordinal: i32) -> Result<()> {
        // SAFETY: plain integer argument; the runtime checks the ordinal.
        let code = unsafe { (self.api.set_device)(ordinal) };
        self.check("aclrtSetDevice", code)
    }

    pub(crate) fn reset_device(&self, ordinal: i32) -> Result<()> {
        // SAFETY: plain integer argument; paired with a successful `set_device` by `Context`.
        let code = unsafe { (self.api.reset_device)(ordinal) };
        self.check("aclrtResetDevice", code)
    }

    /// Creates a context on `ordinal` and makes it current on this thread.
    pub(crate) fn create_context(&self, ordinal: i32) -> Result<Raw> {
        let mut ctx = std::ptr::null_mut();
        // SAFETY: `ctx` is a valid out-pointer; the runtime checks the ordinal.
        let code = unsafe { (self.api.create_context)(&mut ctx, ordinal) };
        self.check("aclrtCreateContext", code)?;
        Ok(Raw(ctx))
    }

    pub(crate) fn destroy_context(&self, ctx: Raw) -> Result<()> {
        // SAFETY: `ctx` came from `create_context` and `Context` destroys it once, after everything
        // created in it (streams, memory) has been released.
        let code = unsafe { (self.api.destroy_context)(ctx.0) };
        self.check("aclrtDestroyContext", code)
    }

    pub(crate) fn set_current_context(&self, ctx: Raw) -> Result<()> {
        // SAFETY: `ctx` is a live context: `Context` owns it and outlives every caller.
        let code = unsafe { (self.api.set_current_context)(ctx.0) };
        self.check("aclrtSetCurrentContext", code)
    }

    /// `bytes` (> 0) of device memory; exhaustion is `Error::OutOfMemory`.
    pub(crate) fn malloc(&self, bytes: usize) -> Result<Raw> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: `ptr` is a valid out-pointer; the caller made the owning context current.
        let code = unsafe { (self.api.malloc)(&mut ptr, bytes, ACL_MEM_MALLOC_HUGE_FIRST) };
        if code == ACL_ERROR_RT_MEMORY_ALLOCATION || code == ACL_ERROR_BAD_ALLOC {
            // The runtime's message is dropped with the code: the error variant says it all.
            let _ = self.recent_error();
            return Err(Error::OutOfMemory { backend: BACKEND.into(), bytes });
        }
        self.check("aclrtMalloc", code)?;
        Ok(Raw(ptr))
    }

    pub(crate) fn free(&self, ptr: Raw) -> Result<()> {
        // SAFETY: `ptr` came from `malloc` and `DeviceMem` frees it exactly once, after the work that used
        // it has been waited for.
        let code = unsafe { (self.api.free)(ptr.0) };
        self.check("aclrtFree", code)
    }

    /// Synchronous copy of `count` bytes. The caller has checked both ranges: the device side lies in
    /// one allocation of this context, the host side is a live Rust slice of at least `count` bytes.
    pub(crate) fn memcpy(
        &self,
        dst: Raw,
        dst_max: usize,
        src: *const c_void,
        count: usize,
        kind: CopyKind,
    ) -> Result<()> {
        // SAFETY: per the above, `dst..dst+dst_max` and `src..src+count` are valid for the call; the
        // copy kind names which side is device memory.
        let code = unsafe { (self.api.memcpy)(dst.0, dst_max, src, count, kind as c_int) };
        self.check("aclrtMemcpy", code)
    }

    pub(crate) fn create_stream(&self) -> Result<Raw> {
        let mut stream = std::ptr::null_mut();
        // SAFETY: `stream` is a valid out-pointer; the caller made the owning context current.
        let code = unsafe { (self.api.create_stream)(&mut stream) };
        self.check("aclrtCreateStream", code)?;
        Ok(Raw(stream))
    }

    pub(crate) fn destroy_stream(&self, stream: Raw) -> Result<()> {
        // SAFETY: `stream` came from `create_stream`; `AscendStream` destroys it once, after waiting for
        // its work.
        let code = unsafe { (self.api.destroy_stream)(stream.0) };
        self.check("aclrtDestroyStream", code)
    }

    /// Waits for `stream`; the failure, if any, as the runtime describes it (the caller knows which op
    /// it belongs to).
    pub(crate) fn synchronize_stream(&self, stream: Raw) -> std::result::Result<(), String> {
        // SAFETY: `stream` is live: its `AscendStream` owns it.
        let code = unsafe { (self.api.synchronize_stream)(stream.0) };
        if code == ACL_SUCCESS {
            Ok(())
        } else {
            Err(format!("aclrtSynchronizeStream: {}", self.describe(code)))
        }
    }

    pub(crate) fn soc_name(&self) -> Option<String> {
        let f = self.api.soc_name?;
        // SAFETY: no arguments; null or a NUL-terminated string owned by the runtime, copied at once.
        let ptr = unsafe { f() };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: non-null and NUL-terminated, per the above.
        Some(unsafe { CStr::from_ptr(ptr) }.to_string_lossy().trim().to_string())
    }

    fn version(&self) -> Option<(i32, i32, i32)> {
        let f = self.api.get_version?;
        let (mut major, mut minor, mut patch) = (0, 0, 0);
        // SAFETY: three valid out-pointers for the call's duration.
        let code = unsafe { f(&mut major, &mut minor, &mut patch) };
        (code == ACL_SUCCESS).then_some((major, minor, patch))
    }

    /// (free, total) bytes of the current context's device memory (HBM).
    pub(crate) fn mem_info(&self) -> Option<(usize, usize)> {
        let f = self.api.get_mem_info?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: two valid out-pointers; the caller made the device's context current.
        let code = unsafe { f(ACL_HBM_MEM, &mut free, &mut total) };
        if code != ACL_SUCCESS {
            let _ = self.recent_error();
            return None;
        }
        Some((free, total))
    }

    /// An ND tensor descriptor: a view (`dims`, element `strides`, element `offset`) of the 1-D storage
    /// of `storage_len` elements that starts at device address `data`.
    pub(crate) fn create_tensor(
        &self,
        dims: &[i64],
        strides: &[i64],
        offset: i64,
        dtype: c_int,
        storage_len: i64,
        data: Raw,
    ) -> Result<Raw> {
        let storage = [storage_len];
        // SAFETY: `dims` and `strides` have the same length, passed as the count; `storage` holds one
        // dimension; all three arrays are live for the call (aclCreateTensor copies them). `data` is a
        // device address, stored, not read, by the call.
        let tensor = unsafe {
            (self.api.create_tensor)(
                dims.as_ptr(),
                dims.len() as u64,
                dtype,
                strides.as_ptr(),
                offset,
                ACL_FORMAT_ND,
                storage.as_ptr(),
                1,
                data.0,
            )
        };
        if tensor.is_null() {
            return Err(Error::Driver {
                backend: BACKEND.into(),
                call: "aclCreateTensor".into(),
                reason: match self.recent_error() {
                    msg if msg.is_empty() => "returned null".into(),
                    msg => format!("returned null: {msg}"),
                },
            });
        }
        Ok(Raw(tensor))
    }

    pub(crate) fn destroy_tensor(&self, tensor: Raw) -> Result<()> {
        // SAFETY: `tensor` came from `create_tensor`; `TensorDesc` destroys it once, after the work that
        // used it has been waited for.
        let code = unsafe { (self.api.destroy_tensor)(tensor.0) };
        self.check("aclDestroyTensor", code)
    }

    /// aclnnMatmul's first phase: `out = self @ mat2`. Returns (workspace bytes, executor); the executor
    /// is released by the second phase, whether that succeeds or not.
    pub(crate) fn matmul_workspace(
        &self,
        a: Raw,
        b: Raw,
        out: Raw,
        cube_math_type: i8,
    ) -> std::result::Result<(u64, Raw), String> {
        let (mut workspace, mut executor) = (0u64, std::ptr::null_mut());
        // SAFETY: three live descriptors (`TensorDesc`s held by the caller) and two valid out-pointers.
        let code = unsafe {
            (self.api.matmul_workspace)(a.0, b.0, out.0, cube_math_type, &mut workspace, &mut executor)
        };
        if code != ACL_SUCCESS {
            return Err(self.describe(code));
        }
        Ok((workspace, Raw(executor)))
    }

    /// aclnnMatmul's second phase: enqueue the work on `stream`.
    pub(crate) fn matmul(
        &self,
        workspace: Raw,
        workspace_size: u64,
        executor: Raw,
        stream: Raw,
    ) -> std::result::Result<(), String> {
        // SAFETY: `executor` is fresh from `matmul_workspace` and used once; `workspace` holds at least
        // `workspace_size` bytes (or is null for 0) and, like the descriptors and operands, is kept alive
        // by the caller until the stream has been waited for; `stream` is live.
        let code = unsafe { (self.api.matmul)(workspace.0, workspace_size, executor.0, stream.0) };
        if code != ACL_SUCCESS {
            return Err(self.describe(code));
        }
        Ok(())
    }
}
