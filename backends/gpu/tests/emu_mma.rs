//! The tile layer (kernels/cuda/mma.cuh) on the host emulator:
//! * the layout probe matches the PTX ISA's fragment tables at warp 32 and AMD's MFMA tables at warp 64
//!   (derived in `probe.rs`, not from the emulator), as gfx94x (FP8 MFMA on e4m3fnuz) and as gfx90a, and
//!   fails when a layout or decoding error is planted in mma.cuh's emulation or its warp tile — so a wrong
//!   layout cannot pass;
//! * cp.async copies happen at their wait_group only: read before the wait, the destination is still the
//!   0xff garbage; a thread that never waits is a kernel error; wait_group N leaves the N newest groups;
//! * ldmatrix and cp.async addresses that are misaligned or outside shared memory, matrix operations in a
//!   partial warp (or wavefront, for MFMA), and lanes waiting at different warp operations are kernel
//!   errors.

use dsv3_backend_gpu::emulator::Emulator;
use dsv3_backend_gpu::kernels::{self, Kernel, Variant};
use dsv3_backend_gpu::launch::Params;
use dsv3_backend_gpu::probe;
use dsv3_backend_gpu::runtime::{Dims, Runtime};
use dsv3_core::{Error, Result};

const MMA: &str = include_str!("../../../kernels/cuda/mma.cuh");

fn emulator() -> Emulator {
    emulator_at(32)
}

fn emulator_at(warp: u32) -> Emulator {
    Emulator::new(warp).unwrap_or_else(|e| panic!("the emulator does not start: {e}"))
}

/// Every result runs at warp 32 but the e4m3fnuz one, which is AMD's.
#[test]
fn the_probe_matches_the_isa() {
    let report = probe::run(&emulator()).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.passed(), "{report}");
    let (fnuz, rest): (Vec<_>, Vec<_>) = report.outcomes.iter().partition(|o| o.name.contains("e4m3fnuz"));
    assert!(fnuz.len() == 1 && fnuz[0].skipped.is_some(), "{report}");
    assert!(rest.iter().all(|o| o.skipped.is_none() && o.checked > 0), "{report}");
}

/// At warp 64 the probe runs the warp tile on MFMA: every tile result is checked against AMD's tables (the
/// e4m3fnuz one on the FP8 MFMA as gfx94x, decoded as gfx90a, and the flag saying which was compiled in),
/// and the mma.sync results say they are NVIDIA's.
#[test]
fn the_probe_matches_amds_tables_at_wave64() {
    for rt in [emulator_at(64), Emulator::gfx90a().unwrap_or_else(|e| panic!("{e}"))] {
        let report = probe::run(&rt).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.passed(), "{report}");
        let (tile, nvidia): (Vec<_>, Vec<_>) =
            report.outcomes.iter().partition(|o| o.name.starts_with("tile"));
        assert_eq!(tile.len(), 6, "{report}");
        assert!(tile.iter().all(|o| o.skipped.is_none() && o.checked > 0), "{report}");
        assert!(nvidia.iter().all(|o| o.skipped.is_some()), "{report}");
    }
    assert!(
        emulator_at(64).target().mfma_fp8_fnuz() && !Emulator::gfx90a().unwrap().target().mfma_fp8_fnuz()
    );
}

/// mma.cuh with `from` replaced by `to` (which must occur exactly once), as a probe kernel.
fn planted(from: &str, to: &str) -> Kernel {
    assert_eq!(MMA.matches(from).count(), 1, "mma.cuh no longer holds `{from}` once");
    let uses: &'static [&'static str] = Box::leak(Box::new([&*MMA.replace(from, to).leak()]));
    Kernel { uses, ..kernels::MMA_PROBE }
}

#[test]
fn the_probe_catches_planted_layout_errors() {
    let rt = emulator();
    let mutations = [
        // A's registers 1 and 2 swapped (rows 8.. and bytes 16.. exchanged).
        ("reg = row / 8 + 2 * (byte / 16)", "reg = 2 * (row / 8) + byte / 16", "bf16 A·B, n 0..7"),
        // B's two registers swapped.
        ("reg = 4 + byte / 16", "reg = 5 - byte / 16", "bf16 A·B, n 0..7"),
        // The accumulator's columns interleaved the other way.
        ("2 * (dsv3_lane() % 4) + i % 2", "(dsv3_lane() % 4) + 4 * (i % 2)", "acc_row / acc_col"),
        // ldmatrix.x4 rows taken from the wrong lanes.
        ("row_of(8 * j + l / 4) + 4 * (l % 4)", "row_of(8 * j + l % 8) + 4 * (l / 8)", "bf16 A·B, n 0..7"),
        // ldmatrix.trans: the two halves of a register exchanged.
        ("r[j] = (u32)lo | ((u32)hi << 16)", "r[j] = (u32)hi | ((u32)lo << 16)", "bf16 A·B + C"),
        // e4m3: K walked over 16 bytes only.
        ("k < 16 * (E4M3 ? 2 : 1)", "k < 16", "e4m3"),
    ];
    for (from, to, caught_by) in mutations {
        let report = probe::run_kernel(&rt, planted(from, to)).unwrap_or_else(|e| panic!("{e}"));
        let hit = report.outcomes.iter().find(|o| o.name.starts_with(caught_by)).expect("an outcome");
        assert!(hit.wrong > 0, "`{from}` → `{to}` passed the probe:\n{report}");
    }
}

/// MFMA's emulation and the AMD warp tile, each with one layout error planted, fail the probe at warp 64.
#[test]
fn the_probe_catches_planted_mfma_layout_errors() {
    let rt = emulator_at(64);
    let mutations = [
        // A's rows taken from lanes by the wrong split (row = lane / 4 instead of lane % 16).
        ("lanes[row + 16 * (k / 4)]", "lanes[4 * row + k / 4]", "tile bf16 A·B"),
        // B's two registers swapped (k 0, 1 with k 2, 3 of each lane, in B only).
        ("[2 + (k % 4) / 2]", "[3 - (k % 4) / 2]", "tile bf16 A·B"),
        // The accumulator's rows transposed within the lane groups.
        ("4 * (dsv3_lane() / 16) + i", "dsv3_lane() / 16 + 4 * i", "tile_row / tile_col"),
        // e4m3 B decoded from the wrong k group.
        ("(l % 16) * pitch + 4 * (l / 16)", "(l % 16) * pitch + 4 * (3 - l / 16)", "tile bf16 A · e4m3"),
        // e4m3 tile: B's halves paired with the wrong halves of A.
        (
            "fp8x4_to_bf16<T>(b.r[h], y.r[0], y.r[1])",
            "fp8x4_to_bf16<T>(b.r[1 - h], y.r[0], y.r[1])",
            "tile e4m3",
        ),
        // The warp tile reads bytes of the wrong k group: A and Bᵀ share the loader, so A·B is unchanged
        // (the same permutation of K in both); the product with decoded e4m3 B, loaded apart, shows it.
        ("(l % 16) * pitch + 8 * (l / 16)", "(l % 16) * pitch + 8 * ((l / 16) ^ 1)", "tile bf16 A · e4m3"),
    ];
    for (from, to, caught_by) in mutations {
        let report = probe::run_kernel(&rt, planted(from, to)).unwrap_or_else(|e| panic!("{e}"));
        let hit = report.outcomes.iter().find(|o| o.name.starts_with(caught_by)).expect("an outcome");
        assert!(hit.wrong > 0, "`{from}` → `{to}` passed the probe:\n{report}");
    }
}

/// gfx94x's FP8 MFMA (v_mfma_f32_16x16x32_fp8_fp8 on e4m3fnuz) with one error planted in its emulation or
/// its use by the warp tile fails the probe as gfx94x; as gfx90a (no FP8 MFMA, the codes decoded) the
/// probe passes with every one of them, since none of that code runs there.
#[test]
fn the_probe_catches_planted_fp8_mfma_errors() {
    let (gfx94x, gfx90a) = (emulator_at(64), Emulator::gfx90a().unwrap_or_else(|e| panic!("{e}")));
    let fnuz = "tile e4m3fnuz";
    let mutations = [
        // A's bytes mapped to k by another layout than B's (lane group from k % 4, byte from k / 8).
        (
            "lanes[row + 16 * (k / 8)][(k % 8) / 4] >> (8 * (k % 4))",
            "lanes[row + 16 * (k % 4)][(k / 4) % 2] >> (8 * (k / 8))",
            fnuz,
        ),
        // A's codes decoded as e4m3fn (bias 7, NaN 0x7f / 0xff) instead of e4m3fnuz (bias 8).
        ("to_f32(dsv3::e4m3fnuz{(u8)(lanes[row", "to_f32(dsv3::e4m3fn{(u8)(lanes[row", fnuz),
        // K walked over 16 codes only.
        ("(FP8 ? 32u : 16u)", "16u", fnuz),
        // The warp tile hands the instruction B's registers swapped (k 8q .. 8q + 3 with 8q + 4 .. 8q + 7).
        (
            "mfma_fp8_fnuz(c, MfmaAB{{a.r[0], a.r[1]}}, MfmaAB{{b.r[0], b.r[1]}})",
            "mfma_fp8_fnuz(c, MfmaAB{{a.r[0], a.r[1]}}, MfmaAB{{b.r[1], b.r[0]}})",
            fnuz,
        ),
        // The emulator not told it is gfx94x: the decoded path runs, which the flag shows.
        ("defined(DSV3_HOST_MFMA_FP8)", "defined(DSV3_HOST_MFMA_FP8_NOT)", "tile_row / tile_col"),
    ];
    for (from, to, caught_by) in mutations {
        let kernel = planted(from, to);
        let report = probe::run_kernel(&gfx94x, kernel).unwrap_or_else(|e| panic!("{e}"));
        let hit = report.outcomes.iter().find(|o| o.name.starts_with(caught_by)).expect("an outcome");
        assert!(hit.wrong > 0, "`{from}` → `{to}` passed the probe:\n{report}");
        let report = probe::run_kernel(&gfx90a, kernel).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.passed(), "`{from}` → `{to}` changed gfx90a's results:\n{report}");
    }
}

/// An MFMA in a block of 96 threads: the second wavefront has 32 lanes, which is a kernel error; 128 runs.
const PARTIAL_WAVE: &str = r#"
struct Params {
    float* out;
};

DSV3_KERNEL void emu_partial_wave(const Params p) {
    mma::TileA a = {{0u, 0u}};
    mma::TileC d;
    for (u32 s = 0; s < mma::TILE_SLOTS; s++) d.v[s] = 1.0f;
    mma::tile_mma_bf16(d, a, a);
    p.out[threadIdx.x] = d.v[0];
}
"#;

#[test]
fn mfma_in_a_partial_wavefront_is_a_kernel_error() {
    let rt = emulator_at(64);
    let f = kernel(&rt, "emu_partial_wave", PARTIAL_WAVE);
    let out = rt.alloc(128 * 4).unwrap();
    let reason = kernel_error(launch(&rt, &f, 96, &Params::new().addr(out)));
    assert!(reason.contains("mfma with fewer than 64 lanes in the wavefront"), "{reason}");
    launch(&rt, &f, 128, &Params::new().addr(out)).unwrap_or_else(|e| panic!("correct use failed: {e}"));
    rt.free(out, 128 * 4);
}

fn kernel(rt: &Emulator, name: &'static str, source: &'static str) -> dsv3_backend_gpu::runtime::Function {
    let k = Kernel { name, source, uses: &[MMA], max_block: 1024 };
    rt.compile("emu-test", &Variant::new(k)).unwrap_or_else(|e| panic!("{e}"))
}

fn launch(rt: &Emulator, f: &dsv3_backend_gpu::runtime::Function, block: u32, params: &Params) -> Result<()> {
    let queue = rt.new_queue()?;
    queue.launch("emu-test", f, Dims { grid: [1, 1, 1], block, shared: 0 }, &params.0)?;
    queue.sync()
}

fn kernel_error(r: Result<()>) -> String {
    match r {
        Err(Error::Kernel { reason, .. }) => reason,
        other => panic!("expected Error::Kernel, got {other:?}"),
    }
}

/// Each of 32 threads copies two 16-byte pieces of `src` into shared memory, the first half of it as one
/// commit group and the second half as the next, then per `mode`:
///   0  wait_group 0, barrier, read everything              (all copied)
///   1  barrier, read, barrier, then wait_group 0           (the read sees garbage)
///   2  wait_group 1, barrier, read                         (group 1 copied, group 2 not yet)
///   3  barrier, read, never wait                           (a kernel error)
/// `out` receives the 1024 bytes of shared memory as read.
const CP_ASYNC: &str = r#"
struct Params {
    const u8* src;
    u8* out;
    u64 mode;
};

struct alignas(16) Buf {
    u8 bytes[1024];
};

DSV3_KERNEL void emu_cp_async(const Params p) {
    DSV3_SHARED Buf s;
    const u32 t = threadIdx.x;
    mma::cp_async16(s.bytes + 16 * t, p.src + 16 * t);
    mma::cp_async_commit();
    mma::cp_async16(s.bytes + 512 + 16 * t, p.src + 512 + 16 * t);
    mma::cp_async_commit();
    if (p.mode == 0) mma::cp_async_wait<0>();
    if (p.mode == 2) mma::cp_async_wait<1>();
    dsv3_sync();
    for (u32 i = t; i < 1024; i += 32) p.out[i] = s.bytes[i];
    dsv3_sync();  // every read is done before any thread's late wait
    if (p.mode == 1 || p.mode == 2) mma::cp_async_wait<0>();
}
"#;

#[test]
fn cp_async_copies_happen_at_their_wait() {
    let rt = emulator();
    let f = kernel(&rt, "emu_cp_async", CP_ASYNC);
    let queue = rt.new_queue().unwrap();
    let src_bytes: Vec<u8> = (0..1024).map(|i| (i * 7 % 251) as u8).collect();
    let (src, out) = (rt.alloc(1024).unwrap(), rt.alloc(1024).unwrap());
    queue.upload(src, &src_bytes).unwrap();
    let run = |mode: usize| -> Result<Vec<u8>> {
        launch(&rt, &f, 32, &Params::new().addr(src).addr(out).u(mode))?;
        let mut b = vec![0; 1024];
        queue.download(out, &mut b)?;
        Ok(b)
    };
    assert_eq!(run(0).unwrap(), src_bytes, "waited for: copied");
    assert!(run(1).unwrap().iter().all(|&b| b == 0xff), "read before the wait: garbage");
    let half = run(2).unwrap();
    assert_eq!(&half[..512], &src_bytes[..512], "wait_group 1: the older group is copied");
    assert!(half[512..].iter().all(|&b| b == 0xff), "wait_group 1: the newest group is not");
    let reason = kernel_error(run(3).map(|_| ()));
    assert!(reason.contains("never waited for"), "{reason}");
    rt.free(src, 1024);
    rt.free(out, 1024);
}

/// Misuse of the tile layer, by `mode`:
///   0  ldmatrix with a row address 8 bytes off 16-byte alignment
///   1  ldmatrix from global memory
///   2  cp.async to a misaligned shared address
///   3  cp.async into global memory
///   4  half the warp at __syncwarp, the other half at a shuffle
///   5  correct use: ldmatrix + mma, which is an error in a block of 48 threads (the second warp has 16
///      lanes) and runs in a block of 64
const MISUSE: &str = r#"
struct Params {
    u8* global;
    u64 mode;
};

struct alignas(16) Buf {
    u8 bytes[1024];
};

DSV3_KERNEL void emu_misuse(const Params p) {
    DSV3_SHARED Buf s;
    const u32 lane = dsv3_lane();
    for (u32 i = threadIdx.x; i < 1024; i += blockDim.x) s.bytes[i] = 0;
    dsv3_sync();
    mma::FragA a;
    mma::FragC d = mma::zero_c();
    switch (p.mode) {
    case 0: mma::ldmatrix_x4(a.r, s.bytes + 32 * (lane % 16) + 8); break;
    case 1: mma::ldmatrix_x4(a.r, p.global + 16 * lane); break;
    case 2: mma::cp_async16(s.bytes + 4, p.global); mma::cp_async_wait<0>(); break;
    case 3: mma::cp_async16(p.global, p.global + 512); mma::cp_async_wait<0>(); break;
    case 4: if (lane < 16) mma::syncwarp(); else (void)dsv3_shfl_xor(1.0f, 1); break;
    default:
        mma::ldmatrix_x4(a.r, s.bytes + 32 * (lane % 16) + 16 * (lane / 16));
        mma::FragB b = {{a.r[0], a.r[2]}};
        mma::mma_bf16(d, a, b);
    }
    if (d.v[0] != 0.0f) p.global[0] = 1;
}
"#;

#[test]
fn misuse_of_the_tile_layer_is_a_kernel_error() {
    let rt = emulator();
    let f = kernel(&rt, "emu_misuse", MISUSE);
    let global = rt.alloc(1024).unwrap();
    let run = |mode: usize, block: u32| launch(&rt, &f, block, &Params::new().addr(global).u(mode));
    let cases = [
        (0, 32, "ldmatrix: a row address is not 16-byte aligned"),
        (1, 32, "ldmatrix: a row address is not in shared memory"),
        (2, 32, "cp.async: a 16-byte copy with an address not 16-byte aligned"),
        (3, 32, "cp.async: the destination is not in shared memory"),
        (4, 32, "lanes of a warp wait at different warp operations"),
        (5, 48, "with fewer than 32 lanes in the warp"),
    ];
    for (mode, block, want) in cases {
        let reason = kernel_error(run(mode, block));
        assert!(reason.contains(want), "mode {mode}: {reason}");
    }
    run(5, 64).unwrap_or_else(|e| panic!("correct use failed: {e}"));
    rt.free(global, 1024);
}

/// Both e4m3 products of one 16 × 32 A tile and one 32 × 8 B tile (Bᵀ given, 8 rows of 32 codes), from
/// C = 0: `out[0]` mma_e4m3 (the emulated instruction), `out[1]` mma_e4m3_by_bf16 (two bf16 mma on the
/// decoded codes, the form for sm_80 / sm_86), each as [lane][slot] f32.
const E4M3_BY_BF16: &str = r#"
struct Params {
    const u8* a;
    const u8* b;
    float* out;
};

DSV3_KERNEL void emu_e4m3_by_bf16(const Params p) {
    const u32 lane = dsv3_lane();
    const mma::FragA a = mma::load_a(p.a, 32);
    const mma::FragB b = mma::load_b(p.b, 32);
    mma::FragC native = mma::zero_c(), lowered = mma::zero_c();
    mma::mma_e4m3(native, a, b);
    mma::mma_e4m3_by_bf16(lowered, a, b);
    for (u32 i = 0; i < 4; i++) {
        p.out[lane * 4 + i] = native.v[i];
        p.out[128 + lane * 4 + i] = lowered.v[i];
    }
}
"#;

/// The bf16 form of an e4m3 mma computes the same products as the instruction: expected values from the
/// ISA's C layout (slot i of lane 4g + t is row g + 8·(i / 2), column 2t + i % 2) and core's e4m3 decoder,
/// not from the emulator. Two inputs: small integers (every sum exact, so both forms must agree bit for
/// bit whatever their order), and every non-NaN code in A against one-hot columns of B (each output is one
/// decoded code: the conversion is exact for subnormals, ±448 and −0).
#[test]
fn e4m3_mma_as_bf16_mma_matches_the_instruction() {
    use dsv3_core::fp8::Fp8Format::E4M3Fn;
    let rt = emulator();
    let f = kernel(&rt, "emu_e4m3_by_bf16", E4M3_BY_BF16);
    let queue = rt.new_queue().unwrap();
    let (a_buf, b_buf, out_buf) = (rt.alloc(512).unwrap(), rt.alloc(256).unwrap(), rt.alloc(1024).unwrap());
    let run = |a: &[u8], b: &[u8]| -> [Vec<f32>; 2] {
        queue.upload(a_buf, a).unwrap();
        queue.upload(b_buf, b).unwrap();
        launch(&rt, &f, 32, &Params::new().addr(a_buf).addr(b_buf).addr(out_buf)).unwrap();
        let mut bytes = vec![0; 1024];
        queue.download(out_buf, &mut bytes).unwrap();
        let v: Vec<f32> = bytes.chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        [v[..128].to_vec(), v[128..].to_vec()]
    };
    // D[row][col] = Σ_k A[row][k] · B[col][k], exactly (f64), at the ISA's slot positions.
    let expect = |a: &[u8], b: &[u8]| -> Vec<f64> {
        let dec = |c: u8| E4M3Fn.decode(c) as f64;
        (0..128)
            .map(|s| {
                let (lane, i) = (s / 4, s % 4);
                let (row, col) = (lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2);
                (0..32).map(|k| dec(a[row * 32 + k]) * dec(b[col * 32 + k])).sum()
            })
            .collect()
    };
    let check = |what: &str, a: &[u8], b: &[u8]| {
        let [native, lowered] = run(a, b);
        let want = expect(a, b);
        for s in 0..128 {
            assert_eq!(native[s] as f64, want[s], "{what}: mma_e4m3, slot {s}");
            assert_eq!(lowered[s].to_bits(), native[s].to_bits(), "{what}: by bf16, slot {s}");
        }
    };
    // Small integers −8 ..= 8, all exact in e4m3; sums of 32 products of at most 64 are exact in f32.
    let int = |i: usize| E4M3Fn.encode_saturating(((i * 7 + i / 5) % 17) as f32 - 8.0);
    let a: Vec<u8> = (0..512).map(int).collect();
    let b: Vec<u8> = (0..256).map(|i| int(i * 3 + 1)).collect();
    check("integers", &a, &b);
    // Every code but the two NaNs (0 instead: a NaN would poison its row's zero products), twice over.
    let a: Vec<u8> = (0..512).map(|i| if E4M3Fn.is_nan_code(i as u8) { 0 } else { i as u8 }).collect();
    for pass in 0..4 {
        let mut b = vec![0u8; 256];
        for col in 0..8 {
            b[col * 32 + col + 8 * pass] = E4M3Fn.encode_saturating(1.0);
        }
        check(&format!("codes, one-hot pass {pass}"), &a, &b);
    }
    rt.free(a_buf, 512);
    rt.free(b_buf, 256);
    rt.free(out_buf, 1024);
}
