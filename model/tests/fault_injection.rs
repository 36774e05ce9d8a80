//! Fault injection: a device that fails its Nth allocation and a weight source that fails its Nth read.
//! For every N a load plus a short generation of the tiny model reaches (and one conformance case), the
//! call returns the injected error (never a panic, never another error in its place), every buffer is
//! released once the model is dropped (live allocations counted through the wrapper back to zero), and the
//! next request, on the same device, works and gives the same tokens.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_core::{
    Backend, Buffer, Capabilities, Device, DeviceBuffer, DeviceId, DeviceInfo, Error, Op, Peak, Result,
    Stream, Support,
};
use dsv3_model::checkpoint::Checkpoint;
use dsv3_model::config::ModelConfig;
use dsv3_model::generate::{generate, Request, Sampling};
use dsv3_model::graph::{Model, NumericPath};
use dsv3_model::weights::{HostTensor, WeightSource};

/// Wraps a real device; allocation number `fail_at` (counting from 0) is `Error::OutOfMemory`. Buffers
/// are the inner device's own (its streams downcast them), tracked here by weak handles to count the live
/// ones.
struct FailingDevice {
    inner: Arc<dyn Device>,
    fail_at: Mutex<Option<usize>>,
    allocs: AtomicUsize,
    buffers: Mutex<Vec<Weak<dyn DeviceBuffer>>>,
}

impl FailingDevice {
    fn new(fail_at: Option<usize>) -> Arc<FailingDevice> {
        Arc::new(FailingDevice {
            inner: CpuBackend::new(Mode::Fast).open(0).unwrap(),
            fail_at: Mutex::new(fail_at),
            allocs: AtomicUsize::new(0),
            buffers: Mutex::new(Vec::new()),
        })
    }

    fn live(&self) -> usize {
        self.buffers.lock().unwrap().iter().filter(|b| b.strong_count() > 0).count()
    }

    fn heal(&self) {
        *self.fail_at.lock().unwrap() = None;
    }
}

impl Device for FailingDevice {
    fn id(&self) -> DeviceId {
        self.inner.id()
    }
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }
    fn capabilities(&self) -> &Capabilities {
        self.inner.capabilities()
    }
    fn supports(&self, op: &Op) -> Support {
        self.inner.supports(op)
    }
    fn peak(&self) -> Option<Peak> {
        self.inner.peak()
    }
    fn alloc(&self, bytes: usize) -> Result<Buffer> {
        let n = self.allocs.fetch_add(1, Ordering::SeqCst);
        if *self.fail_at.lock().unwrap() == Some(n) {
            return Err(Error::OutOfMemory { backend: "injected".into(), bytes });
        }
        let buffer = self.inner.alloc(bytes)?;
        self.buffers.lock().unwrap().push(Arc::downgrade(&buffer));
        Ok(buffer)
    }
    fn default_stream(&self) -> Arc<dyn Stream> {
        self.inner.default_stream()
    }
    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        self.inner.new_stream()
    }
}

/// Wraps a weight source; read number `fail_at` (counting from 0) is an `Error::Io`.
struct FailingSource<'a> {
    inner: &'a dyn WeightSource,
    fail_at: Option<usize>,
    reads: AtomicUsize,
}

impl WeightSource for FailingSource<'_> {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn tensor(&self, name: &str) -> Result<HostTensor<'_>> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst);
        if self.fail_at == Some(n) {
            let source = std::io::Error::other("injected read failure");
            return Err(Error::Io { context: format!("reading {name}"), source });
        }
        self.inner.tensor(name)
    }
    fn contains(&self, name: &str) -> bool {
        self.inner.contains(name)
    }
}

fn fixture() -> (ModelConfig, Checkpoint) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-dsv3");
    (ModelConfig::from_file(&dir.join("config.json")).unwrap(), Checkpoint::open(&dir).unwrap())
}

const PROMPT: [u32; 4] = [5, 17, 300, 2];

/// A load and a short greedy generation: the tokens, or the first error.
fn load_and_generate(
    cfg: &ModelConfig,
    source: &dyn WeightSource,
    device: &Arc<FailingDevice>,
) -> Result<Vec<u32>> {
    let device: Arc<dyn Device> = device.clone();
    let model = Model::load(cfg.clone(), source, device, NumericPath::F32, |_| {})?;
    let request = Request {
        max_new_tokens: 2,
        sampling: Sampling { temperature: 0.0, top_p: 1.0, seed: 1 },
        stop: Vec::new(),
    };
    Ok(generate(&model, &[PROMPT.to_vec()], &request, |_, _| Ok(()))?.tokens.remove(0))
}

/// Whether the run with the fault at `n` of `count` also checks the next request. Every run checks the
/// error and the release of every buffer; a whole clean load and generation after each of them would
/// triple the test's time (the model crate runs unoptimised in tests), so the next request is checked
/// after the first and last faults and eight spread between.
fn check_next(n: usize, count: usize) -> bool {
    n == 0 || n + 1 == count || n.is_multiple_of(count.div_ceil(8))
}

/// Runs `attempt` with the fault at every position `0..count`, catching panics so the failure names N.
fn for_each_fault(what: &str, count: usize, attempt: impl Fn(usize)) {
    let started = std::time::Instant::now();
    for n in 0..count {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| attempt(n))) {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("{what} {n} of {count}: {}", msg.unwrap_or_default());
        }
    }
    eprintln!("{count} {what}s failed one at a time in {:.1} s", started.elapsed().as_secs_f64());
}

#[test]
fn every_failed_allocation_is_an_error_and_leaks_nothing() {
    let (cfg, ckpt) = fixture();
    let clean = FailingDevice::new(None);
    let expected = load_and_generate(&cfg, &ckpt, &clean).unwrap();
    assert_eq!(clean.live(), 0, "a clean run leaves buffers alive");
    let count = clean.allocs.load(Ordering::SeqCst);
    assert!(count > 10, "only {count} allocations: the wrapper is not on the allocation path");
    // The count of live buffers sees a loaded model's weights, so zero afterwards means released.
    let model = Model::load(cfg.clone(), &ckpt, clean.clone(), NumericPath::F32, |_| {}).unwrap();
    assert!(clean.live() > 10, "{} live buffers with the model loaded", clean.live());
    drop(model);
    assert_eq!(clean.live(), 0);
    for_each_fault("allocation", count, |n| {
        let device = FailingDevice::new(Some(n));
        match load_and_generate(&cfg, &ckpt, &device) {
            Err(Error::OutOfMemory { backend, .. }) => assert_eq!(backend, "injected"),
            other => panic!("expected the injected OutOfMemory, got {other:?}"),
        }
        assert_eq!(device.live(), 0, "buffers alive after the failed request");
        if check_next(n, count) {
            device.heal();
            assert_eq!(load_and_generate(&cfg, &ckpt, &device).unwrap(), expected, "the next request");
            assert_eq!(device.live(), 0);
        }
    });
}

#[test]
fn every_failed_read_is_an_error_and_leaks_nothing() {
    let (cfg, ckpt) = fixture();
    let counting = FailingSource { inner: &ckpt, fail_at: None, reads: AtomicUsize::new(0) };
    let device = FailingDevice::new(None);
    let expected = load_and_generate(&cfg, &counting, &device).unwrap();
    let count = counting.reads.load(Ordering::SeqCst);
    assert!(count > 10, "only {count} reads: the wrapper is not on the read path");
    for_each_fault("read", count, |n| {
        let source = FailingSource { inner: &ckpt, fail_at: Some(n), reads: AtomicUsize::new(0) };
        match load_and_generate(&cfg, &source, &device) {
            Err(Error::Io { source, .. }) => assert_eq!(source.to_string(), "injected read failure"),
            other => panic!("expected the injected Io error, got {other:?}"),
        }
        assert_eq!(device.live(), 0, "buffers alive after the failed load");
        if check_next(n, count) {
            assert_eq!(load_and_generate(&cfg, &ckpt, &device).unwrap(), expected, "the next request");
            assert_eq!(device.live(), 0);
        }
    });
}

/// One conformance case (a small bf16 GEMM) through `dsv3_conformance::runner::execute` on the wrapper.
#[test]
fn conformance_case_with_every_failed_allocation() {
    use dsv3_conformance::case::Operand;
    use dsv3_conformance::cases::gemm;
    let case = gemm(
        4,
        8,
        16,
        Operand::Dense(dsv3_core::DType::BF16),
        Operand::Dense(dsv3_core::DType::BF16),
        dsv3_core::DType::F32,
    );
    let inputs = case.inputs();
    let clean = FailingDevice::new(None);
    let as_device = |d: &Arc<FailingDevice>| -> Arc<dyn Device> { d.clone() };
    let expected = dsv3_conformance::runner::execute(&as_device(&clean), &case, &inputs).unwrap();
    let count = clean.allocs.load(Ordering::SeqCst);
    assert!(count >= 3, "only {count} allocations for a GEMM (A, B, C)");
    assert_eq!(clean.live(), 0);
    for_each_fault("allocation", count, |n| {
        let device = FailingDevice::new(Some(n));
        match dsv3_conformance::runner::execute(&as_device(&device), &case, &inputs) {
            Err(Error::OutOfMemory { backend, .. }) => assert_eq!(backend, "injected"),
            other => panic!("expected the injected OutOfMemory, got {other:?}"),
        }
        assert_eq!(device.live(), 0);
        device.heal();
        let again = dsv3_conformance::runner::execute(&as_device(&device), &case, &inputs).unwrap();
        assert_eq!(format!("{again:?}"), format!("{expected:?}"), "the next request");
    });
}

#[test]
fn choosing_the_numeric_path_allocates_nothing() {
    let (cfg, _) = fixture();
    assert!(cfg.quantization.is_some(), "the FP8 fixture: the W8A8 question is asked");
    let device = FailingDevice::new(None);
    let devices: Vec<Arc<dyn Device>> = vec![device.clone()];
    // The fast CPU decodes FP8 in software: bf16 activations are its fastest path.
    assert_eq!(NumericPath::fastest(&cfg, &devices), NumericPath::Bf16);
    assert_eq!(device.allocs.load(Ordering::SeqCst), 0);
}

/// The step workspace: once a decode step of a shape has run, the next ones take every activation (and the
/// sampled ids) from buffers the earlier steps used — no device allocation per step.
#[test]
fn a_decode_step_allocates_nothing_after_the_first() {
    let (cfg, ckpt) = fixture();
    let device = FailingDevice::new(None);
    let model = Model::load(cfg, &ckpt, device.clone(), NumericPath::Bf16, |_| {}).unwrap();
    let allocations = |max_new_tokens| {
        let request = Request {
            max_new_tokens,
            sampling: Sampling { temperature: 0.7, top_p: 0.9, seed: 5 },
            stop: Vec::new(),
        };
        let before = device.allocs.load(Ordering::SeqCst);
        let out = generate(&model, &[vec![3, 14, 15], vec![92, 65, 35]], &request, |_, _| Ok(())).unwrap();
        assert_eq!(out.decode_tokens, 2 * (max_new_tokens - 1));
        // Every decode step of one shape launches the same ops: the count per step is exact.
        let per_step = out.launches_per_step().unwrap();
        assert!(per_step > 10.0 && per_step.fract() == 0.0, "{per_step} launches per step");
        device.allocs.load(Ordering::SeqCst) - before
    };
    let first = allocations(3);
    assert!(first > 0, "the first run fills the workspace");
    // The same prompts: the cache is allocated again, nothing else; 7 more decode steps add nothing.
    let short = allocations(3);
    assert_eq!(allocations(10), short);
    assert!(short < first, "{short} allocations on a warm workspace, {first} cold");
}
