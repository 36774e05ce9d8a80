//! A dsv3 stream over a runtime queue. It keeps the buffers of enqueued work alive until the next sync and
//! owns the error record that kernels' device-side checks write (read and cleared at sync).
//!
//! Its events are the queue's: a wait between two streams of one runtime kind is enqueued on the device
//! (the host does not block), an event of any other backend is waited for on the host. Device-side waits do
//! not change when buffers are released: each stream keeps what its own work uses until its own sync, which
//! waits for that work (and so for whatever it waited on).
//!
//! Capture (`begin_capture` / `end_capture`) is the queue's (CUDA stream capture, hipGraph, the emulator's
//! recording): the buffers that captured work uses, scratch included, move from the stream to the graph,
//! which keeps them (and the stream, whose error record its kernels write) as long as it lives, and hands
//! them to the stream again at each replay until the stream's next sync, as a launch does.

use crate::buffer::GpuBuffer;
use crate::device::Ctx;
use crate::launch::Launch;
use crate::ops;
use crate::runtime::{Queue, QueueEvent, QueueGraph};
use dsv3_core::backend::own_buffer;
use dsv3_core::{Buffer, Error, Event, Graph, Op, Result, Stream};
use std::any::Any;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A device-side check: which op and argument, and the rule the kernel found broken.
struct Site {
    op: &'static str,
    arg: &'static str,
    rule: String,
}

/// A capture in progress: where the stream's kept and scratch buffers stood when it began (what came after
/// is the captured work's), and the first error while capturing, which spoils the capture.
struct Capture {
    kept_from: usize,
    scratch_from: usize,
    spoilt: Option<String>,
}

/// Fields drop in order: the queue (which waits for its work) and the buffers go before the device context.
pub struct GpuStream {
    pub(crate) queue: Box<dyn Queue>,
    /// This stream, for a graph captured on it to hold.
    me: Weak<GpuStream>,
    capture: Mutex<Option<Capture>>,
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
    pub fn new(ctx: Arc<Ctx>) -> Result<Arc<GpuStream>> {
        let queue = ctx.runtime.new_queue()?;
        let err = ctx.alloc(16)?;
        let stream = Arc::new_cyclic(|me| GpuStream {
            queue,
            me: me.clone(),
            capture: Mutex::new(None),
            err,
            sites: Mutex::new(Vec::new()),
            in_flight: Mutex::new(Vec::new()),
            scratch_used: Mutex::new(Vec::new()),
            scratch_free: Mutex::new(Vec::new()),
            ctx,
        });
        stream.queue.upload(stream.err_addr(), &[0; 16])?;
        Ok(stream)
    }

    /// `result`, after spoiling the capture in progress if it is an error: a graph missing a step's work
    /// must not come out of `end_capture`.
    fn captured<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            if let Some(c) = lock(&self.capture).as_mut() {
                c.spoilt.get_or_insert_with(|| e.to_string());
            }
        }
        result
    }

    /// An error (which spoils the capture) when the stream is capturing: `call` needs the host in the
    /// middle of the stream's work, which a graph cannot hold.
    fn not_capturing(&self, call: &'static str) -> Result<()> {
        let mut capture = lock(&self.capture);
        let Some(c) = capture.as_mut() else { return Ok(()) };
        let e = Error::invalid(
            call,
            "stream",
            "not allowed while the stream captures a graph (captured work cannot wait for the host)",
        );
        c.spoilt.get_or_insert_with(|| e.to_string());
        Err(e)
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

    fn enqueue_copy(
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
        self.not_capturing("upload")?;
        let b = self.buffer(dst, offset, src.len(), "upload")?;
        self.queue.upload(b.addr + offset as u64, src)
    }

    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.not_capturing("download")?;
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
        self.captured(self.enqueue_copy(src, src_offset, dst, dst_offset, bytes))
    }

    fn launch(&self, op: &Op) -> Result<()> {
        self.captured(op.validate().and_then(|()| ops::launch(&Launch { stream: self, op: op.name() }, op)))
    }

    fn sync(&self) -> Result<()> {
        self.not_capturing("sync")?;
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
        self.not_capturing("record")?;
        Ok(Arc::new(GpuEvent { inner: self.queue.record_event()?, _ctx: self.ctx.clone() }))
    }

    /// The queue waits for a GPU stream's event (on the device when it is of its own runtime kind, see
    /// `Queue::wait_event`); any other backend's event is waited for on the host.
    fn wait(&self, event: &dyn Event) -> Result<()> {
        self.not_capturing("wait")?;
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
        if let Err(e) = self.not_capturing("copy_from_peer") {
            return Some(Err(e));
        }
        Some(self.copy_peer(src_stream, src, src_offset, dst, dst_offset, bytes))
    }

    fn begin_capture(&self) -> Result<()> {
        let mut capture = lock(&self.capture);
        if capture.is_some() {
            return Err(Error::invalid("begin_capture", "stream", "the stream is already capturing"));
        }
        self.queue.begin_capture()?;
        *capture = Some(Capture {
            kept_from: lock(&self.in_flight).len(),
            scratch_from: lock(&self.scratch_used).len(),
            spoilt: None,
        });
        Ok(())
    }

    fn end_capture(&self) -> Result<Box<dyn Graph>> {
        let Some(c) = lock(&self.capture).take() else {
            return Err(Error::invalid("end_capture", "stream", "the stream is not capturing"));
        };
        let graph = self.queue.end_capture();
        // The captured work's buffers, taken from the stream whatever happens: captured work has not run,
        // so nothing queued uses them; the graph keeps them, or they go.
        // (Nothing shortens the lists while capturing: `sync` is refused.)
        let tail = |list: &Mutex<Vec<Buffer>>, from: usize| {
            let mut list = lock(list);
            let from = from.min(list.len());
            list.drain(from..).collect::<Vec<_>>()
        };
        let mut buffers = tail(&self.in_flight, c.kept_from);
        buffers.extend(tail(&self.scratch_used, c.scratch_from));
        if let Some(why) = c.spoilt {
            return Err(Error::invalid("end_capture", "stream", format!("the capture failed: {why}")));
        }
        let stream = self.me.upgrade().ok_or_else(|| Error::Driver {
            backend: self.ctx.runtime.backend().into(),
            call: "end_capture".into(),
            reason: "the stream is being dropped".into(),
        })?;
        Ok(Box::new(GpuGraph { graph: graph?, buffers, stream }))
    }
}

/// A graph captured on a [`GpuStream`]. Fields drop in order: the runtime's graph (released while its queue
/// and context live), then the buffers, then the stream.
struct GpuGraph {
    graph: Box<dyn QueueGraph>,
    buffers: Vec<Buffer>,
    stream: Arc<GpuStream>,
}

impl Graph for GpuGraph {
    fn replay(&self) -> Result<()> {
        let s = &self.stream;
        if lock(&s.capture).is_some() {
            return Err(Error::invalid("replay", "stream", "the stream is capturing a graph"));
        }
        // Until the stream's next sync, as for a launch: the graph may be dropped before its work runs.
        lock(&s.in_flight).extend(self.buffers.iter().cloned());
        self.graph.launch()
    }
}
