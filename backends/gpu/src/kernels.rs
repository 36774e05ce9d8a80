//! The CUDA C kernel files, embedded, and their variants: a variant is one kernel file compiled with the
//! element types of its arguments and a few constants fixed, for one [`Target`].
//!
//! A kernel file holds one kernel whose name is the file's stem and whose only parameter is a `Params`
//! struct of 8-byte fields (pointers, `i64`, `u64`, `double`), filled by [`crate::launch::Params`] in
//! the same order. Element types arrive as typedefs (`typedef dsv3::bf16 x_t;`), constants as macros.

use crate::runtime::Target;
use dsv3_core::DType;
use std::fmt::Write as _;

pub const PORTABILITY: &str = include_str!("../../../kernels/cuda/dsv3.cuh");
pub const HOST_EMULATOR: &str = include_str!("../../../kernels/cuda/host_emulator.h");

/// One kernel file, with the shared `.cuh` files it uses (placed before it, after the variant's types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The kernel's name and the file's stem.
    pub name: &'static str,
    pub source: &'static str,
    pub uses: &'static [&'static str],
    /// The most threads per block any launch of it uses: `check-kernels` fails a kernel whose registers
    /// cannot hold a block this large, and the emulator refuses a larger block, so the two cannot drift.
    pub max_block: u32,
}

impl Kernel {
    /// A kernel from source text alone (tests, tools), launched with blocks of up to 1024 threads.
    pub const fn new(name: &'static str, source: &'static str) -> Kernel {
        Kernel { name, source, uses: &[], max_block: 1024 }
    }
}

macro_rules! kernel_files {
    ($($konst:ident = $name:literal block $max:literal $(uses $($inc:literal)+)?),* $(,)?) => {
        $(pub const $konst: Kernel = Kernel {
            name: $name,
            source: include_str!(concat!("../../../kernels/cuda/", $name, ".cu")),
            uses: &[$($(include_str!(concat!("../../../kernels/cuda/", $inc, ".cuh"))),+)?],
            max_block: $max,
        };)*
        /// Every kernel file, for tools that compile them all.
        pub const ALL: &[Kernel] = &[$($konst),*];
    };
}

// Each file with the largest block its launch code (ops/) uses.
kernel_files! {
    ELEMENTWISE = "elementwise" block 256,
    // gemm group (ops/gemm.rs)
    GEMM = "gemm" block 256 uses "gemm_common",
    GEMM_DECODE = "gemm_decode" block 256 uses "gemm_common",
    GEMM_MMA = "gemm_mma" block 256 uses "gemm_common" "mma",
    GEMM_SPLIT_SUM = "gemm_split_sum" block 256,
    ACT_QUANT = "act_quant" block 256,
    DEQUANTIZE = "dequantize" block 256,
    // attention group (ops/attention.rs)
    ATTENTION = "attention" block 256 uses "attention_common",
    ATTENTION_MMA = "attention_mma" block 256 uses "attention_common" "mma",
    ATTENTION_COMBINE = "attention_combine" block 128,
    CACHE_APPEND = "cache_append" block 256,
    // moe group (ops/moe.rs)
    MOE_ROUTE = "moe_route" block 256,
    MOE_INDEX = "moe_index" block 256,
    MOE_OFFSETS = "moe_offsets" block 1024,
    MOE_GATHER = "moe_gather" block 256,
    MOE_COMBINE = "moe_combine" block 256,
    // rows group (ops/rows.rs)
    ROWS = "rows" block 1024,
    SOFTMAX_SPLIT = "softmax_split" block 256,
    ROPE = "rope" block 256,
    EMBEDDING = "embedding" block 256,
    // select group (ops/select.rs): argmax and topk; not "select", which clashes with POSIX select()
    // under offline hipcc
    TOPK = "topk" block 1024,
    SAMPLE = "sample" block 1024 uses "sample_common",
    SAMPLE_SPLIT = "sample_split" block 256 uses "sample_common" "sample_radix",
    SAMPLE_CUT = "sample_cut" block 1024 uses "sample_common" "sample_radix",
    // the tile layer's layout probe (probe.rs: one warp, 32 or 64 threads); it and gemm_mma run where
    // Target::mma_bf16 holds
    MMA_PROBE = "mma_probe" block 64 uses "mma",
}

/// The C type a kernel sees for elements of `d`.
pub fn ctype(d: DType) -> &'static str {
    match d {
        DType::F32 => "float",
        DType::F16 => "dsv3::f16",
        DType::BF16 => "dsv3::bf16",
        DType::F8E4M3Fn => "dsv3::e4m3fn",
        DType::F8E4M3Fnuz => "dsv3::e4m3fnuz",
        DType::F8E5M2 => "dsv3::e5m2",
        DType::Ue8m0 => "dsv3::ue8m0",
        DType::I32 => "i32",
        DType::I64 => "i64",
        DType::U8 => "u8",
    }
}

/// A kernel with its argument element types (`name_t`) and constants fixed, and the dynamic shared memory
/// every launch of it gives a block.
#[derive(Clone, Debug)]
pub struct Variant {
    pub kernel: Kernel,
    pub types: Vec<(&'static str, DType)>,
    pub consts: Vec<(&'static str, i64)>,
    /// Bytes of dynamic shared memory per block (the kernel's `DSV3_DYNAMIC_SHARED` object), computed by
    /// the op's launch code from the variant's constants; 0 for static shared memory only. Not part of the
    /// key: the constants determine it.
    pub shared: u32,
}

impl Variant {
    pub fn new(kernel: Kernel) -> Variant {
        Variant { kernel, types: Vec::new(), consts: Vec::new(), shared: 0 }
    }

    /// Every launch gives each block `bytes` of dynamic shared memory.
    pub fn dynamic_shared(mut self, bytes: u32) -> Variant {
        self.shared = bytes;
        self
    }

    /// `typedef <ctype(d)> <name>_t;`
    pub fn ty(mut self, name: &'static str, d: DType) -> Variant {
        self.types.push((name, d));
        self
    }

    /// `#define <name> <value>`
    pub fn konst(mut self, name: &'static str, value: i64) -> Variant {
        self.consts.push((name, value));
        self
    }

    /// Names the variant within its device (the in-memory cache key).
    pub fn key(&self) -> String {
        let mut k = self.kernel.name.to_string();
        for (n, d) in &self.types {
            let _ = write!(k, "|{n}:{}", d.name());
        }
        for (n, v) in &self.consts {
            let _ = write!(k, "|{n}={v}");
        }
        k
    }

    /// The whole translation unit for `target`: the portability header (after the emulator for the host),
    /// the variant's typedefs and constants, the kernel file, and for the host the emulator's entry point.
    pub fn assemble(&self, target: &Target) -> String {
        let mut s =
            String::with_capacity(PORTABILITY.len() + HOST_EMULATOR.len() + self.kernel.source.len() + 1024);
        let _ = writeln!(s, "// dsv3 kernel variant {} for {}", self.key(), target.arch());
        let _ = writeln!(s, "#define {} 1", target.define());
        let _ = writeln!(s, "#define DSV3_WARP {}", target.warp());
        if let Target::Host { .. } = target {
            if target.mfma_fp8_fnuz() {
                // The emulator stands for gfx94x (mma.cuh's DSV3_MFMA_FP8; hipcc and hiprtc take it from
                // the architecture's macro instead, so HIP sources are the same for every chip).
                let _ = writeln!(s, "#define DSV3_HOST_MFMA_FP8 1");
            }
            s.push_str(HOST_EMULATOR);
            s.push('\n');
        }
        s.push_str(PORTABILITY);
        s.push('\n');
        for (n, d) in &self.types {
            let _ = writeln!(s, "typedef {} {n}_t;", ctype(*d));
        }
        for (n, v) in &self.consts {
            let _ = writeln!(s, "#define {n} {v}");
        }
        for shared in self.kernel.uses {
            s.push_str(shared);
            s.push('\n');
        }
        let _ = writeln!(s, "#line 1 \"{}.cu\"", self.kernel.name);
        s.push_str(self.kernel.source);
        s.push('\n');
        if let Target::Host { .. } = target {
            let _ = writeln!(s, "DSV3_HOST_ENTRY({})", self.kernel.name);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_differ_in_their_keys_and_sources() {
        let a = Variant::new(ELEMENTWISE).ty("a", DType::BF16).konst("OPK", 0);
        let b = Variant::new(ELEMENTWISE).ty("a", DType::F32).konst("OPK", 0);
        let c = Variant::new(ELEMENTWISE).ty("a", DType::BF16).konst("OPK", 1);
        assert_ne!(a.key(), b.key());
        assert_ne!(a.key(), c.key());
        let cuda = Target::Cuda { arch: "sm_90a".into() };
        let src = a.assemble(&cuda);
        assert!(src.contains("typedef dsv3::bf16 a_t;"));
        assert!(src.contains("#define OPK 0"));
        assert!(src.contains("#define DSV3_CUDA 1") && src.contains("#define DSV3_WARP 32"));
        assert!(!src.contains("DSV3_HOST_ENTRY(elementwise)"));
        let host = a.assemble(&Target::host(64));
        assert!(host.contains("#define DSV3_WARP 64") && host.contains("DSV3_HOST_ENTRY(elementwise)"));
        // gfx94x's FP8 MFMA: the emulator is told; a HIP source is the same for gfx90a and gfx942.
        assert!(host.contains("#define DSV3_HOST_MFMA_FP8 1"));
        let gfx90a = a.assemble(&Target::Host { warp: 64, mfma_fp8: false });
        assert!(!gfx90a.contains("DSV3_HOST_MFMA_FP8"));
        let hip = |arch: &str| a.assemble(&Target::Hip { arch: arch.into(), warp: 64 });
        assert_eq!(hip("gfx90a").replace("gfx90a", "gfx942"), hip("gfx942"));
    }
}
