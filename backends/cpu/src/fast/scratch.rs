//! Reused f32 buffers for the kernels' temporaries (converted operands, scores, rows in f32). A decode
//! step of a small model is hundreds of launches whose kernels each need a few short vectors: allocating
//! and zeroing them was a sixth of the step's instructions. Each thread keeps a few freed vectors and
//! hands them out again; large ones (a prefill's) go back to the allocator rather than stay held.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Largest vector kept for reuse, in floats (256 KiB): beyond this an op's arithmetic dwarfs an allocation.
const KEEP_MAX: usize = 1 << 16;

/// Vectors kept per thread: more than any kernel holds at once.
const KEEP_COUNT: usize = 8;

thread_local! {
    static FREE: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// A vector of f32 that returns to its thread's free list when dropped.
pub struct Scratch(Vec<f32>);

impl Scratch {
    /// `len` zeros (zeroed like `vec![0.0; len]`: callers may rely on untouched elements being 0).
    pub fn zeroed(len: usize) -> Scratch {
        let reused = if len <= KEEP_MAX { FREE.with(|f| f.borrow_mut().pop()) } else { None };
        let mut v = reused.unwrap_or_default();
        v.clear();
        v.resize(len, 0.0);
        Scratch(v)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.capacity() == 0 || v.capacity() > KEEP_MAX {
            return;
        }
        // `try_with`: a thread being torn down has no list any more; the vector is then freed.
        let _ = FREE.try_with(|f| {
            let mut free = f.borrow_mut();
            if free.len() < KEEP_COUNT {
                free.push(v);
            }
        });
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A vector handed back is zeroed however it was left, at any length, and a small one is reused
    /// (same memory) rather than allocated again; a large one is not kept.
    #[test]
    fn reused_vectors_come_back_zeroed() {
        let mut a = Scratch::zeroed(100);
        a.iter_mut().for_each(|x| *x = 7.0);
        let ptr = a.as_ptr();
        drop(a);
        let b = Scratch::zeroed(60);
        assert_eq!(b.as_ptr(), ptr, "the freed vector is reused");
        assert!(b.iter().all(|&x| x == 0.0) && b.len() == 60);
        drop(b);
        let c = Scratch::zeroed(150);
        assert!(c.iter().all(|&x| x == 0.0) && c.len() == 150);
        drop(c);
        let big = Scratch::zeroed(KEEP_MAX + 1);
        let big_ptr = big.as_ptr();
        drop(big);
        let next = Scratch::zeroed(KEEP_MAX + 1);
        assert!(next.iter().all(|&x| x == 0.0));
        assert!(
            FREE.with(|f| f.borrow().iter().all(|v| v.as_ptr() != big_ptr)),
            "a large vector is not kept"
        );
    }
}
