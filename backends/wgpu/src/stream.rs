//! Streams over the device's wgpu queue. `launch` validates the op and records its dispatches; recorded
//! work is encoded and submitted in batches (when enough has accumulated, before an upload, at `sync`
//! and `download`), so a model step is a few submissions rather than hundreds. `sync` waits for the
//! queue and surfaces what the device found: an argument check failed in a kernel (an id out of range,
//! bad expert offsets or cache lengths), or an error wgpu reported.

use crate::buffer::WgpuBuffer;
use crate::device::{Ctx, BACKEND};
use crate::kernels::{self, Elem, Kernel};
use crate::ops;
use dsv3_core::{Buffer, Error, Op, Result, Stream, Tensor};
use std::sync::{Arc, Mutex, MutexGuard};
use wgpu::util::DeviceExt;

/// Dispatches recorded before the batch is submitted.
const FLUSH_AT: usize = 256;
/// Bytes per staged upload step (wgpu stages each `write_buffer`; bounded so a 2 GB weight does not
/// need 2 GB of staging at once).
const UPLOAD_STEP: usize = 64 << 20;

/// A storage binding: a range of a buffer whose start is aligned for binding.
#[derive(Clone, Debug)]
pub struct Win {
    pub buf: wgpu::Buffer,
    pub start: u64,
    pub size: u64,
}

pub struct Dispatch {
    pub kernel: Arc<Kernel>,
    pub wins: Vec<Win>,
    pub params: Vec<u32>,
    pub groups: [u32; 3],
}

impl Cmd {
    /// The same command again (buffers and pipelines are shared handles).
    pub fn clone_cmd(&self) -> Cmd {
        match self {
            Cmd::Dispatch(d) => Cmd::Dispatch(Dispatch {
                kernel: d.kernel.clone(),
                wins: d.wins.clone(),
                params: d.params.clone(),
                groups: d.groups,
            }),
            Cmd::Copy { src, src_off, dst, dst_off, size } => Cmd::Copy {
                src: src.clone(),
                src_off: *src_off,
                dst: dst.clone(),
                dst_off: *dst_off,
                size: *size,
            },
        }
    }
}

pub enum Cmd {
    Dispatch(Dispatch),
    /// `copy_buffer_to_buffer` (offsets and size multiples of 4, distinct buffers).
    Copy {
        src: wgpu::Buffer,
        src_off: u64,
        dst: wgpu::Buffer,
        dst_off: u64,
        size: u64,
    },
}

/// What a failed device-side check means: the op, the argument, and the rule.
#[derive(Clone, Debug)]
pub struct Site {
    pub op: &'static str,
    pub arg: &'static str,
    pub rule: String,
}

/// Collects one launch's commands; nothing reaches the stream unless the whole op was planned.
pub struct Recorder<'a> {
    pub ctx: &'a Ctx,
    pub op: &'static str,
    pub cmds: Vec<Cmd>,
    pub sites: Vec<Site>,
    site_base: usize,
}

impl<'a> Recorder<'a> {
    pub fn new(ctx: &'a Ctx, op: &'static str, site_base: usize) -> Recorder<'a> {
        Recorder { ctx, op, cmds: Vec::new(), sites: Vec::new(), site_base }
    }

    pub fn kernel(&self, spec: &kernels::Spec) -> Result<Arc<Kernel>> {
        self.ctx.kernel(self.op, spec)
    }

    /// The code a kernel reports when the check `rule` on `arg` fails.
    pub fn site(&mut self, arg: &'static str, rule: impl Into<String>) -> u32 {
        self.sites.push(Site { op: self.op, arg, rule: rule.into() });
        (self.site_base + self.sites.len()) as u32
    }

    /// Bytes a window may hold after its start is aligned down (what chunking plans against).
    pub fn window_capacity(&self) -> u64 {
        // A window's start is aligned down (up to align − 1 bytes more) and its end rounded up to a word.
        self.ctx.binding_limit.saturating_sub(self.ctx.offset_align + 4)
    }

    /// A one-word binding at `t`'s start, for kernel arguments a variant does not read.
    pub fn dummy(&self, arg: &'static str, t: &Tensor) -> Result<Win> {
        Ok(self.window(arg, t, t.offset, t.offset + 1)?.0)
    }

    /// A binding of `t`'s buffer covering bytes `first..end`, and the element offset of byte `first`
    /// from the binding's start (the kernel adds its own indices to that).
    pub fn window(&self, arg: &'static str, t: &Tensor, first: usize, end: usize) -> Result<(Win, u32)> {
        let b = own(self.ctx, self.op, arg, &t.buffer)?;
        // Aligned down; and never so late that no word is left to bind (an empty view at a buffer's end).
        let align = self.ctx.offset_align;
        let start = ((first as u64) / align * align).min((b.capacity() - 4) / align * align);
        let end = ((end.max(first) as u64).div_ceil(4) * 4).max(start + 4).min(b.capacity());
        let size = end - start;
        if size > self.ctx.binding_limit {
            return Err(Error::unsupported(
                BACKEND,
                self.op,
                format!(
                    "argument `{arg}` needs a {size}-byte storage binding here, over this device's {}-byte limit",
                    self.ctx.binding_limit
                ),
            ));
        }
        let elem = t.dtype.size() as u64;
        let offset = (first as u64 - start) / elem;
        Ok((Win { buf: b.raw.clone(), start, size }, offset as u32))
    }

    /// A binding of the whole view `t`.
    pub fn tensor(&self, arg: &'static str, t: &Tensor) -> Result<(Win, u32)> {
        self.window(arg, t, t.offset, t.offset + t.span_bytes())
    }

    /// Device scratch memory for this launch (released once the batch that uses it has run).
    pub fn scratch(&self, bytes: u64) -> Win {
        let size = bytes.max(4).div_ceil(4) * 4;
        let buf = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dsv3 scratch"),
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Win { buf, start: 0, size }
    }

    /// Workgroup counts for `n` groups along one logical dimension, folded into x and y under the
    /// per-dimension limit (kernels rebuild the index as `x + y · num_workgroups.x`).
    pub fn grid(&self, n: u32) -> [u32; 3] {
        let x = n.clamp(1, self.ctx.max_groups);
        [x, n.div_ceil(x).max(1), 1]
    }

    pub fn dispatch(
        &mut self,
        kernel: Arc<Kernel>,
        wins: Vec<Win>,
        params: Vec<u32>,
        groups: [u32; 3],
    ) -> Result<()> {
        if wins.len() != kernel.args {
            return Err(Error::Kernel {
                backend: BACKEND.into(),
                op: self.op,
                kernel: kernel.name.into(),
                reason: format!("{} bindings for {} arguments", wins.len(), kernel.args),
            });
        }
        if groups.iter().any(|&g| g > self.ctx.max_groups) {
            return Err(Error::Kernel {
                backend: BACKEND.into(),
                op: self.op,
                kernel: kernel.name.into(),
                reason: format!("grid {groups:?} exceeds {} workgroups per dimension", self.ctx.max_groups),
            });
        }
        if groups.contains(&0) {
            return Ok(());
        }
        self.cmds.push(Cmd::Dispatch(Dispatch { kernel, wins, params, groups }));
        Ok(())
    }
}

/// The wgpu buffer behind `b`, checked to belong to this device.
pub fn own<'b>(ctx: &Ctx, op: &'static str, arg: &'static str, b: &'b Buffer) -> Result<&'b WgpuBuffer> {
    if b.device_id() != ctx.id {
        return Err(Error::invalid(op, arg, format!("lives on {}, not {}", b.device_id(), ctx.id)));
    }
    b.as_any()
        .downcast_ref::<WgpuBuffer>()
        .ok_or_else(|| Error::invalid(op, arg, format!("buffer of {} is not wgpu memory", b.device_id())))
}

struct State {
    cmds: Vec<Cmd>,
    sites: Vec<Site>,
}

pub struct WgpuStream {
    ctx: Arc<Ctx>,
    state: Mutex<State>,
    /// The first failed device-side check since the last sync: [site code, element, value, unused].
    err: wgpu::Buffer,
}

impl WgpuStream {
    pub fn new(ctx: Arc<Ctx>) -> Result<WgpuStream> {
        let err = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dsv3 check word"),
            contents: &[0u8; 16],
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        Ok(WgpuStream { ctx, state: Mutex::new(State { cmds: Vec::new(), sites: Vec::new() }), err })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn buffer<'b>(
        &self,
        b: &'b Buffer,
        offset: usize,
        len: usize,
        what: &'static str,
    ) -> Result<&'b WgpuBuffer> {
        dsv3_core::backend::own_buffer(BACKEND, self.ctx.id, b, offset, len, what)
    }

    /// Encodes and submits everything recorded.
    fn flush(&self, state: &mut State) -> Result<()> {
        if state.cmds.is_empty() {
            return Ok(());
        }
        let cmds = std::mem::take(&mut state.cmds);
        let ctx = &self.ctx;
        let align = ctx.offset_align as usize;
        // All parameter blocks of the batch in one buffer, each at an aligned offset.
        let mut blob: Vec<u8> = Vec::new();
        let mut offsets = Vec::with_capacity(cmds.len());
        for c in &cmds {
            if let Cmd::Dispatch(d) = c {
                blob.resize(blob.len().div_ceil(align) * align, 0);
                offsets.push(blob.len() as u64);
                for w in &d.params {
                    blob.extend_from_slice(&w.to_le_bytes());
                }
                if d.params.is_empty() {
                    blob.extend_from_slice(&[0; 4]);
                }
            }
        }
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let params = ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dsv3 params"),
            contents: if blob.is_empty() { &[0; 4] } else { &blob },
            usage: wgpu::BufferUsages::STORAGE,
        });
        let mut enc =
            ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("dsv3") });
        let mut next = 0;
        let mut i = 0;
        while i < cmds.len() {
            match &cmds[i] {
                Cmd::Copy { src, src_off, dst, dst_off, size } => {
                    enc.copy_buffer_to_buffer(src, *src_off, dst, *dst_off, *size);
                    i += 1;
                }
                Cmd::Dispatch(_) => {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
                    while let Some(Cmd::Dispatch(d)) = cmds.get(i) {
                        let off = offsets[next];
                        next += 1;
                        let psize = (d.params.len().max(1) * 4) as u64;
                        let mut entries = vec![
                            wgpu::BindGroupEntry {
                                binding: 0,
                                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &params,
                                    offset: off,
                                    size: wgpu::BufferSize::new(psize),
                                }),
                            },
                            wgpu::BindGroupEntry { binding: 1, resource: self.err.as_entire_binding() },
                        ];
                        for (j, w) in d.wins.iter().enumerate() {
                            entries.push(wgpu::BindGroupEntry {
                                binding: j as u32 + 2,
                                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                    buffer: &w.buf,
                                    offset: w.start,
                                    size: wgpu::BufferSize::new(w.size),
                                }),
                            });
                        }
                        let group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: Some(d.kernel.name),
                            layout: &d.kernel.layout,
                            entries: &entries,
                        });
                        pass.set_pipeline(&d.kernel.pipeline);
                        pass.set_bind_group(0, &group, &[]);
                        pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                        i += 1;
                    }
                }
            }
        }
        ctx.queue.submit([enc.finish()]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Kernel {
                backend: BACKEND.into(),
                op: "(batch)",
                kernel: "submission".into(),
                reason: e.to_string(),
            });
        }
        // Reclaim finished work's memory without waiting.
        let _ = ctx.device.poll(wgpu::PollType::Poll);
        Ok(())
    }

    /// Waits for everything submitted.
    fn wait(&self) -> Result<()> {
        self.ctx
            .device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| self.ctx.driver_error("device.poll", e))?;
        let mut uncaptured = self.ctx.uncaptured.lock().unwrap_or_else(|p| p.into_inner());
        if !uncaptured.is_empty() {
            let all = std::mem::take(&mut *uncaptured).join("; ");
            return Err(self.ctx.driver_error("(asynchronous)", all));
        }
        Ok(())
    }

    /// Copies `len` bytes at `offset` of `src` (a multiple-of-4 range) to the host.
    fn read_words(&self, src: &wgpu::Buffer, offset: u64, len: u64) -> Result<Vec<u8>> {
        let staging = self.ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dsv3 download"),
            size: len,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = self.ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, offset, &staging, 0, len);
        self.ctx.queue.submit([enc.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, .., move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        match rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.ctx.driver_error("map_async", e)),
            Err(_) => return Err(self.ctx.driver_error("map_async", "the mapping callback never ran")),
        }
        let bytes =
            staging.get_mapped_range(..).map_err(|e| self.ctx.driver_error("get_mapped_range", e))?.to_vec();
        staging.unmap();
        Ok(bytes)
    }

    /// Flush, wait, and report the first failed device-side check (then clear it).
    fn sync_locked(&self, state: &mut State) -> Result<()> {
        self.flush(state)?;
        self.wait()?;
        if state.sites.is_empty() {
            return Ok(());
        }
        let sites = std::mem::take(&mut state.sites);
        let word = self.read_words(&self.err, 0, 16)?;
        let at = |i: usize| u32::from_le_bytes(word[4 * i..4 * i + 4].try_into().unwrap());
        let code = at(0);
        if code == 0 {
            return Ok(());
        }
        self.ctx.queue.write_buffer(&self.err, 0, &[0u8; 16]);
        let (index, value) = (at(1), at(2) as i32);
        match sites.get(code as usize - 1) {
            Some(s) => Err(Error::invalid(
                s.op,
                s.arg,
                format!("element {index} is {value}: {} (checked on the device)", s.rule),
            )),
            None => Err(self.ctx.driver_error("device check", format!("unknown check code {code}"))),
        }
    }

    /// Records a byte-exact copy (any alignment) of `n` bytes from `src` at `so` to `dst` at `do_`, through
    /// the copy kernel, in windows the binding limit allows.
    fn record_copy_bytes(
        &self,
        state: &mut State,
        src: &wgpu::Buffer,
        so: u64,
        dst: &wgpu::Buffer,
        do_: u64,
        n: u64,
    ) -> Result<()> {
        let spec = kernels::Spec {
            name: "copy_bytes",
            sources: &[kernels::src::COPY_BYTES],
            args: &[kernels::input("src", Elem::Word), kernels::output("dst", Elem::Word)],
            consts: &[("WG", 256)],
        };
        let kernel = self.ctx.kernel("copy", &spec)?;
        let align = self.ctx.offset_align;
        let step = (self.ctx.binding_limit.saturating_sub(2 * align + 8)).max(4) / 4 * 4;
        let mut done = 0;
        while done < n {
            let len = (n - done).min(step);
            let (s0, d0) = (so + done, do_ + done);
            let sw = Win { buf: src.clone(), start: s0 / align * align, size: 0 };
            let dw = Win { buf: dst.clone(), start: d0 / align * align, size: 0 };
            let sw = Win { size: ((s0 + len).div_ceil(4) * 4).min(src.size()) - sw.start, ..sw };
            let dw = Win { size: ((d0 + len).div_ceil(4) * 4).min(dst.size()) - dw.start, ..dw };
            let (s_rel, d_rel) = ((s0 - sw.start) as u32, (d0 - dw.start) as u32);
            let words = ((d_rel as u64 + len).div_ceil(4) - d_rel as u64 / 4) as u32;
            let mut rec = Recorder::new(&self.ctx, "copy", state.sites.len());
            rec.dispatch(
                kernel.clone(),
                vec![sw, dw],
                vec![s_rel, d_rel, len as u32],
                rec.grid(words.div_ceil(256)),
            )?;
            state.cmds.extend(rec.cmds);
            done += len;
        }
        Ok(())
    }
}

impl WgpuStream {
    /// Runs `cmds` after everything recorded so far and waits for them (the peak probes).
    pub fn execute(&self, cmds: Vec<Cmd>) -> Result<()> {
        let mut state = self.lock();
        state.cmds.extend(cmds);
        self.flush(&mut state)?;
        self.wait()
    }
}

impl Stream for WgpuStream {
    fn upload(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        let b = self.buffer(dst, offset, src.len(), "upload")?;
        if src.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        // Work recorded earlier must see the old contents: submit it before the queue writes.
        self.flush(&mut state)?;
        if offset.is_multiple_of(4) && src.len().is_multiple_of(4) {
            for (i, chunk) in src.chunks(UPLOAD_STEP).enumerate() {
                self.ctx.queue.write_buffer(&b.raw, (offset + i * UPLOAD_STEP) as u64, chunk);
                self.ctx.queue.submit([]);
            }
            return Ok(());
        }
        // Unaligned: stage the bytes in a scratch buffer at the same alignment, then copy them in with
        // the byte-copy kernel (which leaves the destination's neighbouring bytes alone).
        let lead = offset % 4;
        let mut padded = vec![0u8; (lead + src.len()).div_ceil(4) * 4];
        padded[lead..lead + src.len()].copy_from_slice(src);
        let staging = self.ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dsv3 upload"),
            contents: &padded,
            usage: wgpu::BufferUsages::STORAGE,
        });
        self.record_copy_bytes(&mut state, &staging, lead as u64, &b.raw, offset as u64, src.len() as u64)?;
        self.flush(&mut state)
    }

    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let b = self.buffer(src, offset, dst.len(), "download")?;
        let mut state = self.lock();
        self.sync_locked(&mut state)?;
        if dst.is_empty() {
            return Ok(());
        }
        let start = offset as u64 / 4 * 4;
        let end = ((offset + dst.len()) as u64).div_ceil(4) * 4;
        let bytes = self.read_words(&b.raw, start, end - start)?;
        let lead = offset - start as usize;
        dst.copy_from_slice(&bytes[lead..lead + dst.len()]);
        Ok(())
    }

    fn copy(
        &self,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        let from = self.buffer(src, src_offset, bytes, "copy source")?;
        let to = self.buffer(dst, dst_offset, bytes, "copy destination")?;
        if bytes == 0 {
            return Ok(());
        }
        let mut state = self.lock();
        let same = std::ptr::eq(from, to);
        let aligned = src_offset.is_multiple_of(4) && dst_offset.is_multiple_of(4) && bytes.is_multiple_of(4);
        let (so, d0, n) = (src_offset as u64, dst_offset as u64, bytes as u64);
        if !same && aligned {
            state.cmds.push(Cmd::Copy {
                src: from.raw.clone(),
                src_off: so,
                dst: to.raw.clone(),
                dst_off: d0,
                size: n,
            });
        } else if same && so < d0 + n && d0 < so + n {
            // Overlapping ranges of one buffer: through a scratch copy, as memmove would.
            let (a0, a1) = (so / 4 * 4, (so + n).div_ceil(4) * 4);
            let tmp = Recorder::new(&self.ctx, "copy", 0).scratch(a1 - a0);
            state.cmds.push(Cmd::Copy {
                src: from.raw.clone(),
                src_off: a0,
                dst: tmp.buf.clone(),
                dst_off: 0,
                size: a1 - a0,
            });
            self.record_copy_bytes(&mut state, &tmp.buf, so - a0, &to.raw, d0, n)?;
        } else {
            self.record_copy_bytes(&mut state, &from.raw, so, &to.raw, d0, n)?;
        }
        Ok(())
    }

    fn launch(&self, op: &Op) -> Result<()> {
        op.validate()?;
        let (arg, first, _) = op.tensors()[0];
        if first.buffer.device_id() != self.ctx.id {
            return Err(Error::invalid(
                op.name(),
                arg,
                format!("lives on {}, not {}", first.buffer.device_id(), self.ctx.id),
            ));
        }
        let mut state = self.lock();
        let mut rec = Recorder::new(&self.ctx, op.name(), state.sites.len());
        ops::record(&mut rec, op)?;
        let Recorder { cmds, sites, .. } = rec;
        state.cmds.extend(cmds);
        state.sites.extend(sites);
        if state.cmds.len() >= FLUSH_AT {
            self.flush(&mut state)?;
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        let mut state = self.lock();
        self.sync_locked(&mut state)
    }
}
