//! Where an op's parallel loops run. Waking the worker threads costs tens of microseconds per parallel
//! loop, and on a machine with few cores their spinning afterwards competes with the calling thread; a
//! decode step of a small model is hundreds of tiny ops. So ops below [`SMALL_WORK`] run on the calling
//! thread alone — in a one-thread rayon pool whose worker *is* the calling thread, so the kernels'
//! parallel loops run inline — and larger ops on the shared pool.

use std::sync::OnceLock;

use rayon::{ThreadPool, ThreadPoolBuilder};

/// Bytes moved plus FLOPs below which an op is not worth waking other threads for (about 20–50 µs of
/// work on one core, the order of a wake-up).
pub const SMALL_WORK: f64 = 4e5;

thread_local! {
    /// `None` where the calling thread cannot become a pool worker (it already is one, e.g. inside a
    /// caller's own rayon pool): such callers run ops directly.
    static INLINE: Option<ThreadPool> =
        ThreadPoolBuilder::new().num_threads(1).use_current_thread().build().ok();
}

/// The pool large ops run on, one thread per core; `None` if the system would not start threads (then
/// everything runs on the calling thread).
fn shared() -> Option<&'static ThreadPool> {
    static POOL: OnceLock<Option<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("dsv3-cpu-{i}")).build().ok()
    })
    .as_ref()
}

/// Threads a large op runs on.
pub fn count() -> usize {
    shared().map_or(1, ThreadPool::current_num_threads)
}

/// Runs `f` inline when `work` is small, else on the shared pool.
pub fn run<R: Send>(work: f64, f: impl FnOnce() -> R + Send) -> R {
    if work >= SMALL_WORK {
        if let Some(pool) = shared() {
            return pool.install(f);
        }
    }
    let mut f = Some(f);
    let inline = INLINE.with(|pool| pool.as_ref().map(|p| p.install(|| (f.take().expect("runs once"))())));
    match inline {
        Some(r) => r,
        None => (f.take().expect("not run inline"))(),
    }
}
