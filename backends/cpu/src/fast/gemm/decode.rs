//! M ≤ 16 ("decode") GEMM: memory-bandwidth bound, so B is not packed. Each weight row is streamed once,
//! one 64-byte cache line per step, decoded in registers, and every decoded vector is multiplied into the
//! accumulators of all M rows of A (register blocking: M × NB accumulators for NB weight rows at a time).
//! Rows of B (columns of C) are split among threads. A (at most 16 rows) is converted to f32 once,
//! zero-padded to a multiple of 64 values. The kernels can run K in blocks whose A stays in L1
//! (`x86::run_rows`, bit-identical to one block per row); measured slower on Zen 3, so one block per
//! row is the default ([`Job::new`]).
//!
//! Decoding, without tables ([`Simd::decode_vec`]):
//! * bf16: a 16-bit shift into the top half of an f32.
//! * FP8: the code is turned into the bits of a float holding `decode(q) · 2^-fold` exactly ([`fold`]):
//!   on AVX2 the bits of an f32 by shifts (`x86::fp8_f32_bits`, with a per-step test that sends the
//!   rare steps holding a NaN or infinite code to the form that handles them), on AVX-512 those of an
//!   f16 converted by `vcvtph2ps` (`x86::f16_bits`). NaN codes decode to NaN, as in
//!   [`Fp8Format::decode`]. The block scale stays out of the weight (the contract's two-level form):
//!   per 128-wide K block `p = Σ a'·w'` in f32, then `acc += p · s` with one FMA — one multiply per
//!   block instead of one per weight vector. `2^-fold` makes the smallest codes f32 subnormals (AVX2:
//!   `2^-129` for e4m3fn), whose products with A would underflow; so each row of A is scaled by a power
//!   of two that brings its largest magnitude to `[2^fold, 2^(fold+1))` ([`scale_fp8_lhs_row`]), exactly, and
//!   the output multiplied back at the end. A product then underflows only where `|a · decode(q)|` is
//!   below `2^-126` of the row's largest `|a|` (the contract's bound excludes underflow on every path).
//!
//! FP8 weights on AVX-512 + VBMI take the VBMI kernel instead ([`two_level`]): 64 codes per step decoded
//! exactly by byte-table lookup ([`super::fp8_simd`], in unpack order, A permuted to match), without
//! powers of two, in the same two-level form — into f32 for M ≤ 4 (measured faster than the table-free
//! decoder, benches/results/2026-12-06-cpu-decode-gemm.md), and on the AVX512-BF16 path with bf16
//! activations into bf16 for `vdpbf16ps` ([`Job::bf16_dot`], every M). Forcing the path to `avx2`
//! bypasses both, to `avx512` the bf16 form.
//!
//! One generic kernel ([`group`]) serves both x86 paths through the [`Simd`] trait; each path is a
//! `#[target_feature]` wrapper around it, so the trait's intrinsics are inlined with the features on.

use std::sync::Mutex;

use smallvec::SmallVec;

use super::fp8_simd::Fp8Tables;
use super::pack::{LhsSrc, RhsSrc};
use super::{Fp8Format, Isa, SCALE_BLOCK};
use crate::fast::scratch::Scratch;
use crate::placement::{self, ByNode, Placement};
use crate::threads;

/// Weight element kinds of the SIMD paths (a const parameter of the kernels).
const F32: u8 = 0;
pub(crate) const BF16: u8 = 1;
const E4M3FN: u8 = 2;
const E4M3FNUZ: u8 = 3;
const E5M2: u8 = 4;

const fn is_fp8(kind: u8) -> bool {
    kind >= E4M3FN
}

const fn elem_bytes(kind: u8) -> usize {
    match kind {
        F32 => 4,
        BF16 => 2,
        _ => 1,
    }
}

/// Bytes of each weight row consumed per step: one cache line, so one prefetch per row and step, and a
/// step never straddles a 128-wide scale block (128 elements are 2, 4 or 8 steps).
const STEP: usize = 64;

/// Software prefetch distance in bytes, and the prefetch goes to L2 (`_MM_HINT_T1`), not L1. A few
/// hundred bytes ahead kept each row's stream ahead of the hardware prefetcher on Sapphire Rapids
/// (benches/results/2026-12-06-cpu-decode-gemm.md); on Zen 4, into L1 at 1 KiB, rows of 2 KiB (FP8 at
/// K = 2048) streamed at 15–20 GB/s against 28–31 for long rows: the L1's few fill buffers bound the
/// lines in flight. Into L2 at 2 KiB: 23–29 GB/s (2026-12-07-cpu-zen4-fp8-decode-vdpbf16ps.md).
const PF: usize = 2048;

/// A byte view of B plus what its decode needs.
struct WView<'a> {
    kind: u8,
    bytes: &'a [u8],
    k: usize,
    scales: &'a [f32],
    kb: usize,
    /// The exponent of `2^fold` for FP8 ([`fold`]), 0 otherwise.
    fold: i32,
    /// VBMI decode tables: when present (FP8 on AVX-512 with VBMI, M ≤ 4), the two-level kernel runs.
    tables: Option<&'a Fp8Tables>,
}

fn as_bytes<T: bytemuck::Pod>(x: &[T]) -> &[u8] {
    bytemuck::cast_slice(x)
}

/// `2^fold` of `isa`'s FP8 decoder, which yields `decode(q) · 2^-fold` exactly: the AVX2 decoder builds
/// f32 bits (`x86::fp8_f32_bits`), the AVX-512 one f16 bits (`x86::f16_bits`).
#[cfg(test)]
pub(crate) fn fold(isa: Isa, format: Fp8Format) -> f32 {
    2f32.powi(fold_exp(isa, format))
}

/// The exponent of [`fold`].
fn fold_exp(isa: Isa, format: Fp8Format) -> i32 {
    match (isa, format) {
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Fp8Format::E4M3Fn) => 120,
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Fp8Format::E4M3Fnuz) => 119,
        #[cfg(target_arch = "x86_64")]
        (Isa::Avx2, Fp8Format::E5M2) => 112,
        (_, Fp8Format::E4M3Fn) => 8,
        (_, Fp8Format::E4M3Fnuz) => 7,
        (_, Fp8Format::E5M2) => 0,
    }
}

/// `e` with `2^e ≤ max|x| < 2^(e+1)` over `row` (NaNs skipped), or `fallback` for a row of zeros or one
/// holding an infinity.
fn row_exponent(row: &[f32], fallback: i32) -> i32 {
    let amax = row.iter().fold(0f32, |m, x| m.max(x.abs()));
    if amax > 0.0 && amax.is_finite() {
        // f64 holds every f32, subnormals as normals: its exponent field is ⌊log2 amax⌋ exactly.
        ((f64::from(amax).to_bits() >> 52) & 0x7FF) as i32 - 1023
    } else {
        fallback
    }
}

/// Scales a row of A in front of the table-free FP8 kernels by `2^(fold - ea)`, where `2^ea ≤ max|a| <
/// 2^(ea+1)` (see the module's notes), and returns `2^ea`, the factor for the row's outputs. A row of
/// zeros or holding an infinity keeps `ea = fold`: unscaled, its outputs still come back times
/// `2^fold` (NaNs are skipped by the maximum and stay NaN). Both multiplies are exact in f64, and the
/// casts to f32 exact unless the result is subnormal.
fn scale_fp8_lhs_row(row: &mut [f32], fold: i32) -> f64 {
    let ea = row_exponent(row, fold);
    let up = 2f64.powi(fold - ea);
    for x in row.iter_mut() {
        *x = (f64::from(*x) * up) as f32;
    }
    2f64.powi(ea)
}

/// Whether block scales `scales` (`kb` per row block) stay within what the accumulators of the kernels
/// whose A rows are scaled below `2^(fold+1)` take: they hold Σ p·s over the blocks with |p| < 128 ·
/// 2^(fold+1) · max|w'| ≤ 2^24 (max|decode| < 2^16, e5m2; |a'| < 2^(fold+1), w' = decode · 2^-fold), so
/// a scale above f32::MAX / (2^24 · kb) could overflow where the unscaled result would not; the portable
/// path takes those.
fn scales_fit(scales: &[f32], kb: usize) -> bool {
    let limit = f32::MAX / (2f32.powi(24) * kb.max(1) as f32);
    !scales.iter().any(|s| s.abs() > limit && s.is_finite())
}

/// The SIMD view of `b` for `isa`'s decoder, or `None` when a block scale is above what the kernels'
/// accumulators take (the portable path is exact). `two_level`: use the VBMI tables when `b` has them.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn view<'a>(b: &'a RhsSrc<'a>, k: usize, isa: Isa, two_level: bool) -> Option<WView<'a>> {
    let kb = k.div_ceil(SCALE_BLOCK);
    Some(match b {
        RhsSrc::F32(d) => WView { kind: F32, bytes: as_bytes(d), k, scales: &[], kb, fold: 0, tables: None },
        RhsSrc::Bf16(d) => {
            WView { kind: BF16, bytes: as_bytes(d), k, scales: &[], kb, fold: 0, tables: None }
        }
        RhsSrc::BlockFp8 { codes, scales, simd: Some(t), .. } if two_level => {
            WView { kind: E4M3FN, bytes: codes, k, scales, kb, fold: 0, tables: Some(t) }
        }
        RhsSrc::BlockFp8 { codes, scales, format, .. } => {
            let kind = match format {
                Fp8Format::E4M3Fn => E4M3FN,
                Fp8Format::E4M3Fnuz => E4M3FNUZ,
                Fp8Format::E5M2 => E5M2,
            };
            let fold = fold_exp(isa, *format);
            if !scales_fit(scales, kb) {
                return None;
            }
            WView { kind, bytes: codes, k, scales, kb, fold, tables: None }
        }
    })
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_decode(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &LhsSrc,
    b: &RhsSrc,
    c: &mut [f32],
    ldc: usize,
) {
    let job = Job::new(isa, m, k, a, 0, b);
    let ct = run_jobs(std::slice::from_ref(&job), n).pop().expect("one job");
    untranspose(&ct, m, n, c, ldc, |x| x);
}

/// One decode GEMM ready to run on any range of weight rows: its rows of A converted to f32 (and
/// permuted for the two-level kernel), and the kernel path and weight view chosen.
pub(crate) struct Job<'a> {
    isa: Isa,
    m: usize,
    k: usize,
    kp: usize,
    abuf: Scratch,
    /// Per row of A, the factor of its outputs when the rows were scaled ([`scale_fp8_lhs_row`]); empty
    /// otherwise.
    out_scale: SmallVec<[f64; super::DECODE_MAX_M]>,
    w: Option<WView<'a>>,
    b: &'a RhsSrc<'a>,
}

impl<'a> Job<'a> {
    /// Rows `row0..row0 + m` of `a` times `b` (`[N, K]`).
    pub(crate) fn new(isa: Isa, m: usize, k: usize, a: &LhsSrc, row0: usize, b: &'a RhsSrc<'a>) -> Self {
        debug_assert!((1..=super::DECODE_MAX_M).contains(&m));
        let kp = k.next_multiple_of(STEP);
        let mut abuf = Scratch::zeroed(m * kp);
        for (i, row) in abuf.chunks_exact_mut(kp).enumerate() {
            a.load_row(row0 + i, 0, &mut row[..k]);
        }
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx512Bf16 && matches!(a, LhsSrc::Bf16 { .. }) {
            if let Some(job) = Self::bf16_dot(m, k, kp, &abuf, b) {
                return job;
            }
        }
        // Otherwise the bf16 paths add a prefill kernel only: decode runs on the vector path beneath them.
        let isa = isa.vector();
        #[cfg(target_arch = "x86_64")]
        let two_level = isa == Isa::Avx512 && m <= two_level::F32_MAX_M;
        #[cfg(not(target_arch = "x86_64"))]
        let two_level = false;
        let w = view(b, k, isa, two_level);
        let out_scale = match &w {
            Some(w) if isa != Isa::Scalar && is_fp8(w.kind) && w.tables.is_none() => {
                abuf.chunks_exact_mut(kp).map(|row| scale_fp8_lhs_row(&mut row[..k], w.fold)).collect()
            }
            _ => SmallVec::new(),
        };
        // The VBMI kernel (in-lane shuffles) and the AVX2 FP8 decoder (dword bytes) yield the 64 codes of
        // a step out of order; permute A's 64-value chunks to match (kp is a multiple of 64; the zero
        // padding stays zero).
        #[cfg(target_arch = "x86_64")]
        let order: Option<fn(usize) -> usize> = match &w {
            Some(w) if w.tables.is_some() => Some(super::fp8_simd::lane_order),
            Some(w) if isa == Isa::Avx2 && is_fp8(w.kind) => Some(x86::avx2_fp8_lane),
            _ => None,
        };
        #[cfg(target_arch = "x86_64")]
        if let Some(order) = order {
            for row in abuf.chunks_exact_mut(kp) {
                for chunk in row.chunks_exact_mut(64) {
                    let src: [f32; 64] = (&*chunk).try_into().unwrap();
                    for (i, &v) in src.iter().enumerate() {
                        chunk[order(i)] = v;
                    }
                }
            }
        }
        let isa = if w.is_none() { Isa::Scalar } else { isa };
        Job { isa, m, k, kp, abuf, out_scale, w, b }
    }

    /// The bf16 form of the two-level kernel ([`two_level`]) where it can run: FP8 weights with VBMI
    /// tables, block scales that fit ([`scales_fit`]), and A's rows bf16 that stay normal when
    /// scaled ([`two_level::bf16_lhs`]). Kept as `Isa::Avx512Bf16`, the kernel family [`Job::rows`] runs.
    #[cfg(target_arch = "x86_64")]
    fn bf16_dot(m: usize, k: usize, kp: usize, abuf: &[f32], b: &'a RhsSrc<'a>) -> Option<Self> {
        let w = view(b, k, Isa::Avx512, true).filter(|w| w.tables.is_some() && scales_fit(w.scales, w.kb))?;
        let (abuf, out_scale) = two_level::bf16_lhs(m, k, kp, abuf)?;
        Some(Job { isa: Isa::Avx512Bf16, m, k, kp, abuf, out_scale, w: Some(w), b })
    }

    /// The address of the first weight row and the bytes of each row: what the node split cuts.
    fn weight_rows(&self) -> (usize, usize) {
        match self.b {
            RhsSrc::F32(d) => (d.as_ptr() as usize, 4 * self.k),
            RhsSrc::Bf16(d) => (d.as_ptr() as usize, 2 * self.k),
            RhsSrc::BlockFp8 { codes, .. } => (codes.as_ptr() as usize, self.k),
        }
    }

    /// `out[j*m + i] = C[i, n0 + j]` for the `out.len() / m` weight rows from `n0`.
    fn rows(&self, n0: usize, out: &mut [f32]) {
        let (m, kp, a) = (self.m, self.kp, &self.abuf[..]);
        match self.isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => {
                two_level::rows_bf16(m, self.w.as_ref().unwrap(), bytemuck::cast_slice(a), kp, n0, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 | Isa::Amx => x86::rows_avx512(m, self.w.as_ref().unwrap(), a, kp, n0, out),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::rows_avx2(m, self.w.as_ref().unwrap(), a, kp, n0, out),
            Isa::Scalar => scalar_rows(m, self.k, self.b, a, kp, n0, out),
        }
        if !self.out_scale.is_empty() {
            for row in out.chunks_exact_mut(m) {
                for (x, &f) in row.iter_mut().zip(&self.out_scale) {
                    *x = (f64::from(*x) * f) as f32;
                }
            }
        }
    }
}

/// Runs every job (each `[N, K]` weights, the same N) in one parallel pass and returns each one's output,
/// transposed (`[N, m]`, so that tasks own disjoint chunks). Tasks are (job, block of weight rows); the
/// block size depends on the total weight rows only, so one job or many, each thread gets several tasks.
/// A task's outputs do not depend on the split (each output is one weight row's own accumulation).
pub(crate) fn run_jobs(jobs: &[Job], n: usize) -> Vec<Vec<f32>> {
    run_jobs_placed(jobs, n, placement::current())
}

/// [`run_jobs`] with the weights split over the nodes of `placement`: each job's rows are cut where
/// [`Placement::row_bounds`] says their pages lie (the upload placed them by the same split), blocks
/// never cross a cut, and each node's workers take their node's blocks first, then the others' (see
/// [`ByNode::drain`]). With one node this is one queue of the blocks in order.
pub(crate) fn run_jobs_placed(jobs: &[Job], n: usize, placement: &Placement) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = jobs.iter().map(|j| vec![0f32; n * j.m]).collect();
    let threads = rayon::current_num_threads().max(1);
    let rows_per_task = (n * jobs.len()).div_ceil(8 * threads).clamp(8, 256);
    let mut tasks = ByNode::new(placement.nodes());
    for (job, out) in jobs.iter().zip(outs.iter_mut()) {
        let (start, row_bytes) = job.weight_rows();
        let mut rest = &mut out[..];
        for (node, rows) in placement.row_bounds(start, row_bytes, n).windows(2).enumerate() {
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut((rows[1] - rows[0]) * job.m);
            for (t, o) in mine.chunks_mut(rows_per_task * job.m).enumerate() {
                tasks.push(node, Mutex::new((job, rows[0] + t * rows_per_task, o)));
            }
            rest = tail;
        }
    }
    // Every thread takes the next task of its queue in order, so that at any time the threads stream
    // neighbouring blocks of one expert's weights (as one GEMM per expert does), not experts far apart.
    rayon::broadcast(|_| {
        tasks.drain(threads::worker_node().unwrap_or(0), true, |task| {
            let (job, n0, out) = &mut *task.lock().expect("a task panicked");
            job.rows(*n0, out);
        })
    });
    outs
}

/// Writes the transposed result `ct` (`[n, m]`) into rows of `c` (stride `ldc`), converted by `conv`.
pub(crate) fn untranspose<T>(
    ct: &[f32],
    m: usize,
    n: usize,
    c: &mut [T],
    ldc: usize,
    conv: impl Fn(f32) -> T,
) {
    for (i, row) in c.chunks_mut(ldc).take(m).enumerate() {
        for (d, src) in row[..n].iter_mut().zip(ct.chunks_exact(m)) {
            *d = conv(src[i]);
        }
    }
}

/// Portable path: decode each weight row in chunks, then M dot products.
fn scalar_rows(m: usize, k: usize, b: &RhsSrc, abuf: &[f32], kp: usize, n0: usize, out: &mut [f32]) {
    const CH: usize = 256;
    let mut wbuf = [0f32; CH];
    for (r, o) in out.chunks_exact_mut(m).enumerate() {
        let mut sums = [0f32; super::DECODE_MAX_M];
        for k0 in (0..k).step_by(CH) {
            let len = CH.min(k - k0);
            b.load_row(n0 + r, k, k0, &mut wbuf[..len]);
            for (i, s) in sums[..m].iter_mut().enumerate() {
                let arow = &abuf[i * kp + k0..][..len];
                let mut part = [0f32; 8];
                for (wc, ac) in wbuf[..len].chunks(8).zip(arow.chunks(8)) {
                    for ((p, &x), &y) in part.iter_mut().zip(wc).zip(ac) {
                        *p += x * y;
                    }
                }
                *s += part.iter().sum::<f32>();
            }
        }
        o.copy_from_slice(&sums[..m]);
    }
}

#[cfg(target_arch = "x86_64")]
/// One call of a group kernel: weight rows `n0..n0 + NB`, each over all of K, ending as
/// `out[j*ldo + i] = Σ_k a[i*kp + k] · w(n0 + j, k)`.
struct Piece<'s> {
    n0: usize,
    /// First weight row of the group that runs next: the prefetch target once this group's own rows
    /// are covered, so that the next one starts warm.
    next_row: usize,
    out: &'s mut [f32],
    ldo: usize,
}

#[cfg(target_arch = "x86_64")]
/// Software prefetch of a group's weight rows into L2: the line [`PF`] bytes (at most one row) past the
/// byte each row is at; past a row's end, as far into the same row of the group that runs next, so that
/// it starts warm. The rows of a group are read in step, so the target's offset is found once per step
/// ([`Prefetch::at`]) and fetched for each row ([`Prefetch::fetch`]).
#[derive(Clone, Copy)]
struct Prefetch<'a> {
    bytes: &'a [u8],
    /// Bytes per row.
    rb: usize,
    /// Byte offset of the group's first row.
    row0: usize,
    /// The distance: [`PF`], at most one row.
    dist: usize,
    /// Bytes from the end of a row to the start of the same row of the next group.
    skip: usize,
}

#[cfg(target_arch = "x86_64")]
impl<'a> Prefetch<'a> {
    /// For the group from row `n0` (rows of `rb` bytes in `bytes`) followed by the group from `next_row`.
    fn new(bytes: &'a [u8], rb: usize, n0: usize, next_row: usize) -> Self {
        let skip = next_row.saturating_sub(n0 + 1) * rb;
        Prefetch { bytes, rb, row0: n0 * rb, dist: PF.min(rb), skip }
    }

    /// The target's offset from the start of row `j`'s bytes, `j·rb` past the first row's, while every
    /// row of the group is at byte `at`.
    #[inline(always)]
    fn at(&self, at: usize) -> usize {
        let off = at + self.dist;
        if off < self.rb {
            off
        } else {
            off + self.skip
        }
    }

    /// Prefetches row `j`'s target at `off` (from [`Prefetch::at`]).
    #[inline(always)]
    fn fetch(&self, off: usize, j: usize) {
        // SAFETY: SSE is part of x86-64. `wrapping_add`: the address may lie past the weights; prefetches
        // never fault.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                self.bytes.as_ptr().wrapping_add(self.row0 + j * self.rb + off).cast(),
            )
        };
    }
}

#[cfg(target_arch = "x86_64")]
/// A group kernel: NB weight rows (NB its own) times M rows of A (`a`, row stride `kp`) into [`Piece`].
type Kern<E> = unsafe fn(&WView, &[E], usize, &mut Piece);

#[cfg(target_arch = "x86_64")]
/// Runs the kernels over the weight rows of `out` (`out.len() / m` of them, from `n0`), M split into
/// chunks of at most `max_m` rows of A: for each group of weight rows, every chunk of A while the
/// group's weights are in L1, so each weight byte comes from memory once.
///
/// One pass over K per group. K blocks with A's block kept in L1 (accumulators carried between
/// blocks) were built and measured on an idle Zen 3: slower in 73 of 96 alternated pairs (median
/// 1.12×, up to 1.47× at M = 16; benches/results/2026-12-07-cpu-decode-k-blocks-and-probe.md), so
/// they were removed.
#[allow(clippy::too_many_arguments)]
fn run_rows<E>(
    m: usize,
    max_m: usize,
    pick: impl Fn(usize, u8) -> (usize, Kern<E>, Kern<E>),
    w: &WView,
    a: &[E],
    kp: usize,
    n0: usize,
    out: &mut [f32],
) {
    let chunks = m.div_ceil(max_m);
    let (base, extra) = (m / chunks, m % chunks);
    // Each chunk of A: first row, rows, and its (group size, kernel, single-row kernel). At most 3
    // chunks (M ≤ 16; 8 rows a chunk on AVX2 and AVX-512, 6 in the bf16 form): an inline list, no
    // allocation per call.
    type Chunk<E> = (usize, usize, (usize, Kern<E>, Kern<E>));
    let kerns: SmallVec<[Chunk<E>; 3]> = (0..chunks)
        .map(|c| {
            let mc = base + usize::from(c < extra);
            let i0 = c * base + c.min(extra);
            (i0, mc, pick(mc, w.kind))
        })
        .collect();
    let nrows = out.len() / m;
    let nb = kerns.iter().map(|(_, _, (nb, _, _))| *nb).min().unwrap_or(1);
    let mut r = 0;
    while r < nrows {
        let g = if r + nb <= nrows { nb } else { 1 };
        for &(i0, mc, (knb, f, f1)) in &kerns {
            // Each chunk runs its own group size over the g rows.
            let mut j = 0;
            while j < g {
                let (gg, kern) = if j + knb <= g { (knb, f) } else { (1, f1) };
                let mut piece = Piece {
                    n0: n0 + r + j,
                    next_row: n0 + r + g + j,
                    out: &mut out[(r + j) * m + i0..],
                    ldo: m,
                };
                // SAFETY: this module is reached only through an Isa chosen after feature detection
                // (see `Isa`); the kernel checks its slices.
                unsafe { kern(w, &a[i0 * kp..(i0 + mc) * kp], kp, &mut piece) };
                j += gg;
            }
        }
        r += g;
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
pub(crate) use x86::decode_step_for_test;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{
        elem_bytes, is_fp8, run_rows, Kern, Piece, Prefetch, WView, BF16, E4M3FN, E4M3FNUZ, E5M2, F32,
        SCALE_BLOCK, STEP,
    };

    /// The vector operations the kernel needs, for one instruction-set path. Every method is
    /// `#[inline(always)]` and only ever inlined into a `#[target_feature]` wrapper of its path
    /// ([`group_avx512`], [`group_avx2`]): that wrapper's feature detection is the safety invariant.
    pub(super) trait Simd {
        type V: Copy;
        const LANES: usize;
        unsafe fn zero() -> Self::V;
        unsafe fn splat(x: f32) -> Self::V;
        /// `a · b + c`, one rounding.
        unsafe fn fma(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
        /// # Safety
        /// `p` readable for `LANES` f32.
        unsafe fn load(p: *const f32) -> Self::V;
        unsafe fn hsum(v: Self::V) -> f32;
        /// What the decoder has seen of its codes, when run without the special-code rule.
        type Seen: Copy;
        /// `Seen` of no codes.
        unsafe fn seen_none<const KIND: u8>() -> Self::Seen;
        /// A step's weights as loaded, before decoding ([`Simd::decode_vec`]).
        type Raw: Copy;
        /// Loads the `STEP` bytes at `p` (`STEP / elem_bytes(KIND)` weights of `KIND`, in order) for
        /// [`Simd::decode_vec`]. `SPECIAL = false` lets the decoder decode NaN and infinite FP8 codes as
        /// finite values; the codes are recorded in `seen` instead, and the caller redoes its work with
        /// `SPECIAL = true` when [`Simd::special_seen`] says that one was there.
        ///
        /// # Safety
        /// `p` readable for `STEP` bytes.
        unsafe fn load_step<const KIND: u8, const SPECIAL: bool>(
            p: *const u8,
            seen: &mut Self::Seen,
        ) -> Self::Raw;
        /// Vector `v` (`v < STEP / elem_bytes(KIND) / LANES`) of the decoded step, FP8 values times
        /// `2^-fold` ([`super::fold`]). One vector at a time, so that the kernel decodes each where it uses
        /// it (a whole step decoded up front keeps up to 8 vectors per weight row live and spills the
        /// accumulators at M > 1). A method, not a callback: a closure would be compiled without the
        /// path's target features.
        ///
        /// # Safety
        /// `raw` from [`Simd::load_step`] of the same `KIND` and `SPECIAL`.
        unsafe fn decode_vec<const KIND: u8, const SPECIAL: bool>(raw: Self::Raw, v: usize) -> Self::V;
        /// Whether `seen` includes a NaN or infinite code of `KIND`.
        unsafe fn special_seen<const KIND: u8>(seen: Self::Seen) -> bool;
    }

    /// f16 bit patterns of 16 FP8 codes (zero-extended to 16 bits each) of `KIND`, exactly (the AVX-512
    /// decoder; `vcvtph2ps` then converts them):
    /// * e5m2 is the top byte of an f16 (same exponent width and bias): `q << 8`.
    /// * e4m3 (fn: bias 7, fnuz: bias 8): `(q << 8) >>ₐ 1` puts the sign in bit 15 and the exponent and
    ///   mantissa bits in bits 13..7, the f16's low 4 exponent bits and top 3 mantissa bits (the mask
    ///   clears the copied sign in bit 14). Read with f16's bias 15 that is `decode(q) · 2^-8` (fn) or
    ///   `2^-7` (fnuz), subnormals included (an e4m3 subnormal lands on an f16 subnormal with the same
    ///   digits); hence `fold` = 256 / 128. NaN codes (fn: S.1111.111, fnuz: 0x80) get the exponent field
    ///   all ones OR-ed in; their mantissa bits are non-zero, so the result is an f16 NaN.
    ///
    /// # Safety
    /// AVX2 available.
    #[inline(always)]
    unsafe fn f16_bits<const KIND: u8>(q: __m256i) -> __m256i {
        // SAFETY: register-only AVX2 intrinsics; the caller guarantees AVX2.
        unsafe {
            let hi = _mm256_slli_epi16::<8>(q);
            if KIND == E5M2 {
                return hi;
            }
            let t = _mm256_and_si256(_mm256_srai_epi16::<1>(hi), _mm256_set1_epi16(0xBF80u16 as i16));
            let nan = if KIND == E4M3FN {
                let mag = _mm256_and_si256(q, _mm256_set1_epi16(0x7F));
                _mm256_cmpeq_epi16(mag, _mm256_set1_epi16(0x7F))
            } else {
                _mm256_cmpeq_epi16(q, _mm256_set1_epi16(0x80))
            };
            _mm256_or_si256(t, _mm256_and_si256(nan, _mm256_set1_epi16(0x7E00)))
        }
    }

    pub(super) struct Avx512;

    impl Simd for Avx512 {
        type V = __m512;
        const LANES: usize = 16;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m512 {
            // SAFETY: the caller guarantees 16 readable f32.
            unsafe { _mm512_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn hsum(v: __m512) -> f32 {
            _mm512_reduce_add_ps(v)
        }
        // This decoder handles every code: nothing to record.
        type Seen = ();
        #[inline(always)]
        unsafe fn seen_none<const KIND: u8>() {}
        #[inline(always)]
        unsafe fn special_seen<const KIND: u8>(_: ()) -> bool {
            false
        }
        type Raw = *const u8;
        #[inline(always)]
        unsafe fn load_step<const KIND: u8, const SPECIAL: bool>(p: *const u8, _: &mut ()) -> *const u8 {
            p
        }
        #[inline(always)]
        unsafe fn decode_vec<const KIND: u8, const SPECIAL: bool>(p: *const u8, v: usize) -> __m512 {
            // SAFETY: every load below lies within the STEP bytes at `p` (v < STEP / elem_bytes / 16).
            unsafe {
                match KIND {
                    F32 => _mm512_loadu_ps(p.cast()),
                    BF16 => {
                        let h = _mm256_loadu_si256(p.add(32 * v).cast());
                        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
                    }
                    _ => {
                        let q = _mm256_cvtepu8_epi16(_mm_loadu_si128(p.add(16 * v).cast()));
                        _mm512_cvtph_ps(f16_bits::<KIND>(q))
                    }
                }
            }
        }
    }

    pub(super) struct Avx2;

    impl Simd for Avx2 {
        type V = __m256;
        const LANES: usize = 8;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            _mm256_setzero_ps()
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m256 {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            _mm256_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32) -> __m256 {
            // SAFETY: the caller guarantees 8 readable f32.
            unsafe { _mm256_loadu_ps(p) }
        }
        #[inline(always)]
        unsafe fn hsum(v: __m256) -> f32 {
            let mut t = [0f32; 8];
            // SAFETY: `t` holds 8 f32.
            unsafe { _mm256_storeu_ps(t.as_mut_ptr(), v) };
            ((t[0] + t[4]) + (t[1] + t[5])) + ((t[2] + t[6]) + (t[3] + t[7]))
        }
        /// Bytes: e4m3fn and e5m2 the largest magnitude (`q & 0x7f`) seen, e4m3fnuz the smallest
        /// `q ^ 0x80` (0 for its NaN code, 0x80).
        type Seen = __m256i;
        #[inline(always)]
        unsafe fn seen_none<const KIND: u8>() -> __m256i {
            if KIND == E4M3FNUZ {
                _mm256_set1_epi8(-1)
            } else {
                _mm256_setzero_si256()
            }
        }
        #[inline(always)]
        unsafe fn special_seen<const KIND: u8>(seen: __m256i) -> bool {
            let hit = match KIND {
                // NaN: magnitude 0x7f.
                E4M3FN => _mm256_cmpeq_epi8(seen, _mm256_set1_epi8(0x7F)),
                E4M3FNUZ => _mm256_cmpeq_epi8(seen, _mm256_setzero_si256()),
                // Infinities and NaNs: magnitude >= 0x7c.
                E5M2 => _mm256_cmpeq_epi8(_mm256_max_epu8(seen, _mm256_set1_epi8(0x7C)), seen),
                _ => return false,
            };
            _mm256_testz_si256(hit, hit) == 0
        }
        /// The step's address, and for FP8 its 64 codes in two registers (zero otherwise).
        type Raw = (*const u8, [__m256i; 2]);
        #[inline(always)]
        unsafe fn load_step<const KIND: u8, const SPECIAL: bool>(
            p: *const u8,
            seen: &mut __m256i,
        ) -> (*const u8, [__m256i; 2]) {
            if !is_fp8(KIND) {
                return (p, [_mm256_setzero_si256(); 2]);
            }
            // SAFETY: the two loads cover the STEP bytes the caller guarantees.
            let q = unsafe { [_mm256_loadu_si256(p.cast()), _mm256_loadu_si256(p.add(32).cast())] };
            if !SPECIAL {
                *seen = if KIND == E4M3FNUZ {
                    let x = _mm256_set1_epi8(0x80u8 as i8);
                    let m = _mm256_min_epu8(_mm256_xor_si256(q[0], x), _mm256_xor_si256(q[1], x));
                    _mm256_min_epu8(*seen, m)
                } else {
                    let x = _mm256_set1_epi8(0x7F);
                    let m = _mm256_max_epu8(_mm256_and_si256(q[0], x), _mm256_and_si256(q[1], x));
                    _mm256_max_epu8(*seen, m)
                };
            }
            (p, q)
        }
        #[inline(always)]
        unsafe fn decode_vec<const KIND: u8, const SPECIAL: bool>(
            (p, q): (*const u8, [__m256i; 2]),
            v: usize,
        ) -> __m256 {
            // SAFETY: every load below lies within the STEP bytes at `p` (v < STEP / elem_bytes / 8).
            unsafe {
                match KIND {
                    F32 => _mm256_loadu_ps(p.add(32 * v).cast()),
                    BF16 => {
                        let h = _mm_loadu_si128(p.add(16 * v).cast());
                        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
                    }
                    _ => {
                        // Vector 4r + b: byte b of the 8 dwords of `q[r]`, moved to the top of its dword
                        // ([`avx2_fp8_lane`]).
                        let q = q[v / 4];
                        if SPECIAL {
                            let y = match v % 4 {
                                3 => q,
                                2 => _mm256_slli_epi32::<8>(q),
                                1 => _mm256_slli_epi32::<16>(q),
                                _ => _mm256_slli_epi32::<24>(q),
                            };
                            return _mm256_castsi256_ps(fp8_f32_bits::<KIND, true>(y));
                        }
                        // Without the special-code rule, 16-bit shifts do bytes 3 and 1 (2 and 0 after
                        // `<< 8`) of each dword at once; LLVM shares them between the four vectors.
                        let odd = v % 2 == 1;
                        let hi = if odd { q } else { _mm256_slli_epi16::<8>(q) };
                        let x = fp8_in_top_of_words::<KIND>(hi);
                        let x = if v % 4 >= 2 { x } else { _mm256_slli_epi32::<16>(x) };
                        _mm256_castsi256_ps(_mm256_and_si256(x, _mm256_set1_epi32(fp8_f32_mask::<KIND>())))
                    }
                }
            }
        }
    }

    /// Where the AVX2 FP8 decoder puts code `c` of a step (`c < 64`) among its 64 outputs (8 vectors of 8):
    /// the decoder works on dwords without shuffles, so vector `4r + b` holds byte `b` of the 8 dwords of
    /// the step's 32-byte half `r`: code `32r + 4d + b` in lane `d`. A is permuted to match once per GEMM
    /// ([`super::Job::new`]).
    pub(crate) fn avx2_fp8_lane(c: usize) -> usize {
        let (r, d, b) = (c / 32, c % 32 / 4, c % 4);
        8 * (4 * r + b) + d
    }

    /// The f32 bits that [`fp8_f32_bits`] keeps: the sign and the code's exponent and mantissa bits.
    const fn fp8_f32_mask<const KIND: u8>() -> i32 {
        if KIND == E5M2 {
            0x8FE0_0000u32 as i32
        } else {
            0x87F0_0000u32 as i32
        }
    }

    /// [`fp8_f32_bits`]' shift on 16-bit words: for codes in the top byte of both words of each dword, the
    /// top word of the result masked by [`fp8_f32_mask`] is the f32 of the dword's byte 3, the bottom word
    /// moved up 16 bits that of its byte 1 (the word shift brings in only the sign's copies and bits of
    /// the byte below, which the mask clears). Finite codes only (no special-code rule).
    ///
    /// # Safety
    /// AVX2 available.
    #[inline(always)]
    unsafe fn fp8_in_top_of_words<const KIND: u8>(hi: __m256i) -> __m256i {
        // SAFETY: register-only AVX2 intrinsics; the caller guarantees AVX2.
        unsafe {
            if KIND == E5M2 {
                _mm256_srai_epi16::<3>(hi)
            } else {
                _mm256_srai_epi16::<4>(hi)
            }
        }
    }

    /// f32 bit patterns of 8 FP8 codes of `KIND`, each given in the top byte of a 32-bit lane (the bytes
    /// below it ignored), times `2^-fold` exactly ([`super::fold`]): an arithmetic shift right by 4 (e4m3) or
    /// 3 (e5m2) keeps the sign in bit 31 and puts the exponent and mantissa bits at the bottom of f32's
    /// exponent field and the top of its mantissa; the mask clears the sign's copies. Read with f32's
    /// bias 127 that is `decode(q) · 2^-120` (e4m3fn, bias 7), `2^-119` (e4m3fnuz, bias 8) or `2^-112`
    /// (e5m2, bias 15), subnormal codes included: they land on f32 subnormals with the same digits,
    /// which the FP units take at full speed (measured on Zen 3; no DAZ), and the block-scale multiply
    /// makes each `decode(q) · s` with one rounding. Two integer operations, no `vcvtph2ps` (2 cycles of
    /// one pipe per 8 values on Zen 3: the limit of an f16-based decoder there).
    /// `SPECIAL`: NaN codes become NaN and e5m2's infinities infinite (the exponent field filled);
    /// without it they come out finite.
    ///
    /// # Safety
    /// AVX2 available.
    #[inline(always)]
    unsafe fn fp8_f32_bits<const KIND: u8, const SPECIAL: bool>(y: __m256i) -> __m256i {
        // SAFETY: register-only AVX2 intrinsics; the caller guarantees AVX2.
        unsafe {
            let shifted = if KIND == E5M2 { _mm256_srai_epi32::<3>(y) } else { _mm256_srai_epi32::<4>(y) };
            let x = _mm256_and_si256(shifted, _mm256_set1_epi32(fp8_f32_mask::<KIND>()));
            if !SPECIAL {
                return x;
            }
            // (bits that identify the code, their value, what to OR in): e4m3fn S.1111.111 and e4m3fnuz
            // 0x80 become a quiet NaN; e5m2 S.11111.mm gets the exponent all ones: ±inf for mm = 0, NaN
            // otherwise.
            let (sel, val, fill) = match KIND {
                E4M3FN => (0x7F00_0000u32, 0x7F00_0000u32, 0x7FC0_0000u32),
                E4M3FNUZ => (0xFF00_0000, 0x8000_0000, 0x7FC0_0000),
                _ => (0x7C00_0000, 0x7C00_0000, 0x7F80_0000),
            };
            let hit = _mm256_cmpeq_epi32(
                _mm256_and_si256(y, _mm256_set1_epi32(sel as i32)),
                _mm256_set1_epi32(val as i32),
            );
            _mm256_or_si256(x, _mm256_and_si256(hit, _mm256_set1_epi32(fill as i32)))
        }
    }

    /// `Σ_k a[i*kp + k] · w(n0 + j, k)` for `j < NB`, `i < M`, into the output as [`Piece`] says.
    ///
    /// # Safety
    /// The features of `S` are available (the caller is its `#[target_feature]` wrapper). Every memory
    /// access is derived from a slice checked here.
    #[inline(always)]
    unsafe fn group<S: Simd, const M: usize, const NB: usize, const KIND: u8>(
        w: &WView,
        a: &[f32],
        kp: usize,
        p: &mut Piece,
    ) {
        assert!(p.out.len() > (NB - 1) * p.ldo + M - 1, "decode output too short");
        // NaN and infinite FP8 codes are rare (absent from real weights): decode without their rule, and
        // redo the group with it when one was seen.
        let mut acc = zero::<S, M, NB>();
        let mut seen = unsafe { S::seen_none::<KIND>() };
        // SAFETY: the caller's contract.
        unsafe {
            group_pass::<S, M, NB, KIND, false>(w, a, kp, p, &mut acc, &mut seen);
            if S::special_seen::<KIND>(seen) {
                acc = zero::<S, M, NB>();
                group_pass::<S, M, NB, KIND, true>(w, a, kp, p, &mut acc, &mut seen);
            }
        }
        for (i, acc_i) in acc.iter().enumerate() {
            for (j, &v) in acc_i.iter().enumerate() {
                // SAFETY: the features of `S` are enabled; the index is within the length checked above.
                p.out[j * p.ldo + i] = unsafe { S::hsum(v) };
            }
        }
    }

    /// M × NB zero vectors.
    #[inline(always)]
    fn zero<S: Simd, const M: usize, const NB: usize>() -> [[S::V; NB]; M] {
        // SAFETY: only reached from a `#[target_feature]` wrapper of `S`'s path (see `Simd`).
        std::array::from_fn(|_| std::array::from_fn(|_| unsafe { S::zero() }))
    }

    /// [`group`]'s accumulation with the decoder's special-code rule fixed (`SPECIAL`, `seen`:
    /// [`Simd::load_step`]).
    ///
    /// # Safety
    /// As [`group`].
    #[inline(always)]
    unsafe fn group_pass<S: Simd, const M: usize, const NB: usize, const KIND: u8, const SPECIAL: bool>(
        w: &WView,
        a: &[f32],
        kp: usize,
        p: &Piece,
        acc: &mut [[S::V; NB]; M],
        seen: &mut S::Seen,
    ) {
        let (k, esz) = (w.k, elem_bytes(KIND));
        let n0 = p.n0;
        let rb = k * esz;
        let rows: [&[u8]; NB] = std::array::from_fn(|j| &w.bytes[(n0 + j) * rb..][..rb]);
        let a = &a[..M * kp];
        assert!(kp >= k && kp.is_multiple_of(STEP));
        let pf = Prefetch::new(w.bytes, rb, n0, p.next_row);
        let step = STEP / esz;
        // Whole steps only; the row's last partial step is copied into zeroed buffers (code 0 and +0.0
        // decode to +0, and A is zero-padded past k).
        let kfull = k - k % step;
        let mut kb0 = 0;
        while kb0 < k {
            let kend = (kb0 + SCALE_BLOCK).min(k);
            // FP8: this block's products go to partial sums, added into `acc` times the block scale at
            // its end (the contract's two-level form); other kinds accumulate into `acc` directly.
            let mut part = zero::<S, M, NB>();
            let sums = if is_fp8(KIND) { &mut part } else { &mut *acc };
            let mut k0 = kb0;
            while k0 < kend.min(kfull) {
                let pf_at = pf.at(k0 * esz);
                for j in 0..NB {
                    pf.fetch(pf_at, j);
                }
                let src: [&[u8]; NB] = std::array::from_fn(|j| &rows[j][k0 * esz..][..STEP]);
                // SAFETY: each `src` holds STEP bytes; k0 % step == 0 and k0 < k <= kp.
                unsafe { step_all::<S, M, NB, KIND, SPECIAL>(src, a, kp, k0, sums, seen) };
                k0 += step;
            }
            if k0 < kend {
                let tails: [[u8; STEP]; NB] = std::array::from_fn(|j| {
                    let mut t = [0u8; STEP];
                    t[..(k - k0) * esz].copy_from_slice(&rows[j][k0 * esz..]);
                    t
                });
                let src = tails.each_ref().map(|t| &t[..]);
                // SAFETY: as above.
                unsafe { step_all::<S, M, NB, KIND, SPECIAL>(src, a, kp, k0, sums, seen) };
            }
            if is_fp8(KIND) {
                for j in 0..NB {
                    let s = w.scales[(n0 + j) / SCALE_BLOCK * w.kb + kb0 / SCALE_BLOCK];
                    // SAFETY: the features of `S` are enabled (caller's contract).
                    unsafe {
                        let s = S::splat(s);
                        for (acc_i, part_i) in acc.iter_mut().zip(&part) {
                            acc_i[j] = S::fma(part_i[j], s, acc_i[j]);
                        }
                    }
                }
            }
            kb0 = kend;
        }
    }

    /// One step of every row of the group: decode `src[j]` (STEP bytes each; `SPECIAL` and `seen` as in
    /// [`Simd::load_step`]) and accumulate `acc[i][j] += a[i, k0..k0 + step] · w[j]`, vector by vector
    /// ([`step_vec`]).
    ///
    /// # Safety
    /// As [`group`]; every `src[j]` holds STEP bytes; `k0` is a multiple of the step's element count,
    /// `k0 < kp`, `kp` a multiple of STEP and `a` holds M·kp values, so every A load
    /// (`i*kp + k0 + v*LANES`, LANES values, within the step) lies inside `a`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    unsafe fn step_all<S: Simd, const M: usize, const NB: usize, const KIND: u8, const SPECIAL: bool>(
        src: [&[u8]; NB],
        a: &[f32],
        kp: usize,
        k0: usize,
        acc: &mut [[S::V; NB]; M],
        seen: &mut S::Seen,
    ) {
        debug_assert!(src.iter().all(|s| s.len() >= STEP) && M * kp <= a.len());
        // SAFETY: see the function's contract.
        unsafe {
            let raw: [S::Raw; NB] =
                std::array::from_fn(|j| S::load_step::<KIND, SPECIAL>(src[j].as_ptr(), seen));
            let a = a.as_ptr().add(k0);
            // One call per vector with `v` a constant: as a loop, LLVM left the rows' loop rolled at M = 1,
            // NB = 4 (accumulators in memory, seen in the disassembly).
            step_vec::<S, M, NB, KIND, SPECIAL, 0>(&raw, a, kp, acc);
            step_vec::<S, M, NB, KIND, SPECIAL, 1>(&raw, a, kp, acc);
            step_vec::<S, M, NB, KIND, SPECIAL, 2>(&raw, a, kp, acc);
            step_vec::<S, M, NB, KIND, SPECIAL, 3>(&raw, a, kp, acc);
            step_vec::<S, M, NB, KIND, SPECIAL, 4>(&raw, a, kp, acc);
            step_vec::<S, M, NB, KIND, SPECIAL, 5>(&raw, a, kp, acc);
            step_vec::<S, M, NB, KIND, SPECIAL, 6>(&raw, a, kp, acc);
            step_vec::<S, M, NB, KIND, SPECIAL, 7>(&raw, a, kp, acc);
        }
    }

    /// Vector `V` of a step (nothing when the step has fewer vectors): the M values of A loaded once and
    /// used by all NB weight rows, each weight vector decoded once and used by all M rows of A.
    ///
    /// # Safety
    /// As [`step_all`], with `a` pointing at A's value `k0` of row 0.
    #[inline(always)]
    unsafe fn step_vec<
        S: Simd,
        const M: usize,
        const NB: usize,
        const KIND: u8,
        const SPECIAL: bool,
        const V: usize,
    >(
        raw: &[S::Raw; NB],
        a: *const f32,
        kp: usize,
        acc: &mut [[S::V; NB]; M],
    ) {
        if V >= STEP / elem_bytes(KIND) / S::LANES {
            return;
        }
        // SAFETY: see the function's contract.
        unsafe {
            let av: [S::V; M] = std::array::from_fn(|i| S::load(a.add(i * kp + V * S::LANES)));
            for j in 0..NB {
                let w = S::decode_vec::<KIND, SPECIAL>(raw[j], V);
                for (acc_i, &a_i) in acc.iter_mut().zip(&av) {
                    acc_i[j] = S::fma(a_i, w, acc_i[j]);
                }
            }
        }
    }

    /// The `#[target_feature]` wrapper of [`group`] for one path.
    macro_rules! wrapper {
        ($name:ident, $simd:ty, $features:literal) => {
            /// # Safety
            /// The features named here are available.
            #[target_feature(enable = $features)]
            unsafe fn $name<const M: usize, const NB: usize, const KIND: u8>(
                w: &WView,
                a: &[f32],
                kp: usize,
                p: &mut Piece,
            ) {
                // SAFETY: the features of the path are enabled on this function.
                unsafe { group::<$simd, M, NB, KIND>(w, a, kp, p) }
            }
        };
    }
    wrapper!(group_avx512, Avx512, "avx512f,avx512bw,avx512vl,avx2,fma,f16c");
    wrapper!(group_avx2, Avx2, "avx2,fma,f16c");

    /// `(NB, kernel for NB rows, kernel for 1 row)` of `$wrap` for M rows of A (an expression) and the
    /// weight kind, from a list `M => NB`.
    macro_rules! pick {
        ($wrap:ident, $m:expr, $kind:expr, [$($M:literal => $NB:literal),*]) => {{
            macro_rules! by_kind {
                ($MM:literal, $NN:literal) => {
                    match $kind {
                        F32 => $wrap::<$MM, $NN, F32> as Kern<f32>,
                        BF16 => $wrap::<$MM, $NN, BF16>,
                        E4M3FN => $wrap::<$MM, $NN, E4M3FN>,
                        E4M3FNUZ => $wrap::<$MM, $NN, E4M3FNUZ>,
                        _ => $wrap::<$MM, $NN, E5M2>,
                    }
                };
            }
            match $m {
                $($M => ($NB, by_kind!($M, $NB), by_kind!($M, 1)),)*
                _ => unreachable!("M chunk out of range"),
            }
        }};
    }

    pub(crate) fn rows_avx512(m: usize, w: &WView, a: &[f32], kp: usize, n0: usize, out: &mut [f32]) {
        debug_assert!(crate::fast::gemm::avx512_ok());
        if w.tables.is_some() {
            super::two_level::rows_f32(m, w, a, kp, n0, out);
            return;
        }
        // 32 registers: up to 16 accumulators plus the decode's temporaries; at M > 8 A runs in two
        // chunks (one chunk of up to 16 rows, a weight row at a time, spilled: 2.4-3.2x slower at M = 16
        // on Zen 4, 2026-12-07).
        let pick = |mc, kind| {
            pick!(group_avx512, mc, kind, [
                1 => 4, 2 => 4, 3 => 4, 4 => 4, 5 => 2, 6 => 2, 7 => 2, 8 => 2
            ])
        };
        run_rows(m, 8, pick, w, a, kp, n0, out);
    }

    pub(crate) fn rows_avx2(m: usize, w: &WView, a: &[f32], kp: usize, n0: usize, out: &mut [f32]) {
        debug_assert!(crate::fast::gemm::avx2_ok());
        // 16 registers hold the M·NB accumulators, the M values of A of one vector (or A as memory
        // operands), the decoded weight vector and, for FP8, the block's partial sums and the decode's
        // masks: FP8 takes fewer weight rows per group than bf16 (bf16's groups measured no faster for
        // FP8 at M = 2..8, 2026-12-07).
        let pick = |mc, kind| {
            if is_fp8(kind) {
                pick!(group_avx2, mc, kind, [
                    1 => 4, 2 => 2, 3 => 1, 4 => 1, 5 => 1, 6 => 1, 7 => 1, 8 => 1
                ])
            } else {
                pick!(group_avx2, mc, kind, [
                    1 => 4, 2 => 4, 3 => 2, 4 => 2, 5 => 1, 6 => 1, 7 => 1, 8 => 1
                ])
            }
        };
        run_rows(m, 8, pick, w, a, kp, n0, out);
    }

    /// Decodes one step of weights of `format` (`STEP` codes) with `isa`'s decoder, scale 1 (tests).
    #[cfg(test)]
    pub(crate) fn decode_step_for_test(isa: crate::fast::gemm::Isa, kind: u8, src: &[u8; STEP]) -> Vec<f32> {
        use crate::fast::gemm::Isa;
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
        unsafe fn on_avx512<const KIND: u8>(src: &[u8; STEP], out: &mut [f32]) {
            // SAFETY: src holds STEP bytes; out holds STEP f32 >= every index written.
            let raw = unsafe { Avx512::load_step::<KIND, true>(src.as_ptr(), &mut ()) };
            for v in 0..STEP / elem_bytes(KIND) / 16 {
                // SAFETY: `raw` is of this KIND; out holds STEP >= 16(v + 1) f32.
                unsafe {
                    _mm512_storeu_ps(
                        out[16 * v..][..16].as_mut_ptr(),
                        Avx512::decode_vec::<KIND, true>(raw, v),
                    )
                };
            }
        }
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn on_avx2<const KIND: u8>(src: &[u8; STEP], natural: &mut [f32]) {
            // FP8 comes out in `avx2_fp8_lane` order: write it there, then put it back in code order.
            let mut lanes = [0f32; STEP];
            let out = if is_fp8(KIND) { &mut lanes[..] } else { &mut *natural };
            // As the kernel does: the fast form first, and the special-code form when it saw one.
            // SAFETY: as above.
            unsafe {
                let mut seen = Avx2::seen_none::<KIND>();
                let raw = Avx2::load_step::<KIND, false>(src.as_ptr(), &mut seen);
                let special = Avx2::special_seen::<KIND>(seen);
                let raw_special = Avx2::load_step::<KIND, true>(src.as_ptr(), &mut seen);
                for v in 0..STEP / elem_bytes(KIND) / 8 {
                    let x = if special {
                        Avx2::decode_vec::<KIND, true>(raw_special, v)
                    } else {
                        Avx2::decode_vec::<KIND, false>(raw, v)
                    };
                    // SAFETY: out holds STEP >= 8(v + 1) f32.
                    _mm256_storeu_ps(out[8 * v..][..8].as_mut_ptr(), x);
                }
            }
            if is_fp8(KIND) {
                for (c, x) in natural.iter_mut().enumerate() {
                    *x = lanes[avx2_fp8_lane(c)];
                }
            }
        }
        let mut out = vec![f32::from_bits(0x7F80_1234); STEP];
        macro_rules! call {
            ($f:ident) => {
                match kind {
                    F32 => $f::<F32>(src, &mut out),
                    BF16 => $f::<BF16>(src, &mut out),
                    E4M3FN => $f::<E4M3FN>(src, &mut out),
                    E4M3FNUZ => $f::<E4M3FNUZ>(src, &mut out),
                    _ => $f::<E5M2>(src, &mut out),
                }
            };
        }
        // SAFETY: tests pass only paths from `Isa::available()`, which checks the features.
        unsafe {
            match isa {
                Isa::Avx512 | Isa::Amx | Isa::Avx512Bf16 => call!(on_avx512),
                Isa::Avx2 => call!(on_avx2),
                Isa::Scalar => unreachable!("no SIMD decoder on the scalar path"),
            }
        }
        out.truncate(STEP / elem_bytes(kind));
        out
    }
}

#[cfg(target_arch = "x86_64")]
mod two_level;

/// The kind code of an FP8 format (tests).
#[cfg(test)]
pub(crate) fn fp8_kind(format: Fp8Format) -> u8 {
    match format {
        Fp8Format::E4M3Fn => E4M3FN,
        Fp8Format::E4M3Fnuz => E4M3FNUZ,
        Fp8Format::E5M2 => E5M2,
    }
}
