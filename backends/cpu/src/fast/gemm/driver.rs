//! Blocked, multithreaded GEMM for M > 16 ("prefill" shapes): GotoBLAS/BLIS loop nest over packed panels.
//!
//! ```text
//! for pc in K step KC:              pack A[:, pc..pc+KC] into MR-row panels        (parallel)
//!   for jc in N step NC:            pack B[jc..jc+NC, pc..pc+KC] into NR panels   (parallel, decoded)
//!     for tile (MC rows × NCT cols) of C in [·, jc..jc+NC]:            (parallel, in order)
//!       for jr in NR panels of tile:      B micro-panel (KC×NR) stays in L1
//!         for ir in MR panels of tile:    A block (MC×KC) stays in L2
//!           microkernel MR×NR (overwrite on the first KC slice, accumulate after)
//! ```
//! C tiles are disjoint: each holds `&mut` sub-slices of its own rows, so the tiles run in parallel
//! without shared mutable state.

use rayon::prelude::*;

use super::pack::{AlignedBuf, LhsSrc, Panel, RhsSrc};
use super::Isa;

/// `run(kc, a_panel, b_panel, b_scales, rows, col, ncols, accumulate)`, see [`Micro::run`].
pub(crate) type MicroFn<E> = fn(usize, &[E], &[E], &[f32], &mut [&mut [f32]], usize, usize, bool);

/// A register- (or tile-) blocked microkernel behind a safe wrapper, over panels of element `E` (f32,
/// or bf16 bits as `u16`; the packed layouts are [`Panel`]'s).
#[derive(Clone, Copy)]
pub(crate) struct Micro<E> {
    pub mr: usize,
    pub nr: usize,
    /// `run(kc, a_panel, b_panel, b_scales, rows, col, ncols, accumulate)`: for each `i < rows.len()`
    /// (≤ mr) and `j < ncols` (≤ nr), `rows[i][col + j] (+)= Σ_k a[i, k] · b[j, k]` over the panels' kc
    /// values of K. `b_scales` is empty, or (block FP8 weights in a bf16 panel, [`Panel::SCALED`]) the
    /// B panel's block scales for this K slice, one per 128 values of K: block `j`'s partial sum is
    /// multiplied by `b_scales[j]` before it is added.
    pub run: MicroFn<E>,
    /// Preferred KC (a multiple of 128 where `b_scales` are used: slices never split a scale block).
    pub kc: usize,
    /// Called on a worker thread before its first `run` of a parallel task, and `end` after its last
    /// (AMX: the tile configuration is per thread and is released when a task is done).
    pub begin: fn(),
    pub end: fn(),
}

pub(crate) fn micro_for(isa: Isa) -> Micro<f32> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => super::microkernel_avx512::MICRO,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => super::microkernel_avx2::MICRO,
        Isa::Scalar => super::microkernel_scalar::MICRO,
        #[cfg(target_arch = "x86_64")]
        Isa::Amx | Isa::Avx512Bf16 => micro_for(isa.vector()),
    }
}

/// For [`Micro::begin`] / [`Micro::end`] of kernels that need nothing per thread.
pub(crate) fn nothing() {}

/// Writes an `mr × nr` tile computed into `buf` (row stride `nr`) to `rows[i][col..col + ncols]`,
/// adding to what is there when `acc`.
pub(crate) fn write_tile(
    buf: &[f32],
    nr: usize,
    rows: &mut [&mut [f32]],
    col: usize,
    ncols: usize,
    acc: bool,
) {
    for (row, src) in rows.iter_mut().zip(buf.chunks_exact(nr)) {
        let dst = &mut row[col..col + ncols];
        if acc {
            for (d, s) in dst.iter_mut().zip(src) {
                *d += s;
            }
        } else {
            dst.copy_from_slice(&src[..ncols]);
        }
    }
}

/// Hands a register-blocked kernel the `MR` rows of its C tile as pointers, each addressing `NR`
/// writable f32 of a distinct row: `kernel(rows, accumulate)` must write (or, when `accumulate`, add
/// to) all of them. A full tile is C itself, so the kernel stores straight into it; an edge tile
/// (fewer rows or columns) goes through a local buffer, written back with [`write_tile`].
pub(crate) fn on_tile<const MR: usize, const NR: usize>(
    c: &mut [&mut [f32]],
    col: usize,
    ncols: usize,
    acc: bool,
    kernel: impl FnOnce(&[*mut f32; MR], bool),
) {
    debug_assert!(c.len() <= MR && ncols <= NR);
    if c.len() == MR && ncols == NR {
        let mut ptrs = [std::ptr::null_mut::<f32>(); MR];
        for (p, row) in ptrs.iter_mut().zip(c.iter_mut()) {
            *p = row[col..col + NR].as_mut_ptr();
        }
        kernel(&ptrs, acc);
    } else {
        let mut buf = [[0f32; NR]; MR];
        let ptrs: [*mut f32; MR] = std::array::from_fn(|i| buf[i].as_mut_ptr());
        kernel(&ptrs, false);
        write_tile(buf.as_flattened(), NR, c, col, ncols, acc);
    }
}

/// Largest row band (rows of A kept in L2 per KC slice).
const MC_MAX: usize = 192;
/// Largest column chunk of one parallel tile.
const NCT_MAX: usize = 512;
/// Target NC (columns of B packed per KC slice); rounded to a multiple of the tile width.
const NC_TARGET: usize = 4096;

struct Tile<'c> {
    m0: usize,
    n0: usize,
    ncols: usize,
    rows: Vec<&'c mut [f32]>,
}

/// Returns false, with C partly written, when an operand value cannot enter `E`'s panels exactly (a
/// bf16 subnormal, which the bf16 units read as zero: see [`Panel::pack_a`]); the caller then runs the
/// product again on f32 panels.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_packed<E: Panel>(
    micro: &Micro<E>,
    m: usize,
    n: usize,
    k: usize,
    a: &LhsSrc,
    b: &RhsSrc,
    c: &mut [f32],
    ldc: usize,
) -> bool {
    let (mr, nr) = (micro.mr, micro.nr);
    let threads = rayon::current_num_threads().max(1);

    // Row bands of (about) equal height, multiples of MR.
    let bands = m.div_ceil(MC_MAX);
    let mc = m.div_ceil(bands).next_multiple_of(mr);
    // Column chunks: enough tiles to keep every thread busy with some slack for balance.
    let want_chunks = (4 * threads).div_ceil(m.div_ceil(mc)).max(1);
    let nct = n.div_ceil(want_chunks).next_multiple_of(nr).clamp(nr, NCT_MAX.max(nr));
    let nc = (NC_TARGET / nct).max(1) * nct;
    let kc_blk = micro.kc;

    // Tiles own disjoint pieces of C's rows.
    let nchunks = n.div_ceil(nct);
    let mut tiles: Vec<Tile> = Vec::new();
    for band in 0..m.div_ceil(mc) {
        for t in 0..nchunks {
            let n0 = t * nct;
            tiles.push(Tile { m0: band * mc, n0, ncols: nct.min(n - n0), rows: Vec::with_capacity(mc) });
        }
    }
    for (i, row) in c.chunks_mut(ldc).take(m).enumerate() {
        let band = i / mc;
        for (t, part) in row[..n].chunks_mut(nct).enumerate() {
            tiles[band * nchunks + t].rows.push(part);
        }
    }

    let m_pad = m.next_multiple_of(mr);
    let mut apack = AlignedBuf::<E>::new(m_pad / mr * E::panel_len(mr, kc_blk));
    let mut bpack = AlignedBuf::<E>::new(nc.min(n).div_ceil(nr) * E::panel_len(nr, kc_blk));

    for pc in (0..k).step_by(kc_blk) {
        let kc = kc_blk.min(k - pc);
        let first = pc == 0;
        let (alen, blen) = (E::panel_len(mr, kc), E::panel_len(nr, kc));
        let ap = &mut apack.as_mut_slice()[..m_pad / mr * alen];
        let exact = ap.par_chunks_mut(alen).enumerate().all(|(p, dst)| {
            let r0 = p * mr;
            E::pack_a(a, dst, mr, r0, mr.min(m - r0), pc, kc)
        });
        if !exact {
            return false;
        }
        let ap = &apack.as_slice()[..m_pad / mr * alen];

        for jc in (0..n).step_by(nc) {
            let ncb = nc.min(n - jc);
            let bp = &mut bpack.as_mut_slice()[..ncb.div_ceil(nr) * blen];
            let exact = bp.par_chunks_mut(blen).enumerate().all(|(p, dst)| {
                let n0 = jc + p * nr;
                E::pack_b(b, dst, nr, n0, nr.min(n - n0), k, pc, kc)
            });
            if !exact {
                return false;
            }
            let bp = &bpack.as_slice()[..ncb.div_ceil(nr) * blen];

            // Tiles are handed out one at a time, in order, to whichever thread is free: rayon's
            // split of an indexed iterator gives each thread a contiguous range, and with a shorter
            // last band those ranges differ (512-row prefill: 1080 vs 968 rows of work, one of two
            // threads idle ~9 % of every K slice, measured).
            tiles.iter_mut().filter(|t| t.n0 >= jc && t.n0 < jc + ncb).par_bridge().for_each(|t| {
                (micro.begin)();
                macro_tile(micro, t, ap, bp, b, pc, kc, jc, first);
                (micro.end)();
            });
        }
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn macro_tile<E: Panel>(
    micro: &Micro<E>,
    t: &mut Tile,
    ap: &[E],
    bp: &[E],
    b: &RhsSrc,
    pc: usize,
    kc: usize,
    jc: usize,
    first: bool,
) {
    let (mr, nr) = (micro.mr, micro.nr);
    let (alen, blen) = (E::panel_len(mr, kc), E::panel_len(nr, kc));
    let nrows = t.rows.len();
    for jr in (0..t.ncols).step_by(nr) {
        let n0 = t.n0 + jr;
        let bpanel = &bp[(n0 - jc) / nr * blen..][..blen];
        let scales = if E::SCALED { b.block_scales(n0, pc, kc) } else { &[] };
        let ncols = nr.min(t.ncols - jr);
        for ir in (0..nrows).step_by(mr) {
            let apanel = &ap[(t.m0 + ir) / mr * alen..][..alen];
            let rows = &mut t.rows[ir..(ir + mr).min(nrows)];
            (micro.run)(kc, apanel, bpanel, scales, rows, jr, ncols, !first);
        }
    }
}
