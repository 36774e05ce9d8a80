//! Machine peaks for "% of peak" reports: f32 FMA and bf16 `vdpbf16ps` throughput and memory read
//! bandwidth, each measured with every thread of rayon's global pool. Other tenants share the machine:
//! compare ratios measured in one run.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rayon::prelude::*;

/// f32 FLOP/s (an FMA counts 2) of an FMA-throughput loop with 16 independent accumulators per thread
/// (AVX-512, AVX2+FMA or scalar, as the CPU allows), run on all rayon threads for about `duration`.
pub fn measure_fma_peak_f32(duration: Duration) -> f64 {
    let start = Instant::now();
    let flops: f64 = rayon::broadcast(|_| fma_loop(duration)).into_iter().sum();
    flops / start.elapsed().as_secs_f64()
}

/// bf16 FLOP/s of `vdpbf16ps`, what the AVX512-BF16 prefill kernel runs on (each instruction adds two
/// bf16 products to each of 16 f32 lanes: 64 FLOPs), with 16 independent accumulators per thread on all
/// rayon threads for about `duration`; `None` where the CPU lacks AVX512-BF16.
pub fn measure_dpbf16_peak(duration: Duration) -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16") {
        let start = Instant::now();
        // SAFETY: avx512f and avx512bf16 detected just above (every thread runs on this CPU).
        let flops: f64 = rayon::broadcast(|_| unsafe { x86::dpbf16_loop(duration) }).into_iter().sum();
        return Some(flops / start.elapsed().as_secs_f64());
    }
    let _ = duration;
    None
}

/// FLOPs done by one thread in about `duration`.
fn fma_loop(duration: Duration) -> f64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: avx512f detected just above.
            return unsafe { x86::fma_loop_avx512(duration) };
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: avx2 and fma detected just above.
            return unsafe { x86::fma_loop_avx2(duration) };
        }
    }
    let start = Instant::now();
    let mut acc = [1f32; 16];
    let mut flops = 0f64;
    while start.elapsed() < duration {
        for _ in 0..100_000 {
            for a in acc.iter_mut() {
                *a = *a * 0.999_999 + 1e-7;
            }
            acc = black_box(acc);
        }
        flops += 100_000.0 * 16.0 * 2.0;
    }
    black_box(acc);
    flops
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    const BATCH: usize = 1 << 20;

    /// # Safety
    /// Requires AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn fma_loop_avx512(duration: Duration) -> f64 {
        let start = Instant::now();
        let m = _mm512_set1_ps(0.999_999);
        let c = _mm512_set1_ps(1e-7);
        let mut acc = [_mm512_set1_ps(1.0); 16];
        let mut flops = 0f64;
        while start.elapsed() < duration {
            for _ in 0..BATCH {
                for a in acc.iter_mut() {
                    *a = _mm512_fmadd_ps(*a, m, c);
                }
            }
            acc = black_box(acc);
            flops += (BATCH * 16 * 16 * 2) as f64;
        }
        black_box(acc);
        flops
    }

    /// # Safety
    /// Requires AVX-512F and AVX512-BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn dpbf16_loop(duration: Duration) -> f64 {
        let start = Instant::now();
        // bf16 pairs of 1.0 and 2^-20: each step adds 2^-19 to every lane (no overflow in any run).
        // SAFETY (transmutes): `__m512bh` is 32 bf16 in the same 64 bytes as the integer vector.
        let a: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi16(0x3F80)) };
        let b: __m512bh = unsafe { std::mem::transmute(_mm512_set1_epi16(0x3580)) };
        let mut acc = [_mm512_setzero_ps(); 16];
        let mut flops = 0f64;
        while start.elapsed() < duration {
            for _ in 0..BATCH {
                for v in acc.iter_mut() {
                    *v = _mm512_dpbf16_ps(*v, a, b);
                }
            }
            acc = black_box(acc);
            flops += (BATCH * 16 * 64) as f64;
        }
        black_box(acc);
        flops
    }

    /// # Safety
    /// Requires AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn sum_words_avx2(c: &[u64]) -> u64 {
        const PF_WORDS: usize = super::PIECE_WORDS; // 2 KiB ahead, into L2, as the decode GEMMs prefetch
        let blocks = c.chunks_exact(16);
        let tail: u64 = blocks.remainder().iter().fold(0u64, |s, &x| s.wrapping_add(x));
        let mut acc = [_mm256_setzero_si256(); 4];
        for (i, b) in blocks.enumerate() {
            let p = b.as_ptr();
            // Prefetches never fault; `wrapping_add` keeps the address computation defined.
            let ahead = c.as_ptr().wrapping_add(i * 16 + PF_WORDS);
            _mm_prefetch::<_MM_HINT_T1>(ahead.cast());
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(8).cast());
            for (j, a) in acc.iter_mut().enumerate() {
                // SAFETY: `b` holds 16 u64 = four 32-byte vectors; j < 4.
                let v = unsafe { _mm256_loadu_si256(p.add(4 * j).cast()) };
                *a = _mm256_add_epi64(*a, v);
            }
        }
        let mut lanes = [0u64; 16];
        for (j, a) in acc.iter().enumerate() {
            // SAFETY: lanes[4j..4j+4] is 32 bytes inside `lanes`.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().add(4 * j).cast(), *a) };
        }
        lanes.iter().fold(tail, |s, &x| s.wrapping_add(x))
    }

    /// # Safety
    /// Requires AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_loop_avx2(duration: Duration) -> f64 {
        let start = Instant::now();
        let m = _mm256_set1_ps(0.999_999);
        let c = _mm256_set1_ps(1e-7);
        let mut acc = [_mm256_set1_ps(1.0); 12];
        let mut flops = 0f64;
        while start.elapsed() < duration {
            for _ in 0..BATCH {
                for a in acc.iter_mut() {
                    *a = _mm256_fmadd_ps(*a, m, c);
                }
            }
            acc = black_box(acc);
            flops += (BATCH * 12 * 8 * 2) as f64;
        }
        black_box(acc);
        flops
    }
}

/// Bytes/s read from a 1 GiB buffer (several times any last-level cache here) by all rayon threads,
/// each summing its own contiguous share as [`STREAMS`] interleaved streams: the fastest of the passes
/// run in about `duration` after one warm-up pass.
pub fn measure_memory_bandwidth(duration: Duration) -> f64 {
    const BYTES: usize = 1 << 30;
    let words = BYTES / 8;
    let mut buf = vec![0u64; words];
    let chunk = words.div_ceil(rayon::current_num_threads().max(1) * 4);
    buf.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| {
        for (j, w) in c.iter_mut().enumerate() {
            *w = (i * chunk + j) as u64;
        }
    });
    let pass =
        |buf: &[u64]| -> u64 { buf.par_chunks(chunk).map(sum_streams).reduce(|| 0, u64::wrapping_add) };
    black_box(pass(&buf));
    // The fastest pass, not the mean: a peak is what the machine can do, and on a shared machine a pass
    // that another tenant slowed down says nothing about that.
    let start = Instant::now();
    let mut fastest = f64::INFINITY;
    while fastest.is_infinite() || start.elapsed() < duration {
        let t = Instant::now();
        black_box(pass(black_box(&buf)));
        fastest = fastest.min(t.elapsed().as_secs_f64());
    }
    (words * 8) as f64 / fastest
}

/// Streams each thread reads at once. One sequential stream per core leaves bandwidth unused: on a Zen 3
/// VM (2026-12-07, idle) one stream read 31 GB/s, four 42 GB/s — what the decode GEMMs, which stream 4
/// weight rows per core, reach (f32 1×7168×7168: 42 GB/s). A peak below what a kernel reaches would
/// make every "% of peak" too kind; more streams (8, 16) were not faster.
const STREAMS: usize = 4;

/// Words each stream advances by in turn: 2 KiB, the prefetch distance of [`sum_words`] (the decode
/// GEMMs' distance and level since 2026-12-07: into L2, where L1's fill buffers do not bound the lines in
/// flight), so that each piece's prefetches land in the same stream's next piece.
const PIECE_WORDS: usize = 256;

/// Wrapping sum of `c`, read as [`STREAMS`] equal parts (plus a tail) interleaved [`PIECE_WORDS`] at a
/// time.
fn sum_streams(c: &[u64]) -> u64 {
    let part = c.len() / STREAMS;
    let (body, tail) = c.split_at(part * STREAMS);
    let parts: Vec<&[u64]> = body.chunks_exact(part.max(1)).collect();
    let mut sum = sum_words(tail);
    for start in (0..part).step_by(PIECE_WORDS) {
        let end = (start + PIECE_WORDS).min(part);
        for p in &parts {
            sum = sum.wrapping_add(sum_words(&p[start..end]));
        }
    }
    sum
}

/// Wrapping sum of `c`: a streaming read (with software prefetch on x86, like the GEMM decode kernels,
/// because the hardware streamer stops at 4 KiB page boundaries).
fn sum_words(c: &[u64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: avx2 detected just above.
            return unsafe { x86::sum_words_avx2(c) };
        }
    }
    let mut acc = [0u64; 8];
    for w in c.chunks_exact(8) {
        for (a, &x) in acc.iter_mut().zip(w) {
            *a = a.wrapping_add(x);
        }
    }
    let tail = c.chunks_exact(8).remainder().iter();
    acc.iter().chain(tail).fold(0u64, |s, &x| s.wrapping_add(x))
}

#[cfg(test)]
mod tests {
    /// The interleaved read covers every word once, whatever the length (shorter than the streams, a tail,
    /// pieces that do not divide a part).
    #[test]
    fn sum_streams_reads_every_word_once() {
        for len in [0, 1, 3, 4, 5, 127, 128, 513, 4 * 128 + 7, 10_000] {
            let words: Vec<u64> =
                (0..len as u64).map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7)).collect();
            let expected = words.iter().fold(0u64, |s, &x| s.wrapping_add(x));
            assert_eq!(super::sum_streams(&words), expected, "len {len}");
        }
    }

    /// The `vdpbf16ps` peak is measured exactly where the CPU has the instruction, and is a rate.
    #[test]
    fn dpbf16_peak_only_where_the_cpu_has_it() {
        #[cfg(target_arch = "x86_64")]
        let has = is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bf16");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        match super::measure_dpbf16_peak(std::time::Duration::from_millis(5)) {
            Some(flops) => assert!(has && flops.is_finite() && flops > 0.0, "{flops}"),
            None => assert!(!has),
        }
    }
}
