//! Weights on the NUMA node whose workers read them. A decode GEMM streams every weight row once per
//! token; on a machine with several nodes a worker reading another node's memory gets a fraction of its
//! own node's bandwidth. So a large weight matrix is cut into one contiguous byte range per node (in
//! proportion to the node's workers, [`Placement::split`]); its pages are allocated on that node, and the
//! decode GEMM (`fast::gemm::decode::run_jobs`, the grouped expert launch included) gives each node's
//! workers the rows of their range first ([`Placement::row_bounds`], from the same split), then lets them
//! take the other nodes' rows once their own are done, so that no node idles while another has work.
//!
//! **How pages are placed: first touch, not `mbind(2)`.** Linux allocates a page on the node of the
//! thread that first writes it. A large [`crate::buffer::CpuBuffer`] comes from `calloc`, whose fresh
//! zero pages are not written at allocation (see `buffer.rs`), and [`copy`] — every upload — has each
//! pinned worker write only pages of its own node's range. An explicit `mbind` of each range was the
//! alternative, and rejected: each bound range becomes a kernel memory mapping of its own (ranges of
//! different nodes alternate and cannot merge), and DeepSeek-V3's 58 × 3 × 256 expert matrices on two
//! nodes need ~89,000, above Linux's default limit of 65,530 mappings per process (`vm.max_map_count`);
//! containers' default seccomp profiles also refuse `mbind` without `CAP_SYS_NICE`. First touch needs
//! neither, at the price of needing pinned workers (placement is off without them).
//!
//! What each side splits is one upload and one GEMM's weight matrix: the two agree because the model's
//! loader uploads every matrix — each expert of a stacked `[E, N, K]` tensor — in an upload of its own.
//! Pages at the ends of an upload, shared with a neighbour, land where the first write happens.
//! Where a large buffer's pages may be huge (`crate::huge_pages`), the cuts fall on 2 MiB boundaries.
//! Only ranges of at least [`PLACE_MIN_BYTES`] are split; everything else (activations, norms, scales,
//! small weights) is copied on the calling thread as before. With one node, or unpinned workers, nothing
//! is split: uploads and GEMMs run exactly as without this module.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::{threads, topology};

/// Smallest upload (weight matrix) split over nodes: 4 MiB, about 1000 pages. Below it the cross-node
/// reads are a few hundred microseconds per token at most, and a split would wake every worker for
/// each small upload. V3's smallest routed-expert matrix (2048 × 7168 FP8) is 14 MiB; V2-Lite's (1408 ×
/// 2048 bf16) 5.5 MiB.
pub const PLACE_MIN_BYTES: usize = 4 << 20;

/// Bytes one first-touch copy task writes ([`copy`]): several tasks per node and worker.
const COPY_CHUNK: usize = 1 << 20;

/// How byte ranges are split over the nodes that have workers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Workers of each node (by index into the topology's nodes): each node's share of every split.
    /// One entry: no split.
    workers: Vec<usize>,
    /// Boundaries fall on multiples of this (the page size: a page lives on one node).
    page: usize,
    /// Ranges shorter than this are not split ([`PLACE_MIN_BYTES`]).
    min_bytes: usize,
}

impl Placement {
    /// `workers[i]` workers on node index i, page size `page`, ranges from `min_bytes` split.
    pub fn new(workers: Vec<usize>, page: usize, min_bytes: usize) -> Placement {
        Placement { workers, page: page.max(1), min_bytes }
    }

    /// No split: one node, or placement off.
    fn single() -> Placement {
        Placement::new(vec![1], 1, 0)
    }

    /// Nodes a split has parts for.
    pub fn nodes(&self) -> usize {
        self.workers.len()
    }

    /// The `len` bytes from address `start`, split over the nodes: addresses `b[0] = start ≤ b[1] ≤ … ≤
    /// b[nodes] = start + len`, node i holding `b[i]..b[i+1]`, each share in proportion to the node's
    /// workers and each inner boundary on a page boundary (rounded down). One part, `[start, start +
    /// len]`, below `min_bytes` or with one node.
    pub fn split(&self, start: usize, len: usize) -> Vec<usize> {
        let total: usize = self.workers.iter().sum();
        if self.workers.len() < 2 || len < self.min_bytes || total == 0 {
            return vec![start, start + len];
        }
        let mut bounds = vec![start];
        let mut before = 0;
        for &w in &self.workers[..self.workers.len() - 1] {
            before += w;
            let at = start + (len as u128 * before as u128 / total as u128) as usize;
            bounds.push((at - at % self.page).max(start));
        }
        bounds.push(start + len);
        bounds
    }

    /// For `rows` rows of `row_bytes` bytes from address `start`: rows `r[i]..r[i+1]` belong to node i,
    /// the rows whose first byte lies in node i's range of [`Placement::split`] of the whole matrix.
    pub fn row_bounds(&self, start: usize, row_bytes: usize, rows: usize) -> Vec<usize> {
        if row_bytes == 0 {
            return vec![0, rows];
        }
        let bounds = self.split(start, rows * row_bytes);
        bounds.iter().map(|&at| (at - start).div_ceil(row_bytes).min(rows)).collect()
    }
}

/// Tasks queued per node, taken in queue order by the workers ([`ByNode::drain`]).
pub struct ByNode<T> {
    queues: Vec<Vec<T>>,
    taken: Vec<AtomicUsize>,
}

impl<T> ByNode<T> {
    pub fn new(nodes: usize) -> ByNode<T> {
        ByNode {
            queues: (0..nodes).map(|_| Vec::new()).collect(),
            taken: (0..nodes).map(|_| 0.into()).collect(),
        }
    }

    pub fn push(&mut self, node: usize, task: T) {
        self.queues[node].push(task);
    }

    /// Runs `f` on one untaken task after another: node `own`'s first (node 0's for a node index out of
    /// range, e.g. a thread that is no pinned worker), then with `steal` the other nodes' from `own + 1`
    /// on, wrapping around, so that thieves of different nodes start on different queues. Each task runs
    /// once whichever threads drain at the same time.
    pub fn drain(&self, own: usize, steal: bool, mut f: impl FnMut(&T)) {
        let nodes = self.queues.len();
        let own = if own < nodes { own } else { 0 };
        let visit = if steal { nodes } else { 1.min(nodes) };
        for q in (0..visit).map(|i| (own + i) % nodes) {
            while let Some(task) = self.queues[q].get(self.taken[q].fetch_add(1, Ordering::Relaxed)) {
                f(task);
            }
        }
    }
}

/// The placement of this process: split over the nodes of [`topology::this_process`] when it has
/// several and every worker is pinned, else [`Placement::single`].
pub fn current() -> &'static Placement {
    &state().0
}

/// Nodes, their CPUs, and whether weights are placed (and why not), for `dsv3 devices`.
pub fn summary() -> &'static str {
    &state().1
}

fn state() -> &'static (Placement, String) {
    static STATE: OnceLock<(Placement, String)> = OnceLock::new();
    STATE.get_or_init(|| {
        let off = |why: String| (Placement::single(), format!("{why}: weights not placed per node"));
        let t = match topology::this_process() {
            Err(e) => return off(format!("NUMA topology unknown [{e}]")),
            Ok(t) => t,
        };
        let plural = if t.nodes.len() == 1 { "" } else { "s" };
        let nodes = format!("{} NUMA node{plural} [{}]", t.nodes.len(), t.describe());
        if t.nodes.len() < 2 {
            return off(nodes);
        }
        let Some(of_worker) = threads::worker_nodes() else {
            return off(format!("{nodes}, workers not pinned"));
        };
        let mut workers = vec![0; t.nodes.len()];
        for node in of_worker {
            workers[node] += 1;
        }
        if workers.iter().filter(|&&w| w > 0).count() < 2 {
            return off(format!("{nodes}, workers on one node"));
        }
        let placed = format!(
            "{nodes}: weights of {} MiB or more first-touched on the node whose workers read them",
            PLACE_MIN_BYTES >> 20
        );
        (Placement::new(workers, crate::huge_pages::placement_granule(page_size()), PLACE_MIN_BYTES), placed)
    })
}

fn page_size() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page > 0 {
            return page as usize;
        }
    }
    4096
}

/// `dst.copy_from_slice(src)` (an upload), each node's range of `dst` ([`current`]'s split) written
/// first by that node's workers so that its pages are allocated there.
pub fn copy(dst: &mut [u8], src: &[u8]) {
    copy_with(current(), dst, src)
}

/// [`copy`] under the split of `placement`.
pub(crate) fn copy_with(placement: &Placement, dst: &mut [u8], src: &[u8]) {
    let bounds = placement.split(dst.as_ptr() as usize, dst.len());
    if bounds.len() <= 2 {
        dst.copy_from_slice(src);
        return;
    }
    let mut tasks = ByNode::new(placement.nodes());
    let (mut dst, mut src) = (dst, src);
    for (node, range) in bounds.windows(2).enumerate() {
        let (d, dst_rest) = std::mem::take(&mut dst).split_at_mut(range[1] - range[0]);
        let (s, src_rest) = src.split_at(range[1] - range[0]);
        for (d, s) in d.chunks_mut(COPY_CHUNK).zip(s.chunks(COPY_CHUNK)) {
            tasks.push(node, Mutex::new((d, s)));
        }
        (dst, src) = (dst_rest, src_rest);
    }
    let write = |task: &Mutex<(&mut [u8], &[u8])>| {
        let (d, s) = &mut *task.lock().unwrap_or_else(|poison| poison.into_inner());
        d.copy_from_slice(s);
    };
    // Workers take their own node's tasks only: a page written by another node's worker would land there.
    threads::on_each_worker(|node| {
        if let Some(node) = node {
            tasks.drain(node, false, write);
        }
    });
    // What no worker of its node took (a node without workers in this pool) is written here: the bytes
    // are right wherever their pages land.
    tasks.drain(0, true, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    #[test]
    fn split_follows_the_workers_and_the_pages() {
        let two = Placement::new(vec![4, 4], PAGE, 1 << 16);
        // 1 MiB from a page boundary: halves.
        assert_eq!(two.split(0x10_0000, 1 << 20), vec![0x10_0000, 0x18_0000, 0x20_0000]);
        // From a misaligned start: the middle rounded down to a page boundary.
        assert_eq!(two.split(0x10_0010, 1 << 20), vec![0x10_0010, 0x18_0000, 0x20_0010]);
        // Below the threshold, or with one node: one part.
        assert_eq!(two.split(0x10_0000, (1 << 16) - 1), vec![0x10_0000, 0x11_0000 - 1]);
        assert_eq!(Placement::new(vec![8], PAGE, 0).split(0, 1 << 20), vec![0, 1 << 20]);
        // Uneven workers (taskset over 12 of 16 CPUs): shares 2 : 1 : 1.
        let three = Placement::new(vec![8, 4, 4], PAGE, 0);
        assert_eq!(three.split(0, 1 << 20), vec![0, 0x8_0000, 0xC_0000, 0x10_0000]);
        // A node with no workers gets nothing.
        assert_eq!(
            Placement::new(vec![4, 0, 4], PAGE, 0).split(0, 1 << 20),
            vec![0, 0x8_0000, 0x8_0000, 1 << 20]
        );
    }

    #[test]
    fn rows_split_where_their_first_byte_is_placed() {
        let two = Placement::new(vec![4, 4], PAGE, 1 << 16);
        // 2048 rows of 7168 bytes (V3's expert down-projection in FP8) from a page boundary: the middle
        // byte 7 MiB is row 1024's first.
        assert_eq!(two.row_bounds(0x4000_0000, 7168, 2048), vec![0, 1024, 2048]);
        // From 16 bytes past a page boundary (a calloc'd buffer's data): the boundary page starts at
        // 0x4070_0000 - 16 bytes into row 1023, so row 1024 is the first whose first byte is there.
        assert_eq!(two.row_bounds(0x4000_0010, 7168, 2048), vec![0, 1024, 2048]);
        // Small matrices are not split.
        assert_eq!(two.row_bounds(0, 64, 100), vec![0, 100]);
    }

    /// The upload's placement and the GEMM's task split agree: every row whose first byte lies in node
    /// i's range is one of node i's rows, for shapes and start addresses that do not line up with pages.
    #[test]
    fn the_task_split_agrees_with_the_placement() {
        for workers in [vec![1, 1], vec![3, 1], vec![2, 2, 2, 2], vec![5, 0, 3]] {
            let p = Placement::new(workers, PAGE, 1 << 12);
            for (start, row_bytes, rows) in [
                (0x7f00_0000_0010, 7168, 2048),
                (0x7f00_0000_1000, 4 * 1000, 333),
                (0x7f00_0000_0008, 2 * 129, 777),
            ] {
                let bytes = p.split(start, rows * row_bytes);
                let row_bounds = p.row_bounds(start, row_bytes, rows);
                assert_eq!(row_bounds.len(), bytes.len());
                for r in 0..rows {
                    let at = start + r * row_bytes;
                    let placed = bytes.windows(2).position(|b| b[0] <= at && at < b[1]).unwrap();
                    let task = row_bounds.windows(2).position(|b| b[0] <= r && r < b[1]).unwrap();
                    assert_eq!(task, placed, "row {r} of {rows}×{row_bytes} from {start:#x}, {p:?}");
                }
            }
        }
    }

    #[test]
    fn each_node_drains_its_own_tasks_first_then_steals() {
        let mut tasks = ByNode::new(2);
        for t in 0..10 {
            tasks.push(if t < 4 { 0 } else { 1 }, t);
        }
        let mut order = Vec::new();
        tasks.drain(1, true, |&t| order.push(t));
        assert_eq!(order, vec![4, 5, 6, 7, 8, 9, 0, 1, 2, 3]);
        // Nothing twice.
        let mut again = Vec::new();
        tasks.drain(0, true, |&t| again.push(t));
        assert!(again.is_empty());
    }

    #[test]
    fn without_stealing_a_node_leaves_the_others_tasks() {
        let mut tasks = ByNode::new(3);
        for t in 0..9 {
            tasks.push(t % 3, t);
        }
        let mut own = Vec::new();
        tasks.drain(2, false, |&t| own.push(t));
        assert_eq!(own, vec![2, 5, 8]);
        // A thread with no node (index out of range) starts at node 0 and, stealing, takes the rest.
        let mut rest = Vec::new();
        tasks.drain(7, true, |&t| rest.push(t));
        assert_eq!(rest, vec![0, 3, 6, 1, 4, 7]);
    }

    /// An upload split over two nodes copies every byte, whether or not the nodes have workers (here all
    /// workers are on node 0, so node 1's range is left to the calling thread).
    #[test]
    fn placed_copies_are_complete() {
        let len = 3 * COPY_CHUNK + 12345;
        let src: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
        for workers in [vec![1, 1], vec![1, 3], vec![0, 1]] {
            let mut dst = vec![0u8; len];
            let p = Placement::new(workers, PAGE, 1 << 16);
            assert!(p.split(dst.as_ptr() as usize, len).len() > 2, "the copy is split");
            copy_with(&p, &mut dst, &src);
            assert!(dst == src, "{p:?}");
        }
    }

    /// The node of the page at `addr` as the kernel reports it (`get_mempolicy(MPOL_F_NODE |
    /// MPOL_F_ADDR)`, linux/mempolicy.h's flags 1 and 2).
    #[cfg(target_os = "linux")]
    fn node_of_page(addr: usize) -> usize {
        let mut node: libc::c_int = -1;
        // SAFETY: the kernel writes one int to `node`; no node mask is passed (length 0); `addr` is only
        // looked up in this process's page tables.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_get_mempolicy,
                &mut node as *mut libc::c_int,
                std::ptr::null_mut::<libc::c_ulong>(),
                0 as libc::c_ulong,
                addr as *mut libc::c_void,
                3 as libc::c_ulong,
            )
        };
        assert_eq!(rc, 0, "get_mempolicy: {}", std::io::Error::last_os_error());
        node as usize
    }

    /// A buffer uploaded with a split over two nodes has each page of a range whose node has pinned
    /// workers on that node, as the kernel reports it. On a machine with one node (this build machine)
    /// every worker is on node index 0, the calling thread writes the second range, and every page must
    /// be on the one node; on a machine with two, this checks first-touch placement itself.
    #[cfg(target_os = "linux")]
    #[test]
    fn placed_pages_are_on_the_workers_node() {
        let topology = topology::this_process().as_ref().expect("sysfs lists the nodes");
        let with_workers = threads::worker_nodes().unwrap_or_default();
        // 40 MiB: fresh pages however far other tests moved glibc's mmap threshold (see buffer.rs).
        let len = 40 << 20;
        let buffer = crate::buffer::CpuBuffer::new(dsv3_core::DeviceId::new("cpu", 0), len).unwrap();
        let mut words = buffer.lock();
        let dst = crate::buffer::bytes_mut(&mut words, len);
        let src = vec![3u8; len];
        let placement = Placement::new(vec![1, 1], page_size(), 1 << 16);
        let bounds = placement.split(dst.as_ptr() as usize, len);
        copy_with(&placement, dst, &src);
        assert!(dst == src);
        let mut checked = 0;
        for (i, range) in bounds.windows(2).enumerate() {
            let expect = if with_workers.contains(&i) && i < topology.nodes.len() {
                topology.nodes[i].id
            } else if topology.nodes.len() == 1 {
                topology.nodes[0].id
            } else {
                continue;
            };
            for addr in (range[0].next_multiple_of(page_size())..range[1]).step_by(page_size()) {
                assert_eq!(node_of_page(addr), expect, "page at {addr:#x}, node index {i}");
                checked += 1;
            }
        }
        assert!(checked >= len / page_size() / 2 - 1, "{checked} pages checked");
    }
}
