//! Putting a checkpoint's tensors on a device, in the form the graph's ops take them.
//!
//! Projections stay as stored: block-FP8 codes plus their 128×128 scale grid, or bf16 / f32. The GEMM
//! decodes them exactly, so the f32 path is "exactly dequantized weights" without a 4× larger copy. Two
//! things are reshaped on the host once, at load: routed experts are stacked into `[E, N, K]` for the
//! grouped GEMM, and `kv_b_proj` is split into the absorbed-MLA matrices W_UKᵀ `[H, Dc, dn]` and W_UV
//! `[H, dv, Dc]` (dequantized, as DeepSeek's reference does for this one matrix).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use dsv3_core::ops::gemm::{blocks, Weights};
use dsv3_core::{DType, Device, DeviceId, Error, Fp8Format, Result, Stream, Tensor};

/// A tensor in host memory: borrowed from a memory-mapped checkpoint or generated.
pub struct HostTensor<'a> {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Cow<'a, [u8]>,
}

impl HostTensor<'_> {
    fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Element `i` as f32 (exact for every stored float format).
    fn value(&self, i: usize) -> f32 {
        self.dtype.read_f64(&self.bytes, i) as f32
    }
}

/// Where weights come from: a checkpoint on disk or the built-in generator.
pub trait WeightSource {
    /// Where the tensors come from, for messages.
    fn describe(&self) -> String;
    fn tensor(&self, name: &str) -> Result<HostTensor<'_>>;
    fn contains(&self, name: &str) -> bool;
}

/// Uploads tensors to a device (the one last set) and keeps count of what went to each.
pub struct Uploader<'s> {
    pub device: Arc<dyn Device>,
    pub stream: Arc<dyn Stream>,
    pub source: &'s dyn WeightSource,
    /// Bytes of weights uploaded, per device.
    pub bytes: HashMap<DeviceId, u64>,
    on_tensor: Box<dyn FnMut(u64) + 's>,
}

/// Storage for float tensors on the device: bf16 and f32 go as they are; f16 widens to f32 (exact), since
/// kernels take f32 or bf16.
fn device_float(dtype: DType) -> DType {
    if dtype == DType::F16 {
        DType::F32
    } else {
        dtype
    }
}

fn data_error(source: &dyn WeightSource, name: &str, reason: String) -> Error {
    Error::Data { file: source.describe(), field: name.to_string(), reason }
}

impl<'s> Uploader<'s> {
    pub fn new(
        device: Arc<dyn Device>,
        source: &'s dyn WeightSource,
        on_tensor: impl FnMut(u64) + 's,
    ) -> Uploader<'s> {
        let stream = device.default_stream();
        Uploader { device, stream, source, bytes: HashMap::new(), on_tensor: Box::new(on_tensor) }
    }

    /// Sends the next tensors to `device` (through its default stream).
    pub fn set_device(&mut self, device: Arc<dyn Device>) {
        if device.id() != self.device.id() {
            self.stream = device.default_stream();
            self.device = device;
        }
    }

    fn alloc(&mut self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let buffer = self.device.alloc(bytes.max(1))?;
        *self.bytes.entry(self.device.id()).or_insert(0) += bytes as u64;
        Ok(Tensor::contiguous(buffer, 0, shape, dtype))
    }

    fn fetch(&mut self, name: &str) -> Result<HostTensor<'s>> {
        let t = self.source.tensor(name)?;
        crate::finite::check_weight(&self.source.describe(), name, t.dtype, &t.bytes)?;
        (self.on_tensor)(t.bytes.len() as u64);
        Ok(t)
    }

    /// Writes `t` at element `index` of `dst` (whose dtype is `device_float(t.dtype)` or `t.dtype`).
    fn write(&self, dst: &Tensor, index: usize, t: &HostTensor) -> Result<()> {
        let offset = dst.offset + index * dst.dtype.size();
        if dst.dtype == t.dtype {
            return self.stream.upload(&dst.buffer, offset, &t.bytes);
        }
        let mut wide = vec![0u8; t.numel() * dst.dtype.size()];
        for i in 0..t.numel() {
            dst.dtype.write_f64(&mut wide, i, t.dtype.read_f64(&t.bytes, i));
        }
        self.stream.upload(&dst.buffer, offset, &wide)
    }

    /// A float tensor (norm gain, embedding, router, bias) as stored.
    pub fn float(&mut self, name: &str) -> Result<Tensor> {
        self.float_as(name, None)
    }

    /// A float tensor widened to f32 on the host as it is uploaded (bf16 / f16 widen exactly).
    pub fn float_f32(&mut self, name: &str) -> Result<Tensor> {
        self.float_as(name, Some(DType::F32))
    }

    fn float_as(&mut self, name: &str, dtype: Option<DType>) -> Result<Tensor> {
        let t = self.fetch(name)?;
        let dst = self.alloc(&t.shape, dtype.unwrap_or(device_float(t.dtype)))?;
        self.write(&dst, 0, &t)?;
        Ok(dst)
    }

    /// A projection `[N, K]`: block FP8 with its scale grid, or float.
    pub fn linear(&mut self, name: &str) -> Result<Weights> {
        self.load_projections(&[name.to_string()], false)
    }

    /// Projections of identical shape and storage stacked into `[E, N, K]` (routed experts, one or more).
    pub fn stacked(&mut self, names: &[String]) -> Result<Weights> {
        self.load_projections(names, true)
    }

    /// Whether FP8 weights go to this device as e4m3fnuz: it computes in that format (AMD MI300).
    fn wants_fnuz(&self) -> bool {
        self.device.capabilities().fp8_formats.first() == Some(&Fp8Format::E4M3Fnuz)
    }

    /// Projections of identical shape and storage, `[E, N, K]` when `stack`, else the one name's `[N, K]`.
    /// On a device that computes in e4m3fnuz, DeepSeek's e4m3fn codes are converted on the way
    /// (`dsv3_core::fnuz`: the same values, codes kept and scales doubled).
    fn load_projections(&mut self, names: &[String], stack: bool) -> Result<Weights> {
        let first = self.fetch(&names[0])?;
        let (dtype, shape) = (first.dtype, first.shape.clone());
        let lead: &[usize] = if stack { &[names.len()] } else { &[] };
        let full: Vec<usize> = lead.iter().chain(&shape).copied().collect();
        let fp8 = dtype == DType::F8E4M3Fn;
        let fnuz = fp8 && self.wants_fnuz();
        let stored = if fnuz { DType::F8E4M3Fnuz } else { dtype };
        let codes = self.alloc(&full, if fp8 { stored } else { device_float(dtype) })?;
        let grid = [blocks(shape[0]), blocks(shape[1])];
        let scales = if fp8 {
            let g: Vec<usize> = lead.iter().chain(&grid).copied().collect();
            Some(self.alloc(&g, DType::F32)?)
        } else {
            None
        };
        let per = shape.iter().product::<usize>();
        for (e, name) in names.iter().enumerate() {
            let t = if e == 0 { first_again(&first) } else { self.fetch(name)? };
            if t.dtype != dtype || t.shape != shape {
                let why =
                    format!("{} {:?} differs from {} {:?} of {}", t.dtype, t.shape, dtype, shape, names[0]);
                return Err(data_error(self.source, name, why));
            }
            let scale = match &scales {
                Some(_) => {
                    let s = self.fetch(&format!("{name}_scale_inv"))?;
                    if s.dtype != DType::F32 || s.shape != grid {
                        let why = format!("scale grid must be f32 {grid:?}, got {} {:?}", s.dtype, s.shape);
                        return Err(data_error(self.source, &format!("{name}_scale_inv"), why));
                    }
                    Some(s)
                }
                None => None,
            };
            match (fnuz, scale) {
                (true, Some(s)) => {
                    let mut codes_fnuz = t.bytes.into_owned();
                    let mut scales_fnuz: Vec<f32> = s
                        .bytes
                        .chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        .collect();
                    dsv3_core::fnuz::e4m3fn_to_fnuz(&mut codes_fnuz, &mut scales_fnuz);
                    self.stream.upload(&codes.buffer, codes.offset + e * per, &codes_fnuz)?;
                    if let Some(scales) = &scales {
                        let offset = scales.offset + e * grid[0] * grid[1] * 4;
                        let bytes: Vec<u8> = scales_fnuz.iter().flat_map(|v| v.to_le_bytes()).collect();
                        self.stream.upload(&scales.buffer, offset, &bytes)?;
                    }
                }
                (_, scale) => {
                    self.write(&codes, e * per, &t)?;
                    if let (Some(scales), Some(s)) = (&scales, scale) {
                        self.write(scales, e * grid[0] * grid[1], &s)?;
                    }
                }
            }
        }
        Ok(match scales {
            Some(scales) => Weights::BlockFp8 { codes, scales },
            None => Weights::Dense(codes),
        })
    }

    /// `kv_b_proj` `[H·(dn+dv), Dc]` split per head into W_UKᵀ `[H, Dc, dn]` and W_UV `[H, dv, Dc]`, as exact
    /// f32 products of code and scale rounded once to `dtype`.
    pub fn absorbed_kv_b(
        &mut self,
        name: &str,
        heads: usize,
        dn: usize,
        dv: usize,
        dtype: DType,
    ) -> Result<(Tensor, Tensor)> {
        let w = self.fetch(name)?;
        let dc = w.shape[1];
        if w.shape[0] != heads * (dn + dv) {
            let why = format!("expected {} rows (heads × (dn + dv)), got {:?}", heads * (dn + dv), w.shape);
            return Err(data_error(self.source, name, why));
        }
        let scales =
            if w.dtype == DType::F8E4M3Fn { Some(self.fetch(&format!("{name}_scale_inv"))?) } else { None };
        let grid_cols = blocks(dc);
        let value = |n: usize, k: usize| -> f32 {
            let x = w.value(n * dc + k);
            match &scales {
                Some(s) => x * s.value((n / 128) * grid_cols + k / 128),
                None => x,
            }
        };
        let size = dtype.size();
        let mut uk_t = vec![0u8; heads * dc * dn * size];
        let mut uv = vec![0u8; heads * dv * dc * size];
        for h in 0..heads {
            let base = h * (dn + dv);
            for k in 0..dc {
                for d in 0..dn {
                    dtype.write_f64(&mut uk_t, (h * dc + k) * dn + d, value(base + d, k) as f64);
                }
            }
            for d in 0..dv {
                for k in 0..dc {
                    dtype.write_f64(&mut uv, (h * dv + d) * dc + k, value(base + dn + d, k) as f64);
                }
            }
        }
        let uk_t_dev = self.alloc(&[heads, dc, dn], dtype)?;
        self.stream.upload(&uk_t_dev.buffer, 0, &uk_t)?;
        let uv_dev = self.alloc(&[heads, dv, dc], dtype)?;
        self.stream.upload(&uv_dev.buffer, 0, &uv)?;
        Ok((uk_t_dev, uv_dev))
    }
}

/// The first tensor of a stack, borrowed again rather than fetched (and counted) twice.
fn first_again<'a>(t: &'a HostTensor<'a>) -> HostTensor<'a> {
    HostTensor { dtype: t.dtype, shape: t.shape.clone(), bytes: Cow::Borrowed(&t.bytes) }
}

impl WeightSource for crate::checkpoint::Checkpoint {
    fn describe(&self) -> String {
        self.dir().display().to_string()
    }

    fn tensor(&self, name: &str) -> Result<HostTensor<'_>> {
        let t = crate::checkpoint::Checkpoint::tensor(self, name)?;
        Ok(HostTensor { dtype: t.dtype, shape: t.shape, bytes: Cow::Borrowed(t.bytes) })
    }

    fn contains(&self, name: &str) -> bool {
        crate::checkpoint::Checkpoint::contains(self, name)
    }
}
