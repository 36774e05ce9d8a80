//! Binding a case to a device: its inputs uploaded inside NaN padding, its outputs inside guard bytes,
//! and the op built over them; then the outputs downloaded and their guards checked.

use super::{Case, Inputs, Operand, Output, Outputs, Spec, GUARD, INPUT_PAD, SENTINEL};
use crate::gen::{self, element_offsets, garbage_element, HostTensor};
use crate::metrics;
use dsv3_core::ops::{self, Activations, TopkMethod, Weights};
use dsv3_core::{Buffer, DType, Device, Op, Result, Stream, Tensor};
use std::sync::Arc;

struct OutSlot {
    arg: &'static str,
    tensor: Tensor,
    before: Vec<u8>,
    is_element: Vec<bool>,
    elements: Vec<usize>,
}

/// A case's op built on one device, holding its buffers.
pub struct Bound {
    pub op: Op,
    outputs: Vec<OutSlot>,
}

struct Binder<'d> {
    device: &'d Arc<dyn Device>,
    stream: Arc<dyn Stream>,
    upload: bool,
    outputs: Vec<OutSlot>,
}

impl Binder<'_> {
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.device.alloc(bytes)
    }

    /// The input at byte offset [`INPUT_PAD`] of its own buffer, NaN padding around it.
    fn input(&mut self, h: &HostTensor) -> Result<Tensor> {
        let total = INPUT_PAD + h.bytes.len() + INPUT_PAD;
        let buffer = self.alloc(total)?;
        if self.upload {
            let pad: Vec<u8> = garbage_element(h.dtype).into_iter().cycle().take(INPUT_PAD).collect();
            let mut bytes = Vec::with_capacity(total);
            bytes.extend_from_slice(&pad);
            bytes.extend_from_slice(&h.bytes);
            bytes.extend_from_slice(&pad);
            self.stream.upload(&buffer, 0, &bytes)?;
        }
        Ok(Tensor {
            buffer,
            offset: INPUT_PAD,
            shape: h.shape.clone(),
            strides: h.strides.clone(),
            dtype: h.dtype,
        })
    }

    /// An output view with [`GUARD`] sentinel bytes on both sides (and in any gaps between strided rows)
    /// and its elements pre-filled with the dtype's garbage pattern.
    fn output(
        &mut self,
        arg: &'static str,
        dtype: DType,
        shape: &[usize],
        strides: Option<Vec<usize>>,
    ) -> Result<Tensor> {
        self.slot(arg, dtype, shape, strides, None)
    }

    /// An argument updated in place: an output slot whose elements start as `initial`'s (contiguous).
    fn updated(&mut self, arg: &'static str, initial: &HostTensor) -> Result<Tensor> {
        self.slot(arg, initial.dtype, &initial.shape, None, Some(initial))
    }

    fn slot(
        &mut self,
        arg: &'static str,
        dtype: DType,
        shape: &[usize],
        strides: Option<Vec<usize>>,
        initial: Option<&HostTensor>,
    ) -> Result<Tensor> {
        let strides = strides.unwrap_or_else(|| dsv3_core::tensor::contiguous_strides(shape));
        let span = gen::span_bytes(dtype, shape, &strides);
        let total = GUARD + span + GUARD;
        let buffer = self.alloc(total)?;
        let size = dtype.size();
        let elements: Vec<usize> =
            element_offsets(shape, &strides).into_iter().map(|e| GUARD + e * size).collect();
        let mut before = vec![SENTINEL; total];
        let mut is_element = vec![false; total];
        let garbage = garbage_element(dtype);
        for (i, &e) in elements.iter().enumerate() {
            let value = initial.map_or(&garbage[..], |t| &t.bytes[i * size..(i + 1) * size]);
            before[e..e + size].copy_from_slice(value);
            is_element[e..e + size].iter_mut().for_each(|b| *b = true);
        }
        if self.upload {
            self.stream.upload(&buffer, 0, &before)?;
        }
        let tensor = Tensor { buffer, offset: GUARD, shape: shape.to_vec(), strides, dtype };
        self.outputs.push(OutSlot { arg, tensor: tensor.clone(), before, is_element, elements });
        Ok(tensor)
    }
}

impl Bound {
    /// Downloads every output and checks its guard bytes.
    pub fn download(&self, stream: &dyn Stream) -> Result<Outputs> {
        let mut outs = Vec::new();
        for slot in &self.outputs {
            let mut after = vec![0u8; slot.before.len()];
            stream.download(&slot.tensor.buffer, 0, &mut after)?;
            let guard = metrics::check_guards(&after, &slot.before, &slot.is_element);
            let size = slot.tensor.dtype.size();
            let mut elements = Vec::with_capacity(slot.elements.len() * size);
            for &e in &slot.elements {
                elements.extend_from_slice(&after[e..e + size]);
            }
            outs.push(Output {
                arg: slot.arg,
                dtype: slot.tensor.dtype,
                shape: slot.tensor.shape.clone(),
                elements,
                guard,
            });
        }
        Ok(Outputs(outs))
    }
}

impl Case {
    /// Allocates the inputs and outputs on `device` (uploading when `upload`) and builds the op.
    pub fn bind(&self, device: &Arc<dyn Device>, inputs: &Inputs, upload: bool) -> Result<Bound> {
        let mut b = Binder { device, stream: device.default_stream(), upload, outputs: Vec::new() };
        let op = self.build(&mut b, inputs)?;
        Ok(Bound { op, outputs: b.outputs })
    }

    fn build(&self, b: &mut Binder, inp: &Inputs) -> Result<Op> {
        let mut input = |name: &str| b.input(inp.get(name));
        let op = match &self.spec {
            Spec::Gemm(g) => {
                let a = activations(g.a, &mut input)?;
                let w = weights(g.b, &mut input)?;
                let strides = (g.c_pitch > 0).then(|| vec![g.c_pitch, 1]);
                let c = b.output("c", g.c, &[g.m, g.n], strides)?;
                Op::Gemm(ops::Gemm { a, b: w, c })
            }
            Spec::GroupedGemm(g) => {
                let a = activations(g.a, &mut input)?;
                let w = weights(g.b, &mut input)?;
                let expert_offsets = input("expert_offsets")?;
                let rows: usize = g.counts.iter().sum();
                let c = b.output("c", g.c, &[rows, g.n], None)?;
                Op::GroupedGemm(ops::GroupedGemm { a, b: w, expert_offsets, c })
            }
            Spec::BatchedGemm(g) => {
                let (a, w) = (input("a")?, input("b")?);
                let c = b.output("c", g.c, &[g.batch, g.m, g.n], Some(g.c_strides()))?;
                Op::BatchedGemm(ops::BatchedGemm { a, b: w, c })
            }
            Spec::ActQuant(q) => {
                let x = input("x")?;
                let codes = b.output("codes", DType::from_fp8(q.format), &[q.m, q.k], None)?;
                let scales = b.output("scales", q.scales, &[q.m, ops::gemm::blocks(q.k)], None)?;
                Op::ActQuant(ops::ActQuant { x, codes, scales, scale_format: q.scale_format })
            }
            Spec::Dequantize(d) => {
                let (codes, scales) = (input("codes")?, input("scales")?);
                let out = b.output("out", d.out, &d.shape, None)?;
                Op::Dequantize(ops::Dequantize { codes, scales, out })
            }
            Spec::MoeRoute(r) => {
                let logits = input("logits")?;
                let bias = if r.config.method == TopkMethod::NoAuxTc { Some(input("bias")?) } else { None };
                let ids = b.output("ids", DType::I32, &[r.t, r.config.top_k], None)?;
                let weights = b.output("weights", DType::F32, &[r.t, r.config.top_k], None)?;
                Op::MoeRoute(ops::MoeRoute { logits, bias, config: r.config, ids, weights })
            }
            Spec::MoeDispatch(d) => {
                let (x, ids) = (input("x")?, input("ids")?);
                let rows = b.output("rows", d.x, &[d.t * d.k, d.d], None)?;
                let expert_offsets = b.output("expert_offsets", DType::I32, &[d.experts + 1], None)?;
                let slot_rows = b.output("slot_rows", DType::I32, &[d.t * d.k], None)?;
                Op::MoeDispatch(ops::MoeDispatch {
                    x,
                    ids,
                    n_experts: d.experts,
                    rows,
                    expert_offsets,
                    slot_rows,
                })
            }
            Spec::MoeCombine(c) => {
                let (expert_out, slot_rows, weights) =
                    (input("expert_out")?, input("slot_rows")?, input("weights")?);
                let out = b.output("out", c.out, &[c.t, c.n], None)?;
                Op::MoeCombine(ops::MoeCombine { expert_out, slot_rows, weights, out })
            }
            Spec::MlaAttention(a) => {
                let (q_latent, q_pe) = (input("q_latent")?, input("q_pe")?);
                let (kv_cache, kv_lens) = (input("kv_cache")?, input("kv_lens")?);
                let block_table = inp.find("block_table").map(|t| b.input(t)).transpose()?;
                let out = b.output("out", a.out, &[a.b, a.t, a.h, a.d1], None)?;
                Op::MlaAttention(ops::MlaAttention {
                    q_latent,
                    q_pe,
                    kv_cache,
                    block_table,
                    kv_lens,
                    softmax_scale: a.scale,
                    causal: a.causal,
                    out,
                })
            }
            Spec::MhaAttention(a) => {
                let (q, k, v, kv_lens) = (input("q")?, input("k")?, input("v")?, input("kv_lens")?);
                let out = b.output("out", a.out, &[a.b, a.t, a.h, a.d2], None)?;
                Op::MhaAttention(ops::MhaAttention {
                    q,
                    k,
                    v,
                    kv_lens,
                    softmax_scale: a.scale,
                    causal: a.causal,
                    out,
                })
            }
            Spec::CacheAppend(_) => {
                let (rows, kv_lens) = (input("rows")?, input("kv_lens")?);
                let block_table = inp.find("block_table").map(|t| b.input(t)).transpose()?;
                Op::CacheAppend(ops::CacheAppend {
                    rows,
                    kv_lens,
                    cache: b.updated("cache", inp.get("cache"))?,
                    block_table,
                })
            }
            Spec::RmsNorm(n) => {
                let (x, weight) = (input("x")?, input("weight")?);
                let out = b.output("out", n.out, &[n.r, n.d], None)?;
                Op::RmsNorm(ops::RmsNorm { x, weight, eps: n.eps, out })
            }
            Spec::Rope(r) => {
                let (x, positions) = (input("x")?, input("positions")?);
                let out = b.output("out", r.out, &[r.t, r.h, r.params.dim], None)?;
                Op::Rope(ops::Rope { x, positions, params: r.params, out })
            }
            Spec::SiluMul(e) => {
                let (gate, up) = (input("gate")?, input("up")?);
                Op::SiluMul(ops::SiluMul { gate, up, out: b.output("out", e.out, &[e.r, e.n], None)? })
            }
            Spec::Add(e) => {
                let (a, bb) = (input("a")?, input("b")?);
                Op::Add(ops::Add { a, b: bb, out: b.output("out", e.out, &[e.r, e.n], None)? })
            }
            Spec::Softmax(e) => {
                let x = input("x")?;
                Op::Softmax(ops::Softmax { x, out: b.output("out", e.out, &[e.r, e.n], None)? })
            }
            Spec::Argmax(e) => {
                let x = input("x")?;
                Op::Argmax(ops::Argmax { x, out: b.output("out", DType::I32, &[e.r], None)? })
            }
            Spec::Embedding(e) => {
                let (table, ids) = (input("table")?, input("ids")?);
                Op::Embedding(ops::Embedding { table, ids, out: b.output("out", e.out, &[e.t, e.d], None)? })
            }
            Spec::Cast(c) => {
                let x = input("x")?;
                Op::Cast(ops::Cast { x, out: b.output("out", c.to, &c.shape, None)? })
            }
            Spec::TopK(t) => {
                let x = input("x")?;
                let values = b.output("values", DType::F32, &[t.r, t.k], None)?;
                let ids = b.output("ids", DType::I32, &[t.r, t.k], None)?;
                Op::TopK(ops::TopK { x, k: t.k, values, ids })
            }
            Spec::Sample(t) => {
                let logits = input("logits")?;
                let row_params = inp.find("row_params").map(|t| b.input(t)).transpose()?;
                Op::Sample(ops::Sample {
                    logits,
                    temperature: t.temperature,
                    top_p: t.top_p,
                    seed: t.sample_seed,
                    row_params,
                    out: b.output("out", DType::I32, &[t.r], None)?,
                })
            }
        };
        debug_assert_eq!(op.name(), self.op);
        Ok(op)
    }
}

fn activations(op: Operand, input: &mut impl FnMut(&str) -> Result<Tensor>) -> Result<Activations> {
    Ok(match op {
        Operand::Dense(_) => Activations::Dense(input("a")?),
        Operand::Fp8(..) => Activations::Fp8 { codes: input("a")?, scales: input("a_scales")? },
    })
}

fn weights(op: Operand, input: &mut impl FnMut(&str) -> Result<Tensor>) -> Result<Weights> {
    Ok(match op {
        Operand::Dense(_) => Weights::Dense(input("b")?),
        Operand::Fp8(..) => Weights::BlockFp8 { codes: input("b")?, scales: input("b_scales")? },
    })
}
