//! The tile layer's layout probe (`kernels/cuda/mma_probe.cu`): one warp runs mma.cuh's operations on
//! small-integer matrices, where every product and sum is exact in f32, and each value a lane writes is
//! compared with what the PTX ISA's fragment tables say it must be. The tables are written out here
//! again, element by element as the ISA gives them ("Matrix Fragments for mma.m16n8k16 / m16n8k32"), and the
//! products are plain host loops: nothing is taken from the emulator, so a GPU (`dsv3 probe`, the first
//! step of ci/device-check.sh) and the emulator (the tests) are both held to the ISA, bit for bit.

use crate::kernels::{self, Variant};
use crate::launch::Params;
use crate::runtime::{Dims, Runtime};
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
    /// Why it was not run here (e4m3 before sm_89).
    pub skipped: Option<&'static str>,
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
            if self.passed() { "layouts match the PTX ISA" } else { "LAYOUTS DIFFER from the PTX ISA" }
        )
    }
}

/// The ISA's accumulator table (C / D of m16n8k16 and m16n8k32 alike): slot i of `lane` is row
/// groupID (i < 2) or groupID + 8, column threadID_in_group · 2 + (i & 1).
pub fn isa_acc(lane: usize, i: usize) -> (usize, usize) {
    let (group, thread) = (lane >> 2, lane % 4);
    (if i < 2 { group } else { group + 8 }, thread * 2 + (i & 1))
}

/// Small integers in −4..=4, a fixed function of the index and a seed.
fn small(index: usize, seed: u32) -> i32 {
    let h = (index as u32).wrapping_mul(2654435761).wrapping_add(seed.wrapping_mul(40503));
    ((h >> 13) % 9) as i32 - 4
}

/// The probe's operands as integers: A [16][16], B as Bᵀ [16 n][16 k], A8 [16][32], B8ᵀ [8 n][32 k].
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
            bt8: (0..256).map(|i| small(i, 4)).collect(),
        }
    }
}

fn bf16_bytes(values: impl Iterator<Item = i32>) -> Vec<u8> {
    // Small integers are exact in bf16: the high half of their f32 bits.
    values.flat_map(|v| (((v as f32).to_bits() >> 16) as u16).to_le_bytes()).collect()
}

fn e4m3_bytes(values: &[i32]) -> Vec<u8> {
    values.iter().map(|&v| Fp8Format::E4M3Fn.encode_saturating(v as f32)).collect()
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

/// Runs the probe on `rt` (a CUDA device from sm_80, or the emulator at warp 32) and compares.
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
            format!("{} has no mma.sync", target.arch()),
        ));
    }
    let ops = Operands::new();
    // The k-major copy of B: bk[k][n] = bt[n][k].
    let bk: Vec<i32> = (0..256).map(|i| ops.bt[(i % 16) * 16 + i / 16]).collect();
    let inputs = [
        bf16_bytes(ops.a.iter().copied()),
        bf16_bytes(ops.bt.iter().copied()),
        bf16_bytes(bk.into_iter()),
        e4m3_bytes(&ops.a8),
        e4m3_bytes(&ops.bt8),
    ];
    const POS: usize = (32 * 4 * 2 + 1) * 4;
    const OUT: usize = 5 * 32 * 4 * 4;
    let f = rt.compile("mma_probe", &Variant::new(kernel))?;
    let queue = rt.new_queue()?;
    let mut addrs = Vec::new();
    let result = (|| {
        for bytes in &inputs {
            let addr = rt.alloc(bytes.len())?;
            addrs.push((addr, bytes.len()));
            queue.upload(addr, bytes)?;
        }
        for bytes in [POS, OUT] {
            addrs.push((rt.alloc(bytes)?, bytes));
        }
        let params = addrs.iter().fold(Params::new(), |p, &(a, _)| p.addr(a));
        queue.launch("mma_probe", &f, Dims { grid: [1, 1, 1], block: 32 }, &params.0)?;
        queue.sync()?;
        let (mut pos, mut out) = (vec![0u8; POS], vec![0u8; OUT]);
        queue.download(addrs[5].0, &mut pos)?;
        queue.download(addrs[6].0, &mut out)?;
        queue.sync()?;
        Ok((pos, out))
    })();
    for (addr, bytes) in addrs {
        rt.free(addr, bytes);
    }
    let (pos, out) = result?;
    let pos: Vec<i32> = pos.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect();
    let out: Vec<u32> = out.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect();
    let outcomes = compare_all(&ops, &pos, &out, target.mma_e4m3());
    Ok(Report { target: format!("{} ({})", target.arch(), rt.backend()), outcomes })
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
    let mut outcomes = vec![compare("acc_row / acc_col", pos, &want_pos, |i| match i {
        256 => "whether e4m3 mma ran".into(),
        _ => format!("lane {} slot {} {}", i / 8, (i / 2) % 4, if i % 2 == 0 { "row" } else { "col" }),
    })];
    // D = A·B (+ C) at the slots of the ISA table, for the columns n0 .. n0 + 7; f32 bits.
    let product = |k: usize, a: &[i32], bt: &[i32], n0: usize, c: &dyn Fn(usize) -> i32| -> Vec<u32> {
        (0..128)
            .map(|i| {
                let (row, col) = isa_acc(i / 4, i % 4);
                let n = n0 + col;
                let sum: i32 = (0..k).map(|kk| a[row * k + kk] * bt[n * k + kk]).sum();
                ((sum + c(i)) as f32).to_bits()
            })
            .collect()
    };
    let none = |_: usize| 0;
    let lane_slot = |i: usize| i as i32;
    let results: [(&'static str, Vec<u32>); 4] = [
        ("bf16 A·B, n 0..7 (ldmatrix.x4)", product(16, &ops.a, &ops.bt, 0, &none)),
        ("bf16 A·B, n 8..15 (ldmatrix.x4, second tile)", product(16, &ops.a, &ops.bt, 8, &none)),
        ("bf16 A·B + C (ldmatrix.x4.trans)", product(16, &ops.a, &ops.bt, 0, &lane_slot)),
        ("bf16 A·B (fragments through registers)", product(16, &ops.a, &ops.bt, 0, &none)),
    ];
    for (r, (name, want)) in results.iter().enumerate() {
        outcomes.push(compare(name, &out[r * 128..(r + 1) * 128], want, slot));
    }
    let name = "e4m3 A8·B8, K = 32 (ldmatrix A, registers B)";
    if e4m3 {
        outcomes.push(compare(name, &out[512..640], &product(32, &ops.a8, &ops.bt8, 0, &none), slot));
    } else {
        outcomes.push(Outcome {
            name,
            checked: 0,
            examples: Vec::new(),
            wrong: 0,
            skipped: Some("no e4m3 mma before sm_89"),
        });
    }
    outcomes
}
