//! Transparent huge pages for large buffers (Linux). A decode GEMM streams its weights once per token;
//! with 4 KiB pages every 64 lines of a weight row cross a page, where the hardware prefetchers stop and
//! the TLB misses. In 2 MiB pages the FP8 decode kernel at M = 4 took 21–36 % less time per weight line
//! from memory on one Zen 4 core (benches/results/2026-12-07-cpu-zen4-huge-pages.md). Many distributions set THP to `madvise`
//! (no huge pages unless asked), so buffers of [`MIN_BYTES`] or more ask with `madvise(MADV_HUGEPAGE)`
//! before their first write; `DSV3_CPU_HUGEPAGES=0` turns this off. Advice only: where the kernel has
//! no THP or its mode is `never`, the pages stay 4 KiB and nothing else changes.
//!
//! NUMA placement ([`crate::placement`]) works by first touch, so where pages may be huge it cuts a
//! weight matrix between nodes on 2 MiB boundaries ([`placement_granule`]): a huge page across a cut
//! would land on one node.

/// Buffers from this size ask for huge pages: large enough that the 2 MiB pages inside them are most
/// of the buffer (small buffers — activations, norms — are not streamed and would only grow).
pub(crate) const MIN_BYTES: usize = 4 << 20;

/// The huge page size THP uses on x86-64 and (with 4 KiB base pages) arm64.
const HUGE_PAGE: usize = 2 << 20;

/// Whether `DSV3_CPU_HUGEPAGES` allows the advice (anything but `0` does).
fn wanted() -> bool {
    std::env::var("DSV3_CPU_HUGEPAGES").map_or(true, |v| v.trim() != "0")
}

/// Asks the kernel to back the 2 MiB-aligned pages inside `len` bytes from `p` (an allocation just made,
/// not yet written) with huge pages, when the buffer is large enough and the advice is wanted.
pub(crate) fn advise(p: *mut u8, len: usize) {
    if len < MIN_BYTES || !wanted() {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = (p as usize).next_multiple_of(HUGE_PAGE);
        let end = (p as usize + len) / HUGE_PAGE * HUGE_PAGE;
        if end > start {
            // SAFETY: `start..end` lies inside the caller's live allocation. MADV_HUGEPAGE changes only
            // how the kernel backs those pages, never their contents or validity; its failure (EINVAL
            // without THP) leaves them as they were, which is why the result is not checked.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = p;
}

/// The kernel's THP mode (`always`, `madvise` or `never`: the bracketed word of
/// `/sys/kernel/mm/transparent_hugepage/enabled`); `None` without THP.
fn thp_mode() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    Some(s.split('[').nth(1)?.split(']').next()?.to_string())
}

/// The unit in which first touch places a large buffer's memory on NUMA nodes: the 2 MiB huge page
/// where its pages may be huge, else `base` (the system's page size).
pub(crate) fn placement_granule(base: usize) -> usize {
    granule(base, wanted(), thp_mode().as_deref())
}

/// [`placement_granule`] given the advice and the THP mode: pages may be huge under `always` whatever
/// the advice, under `madvise` only when advised.
fn granule(base: usize, advice: bool, mode: Option<&str>) -> usize {
    match mode {
        Some("always") => HUGE_PAGE.max(base),
        Some("madvise") if advice => HUGE_PAGE.max(base),
        _ => base,
    }
}

/// For `dsv3 devices`: whether large buffers ask for huge pages, and the kernel's THP mode.
pub(crate) fn summary() -> String {
    if !wanted() {
        return "no huge pages (DSV3_CPU_HUGEPAGES=0)".to_string();
    }
    match thp_mode().as_deref() {
        Some("never") => "no huge pages (THP: never)".to_string(),
        Some(mode) => format!("huge pages for buffers of {} MiB or more (THP: {mode})", MIN_BYTES >> 20),
        None => "no huge pages (THP unavailable)".to_string(),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use crate::buffer::{bytes_mut, CpuBuffer};
    use dsv3_core::DeviceId;

    /// The `VmFlags` of the mapping holding `addr`, from `/proc/self/smaps`.
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("/proc/self/smaps");
        let mut inside = false;
        for line in smaps.lines() {
            let range = line.split_whitespace().next().and_then(|r| r.split_once('-'));
            if let Some((lo, hi)) = range.filter(|_| !line.starts_with("VmFlags")) {
                if let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16)) {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
            if inside && line.starts_with("VmFlags:") {
                return line.to_string();
            }
        }
        panic!("no mapping holds {addr:#x}")
    }

    /// The placement unit is the huge page under THP `always` whatever the advice, under `madvise` only
    /// when advised, and never below the base page (64 KiB pages on some arm64 kernels).
    #[test]
    fn placement_granule_by_mode_and_advice() {
        for advice in [false, true] {
            assert_eq!(granule(4096, advice, Some("always")), HUGE_PAGE);
            assert_eq!(granule(4096, advice, Some("madvise")), if advice { HUGE_PAGE } else { 4096 });
            assert_eq!(granule(4096, advice, Some("never")), 4096);
            assert_eq!(granule(4096, advice, None), 4096);
        }
        assert_eq!(granule(4 << 20, true, Some("always")), 4 << 20);
    }

    /// An anonymous mapping of `len` bytes, unmapped on drop.
    struct Mapping(*mut u8, usize);
    impl Mapping {
        fn new(len: usize) -> Mapping {
            // SAFETY: a fresh private anonymous mapping; no memory of ours is involved.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
            Mapping(p.cast(), len)
        }
        fn advised(&self) -> bool {
            vm_flags(self.0 as usize + self.1 / 2).split_whitespace().any(|f| f == "hg")
        }
    }
    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: the mapping made in `new`, not referenced after this.
            unsafe { libc::munmap(self.0.cast(), self.1) };
        }
    }

    /// The advice (`hg` in the mapping's flags, set whatever the system's THP mode) reaches a mapping
    /// of `MIN_BYTES` or more and not a smaller one; `CpuBuffer::new` gives it to a large buffer, whose
    /// bytes are still zeros.
    #[test]
    fn large_buffers_ask_for_huge_pages() {
        assert!(wanted(), "the test runs with the default (DSV3_CPU_HUGEPAGES unset)");
        let (large, small) = (Mapping::new(2 * MIN_BYTES), Mapping::new(MIN_BYTES - 4096));
        advise(large.0, large.1);
        advise(small.0, small.1);
        assert!(large.advised(), "{}", vm_flags(large.0 as usize + large.1 / 2));
        assert!(!small.advised(), "{}", vm_flags(small.0 as usize + small.1 / 2));

        let len = 3 * MIN_BYTES;
        let b = CpuBuffer::new(DeviceId::new("cpu", 0), len).expect("12 MiB");
        let mut words = b.lock();
        let bytes = bytes_mut(&mut words, len);
        let middle = bytes.as_ptr() as usize + len / 2;
        assert!(vm_flags(middle).split_whitespace().any(|f| f == "hg"), "{}", vm_flags(middle));
        assert!(bytes.iter().step_by(4096).all(|&x| x == 0), "zeroed");
    }
}
