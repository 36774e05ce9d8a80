//! Fast CPU GEMM: `C[m, n] = Σ_k A[m, k] · B[n, k]` (PyTorch `nn.Linear` layout, `C = A·Bᵀ`), as pure
//! functions over slices, multithreaded on rayon's global pool.
//!
//! # Numerics contract
//!
//! * Every product is formed from exactly decoded f32 operand values: f32 as is, bf16 → f32 (exact, a
//!   16-bit shift), FP8 → f32 (exact: every FP8 value is an f32).
//! * Scaled FP8 operands (`s = scales[(n/128)·ceil(K/128) + k/128]` for [`Rhs::BlockFp8`],
//!   `s = scales[m·ceil(K/128) + k/128]` for [`Lhs::Fp8`]) enter in one of two forms, by path:
//!   - **scale folded into the value** (every path except the one below): the operand value is
//!     `decode(q) · s` rounded **once** to f32 (round to nearest even), and that f32 enters the product.
//!   - **two-level (DeepGEMM) form**, used for [`Rhs::BlockFp8`] by the decode path (M ≤ 16, the x86
//!     SIMD paths; with bf16 A on the AVX512-BF16 path by `vdpbf16ps` on A's rows scaled by
//!     powers of two, exact as for the prefill kernels below: `decode/two_level.rs`) and by the bf16
//!     prefill kernels (below): for each 128-wide K block,
//!     `p = Σ_k a_mk · decode(q_nk)` is accumulated in f32 from the exact decoded values, then
//!     `C += p · s` with one FMA. (An FP8 left operand is still folded: `a_mk` is its `decode·s`
//!     rounded once.) The table-free decode kernels compute `p` over `a·2^x` and `decode·2^-fold`
//!     (powers of two, exact: [`decode`]) and scale the result back exactly.
//!
//!   Both are within the error bound below. Folding the scale into a bf16 value would round it to 8
//!   significant bits (relative error 2⁻⁹, far outside the bound), which is why the bf16 kernels keep
//!   the scale out of the operand.
//! * The bf16 prefill kernels ([`Isa::Amx`]: AMX-BF16 `tdpbf16ps`; [`Isa::Avx512Bf16`]: `vdpbf16ps`)
//!   run when A is bf16 and B is bf16 or block FP8, M > 16. Their operands are exact: bf16 as is, every
//!   FP8 value (≤ 4 significant bits, exponents within bf16's) decoded to bf16 without its scale. The
//!   units form each bf16 × bf16 product exactly in f32 (8 + 8 significant bits ≤ 24) and add it in f32,
//!   rounded to nearest even — the SDM's description, checked bit for bit on each instruction in the
//!   tests — so the contract holds as for any f32 FMA order. Roundings per term: `vdpbf16ps` adds each
//!   product to its lane in turn (≤ min(K, 128) for FP8 weights, whose blocks are summed alone, or
//!   ≤ min(K, KC)); `tdpbf16ps` sums the even and the odd K positions of a 32-wide step in two f32 sums
//!   (≤ min(16, ⌈K/2⌉)), adds the two (1) and that to the accumulator (1, then ≤ ⌈K/32⌉ − 1 later
//!   steps); then ≤ ⌈K/128⌉ block FMAs (FP8) and ≤ ⌈K/KC⌉ slice additions. Both totals are ≤ K + 8 for
//!   every K ≥ 1 (K = 1: 3 and 5), so the bound below holds unchanged. The units read
//!   subnormal bf16 inputs as zero: the packing detects any subnormal operand and the whole product
//!   runs again on the f32 kernels, so every operand stays exact. They also flush subnormal results,
//!   which is underflow (below 2⁻¹²⁶), outside the bound on every path (the f32 paths' gradual underflow
//!   is not within `γ·S` either).
//! * Accumulation is in f32 with fused multiply-add (the portable scalar fallback, used only on CPUs
//!   without AVX2+FMA or on non-x86 targets, uses a separate multiply and add: same bound). The order of
//!   summation is unspecified (it depends on the kernel, the tile sizes and the K blocking), so results
//!   are not bitwise reproducible across kernels, but they are deterministic for one kernel and shape
//!   whatever the thread count.
//! * With [`Out::Bf16`] the f32 result is rounded once to bf16 at the end (nearest even, `half`'s
//!   `bf16::from_f32`). `C` is overwritten (no beta); `K = 0` gives zeros.
//! * Error bound: with `S[m,n] = Σ_k |a_mk|·|b_nk|` over the decoded (and scale-folded) values,
//!   `|C − C_exact| ≤ γ_K · S` with `γ_K ≈ K·2⁻²⁴` (standard bound for any summation order), plus for
//!   folded-scale operands a relative 2⁻²⁴ per factor (already inside `S` when `S` is taken over the
//!   rounded values), plus half a bf16 ulp of `|C|` for `Out::Bf16`. The two-level form has no value rounding
//!   and adds one rounding per term (the `p · s` FMA): every term passes through at most
//!   `min(K, 128/L) + ceil(K/128) + log2 L ≤ K + 8` roundings for L lanes (8 or 16: 128/L FMAs per
//!   lane per block, one per block, the lane reduction), so the same `γ_{K+8} · S` bound holds.
//! * NaN FP8 codes decode to NaN on every path; every other code decodes exactly (the decode kernels
//!   without tables, by way of f32 bits on AVX2 and f16 bits on AVX-512, [`decode`]; AVX-512 VBMI
//!   byte tables built from
//!   [`Fp8Format::decode`], `fp8_simd`, for the two-level kernel and the prefill packing; else a table).
//!
//! # Kernels
//!
//! * M ≤ 16 ("decode"): no packing; weight rows are streamed once and decoded in registers (without
//!   tables, except the VBMI kernel), M accumulators per weight row (FP8: M partial sums per block plus
//!   M accumulators), threads split N ([`decode`]).
//! * M > 16 ("prefill"): GotoBLAS/BLIS-style blocking ([`driver`]): for each KC slice of K, A is packed into
//!   MR-row panels and B (decoded, scale folded) into NR-column panels; a register-blocked microkernel
//!   (AVX-512 12×32, AVX2 6×16, scalar 4×8) computes MR×NR tiles; threads split M×N tiles. bf16
//!   activations on the AMX / AVX512-BF16 paths use the same driver over bf16 panels (layouts in
//!   [`pack`]): AMX 32×32 (four accumulator tiles), `vdpbf16ps` 12×32.
//!
//! Sizes are the caller's to validate; they are checked with `debug_assert!`, and every slice access
//! outside the SIMD microkernels is bounds-checked (a bad size panics, never reads out of bounds).

use std::sync::OnceLock;

pub use dsv3_core::fp8::Fp8Format;
use half::bf16;
use rayon::prelude::*;

use crate::fast::scratch::Scratch;

mod bf16_pack;
mod decode;
mod driver;
mod fp8_simd;
#[cfg(target_arch = "x86_64")]
mod microkernel_amx;
#[cfg(target_arch = "x86_64")]
mod microkernel_avx2;
#[cfg(target_arch = "x86_64")]
mod microkernel_avx512;
#[cfg(target_arch = "x86_64")]
mod microkernel_avx512bf16;
mod microkernel_scalar;
mod pack;

#[cfg(test)]
mod tests;

/// Width of a scale block along K (and along N for weights).
pub const SCALE_BLOCK: usize = 128;

/// Largest M handled by the streaming (unpacked) decode path.
pub const DECODE_MAX_M: usize = 16;

/// Left operand, row-major `[M, K]` with row stride `lda` elements (`lda >= K`).
#[derive(Clone, Copy, Debug)]
pub enum Lhs<'a> {
    F32 {
        data: &'a [f32],
        lda: usize,
    },
    Bf16 {
        data: &'a [bf16],
        lda: usize,
    },
    /// FP8 codes per token, with one f32 scale per 128 consecutive channels: scales `[M, ceil(K/128)]`
    /// row-major.
    Fp8 {
        codes: &'a [u8],
        lda: usize,
        scales: &'a [f32],
        format: Fp8Format,
    },
}

/// Right operand ("weights"), row-major `[N, K]` (PyTorch `nn.Linear` layout; `C = A·Bᵀ`), contiguous
/// (`ldb = K`).
#[derive(Clone, Copy, Debug)]
pub enum Rhs<'a> {
    F32(&'a [f32]),
    Bf16(&'a [bf16]),
    /// 128×128 block-scaled FP8: `w[n,k] = decode(codes[n*K+k]) * scales[(n/128)*ceil(K/128) + k/128]`.
    /// N and K need not be multiples of 128 (partial last blocks, e.g. N=576).
    BlockFp8 {
        codes: &'a [u8],
        scales: &'a [f32],
        format: Fp8Format,
    },
}

/// Output, row-major `[M, N]` with row stride `ldc` elements (`ldc >= N`).
#[derive(Debug)]
pub enum Out<'a> {
    F32 { data: &'a mut [f32], ldc: usize },
    Bf16 { data: &'a mut [bf16], ldc: usize },
}

/// Instruction-set path, chosen once at run time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Isa {
    /// AVX-512 plus AMX-BF16 tiles for bf16-activation prefill (see [`bf16_path`]).
    #[cfg(target_arch = "x86_64")]
    Amx,
    /// AVX-512 plus AVX512-BF16 (`vdpbf16ps`) for bf16-activation prefill (see [`bf16_path`]); only
    /// when forced (see [`Isa::available`]).
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Scalar,
}

impl Isa {
    /// The [`KERNEL_ENV`] value that forces this path.
    fn key(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => "amx",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => "avx512bf16",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "avx512",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "avx2",
            Isa::Scalar => "scalar",
        }
    }

    fn name(self) -> &'static str {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => {
                "x86-64 AVX-512 + AMX-BF16 (32x32 bf16 tile prefill for bf16 activations, 12x32 f32 \
                 microkernel otherwise, table-free streaming decode)"
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => {
                "x86-64 AVX-512 + AVX512-BF16 (12x32 vdpbf16ps prefill for bf16 activations, 12x32 f32 \
                 microkernel otherwise, streaming decode; FP8 weights × bf16 activations on vdpbf16ps)"
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => "x86-64 AVX-512 (12x32 f32 microkernel, table-free streaming decode)",
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => "x86-64 AVX2+FMA+F16C (6x16 f32 microkernel, table-free streaming decode)",
            Isa::Scalar => "portable scalar (4x8 microkernel)",
        }
    }

    /// Every path this machine can run, best first (tests exercise all of them).
    pub(crate) fn available() -> Vec<Isa> {
        let mut v = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if avx512_ok() && microkernel_amx::available().is_ok() {
                v.push(Isa::Amx);
            }
            // AVX512-BF16 above AVX-512 only where its units are faster: a zmm `vdpbf16ps` (4 FLOP per
            // lane) ran at half the f32 FMA rate on a Sapphire Rapids Xeon, where the path measured
            // about 0.6x the f32 kernels (benches/results/2026-12-06-cpu-prefill-amx.md), and at twice
            // it on Zen 4, where it measured 1.5-1.8x (2026-12-07-cpu-zen4-decode-and-prefill.md).
            let bf16 = avx512bf16_ok();
            let bf16_first = bf16 && bf16_units_faster();
            if bf16_first {
                v.push(Isa::Avx512Bf16);
            }
            if avx512_ok() {
                v.push(Isa::Avx512);
            }
            if bf16 && !bf16_first {
                v.push(Isa::Avx512Bf16);
            }
            if avx2_ok() {
                v.push(Isa::Avx2);
            }
        }
        v.push(Isa::Scalar);
        v
    }

    /// The vector path under this one: what the decode GEMMs and the f32 prefill run on (the bf16
    /// paths add a prefill kernel for bf16 activations to AVX-512 and change nothing else).
    pub(crate) fn vector(self) -> Isa {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::Amx | Isa::Avx512Bf16 => Isa::Avx512,
            other => other,
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512bf16_ok() -> bool {
    avx512_ok() && is_x86_feature_detected!("avx512bf16")
}

/// Whether `vdpbf16ps` outruns the f32 FMA units here: on AMD's AVX512-BF16 parts (Zen 4 and later; a
/// single-thread loop measured 2.00x the f32 FMA FLOP rate on Zen 4, against about 0.5x on Intel's
/// Sapphire Rapids). A vendor rule rather than a timing: a 10 ms timed choice flipped between runs on a
/// loaded VM, and a process's kernel path (and so its exact numbers) must not depend on load.
#[cfg(target_arch = "x86_64")]
fn bf16_units_faster() -> bool {
    // The vendor string is EBX, EDX, ECX of leaf 0, four ASCII bytes each, little-endian.
    let id = std::arch::x86_64::__cpuid(0);
    let word = |s: &[u8; 4]| u32::from_le_bytes(*s);
    (id.ebx, id.edx, id.ecx) == (word(b"Auth"), word(b"enti"), word(b"cAMD"))
}

#[cfg(target_arch = "x86_64")]
fn avx512_ok() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
}

#[cfg(target_arch = "x86_64")]
fn avx2_ok() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c")
}

/// The best path this machine runs.
fn detect() -> Isa {
    Isa::available()[0]
}

/// Why no AMX path here, for `dsv3 devices` and the forced-path tests (`None` when there is one).
pub fn amx_unavailable() -> Option<String> {
    #[cfg(target_arch = "x86_64")]
    {
        if !avx512_ok() {
            return Some("no AVX-512F/BW/VL".into());
        }
        microkernel_amx::available().err()
    }
    #[cfg(not(target_arch = "x86_64"))]
    Some("not an x86-64 CPU".into())
}

/// Environment variable that forces the kernel path: `amx`, `avx512bf16`, `avx512`, `avx2` or `scalar`. Read once, at the
/// first GEMM (or `dsv3 devices`), so that a slower path can be tested and timed on a machine that has a
/// faster one. A path this CPU cannot run is not taken: the detected one runs, and [`kernel_name`] says so.
pub const KERNEL_ENV: &str = "DSV3_CPU_KERNEL";

/// The path a [`KERNEL_ENV`] value names, if this CPU can run it.
fn path_named(name: &str) -> Option<Isa> {
    Isa::available().into_iter().find(|i| i.key() == name)
}

/// The chosen path and its description.
fn choice() -> &'static (Isa, String) {
    static CHOICE: OnceLock<(Isa, String)> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let detected = detect();
        match std::env::var(KERNEL_ENV) {
            Err(_) => (detected, detected.name().to_string()),
            Ok(v) => match path_named(v.trim()) {
                Some(isa) => (isa, format!("{} (forced by {KERNEL_ENV}={v})", isa.name())),
                None => {
                    let known: Vec<_> = Isa::available().iter().map(|i| i.key()).collect();
                    let mut why = format!("{KERNEL_ENV}={v} ignored: this CPU runs {}", known.join(", "));
                    if v.trim() == "amx" {
                        if let Some(reason) = amx_unavailable() {
                            why.push_str(&format!("; amx unavailable: {reason}"));
                        }
                    }
                    (detected, format!("{} ({why})", detected.name()))
                }
            },
        }
    })
}

pub(crate) fn isa() -> Isa {
    choice().0
}

/// Which kernel path [`gemm`] uses in this process (for `dsv3 devices`), and whether it was forced.
pub fn kernel_name() -> &'static str {
    &choice().1
}

/// `C[m, n] = Σ_k A[m,k]·B[n,k]` for `m < M`, `n < N`, f32 accumulation; overwrites C (no beta).
/// See the module documentation for the numerics contract.
pub fn gemm(m: usize, n: usize, k: usize, a: Lhs, b: Rhs, c: Out) {
    gemm_with(isa(), m, n, k, a, b, c)
}

pub(crate) fn gemm_with(isa: Isa, m: usize, n: usize, k: usize, a: Lhs, b: Rhs, c: Out) {
    debug_check(m, n, k, &a, &b, &c);
    if m == 0 || n == 0 {
        return;
    }
    match c {
        Out::F32 { data, ldc } => gemm_f32_out(isa, m, n, k, &a, &b, data, ldc),
        Out::Bf16 { data, ldc } => {
            let mut tmp = Scratch::zeroed(m * n);
            gemm_f32_out(isa, m, n, k, &a, &b, &mut tmp, n);
            let rows = data.par_chunks_mut(ldc).take(m);
            rows.zip(tmp.par_chunks(n)).for_each(|(dst, src)| {
                for (d, &s) in dst[..n].iter_mut().zip(src) {
                    *d = bf16::from_f32(s);
                }
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn gemm_f32_out(isa: Isa, m: usize, n: usize, k: usize, a: &Lhs, b: &Rhs, c: &mut [f32], ldc: usize) {
    if k == 0 {
        for row in c.chunks_mut(ldc).take(m) {
            row[..n].fill(0.0);
        }
        return;
    }
    let a = pack::LhsSrc::new(a, k);
    let b = pack::RhsSrc::new(b, k);
    if m <= DECODE_MAX_M {
        return decode::gemm_decode(isa, m, n, k, &a, &b, c, ldc);
    }
    if let Some(micro) = bf16_path(isa, &a, &b) {
        if driver::gemm_packed(&micro, m, n, k, &a, &b, c, ldc) {
            return;
        }
        // A bf16 operand holds a subnormal, which the bf16 units read as zero: the f32 path below
        // computes the whole product again (it overwrites C), with every value exact.
    }
    driver::gemm_packed(&driver::micro_for(isa.vector()), m, n, k, &a, &b, c, ldc);
}

/// The bf16 prefill kernel of `isa` when the operands fit it: bf16 activations and bf16 or block-FP8
/// weights (every FP8 value is a bf16, so both enter the bf16 products exactly). Anything else — f32 or
/// FP8 activations, f32 weights — would need a rounding to bf16 and runs on the f32 kernels.
fn bf16_path(isa: Isa, a: &pack::LhsSrc, b: &pack::RhsSrc) -> Option<driver::Micro<u16>> {
    let fits = matches!(a, pack::LhsSrc::Bf16 { .. })
        && matches!(b, pack::RhsSrc::Bf16(_) | pack::RhsSrc::BlockFp8 { .. });
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Amx if fits => Some(microkernel_amx::MICRO),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512Bf16 if fits => Some(microkernel_avx512bf16::MICRO),
        _ => None,
    }
}

/// One expert of a grouped GEMM: rows `lo..hi` of the shared A and C, multiplied by this expert's
/// weights `b` (`[N, K]`).
#[derive(Clone, Copy, Debug)]
pub struct Group<'a> {
    pub lo: usize,
    pub hi: usize,
    pub b: Rhs<'a>,
}

/// How [`gemm_grouped_scheduled`] schedules the experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grouping {
    /// The rule of [`gemm_grouped`]: experts with 1..=[`DECODE_MAX_M`] rows (and K > 0) in one parallel
    /// pass of the decode kernels, the others one [`gemm`] each.
    Auto,
    /// One [`gemm`] per expert, in order (the previous schedule; benches and tests compare against it).
    PerExpert,
}

/// `C[r, :] = A[r, :] · B_eᵀ` for every row `r` in `lo..hi` of every group `e` (rows outside every group are
/// not written). Results are bit-identical to one [`gemm`] per group (same kernel for the same row count,
/// and a decode output never depends on how its weight rows are split among tasks), so the numerics
/// contract is [`gemm`]'s.
///
/// Schedule ([`Grouping::Auto`]): a group with at most [`DECODE_MAX_M`] rows — a decode step's routed
/// expert — is one job of a single parallel pass over all such groups, split into (expert, N-block) tasks,
/// so that every thread has work even with one row per expert and each expert's weights are streamed once
/// for all its rows. A group with more rows (prefill) runs its own [`gemm`] (the packed kernels, already
/// parallel over its M×N tiles), as does every group when K = 0 (zeros).
pub fn gemm_grouped(n: usize, k: usize, a: Lhs, groups: &[Group], c: Out) {
    gemm_grouped_with(isa(), Grouping::Auto, n, k, a, groups, c)
}

/// [`gemm_grouped`] with the schedule chosen by the caller (benches compare the two).
pub fn gemm_grouped_scheduled(grouping: Grouping, n: usize, k: usize, a: Lhs, groups: &[Group], c: Out) {
    gemm_grouped_with(isa(), grouping, n, k, a, groups, c)
}

pub(crate) fn gemm_grouped_with(
    isa: Isa,
    grouping: Grouping,
    n: usize,
    k: usize,
    a: Lhs,
    groups: &[Group],
    mut c: Out,
) {
    debug_assert!(groups.windows(2).all(|w| w[0].hi <= w[1].lo) && groups.iter().all(|g| g.lo <= g.hi));
    if n == 0 {
        return;
    }
    let batched =
        |g: &Group| grouping == Grouping::Auto && k > 0 && (1..=DECODE_MAX_M).contains(&(g.hi - g.lo));
    for g in groups.iter().filter(|g| g.hi > g.lo && !batched(g)) {
        gemm_with(isa, g.hi - g.lo, n, k, a.from_row(g.lo, k), g.b, c.rows(g.lo, g.hi, n));
    }
    let small: Vec<&Group> = groups.iter().filter(|g| batched(g)).collect();
    if small.is_empty() {
        return;
    }
    if cfg!(debug_assertions) {
        for g in &small {
            debug_check(g.hi - g.lo, n, k, &a.from_row(g.lo, k), &g.b, &c.rows(g.lo, g.hi, n));
        }
    }
    let a_src = pack::LhsSrc::new(&a, k);
    let b_src: Vec<pack::RhsSrc> = small.iter().map(|g| pack::RhsSrc::new(&g.b, k)).collect();
    let jobs: Vec<decode::Job> = small
        .iter()
        .zip(&b_src)
        .map(|(g, b)| decode::Job::new(isa, g.hi - g.lo, k, &a_src, g.lo, b))
        .collect();
    let results = decode::run_jobs(&jobs, n);
    for (g, ct) in small.iter().zip(&results) {
        match c.rows(g.lo, g.hi, n) {
            Out::F32 { data, ldc } => decode::untranspose(ct, g.hi - g.lo, n, data, ldc, |x| x),
            Out::Bf16 { data, ldc } => decode::untranspose(ct, g.hi - g.lo, n, data, ldc, bf16::from_f32),
        }
    }
}

impl<'a> Lhs<'a> {
    /// The rows of `self` from `row` on (`k` is the row length, for the FP8 scales' stride).
    pub fn from_row(self, row: usize, k: usize) -> Lhs<'a> {
        match self {
            Lhs::F32 { data, lda } => Lhs::F32 { data: &data[row * lda..], lda },
            Lhs::Bf16 { data, lda } => Lhs::Bf16 { data: &data[row * lda..], lda },
            Lhs::Fp8 { codes, lda, scales, format } => Lhs::Fp8 {
                codes: &codes[row * lda..],
                lda,
                scales: &scales[row * k.div_ceil(SCALE_BLOCK)..],
                format,
            },
        }
    }
}

impl Out<'_> {
    /// Rows `lo..hi` (`hi > lo`) of `self`, `n` values each, as an output of their own.
    pub fn rows(&mut self, lo: usize, hi: usize, n: usize) -> Out<'_> {
        match self {
            Out::F32 { data, ldc } => Out::F32 { data: &mut data[lo * *ldc..(hi - 1) * *ldc + n], ldc: *ldc },
            Out::Bf16 { data, ldc } => {
                Out::Bf16 { data: &mut data[lo * *ldc..(hi - 1) * *ldc + n], ldc: *ldc }
            }
        }
    }
}

fn debug_check(m: usize, n: usize, k: usize, a: &Lhs, b: &Rhs, c: &Out) {
    let kb = k.div_ceil(SCALE_BLOCK);
    let need = |rows: usize, ld: usize, cols: usize| if rows == 0 { 0 } else { (rows - 1) * ld + cols };
    match a {
        Lhs::F32 { data, lda } => debug_assert!(*lda >= k && data.len() >= need(m, *lda, k)),
        Lhs::Bf16 { data, lda } => debug_assert!(*lda >= k && data.len() >= need(m, *lda, k)),
        Lhs::Fp8 { codes, lda, scales, .. } => {
            debug_assert!(*lda >= k && codes.len() >= need(m, *lda, k));
            debug_assert!(scales.len() >= m * kb);
        }
    }
    match b {
        Rhs::F32(d) => debug_assert!(d.len() >= n * k),
        Rhs::Bf16(d) => debug_assert!(d.len() >= n * k),
        Rhs::BlockFp8 { codes, scales, .. } => {
            debug_assert!(codes.len() >= n * k);
            debug_assert!(scales.len() >= n.div_ceil(SCALE_BLOCK) * kb);
        }
    }
    match c {
        Out::F32 { data, ldc } => debug_assert!(*ldc >= n && data.len() >= need(m, *ldc, n)),
        Out::Bf16 { data, ldc } => debug_assert!(*ldc >= n && data.len() >= need(m, *ldc, n)),
    }
}
