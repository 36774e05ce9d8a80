//! Devices that compute in e4m3fnuz (AMD MI300): the loader converts DeepSeek's e4m3fn weights (codes kept,
//! scales doubled, −0 and NaN remapped), the W8A8 path quantizes activations to e4m3fnuz too, and the model
//! still meets the golden fixtures' bounds. The device is the CPU backend presenting itself as computing in
//! e4m3fnuz, with a stream that records the FP8 formats the GEMMs receive.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::ops::{Activations, Weights};
use dsv3_core::{
    Backend, Buffer, Capabilities, DType, Device, DeviceId, DeviceInfo, Fp8Format, Op, Peak, Result, Stream,
    Support,
};
use dsv3_model::golden;
use dsv3_model::graph::NumericPath;

/// FP8 dtypes seen by GEMMs: (activations, weights).
type Seen = Arc<Mutex<Vec<(Option<DType>, Option<DType>)>>>;

struct FnuzDevice {
    inner: Arc<dyn Device>,
    caps: Capabilities,
    seen: Seen,
}

struct RecordingStream {
    inner: Arc<dyn Stream>,
    seen: Seen,
}

impl Device for FnuzDevice {
    fn id(&self) -> DeviceId {
        self.inner.id()
    }
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }
    fn supports(&self, op: &Op) -> Support {
        self.inner.supports(op)
    }
    fn peak(&self) -> Option<Peak> {
        self.inner.peak()
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        self.inner.alloc(bytes)
    }
    fn default_stream(&self) -> Arc<dyn Stream> {
        Arc::new(RecordingStream { inner: self.inner.default_stream(), seen: self.seen.clone() })
    }
    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        Ok(Arc::new(RecordingStream { inner: self.inner.new_stream()?, seen: self.seen.clone() }))
    }
}

impl Stream for RecordingStream {
    fn upload(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        self.inner.upload(dst, offset, src)
    }
    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.inner.download(src, offset, dst)
    }
    fn copy(&self, src: &Buffer, so: usize, dst: &Buffer, doff: usize, bytes: usize) -> Result<()> {
        self.inner.copy(src, so, dst, doff, bytes)
    }
    fn launch(&self, op: &Op) -> Result<()> {
        let fp8 = |a: &Activations, b: &Weights| {
            let a = match a {
                Activations::Fp8 { codes, .. } => Some(codes.dtype),
                Activations::Dense(_) => None,
            };
            let b = match b {
                Weights::BlockFp8 { codes, .. } => Some(codes.dtype),
                Weights::Dense(_) => None,
            };
            (a, b)
        };
        match op {
            Op::Gemm(g) => self.seen.lock().unwrap().push(fp8(&g.a, &g.b)),
            Op::GroupedGemm(g) => self.seen.lock().unwrap().push(fp8(&g.a, &g.b)),
            _ => {}
        }
        self.inner.launch(op)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
}

fn fnuz_device() -> (Arc<dyn Device>, Seen) {
    let inner = CpuBackend::new(Mode::Fast).open(0).unwrap();
    let mut caps = inner.capabilities().clone();
    caps.fp8_formats = vec![Fp8Format::E4M3Fnuz];
    let seen = Seen::default();
    (Arc::new(FnuzDevice { inner, caps, seen: seen.clone() }), seen)
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

#[test]
fn e4m3fn_weights_become_e4m3fnuz_and_the_model_still_matches_the_goldens() {
    for path in [NumericPath::W8A8, NumericPath::Bf16] {
        let (device, seen) = fnuz_device();
        let report = golden::check(&fixture("tiny-dsv3"), device, path).unwrap();
        println!("{}", report.line());
        assert!(report.pass(), "{}", report.line());
        let seen = seen.lock().unwrap();
        let weights: Vec<_> = seen.iter().filter_map(|(_, b)| *b).collect();
        assert!(!weights.is_empty(), "{path:?}: no block-FP8 GEMM ran");
        assert!(
            weights.iter().all(|&d| d == DType::F8E4M3Fnuz),
            "{path:?}: weights reached GEMMs as {weights:?}"
        );
        let activations: Vec<_> = seen.iter().filter_map(|(a, _)| *a).collect();
        if path == NumericPath::W8A8 {
            assert!(!activations.is_empty() && activations.iter().all(|&d| d == DType::F8E4M3Fnuz));
        } else {
            assert!(activations.is_empty(), "the bf16 path quantizes no activations");
        }
    }
}
