//! AMX-BF16 32×32 microkernel over bf16 panels: four 16×16 f32 accumulator tiles (tmm0..3), two A tiles
//! of 16 rows × 32 bf16 (tmm4, tmm5) and two B tiles of 16 pair rows × 16 columns (tmm6, tmm7) per
//! 32-wide K step: four `tdpbf16ps` per four tile loads.
//!
//! Arithmetic (Intel SDM's `TDPBF16PS`, checked bit for bit in the tests): for each output, the products
//! of even and of odd K positions (exact in f32) are accumulated in two f32 sums over the step, rounded
//! to nearest even after each addition; the two sums are added, then added to the accumulator tile — f32
//! accumulation of exact products, as the GEMM contract asks. Subnormal bf16 inputs read as zero and
//! subnormal results are flushed: the packing refuses subnormal operands (`pack.rs`), and results below
//! 2⁻¹²⁶ are underflow, outside every path's error bound. Block-FP8 weights: each 128-wide K block is
//! summed alone in the tiles, stored, and added as `tile += partial · scale` with one f32 FMA.
//!
//! Tiles are per-thread state: the driver calls [`configure`] before a task's first microkernel and
//! [`release`] after its last (so idle threads carry no tile state through context switches). Linux
//! lends tile data to a process only after `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`;
//! [`available`] asks once, and a refusal makes the path unavailable. The instructions are written as
//! inline assembly (Rust's AMX intrinsics are not stable); the compiler never allocates tile registers,
//! so they keep their contents between the `asm!` blocks of one thread.

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use super::driver::{write_tile, Micro};
use super::pack::BF16_K_STEP;
use super::SCALE_BLOCK;

const MR: usize = 32;
const NR: usize = 32;

pub(crate) const MICRO: Micro<u16> = Micro { mr: MR, nr: NR, run, kc: 1024, begin: configure, end: release };

/// Whether this process may run AMX-BF16 tiles, or why not. The CPU must report AMX-TILE and AMX-BF16
/// (CPUID.7.0:EDX bits 24 and 22), the OS must enable their state in XCR0 (bits 17, 18), and on Linux
/// the process must be granted the tile data (asked once, here).
pub(crate) fn available() -> Result<(), String> {
    static OK: OnceLock<Result<(), String>> = OnceLock::new();
    OK.get_or_init(|| {
        let leaf7 = __cpuid_count(7, 0);
        if leaf7.edx & (1 << 24) == 0 || leaf7.edx & (1 << 22) == 0 {
            return Err("this CPU has no AMX-TILE / AMX-BF16".into());
        }
        // OSXSAVE (CPUID.1:ECX bit 27) makes XGETBV available.
        if __cpuid(1).ecx & (1 << 27) == 0 {
            return Err("the OS has not enabled XSAVE, so it manages no AMX state".into());
        }
        // SAFETY: XGETBV is available (OSXSAVE checked just above); it only reads XCR0.
        let xcr0 = unsafe { _xgetbv(0) };
        if xcr0 & (0b11 << 17) != 0b11 << 17 {
            return Err(format!("the OS has not enabled AMX tile state in XCR0 ({xcr0:#x})"));
        }
        request_tile_data()
    })
    .clone()
}

#[cfg(target_os = "linux")]
fn request_tile_data() -> Result<(), String> {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes two integers and touches no memory of ours.
    let rc = unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) };
    if rc == 0 {
        Ok(())
    } else {
        let err = std::io::Error::last_os_error();
        Err(format!("Linux refused AMX tile data (arch_prctl(ARCH_REQ_XCOMP_PERM): {err})"))
    }
}

#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> Result<(), String> {
    Err("AMX tile data is requested on Linux only".into())
}

/// `ldtilecfg`'s 64-byte operand: palette 1, every tile 16 rows of 64 bytes (C: 16 f32; A: 32 bf16;
/// B: 16 columns × a bf16 pair).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

const CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

fn configure() {
    // SAFETY: only reachable through `Isa::Amx`, which exists only after [`available`] succeeded, so
    // the CPU has AMX and this process holds the tile data; CONFIG is a valid palette-1 configuration.
    unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly, preserves_flags)) };
}

fn release() {
    // SAFETY: as in `configure`; `tilerelease` returns the tiles to their initial state.
    unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
}

/// A 32×32 f32 tile of C in memory, aligned for the tile stores.
#[repr(C, align(64))]
struct CTile([f32; MR * NR]);

/// Safe wrapper: runs between `configure` and `release` on this thread (the driver's contract), which
/// exist only on the `Isa::Amx` path (see [`configure`]).
#[allow(clippy::too_many_arguments)]
fn run(
    kc: usize,
    a: &[u16],
    b: &[u16],
    scales: &[f32],
    c: &mut [&mut [f32]],
    col: usize,
    ncols: usize,
    acc: bool,
) {
    let kcp = kc.next_multiple_of(BF16_K_STEP);
    let (a, b) = (&a[..MR * kcp], &b[..NR * kcp]);
    debug_assert!(c.len() <= MR && ncols <= NR);
    let mut tile = CTile([0f32; MR * NR]);
    if scales.is_empty() {
        // SAFETY: tiles configured (see above); `a` holds MR rows of kcp values, `b` kcp/2 pair rows of
        // 2·NR values (sliced above), so every step's tiles lie inside them; `tile` holds 32×32 f32.
        unsafe {
            zero_acc();
            steps(a.as_ptr(), kcp, b.as_ptr(), kcp / BF16_K_STEP);
            store_acc(&mut tile);
        }
    } else {
        debug_assert_eq!(scales.len(), kc.div_ceil(SCALE_BLOCK));
        let mut part = CTile([0f32; MR * NR]);
        for (blk, &s) in scales.iter().enumerate() {
            let k0 = blk * SCALE_BLOCK;
            let n = SCALE_BLOCK.min(kcp - k0) / BF16_K_STEP;
            // SAFETY: as above; k0 + 32·n ≤ kcp, so the block's steps lie inside both panels.
            unsafe {
                zero_acc();
                steps(a[k0..].as_ptr(), kcp, b[k0 * NR..].as_ptr(), n);
                store_acc(&mut part);
                fma_tile(&part, s, &mut tile);
            }
        }
    }
    write_tile(&tile.0, NR, c, col, ncols, acc);
}

/// # Safety
/// Tiles configured on this thread.
#[inline(always)]
unsafe fn zero_acc() {
    // SAFETY: the caller's contract; register-only.
    unsafe {
        asm!(
            "tilezero tmm0",
            "tilezero tmm1",
            "tilezero tmm2",
            "tilezero tmm3",
            options(nostack, nomem, preserves_flags)
        )
    };
}

/// `n` K steps of 32: accumulator tiles += A rows (stride `lda` values from `a`) × B pair rows.
///
/// # Safety
/// Tiles configured on this thread; `a` readable for 32 rows of `lda` ≥ 32·n values, `b` for `n` steps
/// of 16 pair rows × 2·NR values.
#[inline(always)]
unsafe fn steps(a: *const u16, lda: usize, b: *const u16, n: usize) {
    for s in 0..n {
        // SAFETY: the caller's contract: step s reads A values 32s..32s+32 of rows 0..32 and B's pair
        // rows 16s..16s+16 (128 bytes each, two tiles of 64 bytes side by side).
        unsafe {
            asm!(
                "tileloadd tmm4, [{a0} + {sa} * 1]",
                "tileloadd tmm5, [{a1} + {sa} * 1]",
                "tileloadd tmm6, [{b} + {sb} * 1]",
                "tileloadd tmm7, [{b} + {sb} * 1 + 64]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                a0 = in(reg) a.add(BF16_K_STEP * s),
                a1 = in(reg) a.add(16 * lda + BF16_K_STEP * s),
                b = in(reg) b.add(s * BF16_K_STEP * NR),
                sa = in(reg) 2 * lda,
                sb = in(reg) 4 * NR,
                options(nostack, readonly, preserves_flags)
            )
        };
    }
}

/// Stores the accumulator tiles into `t` (row stride NR f32).
///
/// # Safety
/// Tiles configured on this thread.
#[inline(always)]
unsafe fn store_acc(t: &mut CTile) {
    let p = t.0.as_mut_ptr();
    // SAFETY: the caller's contract; each store writes 16 rows of 64 bytes at stride 4·NR inside `t`
    // (tmm1 and tmm3 at column 16, tmm2 and tmm3 at row 16).
    unsafe {
        asm!(
            "tilestored [{p} + {sc} * 1], tmm0",
            "tilestored [{p} + {sc} * 1 + 64], tmm1",
            "tilestored [{q} + {sc} * 1], tmm2",
            "tilestored [{q} + {sc} * 1 + 64], tmm3",
            p = in(reg) p,
            q = in(reg) p.add(16 * NR),
            sc = in(reg) 4 * NR,
            options(nostack, preserves_flags)
        )
    };
}

/// `t += part · s`, one f32 FMA per element.
///
/// # Safety
/// AVX-512F available (it is wherever `Isa::Amx` is).
#[target_feature(enable = "avx512f")]
unsafe fn fma_tile(part: &CTile, s: f32, t: &mut CTile) {
    let sv = _mm512_set1_ps(s);
    for (d, p) in t.0.chunks_exact_mut(16).zip(part.0.chunks_exact(16)) {
        // SAFETY: both chunks hold 16 f32.
        unsafe {
            _mm512_storeu_ps(
                d.as_mut_ptr(),
                _mm512_fmadd_ps(_mm512_loadu_ps(p.as_ptr()), sv, _mm512_loadu_ps(d.as_ptr())),
            )
        };
    }
}
