//! One GPU (or the emulator) as a dsv3 device, over a [`Runtime`]: memory, kernels by variant, streams,
//! and `supports`, which is the same for every runtime because the kernels are.

use crate::buffer::GpuBuffer;
use crate::kernels::Variant;
use crate::ops;
use crate::runtime::{Function, Runtime};
use crate::stream::GpuStream;
use dsv3_core::{Buffer, Capabilities, Device, DeviceId, DeviceInfo, Op, Peak, Result, Stream, Support};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the vendor backend knows about its device.
#[derive(Clone, Debug)]
pub struct Profile {
    pub info: DeviceInfo,
    pub caps: Capabilities,
    pub peak: Option<Peak>,
}

/// One row of a vendor's datasheet: a fragment of the driver's device name, then dense peaks — f32
/// (TFLOP/s), bf16 and FP8 matrix (TFLOP/s; 0 when absent), memory bandwidth (TB/s) — and memory size (the
/// vendor's GB figure, taken as 10^9 bytes: HBM is sized in GiB, so drivers report slightly more and a plan
/// made from this row errs on the safe side).
pub type DatasheetRow = (&'static str, f64, f64, f64, f64, f64);

/// What a datasheet row says about one part.
#[derive(Clone, Debug, PartialEq)]
pub struct Datasheet {
    pub peak: Peak,
    pub memory_bytes: u64,
}

/// The first row whose fragment the device name contains, ignoring case (tables list the most specific
/// names first); `None` for parts the table lacks, so reports show no percentage rather than a guess.
pub fn datasheet(vendor: &str, table: &[DatasheetRow], name: &str) -> Option<Datasheet> {
    let lower = name.to_ascii_lowercase();
    let (frag, f32, bf16, fp8, tb, gb) =
        table.iter().find(|(frag, ..)| lower.contains(&frag.to_ascii_lowercase()))?;
    Some(Datasheet {
        peak: Peak {
            f32_flops: f32 * 1e12,
            bf16_flops: bf16 * 1e12,
            fp8_flops: fp8 * 1e12,
            bytes_per_s: tb * 1e12,
            source: format!("{vendor} datasheet ({frag}, dense)"),
        },
        memory_bytes: (gb * 1e9) as u64,
    })
}

/// Shared by the device and its streams.
pub struct Ctx {
    // Declared (so dropped) before the runtime: compiled kernels must be released while it is alive.
    kernels: Mutex<HashMap<String, Function>>,
    pub id: DeviceId,
    pub runtime: Arc<dyn Runtime>,
    pub caps: Capabilities,
}

impl Ctx {
    /// The compiled variant, compiled on first use (a compile error is a bug in a kernel file and names it).
    pub fn kernel(&self, op: &'static str, v: &Variant) -> Result<Function> {
        let key = v.key();
        if let Some(f) = self.kernels.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return Ok(f.clone());
        }
        let f = self.runtime.compile(op, v)?;
        self.kernels.lock().unwrap_or_else(|p| p.into_inner()).insert(key, f.clone());
        Ok(f)
    }

    pub fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let addr = self.runtime.alloc(bytes)?;
        Ok(Arc::new(GpuBuffer::new(self.runtime.clone(), self.id, addr, bytes)))
    }
}

pub struct GpuDevice {
    ctx: Arc<Ctx>,
    info: DeviceInfo,
    peak: Option<Peak>,
    stream: Arc<GpuStream>,
}

impl GpuDevice {
    pub fn new(runtime: Arc<dyn Runtime>, profile: Profile) -> Result<Arc<GpuDevice>> {
        let id = DeviceId::new(runtime.backend(), profile.info.ordinal);
        let ctx = Arc::new(Ctx { id, runtime, caps: profile.caps, kernels: Mutex::new(HashMap::new()) });
        let stream = GpuStream::new(ctx.clone())?;
        Ok(Arc::new(GpuDevice { ctx, info: profile.info, peak: profile.peak, stream }))
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.ctx.runtime
    }
}

impl Device for GpuDevice {
    fn id(&self) -> DeviceId {
        self.ctx.id
    }

    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn capabilities(&self) -> &Capabilities {
        &self.ctx.caps
    }

    fn supports(&self, op: &Op) -> Support {
        ops::supports(&self.ctx, op)
    }

    fn peak(&self) -> Option<Peak> {
        self.peak.clone()
    }

    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.ctx.alloc(bytes)
    }

    fn default_stream(&self) -> Arc<dyn Stream> {
        self.stream.clone()
    }

    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        Ok(GpuStream::new(self.ctx.clone())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::Emulator;
    use dsv3_core::DTypeUsage;

    fn emulated() -> Arc<GpuDevice> {
        let info = DeviceInfo {
            backend: "cuda-emu",
            ordinal: 0,
            name: "test".into(),
            vendor: "test".into(),
            arch: "host".into(),
            memory_bytes: 0,
        };
        let caps = Capabilities {
            dtypes: vec![(dsv3_core::DType::F32, DTypeUsage::default())],
            fp8_formats: Vec::new(),
            memory_bytes: 0,
            subgroup_size: 32,
            graph_capture: false,
            host_memory: true,
            features: Vec::new(),
        };
        GpuDevice::new(Arc::new(Emulator::new(32).unwrap()), Profile { info, caps, peak: None }).unwrap()
    }

    #[test]
    fn scratch_is_reused_only_after_the_work_that_used_it_is_synchronised() {
        let dev = emulated();
        let addr = |b: &Buffer| b.as_any().downcast_ref::<GpuBuffer>().unwrap().addr;
        let a = dev.stream.scratch(1000).unwrap();
        let b = dev.stream.scratch(1000).unwrap();
        assert_ne!(addr(&a), addr(&b), "both are in use until sync");
        dev.stream.sync().unwrap();
        // The smallest free buffer that fits; a larger request than any gets a new one.
        let c = dev.stream.scratch(500).unwrap();
        assert!(addr(&c) == addr(&a) || addr(&c) == addr(&b));
        let d = dev.stream.scratch(5000).unwrap();
        assert!(addr(&d) != addr(&a) && addr(&d) != addr(&b) && d.len() >= 5000);
        let e = dev.stream.scratch(1000).unwrap();
        assert!(addr(&e) != addr(&c) && (addr(&e) == addr(&a) || addr(&e) == addr(&b)));
    }

    #[test]
    fn reused_scratch_holds_garbage_on_the_emulator_not_the_last_users_values() {
        // A kernel that forgets to write part of its scratch must not find the previous launch's values
        // there: on a GPU they would be whatever ran last, so tests could pass by luck.
        let dev = emulated();
        let first = dev.stream.scratch(1000).unwrap();
        let a = first.as_any().downcast_ref::<GpuBuffer>().unwrap().addr;
        dev.stream.queue.upload(a, &[7u8; 1024]).unwrap();
        dev.stream.sync().unwrap();
        let again = dev.stream.scratch(600).unwrap();
        assert_eq!(
            again.as_any().downcast_ref::<GpuBuffer>().unwrap().addr,
            a,
            "the pool hands it out again"
        );
        let mut bytes = vec![0u8; 1024];
        dev.stream.queue.download(a, &mut bytes).unwrap();
        assert!(bytes.iter().all(|&b| b == 0xff), "stale bytes left: {:?}", &bytes[..16]);
    }
}
