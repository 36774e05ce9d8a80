//! A dsv3 stream over a runtime queue. It keeps the buffers of enqueued work alive until the next sync and
//! owns the error record that kernels' device-side checks write (read and cleared at sync).
//!
//! Its events are the queue's: a wait between two streams of one runtime kind is enqueued on the device
//! (the host does not block), an event of any other backend is waited for on the host. Device-side waits do
//! not change when buffers are released: each stream keeps what its own work uses until its own sync, which
//! waits for that work (and so for whatever it waited on).

use crate::buffer::GpuBuffer;
use crate::device::Ctx;
use crate::launch::Launch;
use crate::ops;
use crate::runtime::{Queue, QueueEvent};
use dsv3_core::backend::own_buffer;
use dsv3_core::{Buffer, Error, Event, Op, Result, Stream};
use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard};

/// A device-side check: which op and argument, and the rule the kernel found broken.
struct Site {
    op: &'static str,
    arg: &'static str,
    rule: String,
}

/// Fields drop in order: the queue (which waits for its work) and the buffers go before the device context.
pub struct GpuStream {
    pub(crate) queue: Box<dyn Queue>,
    /// Three u32: site (0 = no error), index, value.
    err: Buffer,
    sites: Mutex<Vec<Site>>,
    in_flight: Mutex<Vec<Buffer>>,
    /// Scratch buffers: in use by work enqueued since the last sync, and free for reuse after it.
    scratch_used: Mutex<Vec<Buffer>>,
    scratch_free: Mutex<Vec<Buffer>>,
    pub(crate) ctx: Arc<Ctx>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl GpuStream {
    pub fn new(ctx: Arc<Ctx>) -> Result<GpuStream> {
        let queue = ctx.runtime.new_queue()?;
        let err = ctx.alloc(16)?;
        let stream = GpuStream {
            queue,
            err,
            sites: Mutex::new(Vec::new()),
            in_flight: Mutex::new(Vec::new()),
            scratch_used: Mutex::new(Vec::new()),
            scratch_free: Mutex::new(Vec::new()),
            ctx,
        };
        stream.queue.upload(stream.err_addr(), &[0; 16])?;
        Ok(stream)
    }

    pub(crate) fn err_addr(&self) -> u64 {
        self.err.as_any().downcast_ref::<GpuBuffer>().map(|b| b.addr).unwrap_or_default()
    }

    pub(crate) fn keep(&self, b: Buffer) {
        lock(&self.in_flight).push(b);
    }

    /// A scratch buffer of at least `bytes`: the smallest free one that fits, else a new one. It stays in
    /// use (not reused) until the next sync, when the work that used it has finished.
    pub(crate) fn scratch(&self, bytes: usize) -> Result<Buffer> {
        let reused = {
            let mut free = lock(&self.scratch_free);
            let best = free.iter().enumerate().filter(|(_, b)| b.len() >= bytes).min_by_key(|(_, b)| b.len());
            best.map(|(i, _)| i).map(|i| free.swap_remove(i))
        };
        let b = match reused {
            Some(b) => {
                if let Some(g) = b.as_any().downcast_ref::<GpuBuffer>() {
                    self.ctx.runtime.scratch_reused(g.addr, g.len);
                }
                b
            }
            None => self.ctx.alloc(bytes)?,
        };
        lock(&self.scratch_used).push(b.clone());
        Ok(b)
    }

    /// Site numbers start at 1 (0 means "no error"); a check already registered keeps its number.
    pub(crate) fn site(&self, op: &'static str, arg: &'static str, rule: String) -> u32 {
        let mut sites = lock(&self.sites);
        if let Some(i) = sites.iter().position(|s| s.op == op && s.arg == arg && s.rule == rule) {
            return i as u32 + 1;
        }
        sites.push(Site { op, arg, rule });
        sites.len() as u32
    }

    fn buffer<'b>(&self, b: &'b Buffer, offset: usize, len: usize, what: &str) -> Result<&'b GpuBuffer> {
        own_buffer::<GpuBuffer>(self.ctx.runtime.backend(), self.ctx.id, b, offset, len, what)
    }

    /// The direct copy of `copy_from_peer`, once the runtime has said it can read `src`'s memory.
    fn copy_peer(
        &self,
        src_stream: &dyn Stream,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        let backend = self.ctx.runtime.backend();
        let peer =
            own_buffer::<GpuBuffer>(backend, src.device_id(), src, src_offset, bytes, "peer copy source")?;
        let d = self.buffer(dst, dst_offset, bytes, "peer copy destination")?;
        if bytes == 0 {
            return Ok(());
        }
        // After the work that wrote the source; the source stream's later work (which may overwrite it)
        // after the copy. Both on the device where the runtimes allow it.
        self.wait(src_stream.record()?.as_ref())?;
        self.keep(src.clone());
        self.keep(dst.clone());
        self.queue.copy_peer(
            peer.runtime(),
            peer.addr + src_offset as u64,
            d.addr + dst_offset as u64,
            bytes,
        )?;
        src_stream.wait(self.record()?.as_ref())
    }
}

/// A [`GpuStream`]'s event: the queue's, with the device context it was recorded in, kept alive as long as
/// the event (releasing an event needs its context).
struct GpuEvent {
    inner: Box<dyn QueueEvent>,
    _ctx: Arc<Ctx>,
}

impl Event for GpuEvent {
    fn synchronize(&self) -> Result<()> {
        self.inner.synchronize()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Stream for GpuStream {
    fn upload(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        let b = self.buffer(dst, offset, src.len(), "upload")?;
        self.queue.upload(b.addr + offset as u64, src)
    }

    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let b = self.buffer(src, offset, dst.len(), "download")?;
        self.queue.download(b.addr + offset as u64, dst)
    }

    fn copy(
        &self,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        let s = self.buffer(src, src_offset, bytes, "copy source")?;
        let d = self.buffer(dst, dst_offset, bytes, "copy destination")?;
        if bytes == 0 {
            return Ok(());
        }
        self.keep(src.clone());
        self.keep(dst.clone());
        self.queue.copy(s.addr + src_offset as u64, d.addr + dst_offset as u64, bytes)
    }

    fn launch(&self, op: &Op) -> Result<()> {
        op.validate()?;
        ops::launch(&Launch { stream: self, op: op.name() }, op)
    }

    fn sync(&self) -> Result<()> {
        let waited = self.queue.sync();
        lock(&self.in_flight).clear();
        let used: Vec<Buffer> = lock(&self.scratch_used).drain(..).collect();
        lock(&self.scratch_free).extend(used);
        waited?;
        let mut record = [0u8; 12];
        self.queue.download(self.err_addr(), &mut record)?;
        let word = |i: usize| u32::from_le_bytes(record[4 * i..4 * i + 4].try_into().unwrap_or_default());
        let site = word(0);
        if site == 0 {
            return Ok(());
        }
        self.queue.upload(self.err_addr(), &[0; 12])?;
        let sites = lock(&self.sites);
        let Some(s) = sites.get(site as usize - 1) else {
            return Err(Error::Driver {
                backend: self.ctx.runtime.backend().into(),
                call: "sync".into(),
                reason: format!("a kernel reported unknown check site {site}"),
            });
        };
        Err(Error::invalid(
            s.op,
            s.arg,
            format!("{} (element {}, value {})", s.rule, word(1), word(2) as i32),
        ))
    }

    /// An event of the queue: recording does not wait for the work.
    fn record(&self) -> Result<Arc<dyn Event>> {
        Ok(Arc::new(GpuEvent { inner: self.queue.record_event()?, _ctx: self.ctx.clone() }))
    }

    /// The queue waits for a GPU stream's event (on the device when it is of its own runtime kind, see
    /// `Queue::wait_event`); any other backend's event is waited for on the host.
    fn wait(&self, event: &dyn Event) -> Result<()> {
        match event.as_any().downcast_ref::<GpuEvent>() {
            Some(e) => self.queue.wait_event(e.inner.as_ref()),
            None => event.synchronize(),
        }
    }

    /// Direct when this runtime can read the source's memory (`Runtime::can_copy_from`: CUDA devices of one
    /// process, emulators); `None` (host staging) otherwise, and for buffers of other backends.
    fn copy_from_peer(
        &self,
        src_stream: &dyn Stream,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Option<Result<()>> {
        let peer = src.as_any().downcast_ref::<GpuBuffer>()?;
        if !self.ctx.runtime.can_copy_from(peer.runtime()) {
            return None;
        }
        Some(self.copy_peer(src_stream, src, src_offset, dst, dst_offset, bytes))
    }
}
