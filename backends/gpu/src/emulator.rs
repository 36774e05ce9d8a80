//! The host emulator runtime: the CUDA C kernels compiled by the host C++ compiler (`$DSV3_HOST_CXX`,
//! else `c++`) with `host_emulator.h`, run on the CPU. It exists to test kernels and their launches where
//! no GPU is (CI, laptops): same sources, same variants, same parameter blocks as on a GPU.
//!
//! Memory is host memory, each allocation ending against an inaccessible guard page, so a kernel reading
//! or writing past the end of a buffer faults instead of passing silently, and filled with 0xff bytes, so a
//! kernel reading memory nobody wrote sees NaN rather than zero; a stream's pooled scratch is refilled so
//! each time it is handed out again, so a kernel cannot read the last step's values either. Launches run
//! synchronously, one at a time per process (blocks share their emulated shared memory within a compiled
//! variant; dynamic shared memory is one area for the process, sized per launch and ending against an
//! inaccessible page). Shared memory per block is limited as on the hardware each warp width stands for
//! ([`shared_limits`]), and above NVIDIA's 48 KiB a launch needs its function opted in, as the CUDA
//! driver requires, so the launch path's opt-in is exercised here too. A capture records each launch (kernel, grid, parameter block) and copy instead of running it;
//! a replay runs the record in order.

use crate::device::{GpuDevice, Profile};
use crate::disk_cache;
use crate::kernels::Variant;
use crate::runtime::{Dims, Function, Queue, QueueEvent, QueueGraph, Runtime, Target};
use crate::shared_memory::{FunctionShared, SharedLimits};
use dsv3_core::{Backend, Capabilities, DType, DTypeUsage, Device, DeviceInfo, Error, Result};
use std::any::Any;
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Backend names: the warp width decides which vendor's kernels the emulator stands for.
pub fn backend_name(warp: u32) -> &'static str {
    if warp == 64 {
        "hip-emu"
    } else {
        "cuda-emu"
    }
}

/// `dsv3_host_launch(grid, block, params, stacks, stack_bytes, guard_bytes, dynamic, dynamic_bytes)`.
type LaunchFn = unsafe extern "C" fn(
    *const u32,
    *const u32,
    *const c_void,
    *mut u8,
    usize,
    usize,
    *mut u8,
    usize,
) -> *const c_char;
/// `dsv3_host_static_shared()`: the bytes of the kernel's static shared memory.
type StaticSharedFn = unsafe extern "C" fn() -> usize;

/// NVIDIA's opt-in limit on sm_86 and sm_89 (99 KiB), the smallest of the architectures with the tile
/// layer (sm_80: 163 KiB, sm_90: 227 KiB): what `cuda-emu` gives a block, so that a launch it runs fits
/// every one of them.
pub const NVIDIA_OPT_IN_MIN: u32 = 99 * 1024;

/// Shared memory per block at a warp width: at 32 NVIDIA's, 48 KiB without opting in and
/// [`NVIDIA_OPT_IN_MIN`] with; at 64 a CDNA workgroup's LDS, 64 KiB, with nothing to opt in to.
pub fn shared_limits(warp: u32) -> SharedLimits {
    if warp == 64 {
        SharedLimits { default: SharedLimits::CDNA_LDS, opt_in: SharedLimits::CDNA_LDS }
    } else {
        SharedLimits { default: SharedLimits::NVIDIA_DEFAULT, opt_in: NVIDIA_OPT_IN_MIN }
    }
}

/// Bytes of the process's dynamic shared-memory area: the largest limit an emulator gives.
const DYNAMIC_AREA: usize = NVIDIA_OPT_IN_MIN as usize;

/// The end of the dynamic shared-memory area, the first byte of the inaccessible page after it: one area
/// for the process, used by one launch at a time (launches take turns), each launch's bytes placed against
/// the page so that a kernel writing past its dynamic shared memory faults.
fn dynamic_area_end() -> Option<usize> {
    static AREA: OnceLock<Option<usize>> = OnceLock::new();
    *AREA.get_or_init(|| {
        let body = DYNAMIC_AREA.div_ceil(page()) * page();
        // SAFETY: an anonymous private mapping with no preconditions; the result is checked. It is never
        // unmapped (the area lives as long as the process).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                body + page(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: the last page lies inside the mapping just made.
        unsafe { libc::mprotect((base as *mut u8).add(body) as *mut c_void, page(), libc::PROT_NONE) };
        Some(base as usize + body)
    })
}

/// Fiber stacks: one per thread of the largest block (1024). A GPU thread may use far more local memory
/// than a CPU stack frame usually needs; a guard region below each stack makes an overflow fault instead of
/// overwriting the neighbour.
const FIBER_STACK: usize = 512 * 1024;
const FIBER_GUARD: usize = 64 * 1024;
const MAX_THREADS: usize = 1024;

/// The process's one pool of fiber stacks, shared by every kernel library (launches take turns): a pool per
/// library would cost two memory mappings per stack per library and exhaust the kernel's limit.
fn fiber_stacks() -> Option<usize> {
    static POOL: OnceLock<Option<usize>> = OnceLock::new();
    *POOL.get_or_init(|| {
        let total = MAX_THREADS * (FIBER_STACK + FIBER_GUARD);
        // SAFETY: an anonymous private mapping with no preconditions; the result is checked. It is never
        // unmapped (the pool lives as long as the process).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        for i in 0..MAX_THREADS {
            // SAFETY: each guard region lies inside the mapping just made.
            unsafe {
                libc::mprotect(
                    (base as *mut u8).add(i * (FIBER_STACK + FIBER_GUARD)) as *mut c_void,
                    FIBER_GUARD,
                    libc::PROT_NONE,
                )
            };
        }
        Some(base as usize)
    })
}

struct HostKernel {
    // Keeps the code `launch` points into loaded.
    _lib: libloading::Library,
    launch: LaunchFn,
    name: String,
    /// The kernel file's declared largest block (`Kernel::max_block`), what check-kernels proved fits.
    max_block: u32,
    /// The launch path's record of its shared memory (opted in or not).
    shared: FunctionShared,
    /// The emulated driver's own record, as CUDA's driver keeps one: the most dynamic shared memory a
    /// launch may give (what the default leaves beside the static bytes, or the opted-in value). A launch
    /// over it is refused, as cuLaunchKernel refuses it.
    driver_allowed: AtomicU32,
}

pub struct Emulator {
    name: &'static str,
    target: Target,
    compiler: PathBuf,
    compiler_version: String,
    /// Live allocations: address → (mapping start, mapping length).
    mappings: Mutex<HashMap<u64, (usize, usize)>>,
}

/// Every launch in the process: a variant's emulated shared memory and scheduler are process-wide.
static LAUNCH: Mutex<()> = Mutex::new(());

fn page() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as usize
    } else {
        4096
    }
}

impl Emulator {
    /// An emulator with `warp` lanes per warp (32 as NVIDIA, 64 as AMD's wave64, gfx94x: [`Target::host`]).
    /// Unavailable when the host C++ compiler does not run.
    pub fn new(warp: u32) -> Result<Emulator> {
        Emulator::for_target(Target::host(warp))
    }

    /// The emulator at wave64 standing for gfx90a (MI200): MFMA without gfx94x's FP8 instruction, so
    /// e4m3fnuz products take the tile layer's decoded path, as on that chip.
    pub fn gfx90a() -> Result<Emulator> {
        Emulator::for_target(GFX90A)
    }

    fn for_target(target: Target) -> Result<Emulator> {
        let compiler = PathBuf::from(std::env::var_os("DSV3_HOST_CXX").unwrap_or_else(|| "c++".into()));
        let name = backend_name(target.warp());
        let unavailable = |reason: String| Error::Unavailable { backend: name.into(), reason };
        let out = Command::new(&compiler).arg("--version").output().map_err(|e| {
            unavailable(format!("host C++ compiler `{}` does not run: {e}", compiler.display()))
        })?;
        if !out.status.success() {
            return Err(unavailable(format!("`{} --version` failed", compiler.display())));
        }
        let compiler_version = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string();
        Ok(Emulator { name, target, compiler, compiler_version, mappings: Mutex::new(HashMap::new()) })
    }

    pub fn compiler_version(&self) -> &str {
        &self.compiler_version
    }

    fn kernel_error(&self, op: &'static str, kernel: &str, reason: impl Into<String>) -> Error {
        Error::Kernel { backend: self.name.into(), op, kernel: kernel.into(), reason: reason.into() }
    }

    /// The variant as a shared library, from the disk cache or compiled now.
    fn library(&self, op: &'static str, v: &Variant) -> Result<PathBuf> {
        const FLAGS: &[&str] =
            &["-std=c++20", "-O2", "-fPIC", "-shared", "-U_FORTIFY_SOURCE", "-fno-strict-aliasing"];
        let source = v.assemble(&self.target);
        let key = disk_cache::hash(&[
            source.as_bytes(),
            self.compiler_version.as_bytes(),
            FLAGS.join(" ").as_bytes(),
        ]);
        let path = disk_cache::path(&format!("host-{}", v.kernel.name), &key, ".so");
        if path.exists() {
            return Ok(path);
        }
        let dir = path.parent().map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| self.kernel_error(op, &v.key(), format!("{}: {e}", dir.display())))?;
        let stem = format!(".{}-{}-{}", v.kernel.name, std::process::id(), disk_cache::unique());
        let (src_path, lib_path) = (dir.join(format!("{stem}.cpp")), dir.join(format!("{stem}.so")));
        std::fs::write(&src_path, &source).map_err(|e| self.kernel_error(op, &v.key(), e.to_string()))?;
        let out = Command::new(&self.compiler).args(FLAGS).arg("-o").arg(&lib_path).arg(&src_path).output();
        let _ = std::fs::remove_file(&src_path);
        let out = out.map_err(|e| self.kernel_error(op, &v.key(), format!("compiler did not run: {e}")))?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&lib_path);
            let log = String::from_utf8_lossy(&out.stderr);
            return Err(self.kernel_error(op, &v.key(), format!("host compilation failed:\n{log}")));
        }
        std::fs::rename(&lib_path, &path).map_err(|e| self.kernel_error(op, &v.key(), e.to_string()))?;
        Ok(path)
    }
}

impl Runtime for Emulator {
    fn backend(&self) -> &'static str {
        self.name
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn target(&self) -> &Target {
        &self.target
    }

    fn shared_limits(&self) -> SharedLimits {
        shared_limits(self.target.warp())
    }

    fn alloc(&self, bytes: usize) -> Result<u64> {
        let page = page();
        let span = bytes.div_ceil(256) * 256;
        let body = span.div_ceil(page) * page;
        let total = body + page;
        // SAFETY: an anonymous private mapping has no preconditions; the result is checked.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Error::OutOfMemory { backend: self.name.into(), bytes });
        }
        // SAFETY: the last page lies inside the mapping just made.
        unsafe { libc::mprotect((base as *mut u8).add(body) as *mut c_void, page, libc::PROT_NONE) };
        // The buffer ends where the guard page starts (up to the 256-byte alignment every device gives).
        let addr = base as usize + body - span;
        // Device memory is uninitialised: 0xff bytes (NaN as float, -1 as int) make a kernel that reads what
        // nobody wrote fail its tests instead of seeing convenient zeros.
        // SAFETY: addr..addr+span lies inside the read-write part of the mapping.
        unsafe { std::ptr::write_bytes(addr as *mut u8, 0xff, span) };
        self.mappings.lock().unwrap_or_else(|p| p.into_inner()).insert(addr as u64, (base as usize, total));
        Ok(addr as u64)
    }

    fn free(&self, addr: u64, _bytes: usize) {
        if let Some((base, total)) = self.mappings.lock().unwrap_or_else(|p| p.into_inner()).remove(&addr) {
            // SAFETY: (base, total) is a mapping made by `alloc` and removed from the table exactly once.
            unsafe { libc::munmap(base as *mut c_void, total) };
        }
    }

    fn scratch_reused(&self, addr: u64, bytes: usize) {
        // Garbage again, as fresh memory is. Only a live allocation is written, and only its 256-byte
        // rounded span, which lies inside the read-write part of its mapping.
        if self.mappings.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&addr) {
            // SAFETY: addr..addr + span is the read-write body of a live mapping made by `alloc`; the
            // stream hands scratch out again only after the work that used it finished (its sync).
            unsafe { std::ptr::write_bytes(addr as *mut u8, 0xff, bytes.div_ceil(256) * 256) };
        }
    }

    fn compile(&self, op: &'static str, v: &Variant) -> Result<Function> {
        let path = self.library(op, v)?;
        let fail = |e: libloading::Error| self.kernel_error(op, &v.key(), format!("{}: {e}", path.display()));
        // SAFETY: the library is one we compiled from dsv3's kernel sources, in a directory only this user
        // writes (see disk_cache::dir); its initialisers only set up static storage.
        let lib = match unsafe { libloading::Library::new(&path) } {
            Ok(lib) => lib,
            // A cached library that does not load is damaged (a crash or a full disk while it was
            // written): compile it again, once, rather than fail at every run.
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                // SAFETY: as above, freshly compiled.
                unsafe { libloading::Library::new(self.library(op, v)?) }.map_err(fail)?
            }
        };
        // SAFETY: `dsv3_host_launch` and `dsv3_host_static_shared` are defined by DSV3_HOST_ENTRY with exactly
        // these signatures.
        let launch = *unsafe { lib.get::<LaunchFn>(b"dsv3_host_launch\0") }.map_err(fail)?;
        let static_shared =
            *unsafe { lib.get::<StaticSharedFn>(b"dsv3_host_static_shared\0") }.map_err(fail)?;
        // SAFETY: takes nothing, reads two linker symbols.
        let static_bytes = u32::try_from(unsafe { static_shared() }).unwrap_or(u32::MAX);
        let limits = self.shared_limits();
        Ok(Arc::new(HostKernel {
            _lib: lib,
            launch,
            name: v.key(),
            max_block: v.kernel.max_block,
            shared: FunctionShared::new(static_bytes, limits),
            driver_allowed: AtomicU32::new(limits.default.saturating_sub(static_bytes)),
        }))
    }

    fn new_queue(&self) -> Result<Box<dyn Queue>> {
        Ok(Box::new(HostQueue { backend: self.name, capture: Mutex::new(None) }))
    }

    fn can_copy_from(&self, src: &dyn Runtime) -> bool {
        // Every emulator's memory is host memory of this process: one copy, no staging.
        src.as_any().is::<Emulator>()
    }
}

/// Work runs when it is enqueued, so the queue is trivially in order; while capturing, it is recorded instead.
struct HostQueue {
    backend: &'static str,
    capture: Mutex<Option<Vec<HostWork>>>,
}

/// One recorded piece of work: what a replay runs again.
enum HostWork {
    Launch { op: &'static str, f: Function, dims: Dims, params: Vec<u64> },
    Copy { src: u64, dst: u64, bytes: usize },
}

impl HostQueue {
    /// The recording when capturing (the work is then recorded by the caller, not run).
    fn recording(&self) -> std::sync::MutexGuard<'_, Option<Vec<HostWork>>> {
        self.capture.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn host_copy(src: u64, dst: u64, bytes: usize) {
    // SAFETY: both ranges were checked against live allocations by the stream layer (a graph's buffers
    // are kept alive by the graph); `copy` tolerates overlap.
    unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, bytes) };
}

fn host_launch(
    backend: &'static str,
    op: &'static str,
    f: &Function,
    dims: Dims,
    params: &[u64],
) -> Result<()> {
    let k = f.downcast_ref::<HostKernel>().ok_or_else(|| Error::Kernel {
        backend: backend.into(),
        op,
        kernel: "?".into(),
        reason: "not a kernel compiled by the emulator".into(),
    })?;
    if dims.block > k.max_block {
        // A GPU might run it, or refuse it for want of registers: check-kernels only proved the
        // declared size, so the launch code and the kernel table disagree.
        return Err(Error::Kernel {
            backend: backend.into(),
            op,
            kernel: k.name.clone(),
            reason: format!(
                "block size {} is over the {} threads its kernel file declares (kernels.rs)",
                dims.block, k.max_block
            ),
        });
    }
    // The launch path's step, as on a GPU: refused past the limit, opted in above the default. Opting in
    // here sets the emulated driver's record, which the next check holds the launch to.
    let opt_in = |bytes: u32| {
        k.driver_allowed.fetch_max(bytes, Ordering::AcqRel);
        Ok(())
    };
    k.shared.prepare(dims.shared, backend, op, &k.name, Some(&opt_in))?;
    let driver_allowed = k.driver_allowed.load(Ordering::Acquire);
    if dims.shared > driver_allowed {
        return Err(Error::Kernel {
            backend: backend.into(),
            op,
            kernel: k.name.clone(),
            reason: format!(
                "a launch with {} bytes of dynamic shared memory, over the {driver_allowed} its function allows \
                 (above the default the function must opt in first, as CUDA's driver requires)",
                dims.shared
            ),
        });
    }
    let block = [dims.block, 1, 1];
    let stacks = fiber_stacks().ok_or_else(|| Error::OutOfMemory {
        backend: backend.into(),
        bytes: MAX_THREADS * (FIBER_STACK + FIBER_GUARD),
    })?;
    let dynamic_bytes = dims.shared as usize;
    let dynamic_end = dynamic_area_end()
        .filter(|_| dynamic_bytes <= DYNAMIC_AREA)
        .ok_or(Error::OutOfMemory { backend: backend.into(), bytes: dynamic_bytes })?;
    // 16-byte aligned (what DSV3_DYNAMIC_SHARED promises), its end at the inaccessible page up to that.
    let dynamic = dynamic_end - dynamic_bytes.div_ceil(16) * 16;
    let _one_at_a_time = LAUNCH.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: grid and block are 3 u32 each; `params` outlives the call and holds the kernel's Params
    // fields in order (the kernel reads no further than its struct); every address in it was checked
    // against a live allocation by the launch code (a graph keeps its launches' buffers alive). The stack
    // pool has MAX_THREADS slots of the sizes passed, and `dynamic .. dynamic + dynamic_bytes` lies in the
    // dynamic shared-memory area, both used by one launch at a time (the lock above).
    let err = unsafe {
        (k.launch)(
            dims.grid.as_ptr(),
            block.as_ptr(),
            params.as_ptr() as *const c_void,
            stacks as *mut u8,
            FIBER_STACK,
            FIBER_GUARD,
            dynamic as *mut u8,
            dynamic_bytes,
        )
    };
    if err.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null result is a static NUL-terminated message in the kernel library.
    let reason = unsafe { CStr::from_ptr(err) }.to_string_lossy().into_owned();
    Err(Error::Kernel { backend: backend.into(), op, kernel: k.name.clone(), reason })
}

/// An emulator queue's captured work.
struct HostGraph {
    backend: &'static str,
    work: Vec<HostWork>,
}

impl QueueGraph for HostGraph {
    fn launch(&self) -> Result<()> {
        for w in &self.work {
            match w {
                HostWork::Launch { op, f, dims, params } => host_launch(self.backend, op, f, *dims, params)?,
                HostWork::Copy { src, dst, bytes } => host_copy(*src, *dst, *bytes),
            }
        }
        Ok(())
    }
}

impl Queue for HostQueue {
    fn upload(&self, dst: u64, src: &[u8]) -> Result<()> {
        // SAFETY: the stream checked dst..dst+len lies inside one live allocation of this emulator.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    fn download(&self, src: u64, dst: &mut [u8]) -> Result<()> {
        // SAFETY: as for upload.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn copy(&self, src: u64, dst: u64, bytes: usize) -> Result<()> {
        match self.recording().as_mut() {
            Some(work) => work.push(HostWork::Copy { src, dst, bytes }),
            None => host_copy(src, dst, bytes),
        }
        Ok(())
    }

    fn launch(&self, op: &'static str, f: &Function, dims: Dims, params: &[u64]) -> Result<()> {
        match self.recording().as_mut() {
            // A function of another runtime fails now (`host_launch` checks it before running anything),
            // as it would eagerly, rather than at every replay.
            Some(work) if f.is::<HostKernel>() => {
                work.push(HostWork::Launch { op, f: f.clone(), dims, params: params.to_vec() });
                Ok(())
            }
            _ => host_launch(self.backend, op, f, dims, params),
        }
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn record_event(&self) -> Result<Box<dyn QueueEvent>> {
        Ok(Box::new(HostEvent))
    }

    fn wait_event(&self, event: &dyn QueueEvent) -> Result<()> {
        if event.as_any().is::<HostEvent>() {
            return Ok(());
        }
        event.synchronize()
    }

    fn copy_peer(&self, _src_runtime: &dyn Runtime, src: u64, dst: u64, bytes: usize) -> Result<()> {
        // The source is another emulator (`can_copy_from`), whose memory is this process's memory too.
        self.copy(src, dst, bytes)
    }

    fn begin_capture(&self) -> Result<()> {
        *self.recording() = Some(Vec::new());
        Ok(())
    }

    fn end_capture(&self) -> Result<Box<dyn QueueGraph>> {
        let work = self.recording().take().ok_or_else(|| Error::Driver {
            backend: self.backend.into(),
            call: "end_capture".into(),
            reason: "the queue is not capturing".into(),
        })?;
        Ok(Box::new(HostGraph { backend: self.backend, work }))
    }
}

/// An emulator queue's event. Its queue ran the work before `record_event` returned (launches and copies
/// are synchronous), so the event is complete from the start: waiting for it, on a queue or the host, has
/// nothing to wait for.
struct HostEvent;

impl QueueEvent for HostEvent {
    fn synchronize(&self) -> Result<()> {
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The emulator's target standing for gfx90a ([`Emulator::gfx90a`]).
const GFX90A: Target = Target::Host { warp: 64, mfma_fp8: false };

/// The emulator as a dsv3 backend with one device, for the conformance suite and kernel development.
pub struct EmulatorBackend {
    target: Target,
}

impl EmulatorBackend {
    /// `warp` 32 stands for NVIDIA (`cuda-emu`), 64 for AMD wave64 (`hip-emu`, gfx94x: [`Target::host`]).
    pub fn new(warp: u32) -> EmulatorBackend {
        EmulatorBackend { target: Target::host(warp) }
    }

    /// `hip-emu` standing for gfx90a ([`Emulator::gfx90a`]), for tests of that chip's paths.
    pub fn gfx90a() -> EmulatorBackend {
        EmulatorBackend { target: GFX90A }
    }

    fn emulator(&self) -> Result<Emulator> {
        Emulator::for_target(self.target.clone())
    }

    fn profile(&self, emulator: &Emulator) -> Profile {
        let dtypes = DType::ALL
            .iter()
            .map(|&d| {
                (
                    d,
                    DTypeUsage {
                        storage: true,
                        conversion: true,
                        arithmetic: d == DType::F32,
                        matrix: false,
                    },
                )
            })
            .collect();
        let warp = self.target.warp();
        let chip = match warp {
            32 => "",
            _ if self.target.mfma_fp8_fnuz() => ", MFMA as gfx94x: FP8 on e4m3fnuz",
            _ => ", MFMA as gfx90a: no FP8 MFMA",
        };
        Profile {
            info: DeviceInfo {
                backend: self.name(),
                ordinal: 0,
                name: format!("CUDA C kernels on the host CPU ({warp} lanes per warp{chip})"),
                vendor: "dsv3 emulator".into(),
                arch: format!("host-warp{warp}"),
                memory_bytes: 0,
            },
            caps: Capabilities {
                dtypes,
                fp8_formats: Vec::new(),
                memory_bytes: 0,
                subgroup_size: warp,
                graph_capture: true,
                host_memory: true,
                features: vec![format!("compiler: {}", emulator.compiler_version())],
            },
            peak: None,
        }
    }
}

impl Backend for EmulatorBackend {
    fn name(&self) -> &'static str {
        backend_name(self.target.warp())
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        let emulator = self.emulator()?;
        Ok(vec![self.profile(&emulator).info])
    }

    fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>> {
        if ordinal != 0 {
            return Err(Error::Unavailable {
                backend: self.name().into(),
                reason: format!("no device {ordinal} (the emulator has one)"),
            });
        }
        let emulator = self.emulator()?;
        let profile = self.profile(&emulator);
        let device: Arc<dyn Device> = GpuDevice::new(Arc::new(emulator), profile)?;
        Ok(device)
    }
}
