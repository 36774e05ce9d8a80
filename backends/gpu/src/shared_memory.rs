//! Shared memory per block: what a device gives, and the step every runtime takes before a launch with
//! dynamic shared memory — written once here; each runtime keeps a [`FunctionShared`] beside each compiled
//! kernel and supplies only its vendor's opt-in call.
//!
//! NVIDIA: a block may use 48 KiB of shared memory, static and dynamic together, unless its function opts
//! in (`cuFuncSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)`), up to the device's
//! `CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN` (sm_80: 163 KiB, sm_86 / sm_89: 99 KiB,
//! sm_90: 227 KiB); static shared memory alone stays under 48 KiB (the compiler refuses more). A launch
//! asking for more dynamic shared memory than its function's attribute allows fails in the driver
//! (`CUDA_ERROR_INVALID_VALUE`), so the attribute is set before the first such launch of each function.
//! AMD: no opt-in. Every launch may use the workgroup's whole LDS (64 KiB on CDNA: gfx90a, gfx94x), static
//! and dynamic together; `hipFuncSetAttribute` takes a host function, not a module's, and AMD ignores it.
//!
//! A launch over the device's limit is refused here with an error naming the kernel, before any driver
//! call; the ops choose their variants within [`crate::runtime::Runtime::shared_limits`], so that only
//! happens when a kernel's launch code and its limits disagree.

use dsv3_core::{Error, Result};
use std::sync::atomic::{AtomicU32, Ordering};

/// Shared memory one block may use on a device, static and dynamic together (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedLimits {
    /// Without opting in (NVIDIA: 48 KiB; AMD: the workgroup's LDS).
    pub default: u32,
    /// Once the function has opted in; equal to `default` where there is nothing to opt in to.
    pub opt_in: u32,
}

impl SharedLimits {
    /// NVIDIA's limit without opting in, the same on every architecture since Volta.
    pub const NVIDIA_DEFAULT: u32 = 48 * 1024;
    /// An AMD CDNA workgroup's LDS (gfx90a, gfx94x).
    pub const CDNA_LDS: u32 = 64 * 1024;
}

/// One compiled function's shared memory, as its runtime's kernel object keeps it: its static bytes and the
/// dynamic bytes its launches may take now.
#[derive(Debug)]
pub struct FunctionShared {
    /// Static shared memory (`__shared__` arrays), as the driver reports it for the loaded function.
    pub static_bytes: u32,
    limits: SharedLimits,
    /// The most dynamic shared memory a launch may give: what the default leaves beside the static bytes,
    /// or the value of the last opt-in.
    allowed: AtomicU32,
}

impl FunctionShared {
    pub fn new(static_bytes: u32, limits: SharedLimits) -> FunctionShared {
        let allowed = AtomicU32::new(limits.default.saturating_sub(static_bytes));
        FunctionShared { static_bytes, limits, allowed }
    }

    /// Readies a launch of `kernel` (for `op`, on `backend`) that gives each block `dynamic` bytes of dynamic
    /// shared memory: nothing when the function may take them already; `opt_in(dynamic)` — the vendor's
    /// attribute call — when only opting in allows them, once per function (a variant's launches all give
    /// the same bytes); an error naming the kernel and the bytes when the device cannot give them, before
    /// any driver call. `opt_in` is `None` where the runtime has nothing to opt in to (its limits are equal,
    /// so it is never needed).
    pub fn prepare(
        &self,
        dynamic: u32,
        backend: &str,
        op: &'static str,
        kernel: &str,
        opt_in: Option<&dyn Fn(u32) -> Result<()>>,
    ) -> Result<()> {
        let refuse =
            |reason: String| Error::Kernel { backend: backend.into(), op, kernel: kernel.into(), reason };
        let total = self.static_bytes as u64 + dynamic as u64;
        if total > self.limits.opt_in as u64 {
            return Err(refuse(format!(
                "needs {total} bytes of shared memory per block ({} static + {dynamic} dynamic), over the {} \
                 this device gives a block",
                self.static_bytes, self.limits.opt_in
            )));
        }
        if dynamic <= self.allowed.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(opt_in) = opt_in else {
            return Err(refuse(format!(
                "needs {total} bytes of shared memory per block, over the {} a block has without opting in, \
                 and this runtime cannot opt in",
                self.limits.default
            )));
        };
        opt_in(dynamic)?;
        self.allowed.fetch_max(dynamic, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    const H100: SharedLimits = SharedLimits { default: 48 * 1024, opt_in: 227 * 1024 };

    /// Opt-in calls a launch sequence makes, and its results.
    fn launches(f: &FunctionShared, sizes: &[u32]) -> (Vec<u32>, Vec<bool>) {
        let calls = RefCell::new(Vec::new());
        let set = |bytes: u32| {
            calls.borrow_mut().push(bytes);
            Ok(())
        };
        let ok = sizes.iter().map(|&d| f.prepare(d, "cuda", "gemm", "gemm_mma|BM=128", Some(&set)).is_ok());
        let ok = ok.collect();
        (calls.into_inner(), ok)
    }

    /// Within 48 KiB beside the static bytes nothing is called; above, the attribute is set once to the
    /// launch's bytes, and again only for a larger launch; at the opt-in limit it still runs, one byte over
    /// it is refused without a call.
    #[test]
    fn the_attribute_is_set_once_above_the_default_and_never_past_the_limit() {
        let f = FunctionShared::new(1024, H100);
        assert_eq!(launches(&f, &[0, 47 * 1024]), (vec![], vec![true, true]));
        assert_eq!(launches(&f, &[47 * 1024 + 1]), (vec![47 * 1024 + 1], vec![true]));
        assert_eq!(launches(&f, &[61440, 61440, 1000]), (vec![61440], vec![true, true, true]));
        assert_eq!(launches(&f, &[226 * 1024]), (vec![226 * 1024], vec![true]));
        assert_eq!(launches(&f, &[226 * 1024 + 1]), (vec![], vec![false]));
    }

    #[test]
    fn a_launch_over_the_limit_names_the_kernel_and_the_bytes() {
        let f = FunctionShared::new(4096, H100);
        let err = f.prepare(227 * 1024, "cuda", "gemm", "gemm_mma|BM=128", None).unwrap_err();
        let Error::Kernel { backend, op, kernel, reason } = err else { panic!("{err}") };
        assert_eq!((backend.as_str(), op, kernel.as_str()), ("cuda", "gemm", "gemm_mma|BM=128"));
        assert!(
            reason.contains("236544 bytes") && reason.contains("4096 static + 232448 dynamic"),
            "{reason}"
        );
        assert!(reason.contains("over the 232448"), "{reason}");
    }

    /// AMD: equal limits, no opt-in; the whole LDS runs, a byte more is refused.
    #[test]
    fn without_an_opt_in_the_default_is_the_limit() {
        let cdna = SharedLimits { default: SharedLimits::CDNA_LDS, opt_in: SharedLimits::CDNA_LDS };
        let f = FunctionShared::new(256, cdna);
        assert!(f.prepare(65536 - 256, "hip", "gemm", "k", None).is_ok());
        assert!(f.prepare(65536 - 255, "hip", "gemm", "k", None).is_err());
        // A runtime claiming an opt-in it cannot make is an error, not a launch the driver refuses.
        let odd = FunctionShared::new(0, H100);
        assert!(odd.prepare(60000, "hip", "gemm", "k", None).is_err());
    }

    /// A failed opt-in is the launch's error and is not remembered: the next launch tries again.
    #[test]
    fn a_failed_opt_in_is_returned_and_retried() {
        let f = FunctionShared::new(0, H100);
        let fail = |_: u32| {
            Err(Error::Driver {
                backend: "cuda".into(),
                call: "cuFuncSetAttribute".into(),
                reason: "no".into(),
            })
        };
        assert!(matches!(f.prepare(60000, "cuda", "gemm", "k", Some(&fail)), Err(Error::Driver { .. })));
        assert_eq!(launches(&f, &[60000]), (vec![60000], vec![true]));
    }
}
