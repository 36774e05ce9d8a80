//! GEMM throughput: ours (f32, bf16 weights, block-FP8 weights, FP8×FP8) vs faer f32, side by side in one
//! run, plus a bandwidth group for the decode shapes (M ≤ 8). Prints the machine's measured FMA peak and
//! memory bandwidth first, and a summary table (median of interleaved rounds) at the end.
//!
//! Decode-shape weights rotate over enough copies (≥ 1 GiB) that every call streams them from DRAM, not
//! from the large shared L3.
//!
//! `DSV3_BENCH_GEMM_SHAPES=MxNxK[,MxNxK…]` replaces the shapes (benches/agree.sh times one shape here and
//! through `dsv3 bench --op gemm`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput};
use dsv3_backend_cpu::fast::gemm::{gemm, kernel_name, Lhs, Out, Rhs};
use dsv3_backend_cpu::fast::peak::{measure_fma_peak_f32, measure_memory_bandwidth};
use dsv3_benches::Rng;
use dsv3_core::fp8::{Fp8Format, Overflow};
use half::bf16;

const SHAPES: [(usize, usize, usize); 4] =
    [(512, 2048, 7168), (4096, 4096, 4096), (1, 2112, 7168), (4, 4096, 7168)];
const FMT: Fp8Format = Fp8Format::E4M3Fn;
const ROTATE_BYTES: usize = 1 << 30;

/// Quantizes `x` [rows, cols] with one scale per `bm`×128 block (bm = 128: weights; bm = 1: per token).
fn quantize(x: &[f32], rows: usize, cols: usize, bm: usize) -> (Vec<u8>, Vec<f32>) {
    let kb = cols.div_ceil(128);
    let mut scales = vec![0f32; rows.div_ceil(bm) * kb];
    for r in 0..rows {
        for c in 0..cols {
            let s = &mut scales[(r / bm) * kb + c / 128];
            *s = s.max(x[r * cols + c].abs());
        }
    }
    for s in scales.iter_mut() {
        *s = s.max(1e-4) / 448.0;
    }
    let codes = (0..rows * cols)
        .map(|i| FMT.encode(x[i] / scales[(i / cols / bm) * kb + i % cols / 128], Overflow::Saturate))
        .collect();
    (codes, scales)
}

struct Data {
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    aq: (Vec<u8>, Vec<f32>),
    /// Weight copies (one for prefill shapes, a rotation for decode shapes).
    bf: Vec<Vec<f32>>,
    bh: Vec<Vec<bf16>>,
    bq: Vec<(Vec<u8>, Vec<f32>)>,
}

fn copies(bytes: usize, decode: bool) -> usize {
    if decode {
        ROTATE_BYTES.div_ceil(bytes).max(2)
    } else {
        1
    }
}

impl Data {
    fn new(m: usize, n: usize, k: usize) -> Self {
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let a: Vec<f32> = (0..m * k).map(|_| rng.f32()).collect();
        let b: Vec<f32> = (0..n * k).map(|_| rng.f32() * 0.05).collect();
        let decode = m <= 8;
        let bh: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
        let bq = quantize(&b, n, k, 128);
        let aq = quantize(&a, m, k, 1);
        Data {
            m,
            n,
            k,
            a,
            aq,
            bf: vec![b; copies(n * k * 4, decode)],
            bh: vec![bh; copies(n * k * 2, decode)],
            bq: vec![bq; copies(n * k, decode)],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    FaerF32,
    OursF32,
    OursBf16W,
    OursFp8W,
    OursFp8xFp8,
}

impl Variant {
    const ALL: [Variant; 5] =
        [Variant::FaerF32, Variant::OursF32, Variant::OursBf16W, Variant::OursFp8W, Variant::OursFp8xFp8];
    fn name(self) -> &'static str {
        match self {
            Variant::FaerF32 => "faer_f32",
            Variant::OursF32 => "ours_f32",
            Variant::OursBf16W => "ours_bf16w",
            Variant::OursFp8W => "ours_fp8w",
            Variant::OursFp8xFp8 => "ours_fp8xfp8",
        }
    }
    fn weight_bytes(self) -> usize {
        match self {
            Variant::FaerF32 | Variant::OursF32 => 4,
            Variant::OursBf16W => 2,
            Variant::OursFp8W | Variant::OursFp8xFp8 => 1,
        }
    }
}

/// One call of `v` on weight copy `i % copies`.
fn run(v: Variant, d: &Data, c: &mut [f32], i: usize) {
    let (m, n, k) = (d.m, d.n, d.k);
    let out = Out::F32 { data: c, ldc: n };
    let lhs = Lhs::F32 { data: &d.a, lda: k };
    match v {
        Variant::FaerF32 => {
            let b = &d.bf[i % d.bf.len()];
            let a = faer::MatRef::from_row_major_slice(&d.a, m, k);
            let bt = faer::MatRef::from_row_major_slice(b, n, k).transpose();
            let cm = faer::MatMut::from_row_major_slice_mut(c, m, n);
            faer::linalg::matmul::matmul(cm, faer::Accum::Replace, a, bt, 1.0f32, faer::Par::rayon(0));
        }
        Variant::OursF32 => gemm(m, n, k, lhs, Rhs::F32(&d.bf[i % d.bf.len()]), out),
        Variant::OursBf16W => gemm(m, n, k, lhs, Rhs::Bf16(&d.bh[i % d.bh.len()]), out),
        Variant::OursFp8W => {
            let (q, s) = &d.bq[i % d.bq.len()];
            gemm(m, n, k, lhs, Rhs::BlockFp8 { codes: q, scales: s, format: FMT }, out)
        }
        Variant::OursFp8xFp8 => {
            let (q, s) = &d.bq[i % d.bq.len()];
            let lhs = Lhs::Fp8 { codes: &d.aq.0, lda: k, scales: &d.aq.1, format: FMT };
            gemm(m, n, k, lhs, Rhs::BlockFp8 { codes: q, scales: s, format: FMT }, out)
        }
    }
}

fn bench_shape(cr: &mut Criterion, d: &Data, summary: &mut Vec<String>, bw: f64) {
    let (m, n, k) = (d.m, d.n, d.k);
    let mut c = vec![0f32; m * n];
    let shape = format!("{m}x{n}x{k}");
    let big = m * n * k >= 1 << 35;
    {
        let mut g = cr.benchmark_group(format!("gemm/{shape}"));
        g.sample_size(10).warm_up_time(Duration::from_millis(if big { 500 } else { 300 }));
        g.measurement_time(Duration::from_secs(if big { 4 } else { 2 }));
        g.sampling_mode(SamplingMode::Flat);
        g.throughput(Throughput::Elements((2 * m * n * k) as u64));
        for v in Variant::ALL {
            let mut i = 0;
            g.bench_function(BenchmarkId::from_parameter(v.name()), |bch| {
                bch.iter(|| {
                    run(v, d, &mut c, i);
                    i += 1;
                    black_box(&c);
                })
            });
        }
        g.finish();
    }
    if m <= 8 {
        let mut g = cr.benchmark_group(format!("decode_bw/{shape}"));
        g.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        g.sampling_mode(SamplingMode::Flat);
        for v in Variant::ALL {
            g.throughput(Throughput::Bytes((n * k * v.weight_bytes()) as u64));
            let mut i = 0;
            g.bench_function(BenchmarkId::from_parameter(v.name()), |bch| {
                bch.iter(|| {
                    run(v, d, &mut c, i);
                    i += 1;
                    black_box(&c);
                })
            });
        }
        g.finish();
    }

    // Interleaved timing for the summary: rounds of one call per variant, median of the rounds.
    let rounds = if big {
        5
    } else if m <= 8 {
        31
    } else {
        9
    };
    let mut times = vec![Vec::new(); 5];
    let mut i = 0;
    for _ in 0..rounds {
        for (vi, v) in Variant::ALL.iter().enumerate() {
            let t = Instant::now();
            run(*v, d, &mut c, i);
            black_box(&c);
            times[vi].push(t.elapsed().as_secs_f64());
            i += 1;
        }
    }
    let best: Vec<f64> = times
        .iter_mut()
        .map(|t| {
            t.sort_by(f64::total_cmp);
            t[t.len() / 2]
        })
        .collect();
    let flops = 2.0 * (m * n * k) as f64;
    for (vi, v) in Variant::ALL.iter().enumerate() {
        let gf = flops / best[vi] / 1e9;
        let ratio = best[0] / best[vi];
        let wb = (n * k * v.weight_bytes()) as f64 / best[vi];
        summary.push(format!(
            "{shape:>16} {:>13} {:>9.3} ms {:>8.1} GFLOP/s {:>6.2}x faer {:>7.1} GB/s weights ({:>5.1}% of measured bw)",
            v.name(),
            best[vi] * 1e3,
            gf,
            ratio,
            wb / 1e9,
            100.0 * wb / bw
        ));
    }
}

/// `SHAPES`, or those `DSV3_BENCH_GEMM_SHAPES` names.
fn shapes() -> Vec<(usize, usize, usize)> {
    let Ok(list) = std::env::var("DSV3_BENCH_GEMM_SHAPES") else { return SHAPES.to_vec() };
    let parse = |s: &str| -> Option<(usize, usize, usize)> {
        let d: Vec<usize> = s.split('x').map(|d| d.parse().ok()).collect::<Option<_>>()?;
        (d.len() == 3 && d.iter().all(|&d| d > 0)).then(|| (d[0], d[1], d[2]))
    };
    list.split(',')
        .map(|s| parse(s.trim()).unwrap_or_else(|| panic!("DSV3_BENCH_GEMM_SHAPES: `{s}` is not MxNxK")))
        .collect()
}

fn benches(cr: &mut Criterion) {
    let peak = measure_fma_peak_f32(Duration::from_millis(500));
    let bw = measure_memory_bandwidth(Duration::from_millis(1500));
    println!(
        "kernel: {} | threads: {} | measured FMA peak {:.1} GFLOP/s | measured memory read bandwidth {:.2} GB/s ({:.2} GiB/s)",
        kernel_name(),
        rayon::current_num_threads(),
        peak / 1e9,
        bw / 1e9,
        bw / (1u64 << 30) as f64
    );
    let mut summary = Vec::new();
    for (m, n, k) in shapes() {
        let d = Data::new(m, n, k);
        bench_shape(cr, &d, &mut summary, bw);
    }
    println!(
        "\nSummary (median of interleaved rounds; peak {:.1} GFLOP/s, bw {:.2} GB/s):",
        peak / 1e9,
        bw / 1e9
    );
    for line in summary {
        println!("{line}");
    }
}

criterion_group!(gemm_benches, benches);
criterion_main!(gemm_benches);
