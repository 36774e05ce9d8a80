//! The host emulator itself, which every kernel test relies on:
//! * the number-format codecs of dsv3.cuh, bit-exact, through the `cast` op against `half` and dsv3-core's
//!   FP8 codec (every code / pattern decoded; an f32 sweep of every rounding boundary encoded), and the
//!   ue8m0 codec through a test-only kernel (`cast` does not take ue8m0);
//! * the scheduler's semantics through the Runtime API with test-only kernels: block barriers and warp
//!   shuffles at warp 32 and 64, the errors it must report instead of hanging, guard pages, atomics.
//!
//! The last group of tests pinned scheduler bugs found in review (a failed launch resumed by the next one,
//! overlapping fiber stacks, unmatched barrier sites, grids past the GPU limits, shuffles of types the GPU
//! targets lack); they fail on the emulator before its fix.

use dsv3_backend_gpu::emulator::{Emulator, EmulatorBackend};
use dsv3_backend_gpu::kernels::{Kernel, Variant};
use dsv3_backend_gpu::launch::Params;
use dsv3_backend_gpu::runtime::{Dims, Function, Runtime};
use dsv3_core::fp8::ue8m0;
use dsv3_core::ops::Cast;
use dsv3_core::{Backend, DType, Device, Error, Fp8Format, Op, Result, Tensor};
use half::{bf16, f16};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::sync::Arc;

// ---- helpers ---------------------------------------------------------------------------------------------

fn bytes_of_u32(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn bytes_of_u16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn u32s(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
}

/// Fails listing the first mismatches (as bits, with their inputs) when `got` and `want` differ anywhere.
fn assert_same_bits(what: &str, inputs: &[u32], got: &[u32], want: &[u32]) {
    assert_eq!(got.len(), want.len(), "{what}: output length");
    let bad: Vec<String> = (0..got.len())
        .filter(|&i| got[i] != want[i])
        .map(|i| format!("input {:#010x}: got {:#010x}, want {:#010x}", inputs[i], got[i], want[i]))
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} differ, first: {:#?}",
        bad.len(),
        got.len(),
        &bad[..bad.len().min(10)]
    );
}

/// xorshift64*: reproducible pseudo-random bits.
struct Rng(u64);

impl Rng {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    }
}

// ---- codecs through `cast` -------------------------------------------------------------------------------

fn cuda_emu() -> Arc<dyn Device> {
    EmulatorBackend::new(32).open(0).unwrap_or_else(|e| panic!("the emulator does not open: {e}"))
}

/// `input` (elements of `from`, as bytes) cast to `to` on `dev`: the output's bytes.
fn cast(dev: &Arc<dyn Device>, from: DType, to: DType, input: &[u8]) -> Result<Vec<u8>> {
    let n = input.len() / from.size();
    let x = dev.alloc(input.len())?;
    let out = dev.alloc(n * to.size())?;
    let stream = dev.default_stream();
    stream.upload(&x, 0, input)?;
    let op = Op::Cast(Cast {
        x: Tensor::contiguous(x, 0, &[n], from),
        out: Tensor::contiguous(out.clone(), 0, &[n], to),
    });
    stream.launch(&op)?;
    stream.sync()?;
    let mut bytes = vec![0; n * to.size()];
    stream.download(&out, 0, &mut bytes)?;
    Ok(bytes)
}

const FP8: [(Fp8Format, DType); 3] = [
    (Fp8Format::E4M3Fn, DType::F8E4M3Fn),
    (Fp8Format::E4M3Fnuz, DType::F8E4M3Fnuz),
    (Fp8Format::E5M2, DType::F8E5M2),
];

/// f32 bits with every NaN made one NaN, for comparisons where only NaN-ness is specified.
fn nan_as_nan(x: f32) -> u32 {
    if x.is_nan() {
        f32::NAN.to_bits()
    } else {
        x.to_bits()
    }
}

#[test]
fn every_fp8_code_decodes_exactly() {
    let dev = cuda_emu();
    let codes: Vec<u8> = (0..=255).collect();
    let inputs: Vec<u32> = codes.iter().map(|&c| c as u32).collect();
    for (format, dtype) in FP8 {
        let got = u32s(&cast(&dev, dtype, DType::F32, &codes).unwrap());
        let got: Vec<u32> = got.into_iter().map(|b| nan_as_nan(f32::from_bits(b))).collect();
        let want: Vec<u32> = codes.iter().map(|&c| nan_as_nan(format.decode(c))).collect();
        assert_same_bits(&format!("{} → f32", format.name()), &inputs, &got, &want);
    }
}

/// f32 bits with the quiet bit set on NaNs: `half` quiets a signalling f16 / bf16 NaN when widening it
/// (as x86's F16C does), dsv3.cuh passes its bits through (the cast contract only keeps NaN a NaN). Sign
/// and payload must still agree.
fn quieted(b: u32) -> u32 {
    if f32::from_bits(b).is_nan() {
        b | 0x0040_0000
    } else {
        b
    }
}

#[test]
fn every_f16_and_bf16_pattern_widens_exactly() {
    let dev = cuda_emu();
    let patterns: Vec<u16> = (0..=u16::MAX).collect();
    let inputs: Vec<u32> = patterns.iter().map(|&p| p as u32).collect();
    let bytes = bytes_of_u16(&patterns);
    for dtype in [DType::F16, DType::BF16] {
        let widen = |p: u16| match dtype {
            DType::F16 => f16::from_bits(p).to_f32(),
            _ => bf16::from_bits(p).to_f32(),
        };
        let got: Vec<u32> =
            u32s(&cast(&dev, dtype, DType::F32, &bytes).unwrap()).into_iter().map(quieted).collect();
        let want: Vec<u32> = patterns.iter().map(|&p| quieted(widen(p).to_bits())).collect();
        assert_same_bits(&format!("{} → f32", dtype.name()), &inputs, &got, &want);
    }
}

/// The targets an f32 is encoded to: mantissa bits, smallest normal exponent, largest finite value and the
/// midpoint above it (where rounding starts to overflow).
struct Target {
    dtype: DType,
    mantissa_bits: i32,
    min_exp: i32,
    max: f32,
    overflow: f32,
    encode: fn(f32) -> u32,
}

fn targets() -> [Target; 5] {
    [
        Target {
            dtype: DType::BF16,
            mantissa_bits: 7,
            min_exp: -126,
            max: bf16::MAX.to_f32(),
            overflow: f32::from_bits(0x7f7f_8000),
            encode: |x| bf16::from_f32(x).to_bits() as u32,
        },
        Target {
            dtype: DType::F16,
            mantissa_bits: 10,
            min_exp: -14,
            max: 65504.0,
            overflow: 65520.0,
            encode: |x| f16::from_f32(x).to_bits() as u32,
        },
        Target {
            dtype: DType::F8E4M3Fn,
            mantissa_bits: 3,
            min_exp: -6,
            max: 448.0,
            overflow: 464.0,
            encode: |x| Fp8Format::E4M3Fn.encode_saturating(x) as u32,
        },
        Target {
            dtype: DType::F8E4M3Fnuz,
            mantissa_bits: 3,
            min_exp: -7,
            max: 240.0,
            overflow: 248.0,
            encode: |x| Fp8Format::E4M3Fnuz.encode_saturating(x) as u32,
        },
        Target {
            dtype: DType::F8E5M2,
            mantissa_bits: 2,
            min_exp: -14,
            max: 57344.0,
            overflow: 61440.0,
            encode: |x| Fp8Format::E5M2.encode_saturating(x) as u32,
        },
    ]
}

/// f32 bit patterns that reach every rounding decision of every target: in every exponent (f32 subnormals
/// included), a tie at every bit position with a few mantissas above it, each ±1 ulp; each target's
/// subnormal grid in half quanta; its maximum and overflow midpoint ±1 ulp; zeros, infinities, NaNs with
/// payloads; and pseudo-random patterns. Both signs throughout.
fn encode_sweep() -> Vec<u32> {
    let mut v = Vec::new();
    for exp in 0..=254u32 {
        for s in 1..=23u32 {
            let top = (1u32 << (23 - s)) - 1;
            let mut uppers = vec![0, 1, 2, 3, top.saturating_sub(1), top];
            uppers.retain(|&j| j <= top);
            uppers.dedup();
            for j in uppers {
                let tie = (exp << 23) | (j << s) | (1 << (s - 1));
                v.extend([tie - 1, tie, tie + 1]);
            }
        }
    }
    let near =
        |v: &mut Vec<u32>, x: f32| v.extend([x.to_bits(), x.to_bits() + 1, x.to_bits().saturating_sub(1)]);
    for t in targets() {
        let half_quantum = 2f64.powi(t.min_exp - t.mantissa_bits - 1) as f32;
        for k in 0..=(4 << t.mantissa_bits) {
            near(&mut v, k as f32 * half_quantum);
        }
        near(&mut v, t.max);
        near(&mut v, t.overflow);
        near(&mut v, 2.0 * t.max);
    }
    near(&mut v, f32::MAX);
    near(&mut v, f32::MIN_POSITIVE);
    v.extend([0, 0x7f80_0000, 0x7fc0_0000, 0x7fff_ffff, 0x7f80_0001, 0x7fbf_ffff, 0x7fa0_0000]);
    for k in 0..23 {
        v.extend([0x7f80_0000 | (1 << k), 0x7fc0_0000 | (1 << k)]);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    v.extend((0..300_000).map(|_| rng.next_u32()));
    let negatives: Vec<u32> = v.iter().map(|b| b ^ 0x8000_0000).collect();
    v.extend(negatives);
    v
}

#[test]
fn an_f32_sweep_encodes_exactly_to_every_format() {
    let dev = cuda_emu();
    let inputs = encode_sweep();
    let bytes = bytes_of_u32(&inputs);
    for t in targets() {
        let out = cast(&dev, DType::F32, t.dtype, &bytes).unwrap();
        let got: Vec<u32> = match t.dtype.size() {
            2 => u16s(&out).into_iter().map(u32::from).collect(),
            _ => out.into_iter().map(u32::from).collect(),
        };
        let want: Vec<u32> = inputs.iter().map(|&b| (t.encode)(f32::from_bits(b))).collect();
        assert_same_bits(&format!("f32 → {}", t.dtype.name()), &inputs, &got, &want);
    }
}

// ---- ue8m0, through a test-only kernel -------------------------------------------------------------------

/// Decodes `codes[i]` for i < n_codes and encodes `scales[i]` for i < n_scales.
const UE8M0: &str = r#"
struct Params {
    const dsv3::ue8m0* codes;
    float* decoded;
    u64 n_codes;
    const float* scales;
    dsv3::ue8m0* encoded;
    u64 n_scales;
};

DSV3_KERNEL void emu_ue8m0(const Params p) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.n_codes) p.decoded[i] = to_f32(p.codes[i]);
    if (i < p.n_scales) p.encoded[i] = from_f32<dsv3::ue8m0>(p.scales[i]);
}
"#;

#[test]
fn ue8m0_decodes_and_encodes_exactly() {
    // `cast` does not take ue8m0 (scales are not a cast target), so the codec is reached by a kernel.
    let dev = cuda_emu();
    let rejected = cast(&dev, DType::F32, DType::Ue8m0, &[0; 4]);
    assert!(matches!(rejected, Err(Error::InvalidArgument { .. })), "cast to ue8m0: {rejected:?}");

    let rt = emulator(32);
    let f = kernel(&rt, "emu_ue8m0", UE8M0);
    let codes: Vec<u8> = (0..=255).collect();
    // Positive finite scales (the codec's domain): every exponent with mantissas 0, 1, mid, max, then
    // pseudo-random ones.
    let mut scales: Vec<u32> = (0..=254u32)
        .flat_map(|e| [0, 1, 0x40_0000, 0x7f_ffff].map(|m| (e << 23) | m))
        .filter(|&b| b != 0)
        .collect();
    let mut rng = Rng(7);
    scales.extend((0..10_000).map(|_| rng.next_u32() % 0x7f80_0000).filter(|&b| b != 0));
    let n = scales.len();
    let codes_mem = Mem::upload(&rt, &codes);
    let decoded = Mem::new(&rt, 4 * 256);
    let scales_mem = Mem::upload(&rt, &bytes_of_u32(&scales));
    let encoded = Mem::new(&rt, n);
    let params = Params::new()
        .addr(codes_mem.addr)
        .addr(decoded.addr)
        .u(256)
        .addr(scales_mem.addr)
        .addr(encoded.addr)
        .u(n);
    launch(&rt, &f, n.div_ceil(256) as u32, 256, params).unwrap();

    let inputs: Vec<u32> = codes.iter().map(|&c| c as u32).collect();
    let got: Vec<u32> =
        u32s(&decoded.download()).into_iter().map(|b| nan_as_nan(f32::from_bits(b))).collect();
    let want: Vec<u32> = codes.iter().map(|&c| nan_as_nan(ue8m0::decode(c))).collect();
    assert_same_bits("ue8m0 → f32", &inputs, &got, &want);
    let got: Vec<u32> = encoded.download().into_iter().map(u32::from).collect();
    let want: Vec<u32> = scales.iter().map(|&b| ue8m0::encode_ceil(f32::from_bits(b)) as u32).collect();
    assert_same_bits("f32 → ue8m0", &scales, &got, &want);
}

// ---- the scheduler, through the Runtime API --------------------------------------------------------------

fn emulator(warp: u32) -> Emulator {
    Emulator::new(warp).unwrap_or_else(|e| panic!("the emulator does not start: {e}"))
}

fn kernel(rt: &Emulator, name: &'static str, source: &'static str) -> Function {
    rt.compile("emu-test", &Variant::new(Kernel::new(name, source))).unwrap_or_else(|e| panic!("{e}"))
}

fn launch(rt: &Emulator, f: &Function, blocks: u32, block: u32, params: Params) -> Result<()> {
    let queue = rt.new_queue()?;
    queue.launch("emu-test", f, Dims { grid: [blocks, 1, 1], block, shared: 0 }, &params.0)?;
    queue.sync()
}

/// Emulator memory, freed on drop.
struct Mem<'a> {
    rt: &'a Emulator,
    addr: u64,
    bytes: usize,
}

impl<'a> Mem<'a> {
    fn new(rt: &'a Emulator, bytes: usize) -> Mem<'a> {
        let m = Mem { rt, addr: rt.alloc(bytes).unwrap(), bytes };
        m.fill(&vec![0; bytes]);
        m
    }

    fn upload(rt: &'a Emulator, data: &[u8]) -> Mem<'a> {
        let m = Mem::new(rt, data.len());
        m.fill(data);
        m
    }

    fn fill(&self, data: &[u8]) {
        self.rt.new_queue().unwrap().upload(self.addr, data).unwrap();
    }

    fn download(&self) -> Vec<u8> {
        let mut b = vec![0; self.bytes];
        self.rt.new_queue().unwrap().download(self.addr, &mut b).unwrap();
        b
    }

    fn f32s(&self) -> Vec<f32> {
        u32s(&self.download()).into_iter().map(f32::from_bits).collect()
    }
}

impl Drop for Mem<'_> {
    fn drop(&mut self) {
        self.rt.free(self.addr, self.bytes);
    }
}

fn kernel_error(r: Result<()>) -> String {
    match r {
        Err(Error::Kernel { reason, .. }) => reason,
        other => panic!("expected Error::Kernel, got {other:?}"),
    }
}

/// Block sums: each warp adds its values with warp_sum, lane 0 stores the warp's partial in shared memory;
/// after a barrier warp `worker` adds the partials with warp_sum while the other warps already wait at the
/// next barrier; then every thread writes the block's total.
const BLOCK_SUM: &str = r#"
struct Params {
    const float* x;
    float* out;
    u64 n;
    u64 worker;
};

DSV3_KERNEL void emu_block_sum(const Params p) {
    DSV3_SHARED float partial[1024 / DSV3_WARP];
    DSV3_SHARED float total;
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    u32 warp = threadIdx.x / DSV3_WARP;
    u32 warps = blockDim.x / DSV3_WARP;
    float v = warp_sum(i < p.n ? p.x[i] : 0.0f);
    if (dsv3_lane() == 0u) partial[warp] = v;
    dsv3_sync();
    if (warp == p.worker) {
        float t = warp_sum(dsv3_lane() < warps ? partial[dsv3_lane()] : 0.0f);
        if (dsv3_lane() == 0u) total = t;
    }
    dsv3_sync();
    if (i < p.n) p.out[i] = total;
}
"#;

/// Runs BLOCK_SUM over several blocks (the last one partial) and checks every thread saw its block's exact
/// total (integer values, so every order of addition gives the same f32).
fn check_block_sums(rt: &Emulator, f: &Function, block: usize, worker: usize) {
    let n = 4 * block + 77;
    let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 2001) as f32 - 1000.0).collect();
    let xs = Mem::upload(rt, &bytes_of_u32(&x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()));
    let out = Mem::new(rt, 4 * n);
    let params = Params::new().addr(xs.addr).addr(out.addr).u(n).u(worker);
    launch(rt, f, n.div_ceil(block) as u32, block as u32, params).unwrap();
    let got = out.f32s();
    for (i, chunk) in x.chunks(block).enumerate() {
        let want: f32 = chunk.iter().sum();
        for (j, &g) in got[i * block..i * block + chunk.len()].iter().enumerate() {
            assert_eq!(
                g,
                want,
                "warp {} block size {block} worker {worker}: block {i} thread {j}",
                rt.target().warp()
            );
        }
    }
}

#[test]
fn block_sums_with_barriers_and_warp_sums_are_exact() {
    for warp in [32, 64] {
        let rt = emulator(warp);
        let f = kernel(&rt, "emu_block_sum", BLOCK_SUM);
        for block in [256, 1024] {
            check_block_sums(&rt, &f, block, 0);
        }
    }
}

#[test]
fn one_warp_may_shuffle_while_the_others_wait_at_a_barrier() {
    for warp in [32, 64] {
        let rt = emulator(warp);
        let f = kernel(&rt, "emu_block_sum", BLOCK_SUM);
        let warps = 256 / warp as usize;
        for worker in [0, 1, warps - 1] {
            check_block_sums(&rt, &f, 256, worker);
        }
    }
}

/// Every thread reads its xor partner's thread index through the i32, u32 and float shuffles.
const SHUFFLE: &str = r#"
struct Params {
    i32* out;
    u64 mask;
};

DSV3_KERNEL void emu_shuffle(const Params p) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    int m = (int)p.mask;
    i32 a = dsv3_shfl_xor((i32)threadIdx.x, m);
    u32 b = dsv3_shfl_xor((u32)threadIdx.x, m);
    float c = dsv3_shfl_xor((float)threadIdx.x, m);
    p.out[i] = (a == (i32)b && (float)a == c) ? a : -1;
}
"#;

#[test]
fn shuffles_read_the_xor_partner_lane() {
    for warp in [32u32, 64] {
        let rt = emulator(warp);
        let f = kernel(&rt, "emu_shuffle", SHUFFLE);
        let (blocks, block) = (3u32, 256u32);
        let n = (blocks * block) as usize;
        let out = Mem::new(&rt, 4 * n);
        for mask in (0..warp.trailing_zeros()).map(|b| 1 << b).chain([warp - 1, 5]) {
            launch(&rt, &f, blocks, block, Params::new().addr(out.addr).u(mask as usize)).unwrap();
            let got = u32s(&out.download());
            for (i, &g) in got.iter().enumerate() {
                let t = i as u32 % block;
                let want = (t / warp) * warp + ((t % warp) ^ mask);
                assert_eq!(g, want, "warp {warp} mask {mask}: thread {i}");
            }
        }
    }
}

/// Threads at or past `stop` return before the barrier: a barrier not every thread reaches.
const EARLY_RETURN: &str = r#"
struct Params {
    float* out;
    u64 stop;
};

DSV3_KERNEL void emu_early_return(const Params p) {
    if (threadIdx.x >= p.stop) return;
    dsv3_sync();
    p.out[(u64)blockIdx.x * blockDim.x + threadIdx.x] = 1.0f;
}
"#;

#[test]
fn returning_before_a_barrier_is_a_kernel_error() {
    for warp in [32, 64] {
        let rt = emulator(warp);
        let f = kernel(&rt, "emu_early_return", EARLY_RETURN);
        let out = Mem::new(&rt, 4 * 2 * 256);
        launch(&rt, &f, 2, 256, Params::new().addr(out.addr).u(256)).unwrap();
        assert!(out.f32s().iter().all(|&v| v == 1.0));
        // One thread of the last warp returns. (A single failing launch per compiled kernel and process:
        // see `a_launch_after_a_failed_one_starts_every_thread_afresh`.)
        let reason = kernel_error(launch(&rt, &f, 2, 256, Params::new().addr(out.addr).u(255)));
        assert!(reason.contains("__syncthreads was not reached by every thread"), "warp {warp}: {reason}");
    }
}

/// The first `active` lanes of each warp do a warp sum; the others go on to the barrier.
const PARTIAL_SHUFFLE: &str = r#"
struct Params {
    float* out;
    u64 active;
};

DSV3_KERNEL void emu_partial_shuffle(const Params p) {
    float v = (float)threadIdx.x;
    if (dsv3_lane() < p.active) v = warp_sum(v);
    dsv3_sync();
    p.out[(u64)blockIdx.x * blockDim.x + threadIdx.x] = v;
}
"#;

#[test]
fn a_shuffle_reached_by_part_of_a_warp_is_a_kernel_error() {
    for warp in [32u32, 64] {
        let rt = emulator(warp);
        let f = kernel(&rt, "emu_partial_shuffle", PARTIAL_SHUFFLE);
        let out = Mem::new(&rt, 4 * 128);
        launch(&rt, &f, 1, 128, Params::new().addr(out.addr).u(warp as usize)).unwrap();
        for (t, v) in out.f32s().into_iter().enumerate() {
            let first = t as u32 / warp * warp;
            let want: u32 = (first..first + warp).sum();
            assert_eq!(v, want as f32, "warp {warp}: thread {t}");
        }
        let reason = kernel_error(launch(&rt, &f, 1, 128, Params::new().addr(out.addr).u(5)));
        assert!(reason.contains("not reached by every lane of its warp"), "warp {warp}: {reason}");
    }
}

/// Every thread adds to counters, half before and half after a barrier (so fibers interleave between
/// them): a count, a signed sum, an integer-valued float sum and a histogram.
const ATOMICS: &str = r#"
struct Params {
    u32* count;
    i32* isum;
    float* fsum;
    u32* bins;
};

DSV3_KERNEL void emu_atomics(const Params p) {
    u32 g = blockIdx.x * blockDim.x + threadIdx.x;
    atomicAdd(p.count, 1u);
    atomicAdd(p.isum, (i32)(g % 1000u) - 500);
    dsv3_sync();
    atomicAdd(p.fsum, (float)(g % 16u));
    atomicAdd(&p.bins[g % 10u], 1u);
}
"#;

#[test]
fn atomic_adds_from_every_thread_sum_exactly() {
    let rt = emulator(32);
    let f = kernel(&rt, "emu_atomics", ATOMICS);
    let (blocks, block) = (7u32, 512u32);
    let count = Mem::new(&rt, 4);
    let isum = Mem::new(&rt, 4);
    let fsum = Mem::new(&rt, 4);
    let bins = Mem::new(&rt, 40);
    let params = Params::new().addr(count.addr).addr(isum.addr).addr(fsum.addr).addr(bins.addr);
    launch(&rt, &f, blocks, block, params).unwrap();
    let threads = blocks * block;
    assert_eq!(u32s(&count.download()), [threads]);
    let want_i: i32 = (0..threads).map(|g| (g % 1000) as i32 - 500).sum();
    assert_eq!(u32s(&isum.download()), [want_i as u32]);
    let want_f: u32 = (0..threads).map(|g| g % 16).sum();
    assert_eq!(fsum.f32s(), [want_f as f32]);
    let want_bins: Vec<u32> = (0..10).map(|b| (0..threads).filter(|g| g % 10 == b).count() as u32).collect();
    assert_eq!(u32s(&bins.download()), want_bins);
}

// ---- faults, in a child process ------------------------------------------------------------------------

/// Set (to the test's name) in the child process that runs a test's faulting part.
const CHILD: &str = "DSV3_EMU_RUNTIME_CHILD";

fn in_child(test: &str) -> bool {
    std::env::var(CHILD).is_ok_and(|t| t == test)
}

/// Runs this test binary's test `test` alone in a child process, in its child role.
fn run_child(test: &str) -> Output {
    let exe = std::env::current_exe().unwrap();
    Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .output()
        .unwrap()
}

/// Runs test `name` in a child process and requires that it got through its in-bounds part (it printed
/// INSIDE_DONE) and was then killed by SIGSEGV / SIGBUS.
fn assert_child_faulted(name: &str) {
    let child = run_child(name);
    let signal = child.status.signal();
    assert!(
        signal == Some(libc::SIGSEGV) || signal == Some(libc::SIGBUS),
        "the child was not killed by SIGSEGV / SIGBUS: {}",
        describe(&child)
    );
    assert!(String::from_utf8_lossy(&child.stderr).contains(INSIDE_DONE), "{}", describe(&child));
}

fn describe(out: &Output) -> String {
    format!(
        "{:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn no_core_dumps() {
    let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: setrlimit reads the struct and changes only this process's limit.
    unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
}

/// Stores 1.0 into out[first + i] for i < count.
const STORE: &str = r#"
struct Params {
    float* out;
    u64 first;
    u64 count;
};

DSV3_KERNEL void emu_store(const Params p) {
    u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < p.count) p.out[p.first + i] = 1.0f;
}
"#;

const INSIDE_DONE: &str = "in-bounds stores done";

#[test]
fn a_store_just_past_a_buffer_faults() {
    const NAME: &str = "a_store_just_past_a_buffer_faults";
    let rt = emulator(32);
    let f = kernel(&rt, "emu_store", STORE);
    // 4 KiB, a multiple of the 256-byte alignment: the guard page starts right after the last element.
    let n = 1024;
    let out = Mem::new(&rt, 4 * n);
    if in_child(NAME) {
        launch(&rt, &f, 4, 256, Params::new().addr(out.addr).u(0).u(n)).unwrap();
        assert!(out.f32s().iter().all(|&v| v == 1.0));
        eprintln!("{INSIDE_DONE}");
        no_core_dumps();
        let r = launch(&rt, &f, 1, 32, Params::new().addr(out.addr).u(n).u(1));
        panic!("the store past the end did not fault: {r:?}");
    }
    assert_child_faulted(NAME);
}

#[test]
fn a_block_of_more_than_1024_threads_is_a_kernel_error() {
    let rt = emulator(32);
    let f = kernel(&rt, "emu_store", STORE);
    let out = Mem::new(&rt, 4 * 2048);
    let reason = kernel_error(launch(&rt, &f, 1, 1025, Params::new().addr(out.addr).u(0).u(1025)));
    assert!(reason.contains("block size"), "{reason}");
    assert!(out.f32s().iter().all(|&v| v == 0.0));
}

// ---- scheduler bugs found in review, fixed in host_emulator.h --------------------------------------------

/// EARLY_RETURN under another name, so that its failing launch leaves its own compiled library.
const RETRY: &str = r#"
struct Params {
    float* out;
    u64 stop;
};

DSV3_KERNEL void emu_retry(const Params p) {
    if (threadIdx.x >= p.stop) return;
    dsv3_sync();
    p.out[(u64)blockIdx.x * blockDim.x + threadIdx.x] = (float)(blockIdx.x * 1000u + threadIdx.x);
}
"#;

#[test]
fn a_launch_after_a_failed_one_starts_every_thread_afresh() {
    // A failing launch returns with some fibers suspended inside the kernel body (here at the barrier, with
    // the old launch's Params on their stacks). The next launch of the same compiled kernel marks every
    // fiber runnable and resumes those where they stopped: they finish the *old* launch (writing through
    // its pointers, which may have been freed) while the others start the new one, and the barrier check
    // then fails the correct launch.
    let rt = emulator(32);
    let f = kernel(&rt, "emu_retry", RETRY);
    let old = Mem::new(&rt, 4 * 256);
    let reason = kernel_error(launch(&rt, &f, 1, 256, Params::new().addr(old.addr).u(100)));
    assert!(reason.contains("__syncthreads"), "{reason}");
    let new = Mem::new(&rt, 4 * 2 * 256);
    let retried = launch(&rt, &f, 2, 256, Params::new().addr(new.addr).u(256));
    assert!(retried.is_ok(), "a correct launch after a failed one: {retried:?}");
    for (i, v) in new.f32s().into_iter().enumerate() {
        assert_eq!(v, ((i / 256) * 1000 + i % 256) as f32, "element {i}");
    }
    assert!(old.f32s().iter().all(|&v| v == 0.0), "the failed launch's threads wrote after it returned");
}

/// 96 KiB of local memory per thread: legal on a GPU (up to 512 KiB per thread), larger than a fiber's
/// 64 KiB stack in the emulator.
const DEEP_STACK: &str = r#"
struct Params {
    float* out;
    u64 len;
};

DSV3_KERNEL void emu_deep_stack(const Params p) {
    volatile float local[24 * 1024];
    for (u64 k = 0; k < p.len; k++) local[k] = (float)threadIdx.x;
    dsv3_sync();
    float s = 0.0f;
    for (u64 k = 0; k < p.len; k++) s += local[k];
    p.out[(u64)blockIdx.x * blockDim.x + threadIdx.x] = s;
}
"#;

#[test]
fn a_thread_may_use_more_local_memory_than_a_fiber_stack_holds() {
    // Run in a child: today the overflow corrupts the neighbouring fiber's frames, which can crash anywhere
    // (or, with other sizes, give wrong results silently). Passes once fiber stacks hold what a GPU thread
    // may use, each with a guard page below it so that what exceeds even that faults at once.
    const NAME: &str = "a_thread_may_use_more_local_memory_than_a_fiber_stack_holds";
    const LEN: usize = 24 * 1024;
    if in_child(NAME) {
        no_core_dumps();
        let rt = emulator(32);
        let f = kernel(&rt, "emu_deep_stack", DEEP_STACK);
        let out = Mem::new(&rt, 4 * 64);
        launch(&rt, &f, 1, 64, Params::new().addr(out.addr).u(LEN)).unwrap();
        for (t, v) in out.f32s().into_iter().enumerate() {
            assert_eq!(v, (t * LEN) as f32, "thread {t}");
        }
        return;
    }
    let child = run_child(NAME);
    assert!(child.status.success(), "{}", describe(&child));
}

/// A 64-bit shuffle: NVRTC and hipcc reject it (dsv3.cuh defines float, u32 and i32 shuffles only, so a
/// u64 argument is ambiguous), the emulator's shuffle template accepts it.
const WIDE_SHUFFLE: &str = r#"
struct Params {
    u64* out;
};

DSV3_KERNEL void emu_wide_shuffle(const Params p) {
    p.out[threadIdx.x] = dsv3_shfl_xor((u64)threadIdx.x, 1);
}
"#;

#[test]
fn the_emulator_rejects_shuffles_the_gpu_compilers_reject() {
    let rt = emulator(32);
    let compiled = rt.compile("emu-test", &Variant::new(Kernel::new("emu_wide_shuffle", WIDE_SHUFFLE)));
    assert!(compiled.is_err(), "a u64 shuffle compiled for the host; NVRTC rejects it");
}

/// Even and odd threads wait at two different barriers: undefined on a GPU (on AMD a wave that holds
/// both kinds executes both barriers; NVIDIA documents a likely hang), yet the emulator counts any barrier
/// as the same one.
const DIVERGENT_BARRIERS: &str = r#"
struct Params {
    float* out;
};

DSV3_KERNEL void emu_divergent_barriers(const Params p) {
    DSV3_SHARED float s[256];
    s[threadIdx.x] = (float)threadIdx.x;
    if (threadIdx.x % 2u == 0u) {
        dsv3_sync();
        p.out[threadIdx.x] = s[255u - threadIdx.x];
    } else {
        dsv3_sync();
        p.out[threadIdx.x] = -s[255u - threadIdx.x];
    }
}
"#;

#[test]
fn threads_at_different_barriers_are_a_kernel_error() {
    let rt = emulator(32);
    let f = kernel(&rt, "emu_divergent_barriers", DIVERGENT_BARRIERS);
    let out = Mem::new(&rt, 4 * 256);
    let r = launch(&rt, &f, 1, 256, Params::new().addr(out.addr));
    assert!(matches!(r, Err(Error::Kernel { .. })), "divergent barriers ran: {r:?}");
}

#[test]
fn a_grid_past_the_gpu_limits_is_a_kernel_error() {
    let rt = emulator(32);
    let f = kernel(&rt, "emu_store", STORE);
    let out = Mem::new(&rt, 4 * 32);
    for grid in [[1, 65536, 1], [1, 1, 65536]] {
        let params = Params::new().addr(out.addr).u(0).u(32);
        let r =
            rt.new_queue().unwrap().launch("emu-test", &f, Dims { grid, block: 32, shared: 0 }, &params.0);
        assert!(matches!(r, Err(Error::Kernel { .. })), "grid {grid:?} ran: {r:?}");
    }
}

#[test]
fn a_block_over_the_kernels_declared_size_is_a_kernel_error() {
    // check-kernels proves each kernel file's declared largest block fits the registers; a launch code
    // change that uses more threads must fail here, where every kernel is tested, not first on a GPU.
    let rt = emulator(32);
    let small = Kernel { max_block: 64, ..Kernel::new("emu_store", STORE) };
    let f = rt.compile("emu-test", &Variant::new(small)).unwrap_or_else(|e| panic!("{e}"));
    let out = Mem::new(&rt, 4 * 128);
    let params = |n: usize| Params::new().addr(out.addr).u(0).u(n);
    launch(&rt, &f, 1, 64, params(64)).unwrap();
    let reason = kernel_error(launch(&rt, &f, 1, 128, params(128)));
    assert!(reason.contains("block size 128") && reason.contains("64 threads"), "{reason}");
}

// ---- dynamic shared memory (DSV3_DYNAMIC_SHARED) --------------------------------------------------------

/// WORDS words of dynamic shared memory (STATIC_WORDS of static beside them): thread 0 stores the first
/// word as it finds it, then the block fills the words with their index plus 1000 · block and writes them
/// out mirrored, after out[0] and each block's words.
const DYNAMIC: &str = r#"
struct Params {
    u32* out;
};

struct Words {
    u32 w[WORDS];
};

DSV3_KERNEL void emu_dynamic(const Params p) {
    DSV3_DYNAMIC_SHARED(Words, s);
#if STATIC_WORDS
    DSV3_SHARED volatile u32 pad[STATIC_WORDS];  // volatile: kept although nothing reads it
    pad[threadIdx.x % STATIC_WORDS] = 0;
#endif
    if (threadIdx.x == 0) p.out[blockIdx.x] = s.w[0];
    dsv3_sync();
    for (u32 i = threadIdx.x; i < WORDS; i += blockDim.x) s.w[i] = i + 1000u * blockIdx.x;
    dsv3_sync();
    for (u32 i = threadIdx.x; i < WORDS; i += blockDim.x) {
        p.out[gridDim.x + blockIdx.x * WORDS + i] = s.w[WORDS - 1 - i];
    }
}
"#;

fn dynamic_kernel(rt: &Emulator, words: u32, static_words: u32) -> Function {
    let v = Variant::new(Kernel::new("emu_dynamic", DYNAMIC))
        .konst("WORDS", words as i64)
        .konst("STATIC_WORDS", static_words as i64);
    rt.compile("emu-test", &v).unwrap_or_else(|e| panic!("{e}"))
}

/// Two blocks of the DYNAMIC kernel with `shared` bytes of dynamic shared memory.
fn launch_dynamic(rt: &Emulator, f: &Function, words: u32, shared: u32) -> (Result<()>, Vec<u32>) {
    let out = Mem::new(rt, 4 * (2 + 2 * words as usize));
    let params = Params::new().addr(out.addr);
    let r = rt.new_queue().unwrap().launch(
        "emu-test",
        f,
        Dims { grid: [2, 1, 1], block: 128, shared },
        &params.0,
    );
    (r, u32s(&out.download()))
}

fn assert_mirrored(words: u32, out: &[u32]) {
    assert_eq!(&out[..2], &[u32::MAX, u32::MAX], "each block's dynamic shared memory starts as garbage");
    for b in 0..2 {
        let block = &out[2 + (b * words) as usize..2 + ((b + 1) * words) as usize];
        let want: Vec<u32> = (0..words).rev().map(|i| i + 1000 * b).collect();
        assert!(block == want.as_slice(), "block {b} of {words} words");
    }
}

/// Dynamic shared memory is the launch's bytes, per block, filled with garbage at each block's start: at
/// both warp widths, beside static shared memory, and above NVIDIA's 48 KiB at warp 32, where the launch
/// path opts the function in (the emulated driver refuses such a launch otherwise).
#[test]
fn dynamic_shared_memory_is_sized_per_launch() {
    for warp in [32, 64] {
        let rt = emulator(warp);
        let f = dynamic_kernel(&rt, 1000, 64);
        let (r, out) = launch_dynamic(&rt, &f, 1000, 4000);
        r.unwrap();
        assert_mirrored(1000, &out);
    }
    // 15 000 words, 60 000 bytes: above 48 KiB, within 99 KiB.
    let rt = emulator(32);
    let f = dynamic_kernel(&rt, 15000, 0);
    let (r, out) = launch_dynamic(&rt, &f, 15000, 60000);
    r.unwrap();
    assert_mirrored(15000, &out);
}

/// The launch must give exactly the declared object's bytes: fewer would let the kernel run past its
/// memory, more means the launch code and the kernel disagree about the layout.
#[test]
fn a_launch_giving_other_bytes_than_the_kernel_declares_is_a_kernel_error() {
    let rt = emulator(32);
    let f = dynamic_kernel(&rt, 1000, 0);
    for shared in [3996, 4016, 0] {
        let (r, _) = launch_dynamic(&rt, &f, 1000, shared);
        let reason = kernel_error(r);
        assert!(reason.contains(&format!("declares 4000 bytes, the launch gives {shared}")), "{reason}");
    }
}

/// The per-target limit, static and dynamic together: NVIDIA's smallest opt-in limit (99 KiB, sm_86 /
/// sm_89) at warp 32, a CDNA workgroup's 64 KiB of LDS at 64. At the limit the kernel runs; a word more is
/// refused naming the kernel and the bytes, before anything runs.
#[test]
fn shared_memory_past_the_targets_limit_is_refused() {
    for (warp, limit) in [(32u32, 99 * 1024u32), (64, 64 * 1024)] {
        let rt = emulator(warp);
        assert_eq!(rt.shared_limits().opt_in, limit);
        let words = limit / 4 - 256;
        let f = dynamic_kernel(&rt, words, 256);
        let (r, out) = launch_dynamic(&rt, &f, words, 4 * words);
        r.unwrap_or_else(|e| panic!("warp {warp}: {e}"));
        assert_mirrored(words, &out);
        let over = dynamic_kernel(&rt, words + 1, 256);
        let (r, out) = launch_dynamic(&rt, &over, words + 1, 4 * words + 4);
        let reason = kernel_error(r);
        let bytes = format!("(1024 static + {} dynamic), over the {limit}", 4 * words + 4);
        assert!(reason.contains(&bytes), "warp {warp}: {reason}");
        assert!(out.iter().all(|&w| w == 0), "warp {warp}: nothing ran");
    }
}

/// A cp.async or ldmatrix past the end of the dynamic shared memory is reported as outside shared memory
/// (warp 32, where the emulator checks both); a plain store past it faults on the page after it.
const DYNAMIC_OOB: &str = r#"
struct Params {
    const u8* src;
    u64 how;
};

struct Bytes {
    u8 b[WORDS * 4];
};

// how: 0 / 1 each lane copies 16 bytes, lane 31's the last 16 (or the 16 after them); 2 / 3 a 16-row tile
// of 32-byte rows ending at the end (or 16 bytes after it); 4 a store of the byte after the end.
DSV3_KERNEL void emu_dynamic_oob(const Params p) {
    DSV3_DYNAMIC_SHARED(Bytes, s);
    const u64 end = WORDS * 4, past = p.how & 1 ? 16 : 0;
    if (p.how < 2) {
        mma::stage16(&s.b[end - 16 * (32 - threadIdx.x) + past], p.src + 16 * threadIdx.x);
        mma::stage_commit();
        mma::stage_wait<0>();
    } else if (p.how < 4) {
        mma::TileA a = mma::tile_load_a(&s.b[end - 16 * 32 + past], 32);
        (void)a;
    } else if (threadIdx.x == 0) {
        s.b[end + (p.how - 4)] = 1;
    }
}
"#;

fn oob_kernel(rt: &Emulator) -> Function {
    let k = Kernel {
        uses: dsv3_backend_gpu::kernels::MMA_PROBE.uses,
        ..Kernel::new("emu_dynamic_oob", DYNAMIC_OOB)
    };
    rt.compile("emu-test", &Variant::new(k).konst("WORDS", 1000)).unwrap_or_else(|e| panic!("{e}"))
}

fn launch_oob(rt: &Emulator, f: &Function, how: u64) -> Result<()> {
    let src = Mem::new(rt, 16 * 32);
    let params = Params::new().addr(src.addr).u(how as usize);
    rt.new_queue().unwrap().launch(
        "emu-test",
        f,
        Dims { grid: [1, 1, 1], block: 32, shared: 4000 },
        &params.0,
    )
}

#[test]
fn cp_async_and_ldmatrix_past_dynamic_shared_memory_are_reported() {
    let rt = emulator(32);
    let f = oob_kernel(&rt);
    launch_oob(&rt, &f, 0).unwrap();
    let reason = kernel_error(launch_oob(&rt, &f, 1));
    assert!(reason.contains("cp.async: the destination is not in shared memory"), "{reason}");
    launch_oob(&rt, &f, 2).unwrap();
    let reason = kernel_error(launch_oob(&rt, &f, 3));
    assert!(reason.contains("ldmatrix: a row address is not in shared memory"), "{reason}");
}

#[test]
fn a_store_just_past_dynamic_shared_memory_faults() {
    const NAME: &str = "a_store_just_past_dynamic_shared_memory_faults";
    let rt = emulator(32);
    let f = oob_kernel(&rt);
    if in_child(NAME) {
        launch_oob(&rt, &f, 0).unwrap();
        eprintln!("{INSIDE_DONE}");
        no_core_dumps();
        let r = launch_oob(&rt, &f, 4);
        panic!("the store past the end did not fault: {r:?}");
    }
    assert_child_faulted(NAME);
}
