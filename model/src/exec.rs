//! Running ops on one device of the model, and one forward step's fixed inputs over all of them.
//!
//! An [`Exec`] is a device the model runs on, its stream and the arithmetic in use; every block holds the
//! index of the `Exec` its weights live on. A [`Step`] carries what a forward pass shares between blocks —
//! row counts, cache positions, and the positions / cache lengths uploaded once to every device — and moves
//! activations between devices where one block hands its output to a block elsewhere.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use dsv3_core::ops::elementwise::{Add, Embedding, RmsNorm, SiluMul};
use dsv3_core::ops::gemm::{blocks, ActQuant, Activations, Gemm, GroupedGemm, ScaleFormat, Weights};
use dsv3_core::{transfer, DType, Device, Error, Op, Result, Stream, Tensor};

use crate::placement::{Assignment, Part};
use crate::weights::Uploader;
use crate::workspace::Workspace;

/// One device of the model: where some of its parts live and run.
#[derive(Clone)]
pub(crate) struct Exec {
    pub name: String,
    pub device: Arc<dyn Device>,
    pub stream: Arc<dyn Stream>,
    /// A second stream, for work that overlaps the main stream's (a MoE layer's shared experts while its
    /// routed experts run on another device).
    pub side: Arc<dyn Stream>,
    /// The side stream's workspace: each stream reuses only its own buffers (see `crate::workspace`).
    pub side_workspace: Arc<Workspace>,
    pub stats: Arc<ExecStats>,
    /// Where its activations come from, reused step to step.
    pub workspace: Arc<Workspace>,
    /// Activation and cache dtype.
    pub act: DType,
    /// Activation-scale format when the GEMMs run W8A8.
    pub w8a8: Option<ScaleFormat>,
    pub eps: f32,
}

/// A dense feed-forward network (gate, up, down); also the shared experts, and routed experts stacked
/// `[E, N, K]`.
pub(crate) struct Mlp {
    pub gate: Weights,
    pub up: Weights,
    pub down: Weights,
}

/// What one device did since the model was loaded, for the run report.
#[derive(Default)]
pub(crate) struct ExecStats {
    /// Ops launched.
    pub launches: AtomicU64,
    /// Host time inside this device's launches: the compute time where launches run to completion (the
    /// CPU), the time to enqueue where they are asynchronous.
    pub launch_ns: AtomicU64,
    /// Activation bytes copied onto / off this device at device boundaries.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Host time waiting, once the routed experts were done elsewhere, for the shared experts on this
    /// device's side stream: the part of their time the routed experts did not hide. Where the backend
    /// waits on the device instead (GPU streams: `Stream::wait` on its own event), this is only the time to
    /// enqueue the wait, and the unhidden part is spent at the main stream's next host wait.
    pub join_wait_ns: AtomicU64,
}

impl Exec {
    pub fn launch(&self, op: Op) -> Result<()> {
        let start = Instant::now();
        let result = self.stream.launch(&op);
        let elapsed = start.elapsed();
        self.stats.launch_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        self.stats.launches.fetch_add(1, Ordering::Relaxed);
        // `-vv`: every launch, its host time and the kernel path the device takes for it.
        if tracing::enabled!(tracing::Level::TRACE) {
            let path = self.device.supports(&op);
            tracing::trace!(
                "{} on {}: {:.1} µs host time, {path}",
                op.name(),
                self.name,
                elapsed.as_secs_f64() * 1e6
            );
        }
        result
    }

    /// Makes this device's main stream wait for `side`'s work, timing the wait.
    pub fn join(&self, side: &Exec) -> Result<()> {
        let start = Instant::now();
        let result = side.stream.record().and_then(|event| self.stream.wait(event.as_ref()));
        self.stats.join_wait_ns.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        result
    }

    /// This device with its side stream as the one ops go to.
    pub fn side(&self) -> Exec {
        Exec { stream: self.side.clone(), workspace: self.side_workspace.clone(), ..self.clone() }
    }

    /// An activation tensor from the workspace (uninitialised).
    pub fn tmp(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        Ok(Tensor::contiguous(self.workspace.take(bytes)?, 0, shape, dtype))
    }

    pub fn upload_i32(&self, values: &[i32]) -> Result<Tensor> {
        let t = self.tmp(&[values.len()], DType::I32)?;
        self.stream.upload(&t.buffer, 0, bytemuck::cast_slice(values))?;
        Ok(t)
    }

    /// Rows `ids` (i32 `[R]`) of `table` (`[V, D]`) in this device's activation dtype: the embedding
    /// lookup, and any row gather.
    pub fn gather(&self, table: &Tensor, ids: &Tensor) -> Result<Tensor> {
        let out = self.tmp(&[ids.shape[0], table.shape[1]], self.act)?;
        self.launch(Op::Embedding(Embedding { table: table.clone(), ids: ids.clone(), out: out.clone() }))?;
        Ok(out)
    }

    pub fn rms_norm(&self, x: &Tensor, weight: &Tensor) -> Result<Tensor> {
        let out = self.tmp(&x.shape, self.act)?;
        let op = RmsNorm { x: x.clone(), weight: weight.clone(), eps: self.eps, out: out.clone() };
        self.launch(Op::RmsNorm(op))?;
        Ok(out)
    }

    pub fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        let out = self.tmp(&a.shape, self.act)?;
        self.launch(Op::Add(Add { a: a.clone(), b: b.clone(), out: out.clone() }))?;
        Ok(out)
    }

    /// FP8-quantized activations when the model runs W8A8 against FP8 weights, else `x` as it is.
    fn activations(&self, x: &Tensor, w: &Weights) -> Result<Activations> {
        let (Some(format), Weights::BlockFp8 { codes: wq, .. }) = (self.w8a8, w) else {
            return Ok(Activations::Dense(x.clone()));
        };
        let (m, k) = (x.shape[0], x.shape[1]);
        let codes = self.tmp(&[m, k], wq.dtype)?;
        let scales = self.tmp(&[m, blocks(k)], DType::F32)?;
        let op =
            ActQuant { x: x.clone(), codes: codes.clone(), scales: scales.clone(), scale_format: format };
        self.launch(Op::ActQuant(op))?;
        Ok(Activations::Fp8 { codes, scales })
    }

    pub fn linear(&self, x: &Tensor, w: &Weights, out_dtype: DType) -> Result<Tensor> {
        let c = self.tmp(&[x.shape[0], w.values().shape[0]], out_dtype)?;
        self.launch(Op::Gemm(Gemm { a: self.activations(x, w)?, b: w.clone(), c: c.clone() }))?;
        Ok(c)
    }

    pub fn grouped(&self, x: &Tensor, w: &Weights, offsets: &Tensor) -> Result<Tensor> {
        let c = self.tmp(&[x.shape[0], w.values().shape[1]], self.act)?;
        let op = GroupedGemm {
            a: self.activations(x, w)?,
            b: w.clone(),
            expert_offsets: offsets.clone(),
            c: c.clone(),
        };
        self.launch(Op::GroupedGemm(op))?;
        Ok(c)
    }

    pub fn silu_mul(&self, gate: &Tensor, up: &Tensor) -> Result<Tensor> {
        let out = self.tmp(&gate.shape, self.act)?;
        self.launch(Op::SiluMul(SiluMul { gate: gate.clone(), up: up.clone(), out: out.clone() }))?;
        Ok(out)
    }

    pub fn mlp(&self, x: &Tensor, mlp: &Mlp) -> Result<Tensor> {
        let hidden =
            self.silu_mul(&self.linear(x, &mlp.gate, self.act)?, &self.linear(x, &mlp.up, self.act)?)?;
        self.linear(&hidden, &mlp.down, self.act)
    }
}

/// Loads parts onto their devices: the uploader follows the part being loaded.
pub(crate) struct Loader<'s> {
    pub up: Uploader<'s>,
    devices: Vec<Arc<dyn Device>>,
    assignment: &'s Assignment,
    exec_of: HashMap<Part, usize>,
}

impl<'s> Loader<'s> {
    pub fn new(
        up: Uploader<'s>,
        devices: Vec<Arc<dyn Device>>,
        assignment: &'s Assignment,
        exec_of: HashMap<Part, usize>,
    ) -> Loader<'s> {
        Loader { up, devices, assignment, exec_of }
    }

    /// Layer `layer`'s routed experts grouped by exec, in exec order (the devices' order in the model):
    /// (exec, expert ids ascending).
    pub fn expert_groups(&self, layer: usize) -> Vec<(usize, Vec<usize>)> {
        let mut groups: Vec<(usize, Vec<usize>)> = self
            .assignment
            .expert_groups(layer)
            .into_iter()
            .map(|(_, ids)| (self.exec_of[&Part::Expert(layer, ids[0])], ids))
            .collect();
        groups.sort_by_key(|(exec, _)| *exec);
        groups
    }

    /// Points the uploader at `part`'s device and returns that device's exec index.
    pub fn part(&mut self, part: Part) -> Result<usize> {
        let exec = *self.exec_of.get(&part).ok_or_else(|| {
            Error::invalid("place", "assignment", format!("`{part}` is not placed on any device"))
        })?;
        self.up.set_device(self.devices[exec].clone());
        Ok(exec)
    }
}

/// The positions and cache lengths of a step, on one device.
pub(crate) struct DeviceInputs {
    /// `[B·T]` i32, sequence-major.
    pub positions: Tensor,
    /// `[B]` i32.
    pub kv_lens: Tensor,
    /// `[B, pages_per_seq]` i32: each sequence's cache pages.
    pub block_table: Tensor,
}

/// One forward step's fixed inputs, shared by every block.
pub(crate) struct Step<'a> {
    pub execs: &'a [Exec],
    /// Token rows, `batch · t`, sequence-major.
    pub rows: usize,
    pub batch: usize,
    pub t: usize,
    /// Per exec (same index).
    pub inputs: Vec<DeviceInputs>,
    /// Where MoE layers record their routing ids, when the model records them (`Model::record_routes`).
    pub routes: &'a Mutex<Option<Vec<Vec<i32>>>>,
}

impl Step<'_> {
    pub fn exec(&self, i: usize) -> &Exec {
        &self.execs[i]
    }

    /// `t` (on exec `from`) as a tensor on exec `to`: the same view when both are one device, else a copy
    /// (`dsv3_core::transfer`).
    pub fn to(&self, t: &Tensor, from: usize, to: usize) -> Result<Tensor> {
        if from == to {
            return Ok(t.clone());
        }
        let (a, b) = (&self.execs[from], &self.execs[to]);
        let bytes = t.span_bytes() as u64;
        a.stats.bytes_out.fetch_add(bytes, Ordering::Relaxed);
        b.stats.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        let buffer = b.workspace.take(t.span_bytes())?;
        transfer::copy_to(t, a.stream.as_ref(), buffer, b.stream.as_ref())
    }
}

/// A strided view of `t`'s buffer starting `offset` elements past `t`'s start.
pub(crate) fn view(t: &Tensor, offset: usize, shape: &[usize], strides: &[usize]) -> Tensor {
    Tensor {
        buffer: t.buffer.clone(),
        offset: t.offset + offset * t.dtype.size(),
        shape: shape.to_vec(),
        strides: strides.to_vec(),
        dtype: t.dtype,
    }
}
