//! Host memory as a device buffer. The bytes sit behind a mutex: every access (upload, download, copy,
//! an op's launch) locks the buffers it touches, so ops on different threads never race.

use dsv3_core::{DeviceBuffer, DeviceId};
use std::any::Any;
use std::sync::{Mutex, MutexGuard};

/// Backing store of u64 words so that every element type up to 8 bytes is aligned at any offset that
/// is a multiple of its size (which `Op::validate` checks).
pub struct CpuBuffer {
    words: Mutex<Vec<u64>>,
    len: usize,
    device: DeviceId,
}

impl CpuBuffer {
    /// `len` zero bytes, or `None` when the memory is not there.
    ///
    /// The zeros come from the allocator's `alloc_zeroed` (glibc's `calloc`), which does not write pages
    /// the kernel hands over zeroed: an allocation of at least glibc's mmap threshold is a fresh
    /// anonymous mapping whose pages are allocated only at their first write — on the node of the thread
    /// that writes, which is how [`crate::placement`] puts weights on the node that reads them. The
    /// threshold is 128 KiB at start and grows to the size of a freed mapped chunk, up to 32 MiB (64-bit
    /// glibc's `DEFAULT_MMAP_THRESHOLD_MAX`): from 32 MiB every allocation is fresh; smaller ones usually
    /// are, and otherwise reuse heap pages (zeroed by `calloc`, on the node they were on). The test
    /// `large_buffers_are_not_touched_at_allocation` checks this with `mincore(2)`.
    pub fn new(device: DeviceId, len: usize) -> Option<CpuBuffer> {
        let words = len.div_ceil(8);
        let layout = std::alloc::Layout::array::<u64>(words).ok()?;
        let words = if words == 0 {
            Vec::new()
        } else {
            // SAFETY: `layout` has a non-zero size. A non-null result is `words` zeroed u64 (a valid value
            // for every bit pattern) allocated by the global allocator with `layout`, which is what
            // `Vec::from_raw_parts` needs for length and capacity `words`.
            unsafe {
                let p = std::alloc::alloc_zeroed(layout) as *mut u64;
                if p.is_null() {
                    return None;
                }
                // Before the first write, so that a large buffer's pages can be huge from the start.
                crate::huge_pages::advise(p.cast(), words * 8);
                Vec::from_raw_parts(p, words, words)
            }
        };
        Some(CpuBuffer { words: Mutex::new(words), len, device })
    }

    /// Exclusive access to the bytes. A poisoned lock only means another thread panicked while holding
    /// it; the bytes are plain data and stay usable.
    pub fn lock(&self) -> MutexGuard<'_, Vec<u64>> {
        self.words.lock().unwrap_or_else(|poison| poison.into_inner())
    }
}

impl std::fmt::Debug for CpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBuffer({} bytes on {})", self.len, self.device)
    }
}

impl DeviceBuffer for CpuBuffer {
    fn len(&self) -> usize {
        self.len
    }
    fn device_id(&self) -> DeviceId {
        self.device
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The bytes of a locked buffer (its logical length, not the padded word count).
pub fn bytes_mut(words: &mut [u64], len: usize) -> &mut [u8] {
    &mut bytemuck::cast_slice_mut(words)[..len]
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// (resident, all) whole pages inside `bytes`, residence as `mincore(2)` reports it.
    pub(crate) fn resident_pages(bytes: &[u8]) -> (usize, usize) {
        // SAFETY: sysconf only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let start = (bytes.as_ptr() as usize).next_multiple_of(page);
        let end = (bytes.as_ptr() as usize + bytes.len()) / page * page;
        let pages = (end - start) / page;
        let mut vec = vec![0u8; pages];
        // SAFETY: `start..end` is page-aligned and inside the live allocation `bytes`; `vec` holds one byte
        // per page of it, as mincore writes.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, end - start, vec.as_mut_ptr()) };
        assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
        (vec.iter().filter(|&&v| v & 1 != 0).count(), pages)
    }

    /// The claim `CpuBuffer::new` documents: a large buffer's pages are not written at allocation, even
    /// after a freed 30 MiB mapping raised glibc's mmap threshold; all of them are once written.
    #[test]
    fn large_buffers_are_not_touched_at_allocation() {
        drop(CpuBuffer::new(DeviceId::new("cpu", 0), 30 << 20));
        let len = 48 << 20;
        let b = CpuBuffer::new(DeviceId::new("cpu", 0), len).expect("48 MiB");
        let mut words = b.lock();
        let bytes = bytes_mut(&mut words, len);
        let (resident, pages) = resident_pages(bytes);
        assert!(pages >= len / 4096 - 1);
        assert_eq!(resident, 0, "of {pages}");
        // Read after the count: a read maps the kernel's shared zero page, which mincore counts.
        assert!(bytes.iter().step_by(4096).all(|&x| x == 0), "zeroed");
        bytes.fill(1);
        assert_eq!(resident_pages(bytes), (pages, pages), "every page written");
    }
}
