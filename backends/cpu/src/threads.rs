//! Where an op's parallel loops run. Waking the worker threads costs tens of microseconds per parallel
//! loop, and on a machine with few cores their spinning afterwards competes with the calling thread; a
//! decode step of a small model is hundreds of tiny ops. So ops below [`SMALL_WORK`] run on the calling
//! thread alone — in a one-thread rayon pool whose worker *is* the calling thread, so the kernels'
//! parallel loops run inline — and larger ops on the shared pool.
//!
//! The shared pool's workers are pinned, worker i to the i-th CPU the process may run on: a decode GEMM
//! streams each weight row on one worker, and the scheduler then neither moves a worker away from the
//! core whose caches and prefetch streams it warmed nor stacks two workers on one core while another
//! idles. `DSV3_CPU_PIN=0` leaves them to the scheduler (e.g. beside other pinned work); where the OS
//! refuses, they run unpinned. [`pinning`] says which, for `dsv3 devices`. A pinned worker knows the
//! NUMA node of its CPU ([`worker_node`]): [`crate::placement`] gives it the weights of its node first.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
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

/// Workers of the shared pool that their OS pinned as asked.
static PINNED: AtomicUsize = AtomicUsize::new(0);

/// The CPU each worker of the shared pool was asked to run on (worker i: entry i); empty when unpinned.
static WORKER_CPUS: OnceLock<Vec<usize>> = OnceLock::new();

thread_local! {
    /// On a pinned worker of the shared pool, the index in [`crate::topology::this_process`]'s nodes of
    /// the node holding its CPU.
    static WORKER_NODE: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Whether `DSV3_CPU_PIN` lets the pool pin its workers (anything but `0` does).
fn pin_wanted() -> bool {
    std::env::var("DSV3_CPU_PIN").map_or(true, |v| v.trim() != "0")
}

/// The pool large ops run on, one thread per CPU the process may use (pinned: see the module comment);
/// `None` if the system would not start threads (then everything runs on the calling thread).
fn shared() -> Option<&'static ThreadPool> {
    static POOL: OnceLock<Option<ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        // The CPUs the process may run on (its affinity mask), in order; `None` where unknown.
        let cpus = pin_wanted().then(core_affinity::get_core_ids).flatten().filter(|c| c.len() >= threads);
        WORKER_CPUS.get_or_init(|| cpus.iter().flatten().take(threads).map(|c| c.id).collect());
        // Read here, where the affinity mask is the process's: a pinned worker's own mask is one CPU.
        let _ = crate::topology::this_process();
        let pool = ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("dsv3-cpu-{i}"))
            .start_handler(move |i| {
                if let Some(cpu) = cpus.as_ref().map(|c| c[i]).filter(|&c| core_affinity::set_for_current(c))
                {
                    PINNED.fetch_add(1, Ordering::Relaxed);
                    let node = crate::topology::this_process().as_ref().ok().and_then(|t| t.node_of(cpu.id));
                    WORKER_NODE.with(|n| n.set(node));
                }
            })
            .build()
            .ok()?;
        // Every worker has run its start handler once each has run a job: `pinning` counts them all.
        pool.broadcast(|_| ());
        Some(pool)
    })
    .as_ref()
}

/// How the shared pool's workers are placed: "pinned to N CPUs", or why not.
pub fn pinning() -> String {
    let threads = count();
    match PINNED.load(Ordering::Relaxed) {
        _ if !pin_wanted() => "not pinned (DSV3_CPU_PIN=0)".to_string(),
        n if n == threads => format!("pinned to {n} CPUs"),
        0 => "not pinned (the OS did not allow it)".to_string(),
        n => format!("{n} of {threads} threads pinned (the OS refused the rest)"),
    }
}

/// The node index (see [`WORKER_NODE`]) of each worker of the shared pool, worker i at entry i, when
/// every worker is pinned and the topology is known; `None` otherwise.
pub fn worker_nodes() -> Option<Vec<usize>> {
    let threads = count();
    if PINNED.load(Ordering::Relaxed) != threads {
        return None;
    }
    let topology = crate::topology::this_process().as_ref().ok()?;
    WORKER_CPUS.get()?.iter().map(|&cpu| topology.node_of(cpu)).collect()
}

/// The calling thread's node index when it is a pinned worker of the shared pool.
pub fn worker_node() -> Option<usize> {
    WORKER_NODE.with(Cell::get)
}

/// Runs `f` once on every worker of the shared pool (none if it did not start), with that worker's
/// [`worker_node`].
pub fn on_each_worker(f: impl Fn(Option<usize>) + Sync) {
    if let Some(pool) = shared() {
        pool.broadcast(|_| f(worker_node()));
    }
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Each worker of the shared pool runs on the CPU it was pinned to, and `pinning` says so.
    #[test]
    fn workers_run_each_on_its_own_cpu() {
        let pool = shared().expect("the pool starts");
        let cpus = core_affinity::get_core_ids().expect("the affinity mask is readable on Linux");
        // SAFETY: sched_getcpu takes no arguments and only reads the calling thread's state.
        let on: Vec<(usize, i32)> = pool.broadcast(|ctx| (ctx.index(), unsafe { libc::sched_getcpu() }));
        for (worker, cpu) in on {
            assert_eq!(cpu as usize, cpus[worker].id, "worker {worker}");
        }
        assert_eq!(pinning(), format!("pinned to {} CPUs", count()));
    }

    /// Each pinned worker's node is the node of the CPU it runs on, and `worker_nodes` lists the same.
    #[test]
    fn workers_know_their_node() {
        let topology = crate::topology::this_process().as_ref().expect("sysfs lists the nodes");
        let pool = shared().expect("the pool starts");
        // SAFETY: as above.
        let on: Vec<(usize, i32, Option<usize>)> =
            pool.broadcast(|ctx| (ctx.index(), unsafe { libc::sched_getcpu() }, worker_node()));
        let nodes = worker_nodes().expect("every worker is pinned");
        for (worker, cpu, node) in on {
            assert_eq!(node, topology.node_of(cpu as usize), "worker {worker} on CPU {cpu}");
            assert_eq!(node, Some(nodes[worker]), "worker {worker}");
        }
        assert_eq!(worker_node(), None, "the test thread is no worker");
    }
}
