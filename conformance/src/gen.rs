//! Deterministic input generation: a small PRNG (SplitMix64, normals by Box–Muller), host tensors with
//! explicit strides, and the host-side FP8 quantizers that turn real values into the block-FP8 weights
//! and per-token FP8 activations the ops take. Everything here is a pure function of the seed, so the
//! oracle and the device under test see byte-identical inputs.

use dsv3_core::fp8::{ue8m0, Fp8Format, Overflow};
use dsv3_core::ops::gemm::{blocks, AMAX_FLOOR};
use dsv3_core::ops::QUANT_BLOCK;
use dsv3_core::tensor::contiguous_strides;
use dsv3_core::DType;
use rayon::prelude::*;

/// SplitMix64: tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
    spare: Option<f64>,
}

/// A seed for an independent stream `stream` of `seed` (so each input of a case has its own stream and
/// adding an input does not shift the others).
pub fn derive(seed: u64, stream: u64) -> u64 {
    let mut r = Rng::new(seed ^ stream.wrapping_mul(0xA24B_AED4_963E_E407));
    r.next_u64()
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed, spare: None }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1), never 0 or 1.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Standard normal (Box–Muller; the second value of each pair is kept for the next call).
    pub fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }

    /// Uniform integer in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A random permutation of 0..n.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            p.swap(i, self.below(i + 1));
        }
        p
    }
}

/// `n` values of N(0, std²), generated in parallel chunks each seeded from (seed, chunk), so the result
/// does not depend on the thread count.
pub fn normals(n: usize, seed: u64, std: f64) -> Vec<f64> {
    const CHUNK: usize = 1 << 16;
    let mut out = vec![0.0; n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let mut r = Rng::new(derive(seed, c as u64));
        chunk.iter_mut().for_each(|v| *v = std * r.normal());
    });
    out
}

/// `n` values of N(0, std²) rounded to `dtype`, identical to `from_f64(normals(n, seed, std))` but
/// generated straight into the element bytes (no f64 copy of a multi-GB embedding table).
pub fn normal_tensor(dtype: DType, shape: &[usize], seed: u64, std: f64) -> HostTensor {
    const CHUNK: usize = 1 << 16;
    let n: usize = shape.iter().product();
    let size = dtype.size();
    let mut bytes = vec![0u8; n * size];
    bytes.par_chunks_mut(CHUNK * size).enumerate().for_each(|(c, chunk)| {
        let mut r = Rng::new(derive(seed, c as u64));
        for i in 0..chunk.len() / size {
            dtype.write_f64(chunk, i, std * r.normal());
        }
    });
    HostTensor { dtype, shape: shape.to_vec(), strides: contiguous_strides(shape), bytes }
}

/// A tensor on the host: dtype, shape, element strides and the bytes of its span (element [0,..] at byte
/// 0). Bytes between strided rows are padding filled with the dtype's NaN pattern, so a kernel that
/// reads outside the view gets NaN.
#[derive(Clone, Debug)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Element offsets (in elements) of a view, in row-major index order.
pub fn element_offsets(shape: &[usize], strides: &[usize]) -> Vec<usize> {
    let n: usize = shape.iter().product();
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let mut index = vec![0usize; shape.len()];
    for _ in 0..n {
        out.push(index.iter().zip(strides).map(|(i, s)| i * s).sum());
        for d in (0..shape.len()).rev() {
            index[d] += 1;
            if index[d] < shape[d] {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

/// Bytes from element [0,..] to one past the last element of a view.
pub fn span_bytes(dtype: DType, shape: &[usize], strides: &[usize]) -> usize {
    if shape.iter().product::<usize>() == 0 {
        return 0;
    }
    let last: usize = shape.iter().zip(strides).map(|(n, s)| (n - 1) * s).sum();
    (last + 1) * dtype.size()
}

/// One element of "garbage" per dtype: a NaN where the dtype has one (so unwritten float outputs and
/// out-of-view float reads show up as NaN), all-ones otherwise (−1 for ids, never a valid index).
pub fn garbage_element(dtype: DType) -> Vec<u8> {
    match dtype {
        DType::F8E4M3Fnuz => vec![0x80],
        _ => vec![0xFF; dtype.size()],
    }
}

impl HostTensor {
    /// Contiguous tensor from values (rounded to nearest even; FP8 saturates).
    pub fn from_f64(dtype: DType, shape: &[usize], values: &[f64]) -> HostTensor {
        assert_eq!(values.len(), shape.iter().product::<usize>(), "values for {shape:?}");
        let mut bytes = vec![0u8; values.len() * dtype.size()];
        bytes
            .par_chunks_mut(dtype.size())
            .zip(values.par_iter())
            .for_each(|(b, v)| dtype.write_f64(b, 0, *v));
        HostTensor { dtype, shape: shape.to_vec(), strides: contiguous_strides(shape), bytes }
    }

    pub fn from_i32(shape: &[usize], values: &[i32]) -> HostTensor {
        assert_eq!(values.len(), shape.iter().product::<usize>());
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        HostTensor { dtype: DType::I32, shape: shape.to_vec(), strides: contiguous_strides(shape), bytes }
    }

    /// Raw codes (FP8, ue8m0, u8) as a contiguous tensor.
    pub fn from_codes(dtype: DType, shape: &[usize], codes: Vec<u8>) -> HostTensor {
        assert_eq!(dtype.size(), 1);
        assert_eq!(codes.len(), shape.iter().product::<usize>());
        HostTensor { dtype, shape: shape.to_vec(), strides: contiguous_strides(shape), bytes: codes }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The same elements laid out with the given strides (padding between them = garbage).
    pub fn restrided(&self, strides: &[usize]) -> HostTensor {
        let size = self.dtype.size();
        let span = span_bytes(self.dtype, &self.shape, strides);
        let pad = garbage_element(self.dtype);
        let mut bytes: Vec<u8> = pad.iter().copied().cycle().take(span).collect();
        let from = element_offsets(&self.shape, &self.strides);
        let to = element_offsets(&self.shape, strides);
        for (f, t) in from.iter().zip(&to) {
            bytes[t * size..(t + 1) * size].copy_from_slice(&self.bytes[f * size..(f + 1) * size]);
        }
        HostTensor { dtype: self.dtype, shape: self.shape.clone(), strides: strides.to_vec(), bytes }
    }

    /// Rows of a rank-2 tensor `pitch` elements apart (pitch ≥ columns).
    pub fn with_row_pitch(&self, pitch: usize) -> HostTensor {
        assert_eq!(self.shape.len(), 2);
        self.restrided(&[pitch, 1])
    }

    /// The view's elements in row-major order, exactly, as f64.
    pub fn values(&self) -> Vec<f64> {
        if self.strides == contiguous_strides(&self.shape) {
            let n = self.numel();
            let mut out = vec![0.0; n];
            out.par_iter_mut().enumerate().for_each(|(i, v)| *v = self.dtype.read_f64(&self.bytes, i));
            return out;
        }
        element_offsets(&self.shape, &self.strides)
            .into_iter()
            .map(|o| self.dtype.read_f64(&self.bytes, o))
            .collect()
    }

    pub fn i32s(&self) -> Vec<i32> {
        self.values().into_iter().map(|v| v as i32).collect()
    }
}

/// How a scale grid is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleStore {
    /// `amax / fp8_max` exactly, stored as f32 (DeepSeek-V3 checkpoints and act_quant).
    F32,
    /// Rounded up to a power of two and stored as ue8m0 codes (DeepSeek-V3.1 / DeepGEMM on Blackwell).
    Ue8m0,
}

impl ScaleStore {
    pub fn dtype(self) -> DType {
        match self {
            ScaleStore::F32 => DType::F32,
            ScaleStore::Ue8m0 => DType::Ue8m0,
        }
    }
}

fn scale_for(amax: f32, format: Fp8Format, store: ScaleStore) -> f32 {
    let s = amax.max(AMAX_FLOOR) / format.max();
    match store {
        ScaleStore::F32 => s,
        ScaleStore::Ue8m0 => ue8m0::ceil_pow2(s),
    }
}

fn scale_tensor(shape: &[usize], scales: &[f32], store: ScaleStore) -> HostTensor {
    match store {
        ScaleStore::F32 => {
            HostTensor::from_f64(DType::F32, shape, &scales.iter().map(|&s| s as f64).collect::<Vec<_>>())
        }
        ScaleStore::Ue8m0 => HostTensor::from_codes(
            DType::Ue8m0,
            shape,
            scales.iter().map(|&s| ue8m0::encode_ceil(s)).collect(),
        ),
    }
}

/// Block-FP8 weights from real values `[lead.., N, K]`: per 128×128 block, `scale = amax/fp8_max` (f32, or
/// rounded up to a power of two), `q = fp8(w / scale)`. Returns (codes, scale grid `[lead.., ⌈N/128⌉, ⌈K/128⌉]`).
pub fn quantize_blocks(
    values: &[f64],
    shape: &[usize],
    format: Fp8Format,
    store: ScaleStore,
) -> (HostTensor, HostTensor) {
    let r = shape.len();
    let (n, k) = (shape[r - 2], shape[r - 1]);
    let lead: usize = shape[..r - 2].iter().product();
    let (nb, kb) = (blocks(n), blocks(k));
    let mut codes = vec![0u8; values.len()];
    let mut scales = vec![0f32; lead * nb * kb];
    // Per stacked matrix, one block row (up to 128 rows of N) at a time, in parallel. Chunking per matrix
    // first keeps a block row inside its own matrix when N is not a multiple of 128.
    let per_matrix = (n * k).max(1);
    codes.par_chunks_mut(per_matrix).zip(scales.par_chunks_mut((nb * kb).max(1))).enumerate().for_each(
        |(e, (codes, scales))| {
            let block_rows =
                codes.par_chunks_mut((QUANT_BLOCK * k).max(1)).zip(scales.par_chunks_mut(kb.max(1)));
            block_rows.enumerate().for_each(|(bn, (codes, scales))| {
                let rows = (n - bn * QUANT_BLOCK).min(QUANT_BLOCK);
                let base = (e * n + bn * QUANT_BLOCK) * k;
                for (bk, scale) in scales.iter_mut().enumerate() {
                    let cols = bk * QUANT_BLOCK..((bk + 1) * QUANT_BLOCK).min(k);
                    let mut amax = 0f32;
                    for i in 0..rows {
                        for c in cols.clone() {
                            amax = amax.max((values[base + i * k + c] as f32).abs());
                        }
                    }
                    let s = scale_for(amax, format, store);
                    *scale = s;
                    for i in 0..rows {
                        for c in cols.clone() {
                            codes[i * k + c] =
                                format.encode(values[base + i * k + c] as f32 / s, Overflow::Saturate);
                        }
                    }
                }
            });
        },
    );
    let mut grid = shape[..r - 2].to_vec();
    grid.extend([nb, kb]);
    (HostTensor::from_codes(DType::from_fp8(format), shape, codes), scale_tensor(&grid, &scales, store))
}

/// DeepSeek's `act_quant` on the host: per row and 128-channel group, `s = max(amax, 1e-4)/fp8_max`
/// (f32; rounded up to a power of two for ue8m0), `q = fp8(x / s)`. Returns (codes `[M, K]`, scales
/// `[M, ⌈K/128⌉]`).
pub fn quantize_activations(
    values: &[f64],
    m: usize,
    k: usize,
    format: Fp8Format,
    store: ScaleStore,
) -> (HostTensor, HostTensor) {
    let kb = blocks(k);
    let mut codes = vec![0u8; m * k];
    let mut scales = vec![0f32; m * kb];
    for row in 0..m {
        for g in 0..kb {
            let cols = g * QUANT_BLOCK..((g + 1) * QUANT_BLOCK).min(k);
            let amax = cols.clone().map(|c| (values[row * k + c] as f32).abs()).fold(0f32, f32::max);
            let s = scale_for(amax, format, store);
            scales[row * kb + g] = s;
            for c in cols {
                codes[row * k + c] = format.encode(values[row * k + c] as f32 / s, Overflow::Saturate);
            }
        }
    }
    (HostTensor::from_codes(DType::from_fp8(format), &[m, k], codes), scale_tensor(&[m, kb], &scales, store))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_normal_has_unit_variance() {
        let a = normals(100_000, 7, 1.0);
        assert_eq!(a, normals(100_000, 7, 1.0));
        let mean = a.iter().sum::<f64>() / a.len() as f64;
        let var = a.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / a.len() as f64;
        assert!(mean.abs() < 0.02 && (var - 1.0).abs() < 0.02, "mean {mean} var {var}");
    }

    #[test]
    fn block_quantization_round_trips_within_fp8_precision() {
        let shape = [200, 300];
        let w = normals(200 * 300, 3, 0.05);
        let (codes, scales) = quantize_blocks(&w, &shape, Fp8Format::E4M3Fn, ScaleStore::F32);
        assert_eq!(scales.shape, vec![2, 3]);
        let q = codes.values();
        let s = scales.values();
        for (i, (&x, &c)) in w.iter().zip(&q).enumerate() {
            let (r, col) = (i / 300, i % 300);
            let v = c * s[(r / 128) * 3 + col / 128];
            assert!((v - x).abs() <= x.abs() * 2f64.powi(-4) + s[(r / 128) * 3 + col / 128] * 2f64.powi(-9));
        }
    }

    #[test]
    fn normal_tensor_matches_rounded_normals() {
        for dtype in [DType::F32, DType::BF16] {
            let direct = normal_tensor(dtype, &[3, 70_000], 9, 0.5);
            let via = HostTensor::from_f64(dtype, &[3, 70_000], &normals(210_000, 9, 0.5));
            assert_eq!(direct.bytes, via.bytes);
        }
    }

    #[test]
    fn restrided_views_keep_values_and_pad_with_nan() {
        let t = HostTensor::from_f64(DType::F32, &[3, 4], &(0..12).map(|v| v as f64).collect::<Vec<_>>());
        let s = t.with_row_pitch(6);
        assert_eq!(s.values(), t.values());
        assert_eq!(s.bytes.len(), (2 * 6 + 4) * 4);
        assert!(DType::F32.read_f64(&s.bytes, 4).is_nan());
    }
}
