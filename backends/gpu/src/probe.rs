//! The tile layer's layout probe (`kernels/cuda/mma_probe.cu`): one warp runs mma.cuh's operations on
//! small-integer matrices, where every product and sum is exact in f32, and each value a lane writes is
//! compared with what the vendor's fragment tables say it must be. The tables are written out here
//! again, element by element as the PTX ISA gives them ("Matrix Fragments for mma.m16n8k16 / m16n8k32")
//! and as AMD gives v_mfma_f32_16x16x16bf16_1k's and v_mfma_f32_16x16x32_fp8_fp8's (the matrix instruction
//! calculator: D[4·(lane / 16) + i][lane % 16] in register i for both), and the products are plain host
//! loops over the integers, whose FP8 codes (e4m3fn, and e4m3fnuz for gfx94x's FP8 MFMA) are encoded here
//! by `dsv3_core::fp8`: nothing is taken from the emulator,
//! so a GPU (`dsv3 probe`, the first step of ci/device-check.sh) and the emulator (the tests, at warp 32
//! and 64) are both held to the vendor's tables, bit for bit.
//!
//! What a probe can see of an operand layout is which row of A and which column of B each lane's
//! registers carry, and that A and B agree on K's order within a lane (both multiply in one instruction):
//! a permutation of K applied to both leaves every output unchanged on any hardware, so it needs no check.

use crate::kernels::{self, Variant};
use crate::launch::Params;
use crate::runtime::{Dims, Runtime, Target};
use dsv3_core::fp8::Fp8Format;
use dsv3_core::{Error, Result};
use std::fmt;

/// How one of the probe's results compared.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub name: &'static str,
    /// Values compared (0 when skipped).
    pub checked: usize,
    /// The first few values that differ, described; `wrong` counts them all.
    pub examples: Vec<String>,
    pub wrong: usize,
    /// Why it was not run here (e4m3 before sm_89; mma.sync's results on AMD; e4m3fnuz on NVIDIA).
    pub skipped: Option<&'static str>,
}

impl Outcome {
    /// A result not run on this target, and why.
    fn skipped(name: &'static str, why: &'static str) -> Outcome {
        Outcome { name, checked: 0, examples: Vec::new(), wrong: 0, skipped: Some(why) }
    }
}

/// The probe's outcome on one target.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub target: String,
    pub outcomes: Vec<Outcome>,
}

impl Report {
    /// Every result that ran matched the ISA.
    pub fn passed(&self) -> bool {
        self.outcomes.iter().all(|o| o.wrong == 0)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "mma layout probe on {}", self.target)?;
        for o in &self.outcomes {
            match o.skipped {
                Some(why) => writeln!(f, "  {:<44} skipped: {why}", o.name)?,
                None if o.wrong == 0 => writeln!(f, "  {:<44} ok ({} values)", o.name, o.checked)?,
                None => {
                    writeln!(f, "  {:<44} WRONG: {} of {} values", o.name, o.wrong, o.checked)?;
                    for e in &o.examples {
                        writeln!(f, "      {e}")?;
                    }
                }
            }
        }
        write!(
            f,
            "{}",
            if self.passed() {
                "layouts match the vendor's tables"
            } else {
                "LAYOUTS DIFFER from the vendor's tables"
            }
        )
    }
}

/// The ISA's accumulator table (C / D of m16n8k16 and m16n8k32 alike): slot i of `lane` is row
/// groupID (i < 2) or groupID + 8, column threadID_in_group · 2 + (i & 1).
pub fn isa_acc(lane: usize, i: usize) -> (usize, usize) {
    let (group, thread) = (lane >> 2, lane % 4);
    (if i < 2 { group } else { group + 8 }, thread * 2 + (i & 1))
}

/// AMD's accumulator table for v_mfma_f32_16x16x16bf16_1k and v_mfma_f32_16x16x32_fp8_fp8 (wave64):
/// register i of `lane` is row 4 · (lane / 16) + i, column lane % 16.
pub fn amd_acc(lane: usize, i: usize) -> (usize, usize) {
    (4 * (lane / 16) + i, lane % 16)
}

/// The warp tile's slot `s` of `lane` (16 × 16 of C): on NVIDIA (warp 32) two m16n8 tiles side by side,
/// slot s in n-tile s / 4 at the ISA's slot s % 4; on AMD (warp 64) one MFMA's accumulator.
fn tile_acc(warp: u32, lane: usize, s: usize) -> (usize, usize) {
    if warp == 32 {
        let (row, col) = isa_acc(lane, s % 4);
        (row, col + 8 * (s / 4))
    } else {
        amd_acc(lane, s)
    }
}

/// Small integers in −4..=4, a fixed function of the index and a seed.
fn small(index: usize, seed: u32) -> i32 {
    let h = (index as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503));
    ((h >> 13) % 9) as i32 - 4
}

/// The probe's operands as integers: A [16][16], B as Bᵀ [16 n][16 k], A8 [16][32], B8ᵀ [16 n][32 k] (the
/// mma.sync part uses its first 8 rows).
struct Operands {
    a: Vec<i32>,
    bt: Vec<i32>,
    a8: Vec<i32>,
    bt8: Vec<i32>,
}

impl Operands {
    fn new() -> Operands {
        Operands {
            a: (0..256).map(|i| small(i, 1)).collect(),
            bt: (0..256).map(|i| small(i, 2)).collect(),
            a8: (0..512).map(|i| small(i, 3)).collect(),
            bt8: (0..512).map(|i| small(i, 4)).collect(),
        }
    }
}

fn bf16_bytes(values: impl Iterator<Item = i32>) -> Vec<u8> {
    // Small integers are exact in bf16: the high half of their f32 bits.
    values.flat_map(|v| (((v as f32).to_bits() >> 16) as u16).to_le_bytes()).collect()
}

/// Small integers as FP8 codes of `format` (exact: −4..=4 is in every format's range and precision).
fn fp8_bytes(values: &[i32], format: Fp8Format) -> Vec<u8> {
    values.iter().map(|&v| format.encode_saturating(v as f32)).collect()
}

/// Compares `got` with `want` for one result, describing the first few differences with `place(index)`.
fn compare<T: PartialEq + fmt::Debug>(
    name: &'static str,
    got: &[T],
    want: &[T],
    place: impl Fn(usize) -> String,
) -> Outcome {
    let wrong: Vec<usize> = (0..want.len()).filter(|&i| got[i] != want[i]).collect();
    let examples = wrong
        .iter()
        .take(6)
        .map(|&i| format!("{}: got {:?}, want {:?}", place(i), got[i], want[i]))
        .collect();
    Outcome { name, checked: want.len(), examples, wrong: wrong.len(), skipped: None }
}

/// Runs the probe on `rt` (a CUDA device from sm_80, an AMD gfx90a / gfx94x, or the emulator at warp 32 or
/// 64) and compares.
pub fn run(rt: &dyn Runtime) -> Result<Report> {
    run_kernel(rt, kernels::MMA_PROBE)
}

/// [`run`] with another build of the probe kernel (the tests plant layout errors in mma.cuh).
pub fn run_kernel(rt: &dyn Runtime, kernel: kernels::Kernel) -> Result<Report> {
    let target = rt.target().clone();
    if !target.mma_bf16() {
        return Err(Error::unsupported(
            rt.backend(),
            "mma_probe",
            format!("{} has no tile layer (mma.sync or MFMA)", target.arch()),
        ));
    }
    let ops = Operands::new();
    // The k-major copy of B: bk[k][n] = bt[n][k].
    let bk: Vec<i32> = (0..256).map(|i| ops.bt[(i % 16) * 16 + i / 16]).collect();
    let inputs = [
        bf16_bytes(ops.a.iter().copied()),
        bf16_bytes(ops.bt.iter().copied()),
        bf16_bytes(bk.into_iter()),
        fp8_bytes(&ops.a8, Fp8Format::E4M3Fn),
        fp8_bytes(&ops.bt8, Fp8Format::E4M3Fn),
        fp8_bytes(&ops.a8, Fp8Format::E4M3Fnuz),
        fp8_bytes(&ops.bt8, Fp8Format::E4M3Fnuz),
    ];
    const POS: usize = (32 * 4 * 2 + 1) * 4;
    const OUT: usize = 5 * 32 * 4 * 4;
    const TILE_POS: usize = (256 * 2 + 1) * 4;
    const TILE_OUT: usize = 5 * 256 * 4;
    let f = rt.compile("mma_probe", &Variant::new(kernel))?;
    let queue = rt.new_queue()?;
    let mut addrs = Vec::new();
    let result = (|| {
        for bytes in &inputs {
            let addr = rt.alloc(bytes.len())?;
            addrs.push((addr, bytes.len()));
            queue.upload(addr, bytes)?;
        }
        for bytes in [POS, OUT, TILE_POS, TILE_OUT] {
            addrs.push((rt.alloc(bytes)?, bytes));
        }
        let params = addrs.iter().fold(Params::new(), |p, &(a, _)| p.addr(a));
        queue.launch(
            "mma_probe",
            &f,
            Dims { grid: [1, 1, 1], block: target.warp(), shared: 0 },
            &params.0,
        )?;
        queue.sync()?;
        let mut outputs = [vec![0u8; POS], vec![0u8; OUT], vec![0u8; TILE_POS], vec![0u8; TILE_OUT]];
        for (bytes, &(addr, _)) in outputs.iter_mut().zip(&addrs[inputs.len()..]) {
            queue.download(addr, bytes)?;
        }
        queue.sync()?;
        Ok(outputs)
    })();
    for (addr, bytes) in addrs {
        rt.free(addr, bytes);
    }
    let [pos, out, tile_pos, tile_out] = result?.map(|bytes| {
        bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect::<Vec<u32>>()
    });
    let as_i32 = |v: Vec<u32>| v.into_iter().map(|w| w as i32).collect::<Vec<i32>>();
    let mut outcomes = if target.warp() == 32 {
        compare_all(&ops, &as_i32(pos), &out, target.mma_e4m3())
    } else {
        NVIDIA_RESULTS.iter().map(|&name| Outcome::skipped(name, "mma.sync, ldmatrix: NVIDIA only")).collect()
    };
    outcomes.extend(compare_tile(&ops, &target, &as_i32(tile_pos), &tile_out));
    Ok(Report { target: format!("{} ({})", target.arch(), rt.backend()), outcomes })
}

/// The NVIDIA-only results, in order.
const NVIDIA_RESULTS: [&str; 6] = [
    "acc_row / acc_col",
    "bf16 A·B, n 0..7 (ldmatrix.x4)",
    "bf16 A·B, n 8..15 (ldmatrix.x4, second tile)",
    "bf16 A·B + C (ldmatrix.x4.trans)",
    "bf16 A·B (fragments through registers)",
    "e4m3 A8·B8, K = 32 (ldmatrix A, registers B)",
];

/// D[row][n] = Σ_k a[row][k] · bt[n][k] over the first `k` of rows `pitch` long, plus `c`, as f32 bits.
fn dot(a: &[i32], bt: &[i32], pitch: usize, k: usize, row: usize, n: usize, c: i32) -> u32 {
    let sum: i32 = (0..k).map(|kk| a[row * pitch + kk] * bt[n * pitch + kk]).sum();
    ((sum + c) as f32).to_bits()
}

/// The warp tile's results (both vendors): slot places by [`tile_acc`], products by plain loops; the
/// e4m3fnuz product on AMD only.
fn compare_tile(ops: &Operands, target: &Target, pos: &[i32], out: &[u32]) -> Vec<Outcome> {
    let warp = target.warp();
    let slots = 256 / warp as usize;
    let place = |i: usize| (i / slots, i % slots);
    // Then the flag saying whether the FP8 MFMA was compiled in, which must be what the chip offers.
    let want_pos: Vec<i32> = (0..256)
        .flat_map(|i| {
            let (row, col) = tile_acc(warp, i / slots, i % slots);
            [row as i32, col as i32]
        })
        .chain([target.mfma_fp8_fnuz() as i32])
        .collect();
    let mut outcomes = vec![compare("tile_row / tile_col", pos, &want_pos, |i| match i {
        512 => "whether gfx94x's FP8 MFMA is compiled in".into(),
        _ => {
            let (lane, s) = place(i / 2);
            format!("lane {lane} slot {s} {}", if i % 2 == 0 { "row" } else { "col" })
        }
    })];
    let at = |i: usize| tile_acc(warp, i / slots, i % slots);
    let results: [(&'static str, Vec<u32>); 4] = [
        ("tile bf16 A·B", (0..256).map(|i| dot(&ops.a, &ops.bt, 16, 16, at(i).0, at(i).1, 0)).collect()),
        (
            "tile bf16 A·B + C",
            (0..256).map(|i| dot(&ops.a, &ops.bt, 16, 16, at(i).0, at(i).1, i as i32)).collect(),
        ),
        (
            "tile e4m3 A8·B8, K = 32",
            (0..256).map(|i| dot(&ops.a8, &ops.bt8, 32, 32, at(i).0, at(i).1, 0)).collect(),
        ),
        (
            "tile bf16 A · e4m3 B8 decoded",
            (0..256)
                .map(|i| {
                    let (row, n) = at(i);
                    let sum: i32 = (0..16).map(|k| ops.a[row * 16 + k] * ops.bt8[n * 32 + k]).sum();
                    (sum as f32).to_bits()
                })
                .collect(),
        ),
    ];
    let slot = |i: usize| {
        let (lane, s) = place(i);
        format!("lane {lane} slot {s}")
    };
    for (r, (name, want)) in results.into_iter().enumerate() {
        outcomes.push(compare(name, &out[r * 256..(r + 1) * 256], &want, slot));
    }
    // The same integers as e4m3fnuz codes: the FP8 MFMA on gfx94x (its table: amd_acc), decoded on gfx90a.
    let name = "tile e4m3fnuz A8·B8, K = 32";
    if warp == 64 {
        let want: Vec<u32> = (0..256).map(|i| dot(&ops.a8, &ops.bt8, 32, 32, at(i).0, at(i).1, 0)).collect();
        outcomes.push(compare(name, &out[4 * 256..5 * 256], &want, slot));
    } else {
        outcomes.push(Outcome::skipped(name, "e4m3fnuz: AMD only"));
    }
    outcomes
}

fn compare_all(ops: &Operands, pos: &[i32], out: &[u32], e4m3: bool) -> Vec<Outcome> {
    let slot = |i: usize| format!("lane {} slot {}", (i / 4) % 32, i % 4);
    // Then the flag saying whether e4m3 mma ran, which must be what the architecture offers.
    let want_pos: Vec<i32> = (0..128)
        .flat_map(|i| {
            let (r, c) = isa_acc(i / 4, i % 4);
            [r as i32, c as i32]
        })
        .chain([e4m3 as i32])
        .collect();
    let mut outcomes = vec![compare(NVIDIA_RESULTS[0], pos, &want_pos, |i| match i {
        256 => "whether e4m3 mma ran".into(),
        _ => format!("lane {} slot {} {}", i / 8, (i / 2) % 4, if i % 2 == 0 { "row" } else { "col" }),
    })];
    // D = A·B (+ C) at the slots of the ISA table, for the columns n0 .. n0 + 7; f32 bits.
    let product = |k: usize, a: &[i32], bt: &[i32], n0: usize, c: &dyn Fn(usize) -> i32| -> Vec<u32> {
        (0..128)
            .map(|i| {
                let (row, col) = isa_acc(i / 4, i % 4);
                dot(a, bt, k, k, row, n0 + col, c(i))
            })
            .collect()
    };
    let none = |_: usize| 0;
    let lane_slot = |i: usize| i as i32;
    let results = [
        product(16, &ops.a, &ops.bt, 0, &none),
        product(16, &ops.a, &ops.bt, 8, &none),
        product(16, &ops.a, &ops.bt, 0, &lane_slot),
        product(16, &ops.a, &ops.bt, 0, &none),
    ];
    for (r, want) in results.iter().enumerate() {
        outcomes.push(compare(NVIDIA_RESULTS[r + 1], &out[r * 128..(r + 1) * 128], want, slot));
    }
    let name = NVIDIA_RESULTS[5];
    if e4m3 {
        outcomes.push(compare(name, &out[512..640], &product(32, &ops.a8, &ops.bt8, 0, &none), slot));
    } else {
        outcomes.push(Outcome::skipped(name, "no e4m3 mma before sm_89"));
    }
    outcomes
}
