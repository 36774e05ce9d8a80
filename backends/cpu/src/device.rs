//! The CPU as a dsv3 device. Its stream executes each op on the calling thread (parallel inside the op)
//! before returning, so `sync` has nothing to wait for and errors surface at `launch`.

use crate::bind;
use crate::buffer::{bytes_mut, CpuBuffer};
use crate::{checks, fast, placement, reference, threads};
use dsv3_core::{
    Buffer, Capabilities, DType, DTypeUsage, Device, DeviceId, DeviceInfo, Error, Op, Peak, Result, Stream,
    Support,
};
use std::sync::{Arc, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Plain loops, f64 accumulation: the oracle.
    Reference,
    /// Multithreaded SIMD kernels, f32 accumulation: for real use.
    Fast,
}

impl Mode {
    pub fn backend_name(self) -> &'static str {
        match self {
            Mode::Reference => "cpu-ref",
            Mode::Fast => "cpu",
        }
    }
}

pub struct CpuDevice {
    id: DeviceId,
    mode: Mode,
    info: DeviceInfo,
    caps: Capabilities,
    peak: OnceLock<Peak>,
}

impl CpuDevice {
    pub fn new(mode: Mode) -> Arc<CpuDevice> {
        let features = crate::cpu_features();
        let memory_bytes = total_memory_bytes();
        let arch = format!(
            "{}{}",
            std::env::consts::ARCH,
            features.iter().map(|f| format!("+{f}")).collect::<String>()
        );
        let name = match mode {
            Mode::Reference => "CPU reference (f64 loops, oracle)".to_string(),
            Mode::Fast => {
                format!(
                    "CPU fast ({} threads, {}, {}, {}, {})",
                    threads::count(),
                    threads::pinning(),
                    placement::summary(),
                    crate::huge_pages::summary(),
                    fast::kernel_name()
                )
            }
        };
        let usage = |arithmetic: bool, matrix: bool| DTypeUsage {
            storage: true,
            conversion: true,
            arithmetic,
            matrix,
        };
        let bf16_native = features.iter().any(|f| f == "avx512bf16");
        let bf16_tiles = features.iter().any(|f| f == "amx-bf16");
        let dtypes = DType::ALL
            .iter()
            .map(|&d| {
                (
                    d,
                    usage(
                        matches!(d, DType::F32 | DType::I32 | DType::I64 | DType::U8)
                            || d == DType::BF16 && bf16_native,
                        d == DType::BF16 && bf16_tiles,
                    ),
                )
            })
            .collect();
        let subgroup_size = if features.iter().any(|f| f == "avx512f") {
            16
        } else if features.iter().any(|f| f == "avx2") {
            8
        } else {
            4
        };
        Arc::new(CpuDevice {
            id: DeviceId::new(mode.backend_name(), 0),
            mode,
            info: DeviceInfo {
                backend: mode.backend_name(),
                ordinal: 0,
                name,
                vendor: cpu_vendor(),
                arch,
                memory_bytes,
            },
            caps: Capabilities {
                dtypes,
                // No FP8 arithmetic on x86: every FP8 format is decoded to f32.
                fp8_formats: Vec::new(),
                memory_bytes,
                subgroup_size,
                graph_capture: false,
                host_memory: true,
                features,
            },
            peak: OnceLock::new(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn backend(&self) -> String {
        self.mode.backend_name().to_string()
    }
}

impl Device for CpuDevice {
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
        match self.mode {
            Mode::Reference => Support::Native,
            Mode::Fast => fast::supports(op),
        }
    }

    fn peak(&self) -> Option<Peak> {
        Some(self.peak.get_or_init(|| threads::run(f64::INFINITY, fast::measure_peak)).clone())
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let buffer =
            CpuBuffer::new(self.id, bytes).ok_or(Error::OutOfMemory { backend: self.backend(), bytes })?;
        Ok(Arc::new(buffer))
    }

    fn default_stream(&self) -> Arc<dyn Stream> {
        Arc::new(CpuStream { device: self.id, mode: self.mode })
    }

    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        Ok(self.default_stream())
    }
}

struct CpuStream {
    device: DeviceId,
    mode: Mode,
}

impl CpuStream {
    fn backend(&self) -> String {
        self.mode.backend_name().to_string()
    }

    /// The CPU buffer behind `b`, checked to belong to this device and to hold `offset..offset+len`.
    fn own<'b>(&self, b: &'b Buffer, offset: usize, len: usize, what: &str) -> Result<&'b CpuBuffer> {
        dsv3_core::backend::own_buffer(&self.backend(), self.device, b, offset, len, what)
    }
}

impl Stream for CpuStream {
    fn upload(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        let b = self.own(dst, offset, src.len(), "upload")?;
        let mut words = b.lock();
        // A weight matrix's pages go to the nodes whose workers will read them (one node: a plain copy).
        placement::copy(&mut bytes_mut(&mut words, dst.len())[offset..offset + src.len()], src);
        Ok(())
    }

    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        let b = self.own(src, offset, dst.len(), "download")?;
        let mut words = b.lock();
        dst.copy_from_slice(&bytes_mut(&mut words, src.len())[offset..offset + dst.len()]);
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
        let from = self.own(src, src_offset, bytes, "copy source")?;
        let to = self.own(dst, dst_offset, bytes, "copy destination")?;
        if std::ptr::eq(from, to) {
            let mut words = from.lock();
            bytes_mut(&mut words, src.len()).copy_within(src_offset..src_offset + bytes, dst_offset);
            return Ok(());
        }
        // Staged through the host so that two locks are never held at once (no lock-order deadlock).
        let staged: Vec<u8> = {
            let mut words = from.lock();
            bytes_mut(&mut words, src.len())[src_offset..src_offset + bytes].to_vec()
        };
        let mut words = to.lock();
        bytes_mut(&mut words, dst.len())[dst_offset..dst_offset + bytes].copy_from_slice(&staged);
        Ok(())
    }

    fn launch(&self, op: &Op) -> Result<()> {
        op.validate()?;
        // Listed once for the checks and the binding below (each listing allocates).
        let tensors = op.tensors();
        // `validate` proved every argument lives where the first one does; that must be here.
        let (arg, first, _) = tensors[0];
        if first.buffer.device_id() != self.device {
            return Err(Error::invalid(
                op.name(),
                arg,
                format!("lives on {}, not {}", first.buffer.device_id(), self.device),
            ));
        }
        if let (Mode::Fast, Support::Unsupported { reason }) = (self.mode, fast::supports(op)) {
            return Err(Error::unsupported(&self.backend(), op.name(), reason));
        }
        let cost = op.cost();
        threads::run(cost.flops + cost.bytes, || {
            bind::with_args(op, &tensors, |args| {
                checks::finite_inputs(op, &tensors, &args)?;
                match self.mode {
                    Mode::Reference => reference::run(op, args),
                    Mode::Fast => fast::run(op, args),
                }
            })
        })
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// From any CPU device of this process (every CPU buffer is host memory): one copy under both buffers'
    /// locks instead of a download and an upload. No ordering is needed, the CPU's work having finished when
    /// its launch returned. A view without any copy would be unsound here: a buffer is owned by its device
    /// (its id is part of it), and the moved tensor must not change when the source's memory is reused.
    fn copy_from_peer(
        &self,
        _src_stream: &dyn Stream,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Option<Result<()>> {
        src.as_any().downcast_ref::<CpuBuffer>()?;
        Some(self.copy_from_cpu(src, src_offset, dst, dst_offset, bytes))
    }
}

impl CpuStream {
    /// `copy_from_peer` once `src` is known to be a CPU buffer (of any CPU device).
    fn copy_from_cpu(
        &self,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        if src.device_id() == self.device {
            return self.copy(src, src_offset, dst, dst_offset, bytes);
        }
        let from: &CpuBuffer = dsv3_core::backend::own_buffer(
            &self.backend(),
            src.device_id(),
            src,
            src_offset,
            bytes,
            "peer copy source",
        )?;
        let to = self.own(dst, dst_offset, bytes, "peer copy destination")?;
        // Two locks at once (different devices' buffers), taken in address order as launches take theirs
        // (`bind`), so that no copy or launch on another thread can deadlock with this one.
        let (mut src_words, mut dst_words) = if (from as *const CpuBuffer) < (to as *const CpuBuffer) {
            let s = from.lock();
            (s, to.lock())
        } else {
            let d = to.lock();
            (from.lock(), d)
        };
        let from_bytes = &bytes_mut(&mut src_words, src.len())[src_offset..src_offset + bytes];
        bytes_mut(&mut dst_words, dst.len())[dst_offset..dst_offset + bytes].copy_from_slice(from_bytes);
        Ok(())
    }
}

fn total_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn cpu_vendor() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("model name"))?.split(':').nth(1).map(|v| v.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
