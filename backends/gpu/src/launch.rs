//! From an op to launches: parameter blocks, grid sizes, and the [`Launch`] context an op's code uses to
//! get kernels, addresses, scratch memory and device-side check sites.

use crate::buffer::GpuBuffer;
use crate::kernels::Variant;
use crate::runtime::{Dims, Function, Target};
use crate::shared_memory::SharedLimits;
use crate::stream::GpuStream;
use dsv3_core::backend::own_buffer;
use dsv3_core::{Error, Result, Tensor};

/// Threads per block of the element-wise and row kernels.
pub const BLOCK: u32 = 256;

/// Most blocks along the grid's x dimension (CUDA's limit; HIP allows more).
pub const MAX_GRID_X: u64 = (1 << 31) - 1;

/// A kernel's parameter block: 8-byte fields in the order the kernel's `Params` struct declares them
/// (pointers, `i64`, `u64`, `double`), so the layout is the same on every compiler with no padding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params(pub Vec<u64>);

impl Params {
    pub fn new() -> Params {
        Params(Vec::with_capacity(16))
    }

    pub fn addr(mut self, a: u64) -> Params {
        self.0.push(a);
        self
    }

    pub fn i(mut self, v: i64) -> Params {
        self.0.push(v as u64);
        self
    }

    pub fn u(mut self, v: usize) -> Params {
        self.0.push(v as u64);
        self
    }

    pub fn f(mut self, v: f64) -> Params {
        self.0.push(v.to_bits());
        self
    }
}

/// A one-dimensional grid of `block`-thread blocks covering `threads` threads; `None` past the grid limit.
pub fn grid_1d(threads: u64, block: u32) -> Option<Dims> {
    let blocks = threads.div_ceil(block as u64).max(1);
    (blocks <= MAX_GRID_X).then_some(Dims { grid: [blocks as u32, 1, 1], block, shared: 0 })
}

/// `x` blocks along the grid's x (at most [`MAX_GRID_X`]) and `y` along y (at most 65535).
pub fn grid_2d(x: u64, y: u64, block: u32) -> Option<Dims> {
    (x.max(1) <= MAX_GRID_X && y.max(1) <= 65535).then_some(Dims {
        grid: [x.max(1) as u32, y.max(1) as u32, 1],
        block,
        shared: 0,
    })
}

/// A compiled variant, with the dynamic shared memory its launches give ([`Variant::shared`]).
pub struct Compiled {
    pub function: Function,
    pub shared: u32,
}

/// What an op's launch code works with: one per `Stream::launch`.
pub struct Launch<'a> {
    pub stream: &'a GpuStream,
    pub op: &'static str,
}

impl Launch<'_> {
    pub fn backend(&self) -> &'static str {
        self.stream.ctx.runtime.backend()
    }

    /// Threads per warp on this device (kernels are compiled with the same value).
    pub fn warp(&self) -> u32 {
        self.target().warp()
    }

    /// What this device's kernels are compiled for (which instructions they may use).
    pub fn target(&self) -> &Target {
        self.stream.ctx.runtime.target()
    }

    /// Shared memory a block may use on this device: what ops choose their variants within.
    pub fn shared_limits(&self) -> SharedLimits {
        self.stream.ctx.runtime.shared_limits()
    }

    pub fn kernel(&self, v: &Variant) -> Result<Compiled> {
        Ok(Compiled { function: self.stream.ctx.kernel(self.op, v)?, shared: v.shared })
    }

    /// The device address of a tensor view's first byte; its buffer stays alive until the stream's next
    /// sync, as every launched kernel's arguments must.
    pub fn addr(&self, arg: &'static str, t: &Tensor) -> Result<u64> {
        let ctx = &self.stream.ctx;
        let b =
            own_buffer::<GpuBuffer>(ctx.runtime.backend(), ctx.id, &t.buffer, t.offset, t.span_bytes(), arg)?;
        self.stream.keep(t.buffer.clone());
        Ok(b.addr + t.offset as u64)
    }

    /// Device memory for intermediate results, alive until the stream's next sync; uninitialised (or left
    /// over from earlier work). Reused from the stream's pool when a free buffer is large enough, so a decode
    /// loop does not allocate per step.
    pub fn scratch(&self, bytes: usize) -> Result<u64> {
        let b = self.stream.scratch(bytes)?;
        Ok(b.as_any().downcast_ref::<GpuBuffer>().map(|g| g.addr).unwrap_or_default())
    }

    /// A device-side check: kernels call `report(err, site, index, value)` when `rule` is broken for
    /// argument `arg`; the stream's next sync turns it into `Error::InvalidArgument`.
    pub fn site(&self, arg: &'static str, rule: impl Into<String>) -> u32 {
        self.stream.site(self.op, arg, rule.into())
    }

    /// Address of the stream's error record (three u32: site, index, value).
    pub fn err(&self) -> u64 {
        self.stream.err_addr()
    }

    /// Launches a compiled variant, each block given the dynamic shared memory the variant declares.
    pub fn run(&self, k: &Compiled, dims: Dims, params: Params) -> Result<()> {
        self.stream.queue.launch(self.op, &k.function, Dims { shared: k.shared, ..dims }, &params.0)
    }

    /// A 1-D grid over `threads`, or the error naming the op when it is too large for one launch.
    pub fn grid(&self, threads: u64, block: u32) -> Result<Dims> {
        grid_1d(threads, block).ok_or_else(|| {
            Error::unsupported(self.backend(), self.op, format!("{threads} threads exceed one launch's grid"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_dimensional_grids_cover_every_thread_once() {
        for (threads, block) in [(0u64, 256u32), (1, 256), (255, 256), (256, 256), (257, 256), (1 << 20, 128)]
        {
            let d = grid_1d(threads, block).unwrap();
            let covered = d.grid[0] as u64 * block as u64;
            assert!(
                covered >= threads && covered < threads.max(1) + block as u64,
                "{threads}/{block}: {d:?}"
            );
            assert_eq!(d.block, block);
        }
        assert!(grid_1d(MAX_GRID_X * 256, 256).is_some());
        assert!(grid_1d(MAX_GRID_X * 256 + 1, 256).is_none());
        assert_eq!(grid_2d(0, 0, 64).unwrap().grid, [1, 1, 1]);
        assert!(grid_2d(1, 65536, 64).is_none());
    }

    #[test]
    fn parameter_blocks_are_eight_byte_fields_in_order() {
        let p = Params::new().addr(0x1000).i(-2).u(7).f(0.5);
        assert_eq!(p.0, vec![0x1000, (-2i64) as u64, 7, 0.5f64.to_bits()]);
    }
}
