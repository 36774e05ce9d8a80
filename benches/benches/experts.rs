//! The routed experts of one decode step on the CPU: the grouped launch (`Grouping::Auto`: every
//! decode-sized expert in one parallel pass) against one GEMM per expert (`Grouping::PerExpert`, the
//! previous schedule), side by side in one process, alternated call by call, median of the rounds.
//!
//! Shapes are DeepSeek-V3's routed experts: gate and up `[2048, 7168]`, down `[7168, 2048]`, `experts`
//! experts per launch (default 8: one token's top-8 of 256), `rows` rows per expert (`rows` tokens all
//! routed to the same experts: the most weight reuse a batch can have; a batch of 4 tokens routed to 32
//! distinct experts is `experts = 32, rows = 1`), bf16 activations and output, block-FP8 (e4m3fn, 128×128
//! scales) or bf16 weights. Each matrix kind has `ceil(24 / experts)` sets of experts (distinct copies,
//! at least 24 experts) used in turn, so that between two uses of one set the other launches read ≥ 1 GB
//! (FP8; bf16: 2 GB), several times the large shared L3: the weights come from DRAM.
//!
//! The memory read bandwidth is measured in the same process before the timings; "% of bw" is the
//! launch's weight bytes over its time, divided by it.
//!
//! `DSV3_BENCH_EXPERT_ROWS=1,4` (the default) picks the rows per expert, `DSV3_BENCH_EXPERTS=8` (the
//! default) the experts per launch, `DSV3_BENCH_EXPERT_ROUNDS=15` (the default) the rounds.

use std::hint::black_box;
use std::time::{Duration, Instant};

use dsv3_backend_cpu::fast::gemm::{gemm_grouped_scheduled, kernel_name, Group, Grouping, Lhs, Out, Rhs};
use dsv3_backend_cpu::fast::peak::measure_memory_bandwidth;
use dsv3_benches::Rng;
use dsv3_core::fp8::Fp8Format;
use half::bf16;

const HIDDEN: usize = 7168;
const INTER: usize = 2048;
const FMT: Fp8Format = Fp8Format::E4M3Fn;
/// Experts per matrix kind in the pool, at least (in whole sets of one launch's experts).
const POOL: usize = 24;

/// One expert's weights of one matrix kind: FP8 codes and scales, or bf16.
#[derive(Clone)]
enum Expert {
    Fp8(Vec<u8>, Vec<f32>),
    Bf16(Vec<bf16>),
}

impl Expert {
    fn new(rng: &mut Rng, n: usize, k: usize, fp8: bool) -> Self {
        if fp8 {
            // Random finite e4m3fn codes (0x7F and 0xFF are NaN) and scales of a typical magnitude.
            let q = (0..n * k).map(|_| (rng.u64() as u8) & 0xFE).collect();
            let s = (0..n.div_ceil(128) * k.div_ceil(128)).map(|_| 1e-3 * (1.0 + rng.f32().abs())).collect();
            Expert::Fp8(q, s)
        } else {
            Expert::Bf16((0..n * k).map(|_| bf16::from_f32(rng.f32() * 0.05)).collect())
        }
    }

    fn rhs(&self) -> Rhs<'_> {
        match self {
            Expert::Fp8(q, s) => Rhs::BlockFp8 { codes: q, scales: s, format: FMT },
            Expert::Bf16(h) => Rhs::Bf16(h),
        }
    }
}

/// The experts of one matrix kind: sets of `experts` (copies: distinct addresses, same values).
struct Matrix {
    name: &'static str,
    n: usize,
    k: usize,
    experts: usize,
    pool: Vec<Expert>,
}

impl Matrix {
    fn new(rng: &mut Rng, name: &'static str, n: usize, k: usize, experts: usize, fp8: bool) -> Self {
        let copies = POOL.div_ceil(experts) * experts;
        Matrix { name, n, k, experts, pool: vec![Expert::new(rng, n, k, fp8); copies] }
    }

    /// The 8 experts of this matrix's `i`-th launch, one group of `rows` rows each.
    fn groups(&self, i: usize, rows: usize) -> Vec<Group<'_>> {
        let set = i % (self.pool.len() / self.experts);
        (0..self.experts)
            .map(|e| Group { lo: e * rows, hi: (e + 1) * rows, b: self.pool[set * self.experts + e].rhs() })
            .collect()
    }

    fn bytes(&self) -> f64 {
        let size = if matches!(self.pool[0], Expert::Fp8(..)) { 1 } else { 2 };
        (self.experts * self.n * self.k * size) as f64
    }
}

fn env_list(name: &str, default: &str) -> Vec<usize> {
    let v = std::env::var(name).unwrap_or_else(|_| default.into());
    v.split(',')
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("{name}: `{s}` is not a number")))
        .collect()
}

fn median(mut t: Vec<f64>) -> f64 {
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let bw = measure_memory_bandwidth(Duration::from_millis(1500));
    println!(
        "kernel: {} | threads: {} | measured memory read bandwidth {:.2} GB/s",
        kernel_name(),
        rayon::current_num_threads(),
        bw / 1e9
    );
    let rounds = env_list("DSV3_BENCH_EXPERT_ROUNDS", "15")[0];
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let rows_list = env_list("DSV3_BENCH_EXPERT_ROWS", "1,4");
    let width = HIDDEN.max(INTER);
    let experts = env_list("DSV3_BENCH_EXPERTS", "8")[0];
    assert!(experts > 0, "DSV3_BENCH_EXPERTS: at least one expert");
    println!("{experts} experts per launch, V3 shapes: gate / up 2048x7168, down 7168x2048; {rounds} rounds");
    let a: Vec<bf16> = (0..experts * 16 * width).map(|_| bf16::from_f32(rng.f32())).collect();
    let mut c = vec![bf16::ZERO; experts * 16 * width];
    println!(
        "{:>5} {:>5} {:>5} {:>11} {:>11} {:>7} {:>9} {:>9}",
        "rows", "wt", "mat", "per-expert", "grouped", "ratio", "GB/s", "% of bw"
    );
    for fp8 in [true, false] {
        let wt = if fp8 { "fp8" } else { "bf16" };
        // One weight type at a time: the pools of both would hold 3 GB.
        let mats = [
            Matrix::new(&mut rng, "gate", INTER, HIDDEN, experts, fp8),
            Matrix::new(&mut rng, "up", INTER, HIDDEN, experts, fp8),
            Matrix::new(&mut rng, "down", HIDDEN, INTER, experts, fp8),
        ];
        for &rows in &rows_list {
            assert!((1..=16).contains(&rows), "DSV3_BENCH_EXPERT_ROWS: {rows} is outside 1..=16");
            let mut uses = [0usize; 3];
            let mut step = [Vec::new(), Vec::new()];
            let mut per_mat = vec![[Vec::new(), Vec::new()]; mats.len()];
            // A warm-up round, then alternated rounds: per expert, grouped, per expert, … each launch on
            // the next set of its matrix.
            for round in 0..=rounds {
                for (s, grouping) in [Grouping::PerExpert, Grouping::Auto].into_iter().enumerate() {
                    let mut total = 0.0;
                    for (mi, mat) in mats.iter().enumerate() {
                        let groups = mat.groups(uses[mi], rows);
                        uses[mi] += 1;
                        let lhs = Lhs::Bf16 { data: &a, lda: mat.k };
                        let out = Out::Bf16 { data: &mut c, ldc: mat.n };
                        let t = Instant::now();
                        gemm_grouped_scheduled(grouping, mat.n, mat.k, lhs, &groups, out);
                        black_box(&c);
                        let dt = t.elapsed().as_secs_f64();
                        total += dt;
                        if round > 0 {
                            per_mat[mi][s].push(dt);
                        }
                    }
                    if round > 0 {
                        step[s].push(total);
                    }
                }
            }
            let line = |name: &str, bytes: f64, t: &[Vec<f64>; 2]| {
                let (pe, gr) = (median(t[0].clone()), median(t[1].clone()));
                println!(
                    "{rows:>5} {wt:>5} {name:>5} {:>8.3} ms {:>8.3} ms {:>6.2}x {:>9.1} {:>8.1}%",
                    pe * 1e3,
                    gr * 1e3,
                    pe / gr,
                    bytes / gr / 1e9,
                    100.0 * bytes / gr / bw
                );
            };
            for (mat, t) in mats.iter().zip(&per_mat) {
                line(mat.name, mat.bytes(), t);
            }
            line("step", mats.iter().map(Matrix::bytes).sum(), &step);
        }
    }
}
