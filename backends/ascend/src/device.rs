//! An opened Ascend device: its context, memory and streams.
//!
//! Ownership mirrors the release order CANN documents (streams and memory, then the context, then the
//! device reference): every stream, buffer and tensor descriptor holds an `Arc<Context>`, so the context
//! is destroyed last, and `Context` resets the device it set.
//!
//! Streams are asynchronous: `launch` enqueues an aclnn operator and keeps what it uses (descriptors,
//! workspace, operand buffers) in the stream's pending list until `sync` has waited for it. Uploads,
//! downloads and copies use the synchronous `aclrtMemcpy` after waiting for the stream, which orders
//! them after earlier work and surfaces its errors there.

use crate::buffer::{AscendBuffer, DeviceMem};
use crate::ffi::{Cann, CopyKind, Raw, BACKEND};
use crate::{gemm, support};
use dsv3_core::{
    Buffer, Capabilities, DType, DTypeUsage, Device, DeviceId, DeviceInfo, Error, Op, Peak, Result, Stream,
    Support,
};
use std::sync::{Arc, Mutex, MutexGuard};

/// A CANN context on one device, created with a device reference (`aclrtSetDevice`) that it gives back
/// when it drops.
pub(crate) struct Context {
    cann: Arc<Cann>,
    ordinal: i32,
    raw: Raw,
}

impl Context {
    fn create(cann: Arc<Cann>, ordinal: i32) -> Result<Arc<Context>> {
        cann.set_device(ordinal)?;
        match cann.create_context(ordinal) {
            Ok(raw) => Ok(Arc::new(Context { cann, ordinal, raw })),
            Err(e) => {
                let _ = cann.reset_device(ordinal);
                Err(e)
            }
        }
    }

    /// Makes this context current on the calling thread (CANN's memory and stream calls act on the
    /// current context, and the caller may be any thread) and hands out the API.
    pub(crate) fn enter(&self) -> Result<&Cann> {
        self.cann.set_current_context(self.raw)?;
        Ok(&self.cann)
    }

    pub(crate) fn cann(&self) -> &Arc<Cann> {
        &self.cann
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; the runtime releases what is left when the process exits.
        let _ = self.cann.destroy_context(self.raw);
        let _ = self.cann.reset_device(self.ordinal);
    }
}

pub struct AscendDevice {
    id: DeviceId,
    info: DeviceInfo,
    caps: Capabilities,
    soc: String,
    ctx: Arc<Context>,
    stream: Arc<AscendStream>,
}

impl AscendDevice {
    pub(crate) fn open(cann: &Arc<Cann>, ordinal: usize) -> Result<Arc<AscendDevice>> {
        let ordinal_i32 = i32::try_from(ordinal).map_err(|_| Error::Unavailable {
            backend: BACKEND.into(),
            reason: format!("device ordinal {ordinal} is out of range"),
        })?;
        let ctx = Context::create(cann.clone(), ordinal_i32)?;
        let api = ctx.enter()?;
        let soc = api.soc_name().unwrap_or_else(|| "unknown Ascend SoC".to_string());
        let memory_bytes = api.mem_info().map_or(0, |(_, total)| total as u64);
        let id = DeviceId::new(BACKEND, ordinal);
        let stream = Arc::new(AscendStream::create(&ctx, id, soc.clone())?);
        let mut features = Vec::new();
        if let Some((major, minor, patch)) = cann.acl_version {
            features.push(format!("acl-{major}.{minor}.{patch}"));
        }
        features.push(format!("aclnnMatmul:{}", cann.matmul_lib));
        features.push(format!("libs:{}", cann.dir.display()));
        Ok(Arc::new(AscendDevice {
            id,
            info: DeviceInfo {
                backend: BACKEND,
                ordinal,
                // The SoC name is the runtime's own (e.g. Ascend910B1); the test fake names itself FAKE.
                name: soc.clone(),
                vendor: "Huawei".into(),
                arch: soc.clone(),
                memory_bytes,
            },
            caps: capabilities(&soc, memory_bytes, features),
            soc,
            ctx,
            stream,
        }))
    }
}

/// What the hardware family does with each dtype, as far as this stub knows; only what the stub itself
/// runs (bf16 / f16 matrix products) is exercised.
fn capabilities(soc: &str, memory_bytes: u64, features: Vec<String>) -> Capabilities {
    let bf16 = support::bf16_capable(soc);
    let dtypes = DType::ALL
        .iter()
        .map(|&d| {
            let (arithmetic, matrix) = match d {
                DType::F16 => (true, true),
                DType::BF16 => (bf16, bf16),
                DType::F32 | DType::I32 | DType::I64 => (true, false),
                _ => (false, false),
            };
            (d, DTypeUsage { storage: true, conversion: arithmetic, arithmetic, matrix })
        })
        .collect();
    Capabilities {
        dtypes,
        // FP8 arithmetic exists only on the newest parts (Ascend 950); the stub computes none.
        fp8_formats: Vec::new(),
        memory_bytes,
        // An AI Core vector instruction covers 256 bytes: 64 f32 lanes [UNCONFIRMED: datasheet figure].
        subgroup_size: 64,
        // CANN 8 can capture a stream (aclmdlRI); the stub does not use it.
        graph_capture: false,
        host_memory: false,
        features,
    }
}

impl Device for AscendDevice {
    fn id(&self) -> DeviceId {
        self.id
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn supports(&self, op: &Op) -> Support {
        support::supports(&self.soc, op)
    }

    /// Unknown: nothing is measured on the device, and the stub quotes no datasheet.
    fn peak(&self) -> Option<Peak> {
        None
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let mem = DeviceMem::alloc(&self.ctx, bytes)?;
        Ok(Arc::new(AscendBuffer { mem, device: self.id }))
    }

    fn default_stream(&self) -> Arc<dyn Stream> {
        self.stream.clone()
    }

    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        Ok(Arc::new(AscendStream::create(&self.ctx, self.id, self.soc.clone())?))
    }
}

/// Everything one enqueued operator uses, kept until the stream has been waited for. Field order is
/// release order: descriptors, then the workspace, then the operands' buffers.
pub(crate) struct Pending {
    pub(crate) op: &'static str,
    pub(crate) kernel: &'static str,
    pub(crate) _tensors: Vec<gemm::TensorDesc>,
    pub(crate) _workspace: DeviceMem,
    pub(crate) _buffers: Vec<Buffer>,
}

pub(crate) struct AscendStream {
    ctx: Arc<Context>,
    device: DeviceId,
    soc: String,
    raw: Raw,
    /// Work enqueued since the last wait. The lock also serialises all calls on this stream.
    pending: Mutex<Vec<Pending>>,
}

impl AscendStream {
    fn create(ctx: &Arc<Context>, device: DeviceId, soc: String) -> Result<AscendStream> {
        let raw = ctx.enter()?.create_stream()?;
        Ok(AscendStream { ctx: ctx.clone(), device, soc, raw, pending: Mutex::new(Vec::new()) })
    }

    /// The pending list, locked. A poisoned lock only means a thread panicked while holding it; the list
    /// itself is still consistent (pushes and takes are single operations).
    fn lock(&self) -> MutexGuard<'_, Vec<Pending>> {
        self.pending.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Waits for all enqueued work and releases what it held. After a failed wait the stream's work is
    /// over too (the runtime aborts it), so the resources are released either way.
    fn wait(&self, pending: &mut Vec<Pending>) -> Result<()> {
        let waited = self.ctx.enter()?.synchronize_stream(self.raw);
        let done = std::mem::take(pending);
        let result = match waited {
            Ok(()) => Ok(()),
            Err(reason) => Err(match done.first() {
                Some(first) => {
                    let mut kernels: Vec<&str> = done.iter().map(|p| p.kernel).collect();
                    kernels.dedup();
                    Error::Kernel {
                        backend: BACKEND.into(),
                        op: first.op,
                        kernel: kernels.join(", "),
                        reason: format!("{reason} ({} operator(s) were in flight)", done.len()),
                    }
                }
                None => {
                    Error::Driver { backend: BACKEND.into(), call: "aclrtSynchronizeStream".into(), reason }
                }
            }),
        };
        drop(done);
        result
    }

    /// The device memory behind `b`, checked to belong to this device and to hold `offset..offset+len`.
    fn own<'b>(&self, b: &'b Buffer, offset: usize, len: usize, what: &str) -> Result<&'b DeviceMem> {
        let buffer: &AscendBuffer =
            dsv3_core::backend::own_buffer(BACKEND, self.device, b, offset, len, what)?;
        Ok(&buffer.mem)
    }
}

impl Drop for AscendStream {
    fn drop(&mut self) {
        // Work still in flight must finish before its memory goes and the stream is destroyed; an error
        // here has nobody to go to.
        let mut pending = self.lock();
        let _ = self.wait(&mut pending);
        let _ = self.ctx.enter();
        let _ = self.ctx.cann().destroy_stream(self.raw);
    }
}

impl Stream for AscendStream {
    fn upload(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        let mem = self.own(dst, offset, src.len(), "upload")?;
        let mut pending = self.lock();
        self.wait(&mut pending)?;
        if src.is_empty() {
            return Ok(());
        }
        let to = mem.ptr().byte_add(offset);
        self.ctx.enter()?.memcpy(
            to,
            mem.len() - offset,
            src.as_ptr().cast(),
            src.len(),
            CopyKind::HostToDevice,
        )
    }

    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let mem = self.own(src, offset, dst.len(), "download")?;
        let mut pending = self.lock();
        self.wait(&mut pending)?;
        if dst.is_empty() {
            return Ok(());
        }
        let from = mem.ptr().byte_add(offset);
        let to = Raw(dst.as_mut_ptr().cast());
        self.ctx.enter()?.memcpy(to, dst.len(), from.0, dst.len(), CopyKind::DeviceToHost)
    }

    fn copy(
        &self,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        let from = self.own(src, src_offset, bytes, "copy source")?;
        let to = self.own(dst, dst_offset, bytes, "copy destination")?;
        let mut pending = self.lock();
        self.wait(&mut pending)?;
        if bytes == 0 {
            return Ok(());
        }
        self.ctx.enter()?.memcpy(
            to.ptr().byte_add(dst_offset),
            to.len() - dst_offset,
            from.ptr().byte_add(src_offset).0,
            bytes,
            CopyKind::DeviceToDevice,
        )
    }

    fn launch(&self, op: &Op) -> Result<()> {
        op.validate()?;
        // `validate` proved every argument lives where the first one does; that must be here.
        let (arg, first, _) = op.tensors()[0];
        if first.buffer.device_id() != self.device {
            return Err(Error::invalid(
                op.name(),
                arg,
                format!("lives on {}, not {}", first.buffer.device_id(), self.device),
            ));
        }
        if let Support::Unsupported { reason } = support::supports(&self.soc, op) {
            return Err(Error::unsupported(BACKEND, op.name(), reason));
        }
        let mut pending = self.lock();
        let enqueued = match op {
            Op::Gemm(g) => gemm::launch(&self.ctx, self.raw, g)?,
            // `supports` answers Unsupported for every other op, so this is not reached; an error, not a
            // panic, if the two ever disagree.
            other => {
                return Err(Error::unsupported(BACKEND, other.name(), "no aclnn launch path in the stub"))
            }
        };
        pending.extend(enqueued);
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut pending = self.lock();
        self.wait(&mut pending)
    }
}
