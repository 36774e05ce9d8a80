//! cuBLASLt as the CUDA backend's GEMM where it is the better kernel: bf16 × bf16 products, and on sm_90
//! with cuBLASLt ≥ 12.9 DeepSeek's block-scaled FP8 (per-token-per-128 activations × 128×128 weights).
//!
//! The library is opened at run time with libloading, not through cudarc's `cublaslt` feature: cudarc
//! panics on a missing symbol (its loader resolves each on first call) and binds one file name per CUDA
//! version, while here every entry point is checked before any is called — a library lacking one is
//! reported, not called — and both CUDA 13's and 12's file names are looked for.
//!
//! Layout. dsv3's `C[M,N] = A[M,K]·B[N,K]ᵀ` is row-major; cuBLASLt is column-major, where the same bytes
//! are `Cᵀ[N,M] = B[N,K]·Aᵀ`: the weights are cuBLASLt's A (stored K×N, `ld = K`, transposed), the
//! activations its B (K×M, `ld` = A's row pitch, not transposed), C its C and D (N×M, `ld` = C's pitch) —
//! the "TN" layout Hopper's FP8 tensor cores require. Block scales: the weights' `[N/128, K/128]` grid is
//! what `CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F` reads for cuBLASLt's A (K-blocks contiguous, each
//! row 16-byte aligned: K/128 a multiple of 4, which every DeepSeek-V3 shape is); the activations'
//! `[M, K/128]` grid is transposed into scratch for `VEC128_32F`, which wants it M-major.
//!
//! `DSV3_CUDA_GEMM=ours` keeps every GEMM on dsv3's kernels; `DSV3_CUDA_GEMM=cublaslt` requires cuBLASLt
//! (a GEMM it cannot compute is then unsupported, and a failed call an error, instead of falling back).

use crate::driver::BACKEND;
use dsv3_backend_gpu::{GemmArgs, GemmDesc, GemmOperand, VendorGemm};
use dsv3_core::{DType, Error, Result};
use libloading::Library;
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// `DSV3_CUDA_GEMM`: which GEMM implementation the CUDA backend uses.
pub const IMPL_ENV: &str = "DSV3_CUDA_GEMM";

/// Entry points this module calls; a library lacking one is not used.
pub const SYMBOLS: &[&str] = &[
    "cublasLtGetVersion",
    "cublasLtGetStatusName",
    "cublasLtGetStatusString",
    "cublasLtCreate",
    "cublasLtDestroy",
    "cublasLtMatmulDescCreate",
    "cublasLtMatmulDescSetAttribute",
    "cublasLtMatmulDescDestroy",
    "cublasLtMatrixLayoutCreate",
    "cublasLtMatrixLayoutDestroy",
    "cublasLtMatmulPreferenceCreate",
    "cublasLtMatmulPreferenceSetAttribute",
    "cublasLtMatmulPreferenceDestroy",
    "cublasLtMatmulAlgoGetHeuristic",
    "cublasLtMatmul",
    "cublasLtMatrixTransformDescCreate",
    "cublasLtMatrixTransformDescSetAttribute",
    "cublasLtMatrixTransformDescDestroy",
    "cublasLtMatrixTransform",
];

/// File names tried, newest first.
const NAMES: &[&str] = &["libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"];

/// `cublasLtGetVersion` of the first release with the VEC128 / BLK128x128 FP8 scale modes (12.9.0;
/// the value is major·10000 + minor·100 + patch).
pub const BLOCK_FP8_VERSION: usize = 120900;

/// cuBLASLt's recommended workspace ceiling: 32 MiB on Hopper and later, 4 MiB before. The call gets
/// what the chosen algorithm needs (often nothing), from the stream's scratch pool.
fn max_workspace(cc: (i32, i32)) -> u64 {
    if cc.0 >= 9 {
        32 << 20
    } else {
        4 << 20
    }
}

// The C enums' values (cublasLt.h, library_types.h, cublas_api.h).
type Status = c_int;
const SUCCESS: Status = 0;
const COMPUTE_32F: c_int = 68;
const R_32F: c_int = 0;
const R_16BF: c_int = 14;
const R_8F_E4M3: c_int = 28;
const OP_N: i32 = 0;
const OP_T: i32 = 1;
const DESC_TRANSA: c_int = 3;
const DESC_TRANSB: c_int = 4;
const DESC_A_SCALE_POINTER: c_int = 17;
const DESC_B_SCALE_POINTER: c_int = 18;
const DESC_A_SCALE_MODE: c_int = 31;
const DESC_B_SCALE_MODE: c_int = 32;
const SCALE_VEC128_32F: i32 = 4;
const SCALE_BLK128X128_32F: i32 = 5;
const PREF_MAX_WORKSPACE_BYTES: c_int = 1;
/// `CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_{A,B,C,D}_BYTES` (uint32; default 256).
const PREF_MIN_ALIGNMENT: [c_int; 4] = [5, 6, 7, 8];
const TRANSFORM_DESC_TRANSA: c_int = 2;

/// An opaque cuBLASLt object (handle, descriptor, layout, preference).
type Obj = *mut c_void;

/// `cublasLtMatmulHeuristicResult_t`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Heuristic {
    algo: [u64; 8],
    workspace_size: usize,
    state: Status,
    waves_count: f32,
    reserved: [c_int; 4],
}

struct Api {
    get_version: unsafe extern "C" fn() -> usize,
    status_name: unsafe extern "C" fn(Status) -> *const c_char,
    status_string: unsafe extern "C" fn(Status) -> *const c_char,
    create: unsafe extern "C" fn(*mut Obj) -> Status,
    destroy: unsafe extern "C" fn(Obj) -> Status,
    desc_create: unsafe extern "C" fn(*mut Obj, c_int, c_int) -> Status,
    desc_set: unsafe extern "C" fn(Obj, c_int, *const c_void, usize) -> Status,
    desc_destroy: unsafe extern "C" fn(Obj) -> Status,
    layout_create: unsafe extern "C" fn(*mut Obj, c_int, u64, u64, i64) -> Status,
    layout_destroy: unsafe extern "C" fn(Obj) -> Status,
    pref_create: unsafe extern "C" fn(*mut Obj) -> Status,
    pref_set: unsafe extern "C" fn(Obj, c_int, *const c_void, usize) -> Status,
    pref_destroy: unsafe extern "C" fn(Obj) -> Status,
    #[allow(clippy::type_complexity)]
    heuristic:
        unsafe extern "C" fn(Obj, Obj, Obj, Obj, Obj, Obj, Obj, c_int, *mut Heuristic, *mut c_int) -> Status,
    #[allow(clippy::type_complexity)]
    matmul: unsafe extern "C" fn(
        Obj,
        Obj,
        *const c_void,
        *const c_void,
        Obj,
        *const c_void,
        Obj,
        *const c_void,
        *const c_void,
        Obj,
        *mut c_void,
        Obj,
        *const [u64; 8],
        *mut c_void,
        usize,
        *mut c_void,
    ) -> Status,
    transform_desc_create: unsafe extern "C" fn(*mut Obj, c_int) -> Status,
    transform_desc_set: unsafe extern "C" fn(Obj, c_int, *const c_void, usize) -> Status,
    transform_desc_destroy: unsafe extern "C" fn(Obj) -> Status,
    #[allow(clippy::type_complexity)]
    transform: unsafe extern "C" fn(
        Obj,
        Obj,
        *const c_void,
        *const c_void,
        Obj,
        *const c_void,
        *const c_void,
        Obj,
        *mut c_void,
        Obj,
        *mut c_void,
    ) -> Status,
}

/// The loaded library (kept open for the process), its entry points and version.
pub struct CublasLt {
    api: Api,
    pub version: usize,
    pub path: String,
    _lib: Library,
}

impl CublasLt {
    /// `major.minor.patch`.
    pub fn version_text(&self) -> String {
        let v = self.version;
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    }

    fn status(&self, s: Status) -> String {
        let text = |p: *const c_char| {
            // SAFETY: cuBLASLt returns static NUL-terminated strings (or null for unknown codes).
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        };
        // SAFETY: both take any status value.
        let (name, string) = unsafe { (text((self.api.status_name)(s)), text((self.api.status_string)(s))) };
        format!("{} ({})", name.unwrap_or_else(|| format!("status {s}")), string.unwrap_or_default())
    }

    fn check(&self, call: &'static str, s: Status) -> std::result::Result<(), Failed> {
        if s == SUCCESS {
            Ok(())
        } else {
            Err(Failed { call, reason: self.status(s) })
        }
    }
}

/// A cuBLASLt call that returned an error status.
#[derive(Debug)]
struct Failed {
    call: &'static str,
    reason: String,
}

impl Failed {
    fn error(self) -> Error {
        Error::Driver { backend: BACKEND.into(), call: self.call.into(), reason: self.reason }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.call, self.reason)
    }
}

/// What `DSV3_CUDA_GEMM` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    /// cuBLASLt where it computes the GEMM, dsv3's kernels elsewhere (unset).
    Auto,
    /// dsv3's kernels only.
    Ours,
    /// cuBLASLt only: a GEMM it cannot compute is unsupported.
    Cublaslt,
}

/// The choice from the environment, or why the value is not one.
pub fn chosen() -> std::result::Result<Impl, String> {
    match std::env::var(IMPL_ENV).as_deref() {
        Err(_) | Ok("") => Ok(Impl::Auto),
        Ok("ours") => Ok(Impl::Ours),
        Ok("cublaslt") => Ok(Impl::Cublaslt),
        Ok(other) => Err(format!("{IMPL_ENV}={other} is neither `ours` nor `cublaslt`")),
    }
}

/// Opens cuBLASLt once per process: the loader path first, then the CUDA directories NVRTC is looked
/// for in; the reason when it cannot be used.
pub fn load() -> std::result::Result<Arc<CublasLt>, String> {
    static LOADED: OnceLock<std::result::Result<Arc<CublasLt>, String>> = OnceLock::new();
    LOADED.get_or_init(open).clone()
}

fn open() -> std::result::Result<Arc<CublasLt>, String> {
    let mut candidates: Vec<PathBuf> = NAMES.iter().map(PathBuf::from).collect();
    for dir in crate::nvrtc::library_dirs() {
        candidates.extend(NAMES.iter().map(|n| dir.join(n)).filter(|p| p.exists()));
    }
    let mut failed = Vec::new();
    for path in candidates {
        // SAFETY: loading cuBLASLt runs its initialisers, which have no preconditions on the caller.
        let lib = match unsafe { Library::new(&path) } {
            Ok(lib) => lib,
            Err(e) => {
                if path.components().count() > 1 {
                    failed.push(format!("{}: {e}", path.display()));
                }
                continue;
            }
        };
        let shown = path.display().to_string();
        // SAFETY: only looks names up.
        let missing: Vec<&str> = SYMBOLS
            .iter()
            .copied()
            .filter(|s| unsafe { lib.get::<*const ()>(s.as_bytes()) }.is_err())
            .collect();
        if !missing.is_empty() {
            return Err(format!("{shown} lacks {} (too old, or not NVIDIA's)", missing.join(", ")));
        }
        // SAFETY: every symbol exists (checked above) and has the C signature declared in `Api`
        // (cublasLt.h); the function pointers stay valid while `lib` is loaded, which `CublasLt` keeps.
        let api = unsafe {
            macro_rules! f {
                ($name:literal) => {
                    *lib.get($name.as_bytes()).map_err(|e| format!("{shown}: {e}"))?
                };
            }
            Api {
                get_version: f!("cublasLtGetVersion"),
                status_name: f!("cublasLtGetStatusName"),
                status_string: f!("cublasLtGetStatusString"),
                create: f!("cublasLtCreate"),
                destroy: f!("cublasLtDestroy"),
                desc_create: f!("cublasLtMatmulDescCreate"),
                desc_set: f!("cublasLtMatmulDescSetAttribute"),
                desc_destroy: f!("cublasLtMatmulDescDestroy"),
                layout_create: f!("cublasLtMatrixLayoutCreate"),
                layout_destroy: f!("cublasLtMatrixLayoutDestroy"),
                pref_create: f!("cublasLtMatmulPreferenceCreate"),
                pref_set: f!("cublasLtMatmulPreferenceSetAttribute"),
                pref_destroy: f!("cublasLtMatmulPreferenceDestroy"),
                heuristic: f!("cublasLtMatmulAlgoGetHeuristic"),
                matmul: f!("cublasLtMatmul"),
                transform_desc_create: f!("cublasLtMatrixTransformDescCreate"),
                transform_desc_set: f!("cublasLtMatrixTransformDescSetAttribute"),
                transform_desc_destroy: f!("cublasLtMatrixTransformDescDestroy"),
                transform: f!("cublasLtMatrixTransform"),
            }
        };
        // SAFETY: takes nothing, returns a number.
        let version = unsafe { (api.get_version)() };
        return Ok(Arc::new(CublasLt { api, version, path: shown, _lib: lib }));
    }
    let tried = if failed.is_empty() { String::new() } else { format!("; failed: {}", failed.join("; ")) };
    Err(format!(
        "libcublasLt.so.13 / .12 not found on the loader path nor in the CUDA directories (set \
         DSV3_CUDA_LIB_DIR, or `pip install nvidia-cublas`){tried}"
    ))
}

/// The line `dsv3 devices` shows for cuBLASLt on a device of compute capability `cc`.
pub fn describe(cc: (i32, i32)) -> String {
    let lib = match (chosen(), load()) {
        (Err(why), _) => return format!("cublaslt: {why}: dsv3's kernels run every GEMM"),
        (Ok(Impl::Ours), _) => return format!("cublaslt: not used ({IMPL_ENV}=ours)"),
        (Ok(_), Err(why)) => return format!("cublaslt: {why}"),
        (Ok(_), Ok(lib)) => lib,
    };
    let fp8 = match block_fp8_gate(&lib, cc) {
        Ok(()) => "block-FP8 GEMM".to_string(),
        Err(why) => format!("no block-FP8 GEMM ({why})"),
    };
    let bf16 = if cc >= (8, 0) { "bf16 GEMM" } else { "no bf16 GEMM (before sm_80)" };
    format!("cublaslt {} ({}): {bf16}, {fp8}", lib.version_text(), lib.path)
}

/// Why cuBLASLt's block-scaled FP8 does not run here, if it does not.
fn block_fp8_gate(lib: &CublasLt, cc: (i32, i32)) -> std::result::Result<(), String> {
    if cc != (9, 0) {
        return Err(format!(
            "sm_{}{}: cuBLASLt's VEC128 / BLK128x128 scale modes are Hopper's (sm_90)",
            cc.0, cc.1
        ));
    }
    if lib.version < BLOCK_FP8_VERSION {
        return Err(format!("cuBLASLt {} predates them (12.9)", lib.version_text()));
    }
    Ok(())
}

/// Which product a descriptor is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bf16,
    BlockFp8,
}

fn kind(g: &GemmDesc) -> std::result::Result<Kind, String> {
    let dense = |o: GemmOperand, t: DType| o.dtype == t && o.scales.is_none();
    let fp8 = |o: GemmOperand| o.dtype == DType::F8E4M3Fn && o.scales.is_some();
    if dense(g.a, DType::BF16) && dense(g.b, DType::BF16) && matches!(g.c, DType::BF16 | DType::F32) {
        return Ok(Kind::Bf16);
    }
    if fp8(g.a) && fp8(g.b) && g.c == DType::BF16 {
        if g.a.scales != Some(DType::F32) || g.b.scales != Some(DType::F32) {
            return Err("ue8m0 scales: cuBLASLt's VEC128 / BLK128x128 modes read f32 scales".into());
        }
        return Ok(Kind::BlockFp8);
    }
    let label = |o: GemmOperand| match o.scales {
        Some(s) => format!("{}/{s}", o.dtype),
        None => o.dtype.to_string(),
    };
    Err(format!(
        "{} × {} → {}: cuBLASLt is offered bf16 × bf16 → bf16 / f32 and e4m3 block-FP8 × e4m3 block-FP8 → bf16",
        label(g.a),
        label(g.b),
        g.c
    ))
}

/// Why cuBLASLt is not offered `g` on this device, before asking the library.
fn applies(lib: &CublasLt, cc: (i32, i32), g: &GemmDesc) -> std::result::Result<Kind, String> {
    if g.align < 16 {
        return Err(format!("an operand is only {}-byte aligned (cuBLASLt's algorithms want 16)", g.align));
    }
    let kind = kind(g)?;
    match kind {
        Kind::Bf16 if cc < (8, 0) => return Err(format!("sm_{}{} has no bf16 tensor cores", cc.0, cc.1)),
        Kind::Bf16 => {}
        Kind::BlockFp8 => {
            block_fp8_gate(lib, cc)?;
            let blocks = g.k / 128;
            if !g.k.is_multiple_of(128) || !blocks.is_multiple_of(4) {
                return Err(format!(
                    "K = {}: the 128×128 scale grid's rows must be whole 16-byte multiples (K a multiple of 512)",
                    g.k
                ));
            }
            if !g.a_pitch.is_multiple_of(16) || !g.c_pitch.is_multiple_of(8) {
                return Err("FP8 needs 16-byte aligned row pitches of A and C".into());
            }
        }
    }
    Ok(kind)
}

/// What the heuristic chose for a descriptor.
#[derive(Clone, Copy)]
struct Plan {
    kind: Kind,
    algo: [u64; 8],
    /// Bytes of the activations' transposed scales at the start of the scratch (0 when no transpose is
    /// needed), rounded up to 256.
    scales_bytes: usize,
    workspace: usize,
}

/// The activation scales need transposing to M-major unless one of the grid's sides is 1.
fn scales_bytes(kind: Kind, g: &GemmDesc) -> usize {
    let blocks = g.k.div_ceil(128);
    if kind == Kind::BlockFp8 && g.m > 1 && blocks > 1 {
        (g.m * blocks * 4).next_multiple_of(256)
    } else {
        0
    }
}

/// The descriptor objects of one matmul, destroyed with it.
struct Descs<'a> {
    lib: &'a CublasLt,
    op: Obj,
    layouts: [Obj; 3],
}

impl Drop for Descs<'_> {
    fn drop(&mut self) {
        // SAFETY: each object was created by this library and is destroyed once; null ones were never made.
        unsafe {
            if !self.op.is_null() {
                (self.lib.api.desc_destroy)(self.op);
            }
            for l in self.layouts.into_iter().filter(|l| !l.is_null()) {
                (self.lib.api.layout_destroy)(l);
            }
        }
    }
}

fn data_type(t: DType) -> c_int {
    match t {
        DType::BF16 => R_16BF,
        DType::F8E4M3Fn => R_8F_E4M3,
        _ => R_32F,
    }
}

/// Sets a descriptor attribute from a plain value.
///
/// A matmul descriptor's attribute.
///
/// # Safety
/// `desc` is a live matmul descriptor and `T` is the attribute's documented type.
unsafe fn set<T>(lib: &CublasLt, desc: Obj, attr: c_int, value: &T) -> std::result::Result<(), Failed> {
    set_with(lib, ("cublasLtMatmulDescSetAttribute", lib.api.desc_set), desc, attr, value)
}

/// An object's attribute through `setter` (every cuBLASLt `…SetAttribute` has this shape), `call` naming it
/// in errors.
///
/// # Safety
/// `obj` is a live object of the kind `setter` sets and `T` is the attribute's documented type.
unsafe fn set_with<T>(
    lib: &CublasLt,
    (call, setter): (&'static str, unsafe extern "C" fn(Obj, c_int, *const c_void, usize) -> Status),
    obj: Obj,
    attr: c_int,
    value: &T,
) -> std::result::Result<(), Failed> {
    lib.check(call, setter(obj, attr, value as *const T as *const c_void, std::mem::size_of::<T>()))
}

/// The matmul descriptor and the layouts of cuBLASLt's A (our weights), B (our activations) and C = D.
/// Scale pointers are set by the caller that has them.
fn descs<'a>(lib: &'a CublasLt, kind: Kind, g: &GemmDesc) -> std::result::Result<Descs<'a>, Failed> {
    let mut d = Descs { lib, op: std::ptr::null_mut(), layouts: [std::ptr::null_mut(); 3] };
    let pitch = |p: usize, k: usize| if p == 0 { k } else { p } as i64;
    let shapes = [
        (data_type(g.b.dtype), g.k, g.n, g.k as i64),
        (data_type(g.a.dtype), g.k, g.m, pitch(g.a_pitch, g.k)),
        (data_type(g.c), g.n, g.m, pitch(g.c_pitch, g.n)),
    ];
    // SAFETY: out-pointers to locals; the created objects are owned by `d`, which destroys them. The
    // attribute values have the documented types (int32 operations and scale modes).
    unsafe {
        lib.check("cublasLtMatmulDescCreate", (lib.api.desc_create)(&mut d.op, COMPUTE_32F, R_32F))?;
        set(lib, d.op, DESC_TRANSA, &OP_T)?;
        set(lib, d.op, DESC_TRANSB, &OP_N)?;
        if kind == Kind::BlockFp8 {
            set(lib, d.op, DESC_A_SCALE_MODE, &SCALE_BLK128X128_32F)?;
            set(lib, d.op, DESC_B_SCALE_MODE, &SCALE_VEC128_32F)?;
        }
        for (slot, (t, rows, cols, ld)) in d.layouts.iter_mut().zip(shapes) {
            let s = (lib.api.layout_create)(slot, t, rows as u64, cols as u64, ld);
            lib.check("cublasLtMatrixLayoutCreate", s)?;
        }
    }
    Ok(d)
}

/// cuBLASLt on one device: its handle, and per descriptor the plan or why there is none.
pub struct DeviceLt {
    lib: Arc<CublasLt>,
    handle: Obj,
    cc: (i32, i32),
    required: bool,
    plans: Mutex<HashMap<GemmDesc, std::result::Result<Plan, String>>>,
}

// SAFETY: a cuBLASLt handle may be used from several host threads (cuBLASLt's documentation: the
// handle is thread-safe for matmuls); the plan cache is behind a mutex.
unsafe impl Send for DeviceLt {}
// SAFETY: as above.
unsafe impl Sync for DeviceLt {}

impl Drop for DeviceLt {
    fn drop(&mut self) {
        // SAFETY: created in `DeviceLt::new` and destroyed once; the runtime drops it before releasing
        // the context, after its queues (which hold it) have finished their work.
        unsafe {
            (self.lib.api.destroy)(self.handle);
        }
    }
}

impl DeviceLt {
    /// cuBLASLt for a device whose context is current, or why the device's GEMMs stay on dsv3's kernels
    /// (an error only when `DSV3_CUDA_GEMM=cublaslt` requires it).
    pub fn new(cc: (i32, i32)) -> Result<Option<Arc<DeviceLt>>> {
        let unavailable = |reason: String| Error::Unavailable { backend: BACKEND.into(), reason };
        let required = match chosen() {
            Ok(Impl::Ours) => return Ok(None),
            Ok(Impl::Auto) => false,
            Ok(Impl::Cublaslt) => true,
            Err(why) => {
                tracing::warn!("{why}: dsv3's kernels run every CUDA GEMM");
                return Ok(None);
            }
        };
        let lib = match load() {
            Ok(lib) => lib,
            Err(why) if required => return Err(unavailable(format!("{IMPL_ENV}=cublaslt: {why}"))),
            Err(why) => {
                tracing::debug!("cuBLASLt not used: {why}");
                return Ok(None);
            }
        };
        let mut handle: Obj = std::ptr::null_mut();
        // SAFETY: an out-pointer to a local; the context is current (the caller binds it).
        let created = lib.check("cublasLtCreate", unsafe { (lib.api.create)(&mut handle) });
        match created {
            Ok(()) => {
                Ok(Some(Arc::new(DeviceLt { lib, handle, cc, required, plans: Mutex::new(HashMap::new()) })))
            }
            Err(f) if required => Err(unavailable(format!("{IMPL_ENV}=cublaslt: {f}"))),
            Err(f) => {
                tracing::warn!("cuBLASLt not used: {f}");
                Ok(None)
            }
        }
    }

    fn library(&self) -> String {
        format!("cublasLt {}", self.lib.version_text())
    }

    fn plans(&self) -> std::sync::MutexGuard<'_, HashMap<GemmDesc, std::result::Result<Plan, String>>> {
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The runtime's answer for `g` (the context is current).
    pub fn answer(&self, g: &GemmDesc) -> VendorGemm {
        let cached = self.plans().get(g).cloned();
        let plan = cached.unwrap_or_else(|| {
            let plan = self.plan(g);
            self.plans().insert(*g, plan.clone());
            plan
        });
        match plan {
            Ok(p) => VendorGemm::Library { library: self.library(), scratch: p.scales_bytes + p.workspace },
            Err(why) if self.required => VendorGemm::Refused(format!("{IMPL_ENV}=cublaslt: {why}")),
            Err(_) => VendorGemm::Ours,
        }
    }

    /// Asks cuBLASLt's heuristic for the best algorithm within the workspace ceiling.
    fn plan(&self, g: &GemmDesc) -> std::result::Result<Plan, String> {
        let lib = &*self.lib;
        let kind = applies(lib, self.cc, g)?;
        let d = descs(lib, kind, g).map_err(|f| f.to_string())?;
        let mut pref: Obj = std::ptr::null_mut();
        let mut result =
            [Heuristic { algo: [0; 8], workspace_size: 0, state: 0, waves_count: 0.0, reserved: [0; 4] }];
        let mut found: c_int = 0;
        let max = max_workspace(self.cc);
        // SAFETY: out-pointers to locals; `pref` is destroyed below once created; the descriptors are
        // live (owned by `d`); `result` has room for the one algorithm asked for.
        let asked = unsafe {
            lib.check("cublasLtMatmulPreferenceCreate", (lib.api.pref_create)(&mut pref)).and_then(|()| {
                let pref_set = ("cublasLtMatmulPreferenceSetAttribute", lib.api.pref_set);
                set_with(lib, pref_set, pref, PREF_MAX_WORKSPACE_BYTES, &max)?;
                // Only algorithms that work at the operands' actual alignment (a view may start 16 or 64
                // bytes into its buffer).
                for attr in PREF_MIN_ALIGNMENT {
                    set_with(lib, pref_set, pref, attr, &g.align)?;
                }
                let [a, b, c] = d.layouts;
                let s = (lib.api.heuristic)(
                    self.handle,
                    d.op,
                    a,
                    b,
                    c,
                    c,
                    pref,
                    1,
                    result.as_mut_ptr(),
                    &mut found,
                );
                lib.check("cublasLtMatmulAlgoGetHeuristic", s)
            })
        };
        if !pref.is_null() {
            // SAFETY: created above, destroyed once.
            unsafe { (lib.api.pref_destroy)(pref) };
        }
        asked.map_err(|f| f.to_string())?;
        if found < 1 || result[0].state != SUCCESS {
            return Err(format!("cuBLASLt has no algorithm for {}×{}×{} ({kind:?})", g.m, g.n, g.k));
        }
        let workspace = result[0].workspace_size.next_multiple_of(256);
        Ok(Plan { kind, algo: result[0].algo, scales_bytes: scales_bytes(kind, g), workspace })
    }

    /// Enqueues a planned GEMM on `stream` (the context is current). `Ok(false)`: a call failed, the
    /// descriptor is no longer offered, and dsv3's kernels compute it.
    pub fn run(&self, stream: *mut c_void, op: &'static str, args: &GemmArgs) -> Result<bool> {
        let plan = self.plans().get(&args.desc).cloned();
        let Some(Ok(plan)) = plan else {
            return Err(Error::unsupported(BACKEND, op, "cuBLASLt has no plan for this GEMM (not offered)"));
        };
        if args.scratch_bytes < plan.scales_bytes + plan.workspace {
            return Err(Error::invalid(
                op,
                "scratch",
                format!(
                    "{} bytes, the plan needs {}",
                    args.scratch_bytes,
                    plan.scales_bytes + plan.workspace
                ),
            ));
        }
        match self.enqueue(stream, &plan, args) {
            Ok(()) => Ok(true),
            Err(f) if self.required => Err(f.error()),
            Err(f) => {
                tracing::warn!("{op}: {f}; dsv3's kernels compute this GEMM from now on");
                self.plans().insert(args.desc, Err(f.to_string()));
                Ok(false)
            }
        }
    }

    fn enqueue(&self, stream: *mut c_void, plan: &Plan, args: &GemmArgs) -> std::result::Result<(), Failed> {
        let lib = &*self.lib;
        let g = &args.desc;
        let d = descs(lib, plan.kind, g)?;
        let ptr = |a: u64| a as *const c_void;
        let (one, zero) = (1f32, 0f32);
        let alpha = &one as *const f32 as *const c_void;
        let beta = &zero as *const f32 as *const c_void;
        let mut a_scales = args.a_scales;
        if plan.scales_bytes > 0 {
            a_scales = args.scratch;
            self.transpose_scales(stream, g, args.a_scales, a_scales)?;
        }
        // SAFETY: the descriptors are live (`d`); every address was checked against a live allocation
        // of this device by the GPU layer, which keeps them alive until the stream's next sync, and spans
        // what the layouts describe (the op's contract); the workspace lies in the scratch after the
        // scales, `plan.workspace` bytes (checked above); alpha and beta are host f32 (the default
        // pointer mode) read before the call returns; the algorithm came from this library's heuristic
        // for these descriptors.
        unsafe {
            if plan.kind == Kind::BlockFp8 {
                set(lib, d.op, DESC_A_SCALE_POINTER, &args.b_scales)?;
                set(lib, d.op, DESC_B_SCALE_POINTER, &a_scales)?;
            }
            let [la, lb, lc] = d.layouts;
            let s = (lib.api.matmul)(
                self.handle,
                d.op,
                alpha,
                ptr(args.b),
                la,
                ptr(args.a),
                lb,
                beta,
                ptr(args.c),
                lc,
                args.c as *mut c_void,
                lc,
                &plan.algo,
                (args.scratch + plan.scales_bytes as u64) as *mut c_void,
                plan.workspace,
                stream,
            );
            lib.check("cublasLtMatmul", s)
        }
    }

    /// `[M, K/128]` row-major → `[K/128, M]` row-major (M-major), as VEC128_32F reads it.
    fn transpose_scales(
        &self,
        stream: *mut c_void,
        g: &GemmDesc,
        src: u64,
        dst: u64,
    ) -> std::result::Result<(), Failed> {
        let lib = &*self.lib;
        let blocks = g.k.div_ceil(128) as u64;
        let m = g.m as u64;
        let (mut desc, mut from, mut to): (Obj, Obj, Obj) =
            (std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
        let (one, zero) = (1f32, 0f32);
        // SAFETY: out-pointers to locals, each object destroyed below once made; `src` holds M·blocks
        // f32 (the op's a_scales, checked by the GPU layer) and `dst` as many in the plan's scratch; B is
        // absent (null, beta 0), as cuBLASLt allows.
        let r = unsafe {
            lib.check("cublasLtMatrixTransformDescCreate", (lib.api.transform_desc_create)(&mut desc, R_32F))
                .and_then(|()| {
                    let transform_set =
                        ("cublasLtMatrixTransformDescSetAttribute", lib.api.transform_desc_set);
                    set_with(lib, transform_set, desc, TRANSFORM_DESC_TRANSA, &OP_T)?;
                    // Column-major views: the source is blocks × M (ld blocks), the result M × blocks (ld M).
                    let s = (lib.api.layout_create)(&mut from, R_32F, blocks, m, blocks as i64);
                    lib.check("cublasLtMatrixLayoutCreate", s)?;
                    let s = (lib.api.layout_create)(&mut to, R_32F, m, blocks, m as i64);
                    lib.check("cublasLtMatrixLayoutCreate", s)?;
                    let s = (lib.api.transform)(
                        self.handle,
                        desc,
                        &one as *const f32 as *const c_void,
                        src as *const c_void,
                        from,
                        &zero as *const f32 as *const c_void,
                        std::ptr::null(),
                        std::ptr::null_mut(),
                        dst as *mut c_void,
                        to,
                        stream,
                    );
                    lib.check("cublasLtMatrixTransform", s)
                })
        };
        // SAFETY: each made above and destroyed once.
        unsafe {
            for l in [from, to].into_iter().filter(|l| !l.is_null()) {
                (lib.api.layout_destroy)(l);
            }
            if !desc.is_null() {
                (lib.api.transform_desc_destroy)(desc);
            }
        }
        r
    }
}
