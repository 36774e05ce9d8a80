//! Blocked, multithreaded GEMM for M > 8 ("prefill" shapes): GotoBLAS/BLIS loop nest over packed panels.
//!
//! ```text
//! for pc in K step KC:              pack A[:, pc..pc+KC] into MR-row panels        (parallel)
//!   for jc in N step NC:            pack B[jc..jc+NC, pc..pc+KC] into NR panels   (parallel, decoded)
//!     for tile (MC rows × NCT cols) of C in [·, jc..jc+NC]:                        (parallel)
//!       for jr in NR panels of tile:      B micro-panel (KC×NR) stays in L1
//!         for ir in MR panels of tile:    A block (MC×KC) stays in L2
//!           microkernel MR×NR (overwrite on the first KC slice, accumulate after)
//! ```
//! C tiles are disjoint: each holds `&mut` sub-slices of its own rows, so the tiles run in parallel
//! without shared mutable state.

use rayon::prelude::*;

use super::pack::{pack_panel, AlignedBuf, LhsSrc, RhsSrc};
use super::Isa;

/// `run(kc, a_panel, b_panel, rows, col, ncols, accumulate)`, see [`Micro::run`].
pub(crate) type MicroFn = fn(usize, &[f32], &[f32], &mut [&mut [f32]], usize, usize, bool);

/// A register-blocked microkernel behind a safe wrapper.
#[derive(Clone, Copy)]
pub(crate) struct Micro {
    pub mr: usize,
    pub nr: usize,
    /// `run(kc, a_panel, b_panel, rows, col, ncols, accumulate)`: for each `i < rows.len()` (≤ mr) and
    /// `j < ncols` (≤ nr), `rows[i][col + j] (+)= Σ_k a_panel[k*mr + i] · b_panel[k*nr + j]`.
    pub run: MicroFn,
    /// Preferred KC.
    pub kc: usize,
}

pub(crate) fn micro_for(isa: Isa) -> Micro {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => super::microkernel_avx512::MICRO,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => super::microkernel_avx2::MICRO,
        Isa::Scalar => super::microkernel_scalar::MICRO,
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

#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_packed(
    isa: Isa,
    m: usize,
    n: usize,
    k: usize,
    a: &LhsSrc,
    b: &RhsSrc,
    c: &mut [f32],
    ldc: usize,
) {
    let micro = micro_for(isa);
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
    let mut apack = AlignedBuf::new(m_pad * kc_blk);
    let mut bpack = AlignedBuf::new(nc.min(n).next_multiple_of(nr) * kc_blk);

    for pc in (0..k).step_by(kc_blk) {
        let kc = kc_blk.min(k - pc);
        let first = pc == 0;
        let ap = &mut apack.as_mut_slice()[..m_pad * kc];
        ap.par_chunks_mut(kc * mr).enumerate().for_each(|(p, dst)| {
            let r0 = p * mr;
            pack_panel(dst, mr, mr.min(m - r0), kc, |r, k0, out| a.load_row(r0 + r, pc + k0, out));
        });
        let ap = &apack.as_slice()[..m_pad * kc];

        for jc in (0..n).step_by(nc) {
            let ncb = nc.min(n - jc);
            let bp = &mut bpack.as_mut_slice()[..ncb.next_multiple_of(nr) * kc];
            bp.par_chunks_mut(kc * nr).enumerate().for_each(|(p, dst)| {
                let n0 = jc + p * nr;
                pack_panel(dst, nr, nr.min(n - n0), kc, |r, k0, out| b.load_row(n0 + r, k, pc + k0, out));
            });
            let bp = &bpack.as_slice()[..ncb.next_multiple_of(nr) * kc];

            tiles.par_iter_mut().filter(|t| t.n0 >= jc && t.n0 < jc + ncb).for_each(|t| {
                macro_tile(&micro, t, ap, bp, kc, jc, first);
            });
        }
    }
}

fn macro_tile(micro: &Micro, t: &mut Tile, ap: &[f32], bp: &[f32], kc: usize, jc: usize, first: bool) {
    let (mr, nr) = (micro.mr, micro.nr);
    let nrows = t.rows.len();
    for jr in (0..t.ncols).step_by(nr) {
        let bpanel = &bp[(t.n0 - jc + jr) / nr * kc * nr..][..kc * nr];
        let ncols = nr.min(t.ncols - jr);
        for ir in (0..nrows).step_by(mr) {
            let apanel = &ap[(t.m0 + ir) / mr * kc * mr..][..kc * mr];
            let rows = &mut t.rows[ir..(ir + mr).min(nrows)];
            (micro.run)(kc, apanel, bpanel, rows, jr, ncols, !first);
        }
    }
}
