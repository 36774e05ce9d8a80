//! The harness's own machinery on the CPU backend: every output's guard regions, the support and perf
//! modes, the report writers, and unavailable backends.

use dsv3_backend_cpu::{CpuBackend, Mode as CpuMode};
use dsv3_conformance::{cases, run, Mode, Options, Status};
use dsv3_core::{Backend, Device, DeviceInfo, Error, Result};
use std::sync::Arc;

struct Absent;

impl Backend for Absent {
    fn name(&self) -> &'static str {
        "absent"
    }
    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        Err(Error::Unavailable { backend: "absent".into(), reason: "libabsent.so not found".into() })
    }
    fn open(&self, _: usize) -> Result<Arc<dyn Device>> {
        unreachable!("never opened: no devices")
    }
}

#[test]
fn unavailable_backends_get_one_row_per_op_with_the_reason() {
    let report = run(&[&Absent], &cases::quick(), &Options::default());
    assert_eq!(report.results.len(), dsv3_core::ops::OP_NAMES.len());
    assert!(report.results.iter().all(|r| r.status == Status::Unavailable && r.reason.contains("libabsent")));
    assert!(!report.failed());
    let md = report.markdown();
    assert!(md.contains("unavailable[^1]") && md.contains("libabsent"), "{md}");
}

#[test]
fn support_mode_and_writers() {
    let cpu = CpuBackend::new(CpuMode::Fast);
    let options = Options { mode: Mode::Support, ..Options::default() };
    let report = run(&[&cpu, &Absent], &cases::quick(), &options);
    assert!(report.results.iter().any(|r| r.backend == "cpu"));
    let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    let first = &json["results"][0];
    for key in [
        "backend", "device", "op", "case", "dtype", "status", "nmse", "max_abs", "max_rel", "cos_dist",
        "reason",
    ] {
        assert!(first.get(key).is_some(), "json row lacks {key}: {first}");
    }
    let md = report.markdown();
    assert!(md.contains("| op | dtypes | cpu | absent |"), "{md}");
    for op in dsv3_core::ops::OP_NAMES {
        assert!(md.contains(&format!("| {op} |")), "matrix lacks {op}");
    }
}

#[test]
fn perf_mode_times_a_case() {
    let cpu = CpuBackend::new(CpuMode::Reference);
    let options = Options {
        mode: Mode::Perf,
        op: Some("add".into()),
        perf_seconds: 0.01,
        perf_max_iterations: 5,
        ..Options::default()
    };
    let report = run(&[&cpu], &cases::quick(), &options);
    assert!(!report.results.is_empty());
    for r in &report.results {
        let p = r.perf.as_ref().unwrap_or_else(|| panic!("no timing: {r:?}"));
        assert!(p.ms > 0.0 && p.iterations >= 1 && p.gbps > 0.0, "{p:?}");
        // A quick add moves kilobytes: timed over several copies of its operands, not one cached set.
        assert!(p.copies > 1, "{p:?}");
    }
    println!("{}", report.table());
}

/// A deliberately broken backend: the reference device, whose stream then misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// Runs the op, then writes one byte just past the end of the first output's view.
    WritePastEnd,
    /// Runs the op, then writes one byte just before the first output's view.
    WriteBeforeStart,
    /// Never runs the op (outputs keep their garbage).
    SkipWrites,
}

struct Broken(Fault);

struct BrokenDevice(Arc<dyn Device>, Fault);

struct BrokenStream(Arc<dyn dsv3_core::Stream>, Fault);

impl Backend for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        CpuBackend::new(CpuMode::Reference).devices()
    }
    fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>> {
        Ok(Arc::new(BrokenDevice(CpuBackend::new(CpuMode::Reference).open(ordinal)?, self.0)))
    }
}

impl Device for BrokenDevice {
    fn id(&self) -> dsv3_core::DeviceId {
        self.0.id()
    }
    fn info(&self) -> &DeviceInfo {
        self.0.info()
    }
    fn capabilities(&self) -> &dsv3_core::Capabilities {
        self.0.capabilities()
    }
    fn supports(&self, op: &dsv3_core::Op) -> dsv3_core::Support {
        self.0.supports(op)
    }
    fn peak(&self) -> Option<dsv3_core::Peak> {
        None
    }
    fn alloc(&self, bytes: usize) -> Result<dsv3_core::Buffer> {
        self.0.alloc(bytes)
    }
    fn default_stream(&self) -> Arc<dyn dsv3_core::Stream> {
        Arc::new(BrokenStream(self.0.default_stream(), self.1))
    }
    fn new_stream(&self) -> Result<Arc<dyn dsv3_core::Stream>> {
        Ok(self.default_stream())
    }
}

impl dsv3_core::Stream for BrokenStream {
    fn upload(&self, dst: &dsv3_core::Buffer, offset: usize, src: &[u8]) -> Result<()> {
        self.0.upload(dst, offset, src)
    }
    fn download(&self, src: &dsv3_core::Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.0.download(src, offset, dst)
    }
    fn copy(
        &self,
        s: &dsv3_core::Buffer,
        so: usize,
        d: &dsv3_core::Buffer,
        o: usize,
        n: usize,
    ) -> Result<()> {
        self.0.copy(s, so, d, o, n)
    }
    fn launch(&self, op: &dsv3_core::Op) -> Result<()> {
        if let Fault::SkipWrites = self.1 {
            return op.validate();
        }
        self.0.launch(op)?;
        let (_, out, _) =
            op.tensors().into_iter().find(|(_, _, a)| *a == dsv3_core::ops::Access::Write).unwrap();
        let at = match self.1 {
            Fault::WritePastEnd => out.byte_range().end,
            _ => out.offset - 1,
        };
        self.0.upload(&out.buffer, at, &[0x00])
    }
    fn sync(&self) -> Result<()> {
        self.0.sync()
    }
}

#[test]
fn broken_kernels_are_caught() {
    let ops = ["gemm", "rms_norm", "moe_route", "cast", "topk", "sample"];
    for fault in [Fault::WritePastEnd, Fault::WriteBeforeStart, Fault::SkipWrites] {
        for op in ops {
            let options = Options { op: Some(op.into()), ..Options::default() };
            let report = run(&[&Broken(fault)], &cases::quick(), &options);
            assert!(!report.results.is_empty());
            for r in &report.results {
                assert_eq!(r.status, Status::Fail, "{:?} not caught: {r:?}", r.case);
                let expect = match fault {
                    Fault::SkipWrites => "",
                    _ => "guard byte",
                };
                assert!(r.reason.contains(expect), "{}", r.reason);
            }
        }
    }
}

/// Stacked block-FP8 weights whose N is not a multiple of 128 keep each 128×128 block inside its own
/// matrix: every code decodes (× its block's scale) to within one FP8 rounding of the value it came from.
#[test]
fn quantize_blocks_stacked_partial_rows() {
    use dsv3_conformance::gen::{quantize_blocks, ScaleStore};
    use dsv3_core::Fp8Format;
    let (experts, n, k) = (6, 72, 200);
    let values: Vec<f64> = (0..experts * n * k).map(|i| ((i * 7919 % 1000) as f64 - 500.0) / 37.0).collect();
    let (codes, scales) = quantize_blocks(&values, &[experts, n, k], Fp8Format::E4M3Fn, ScaleStore::F32);
    let (codes, scales) = (codes.values(), scales.values());
    let (nb, kb) = (1, 2);
    for e in 0..experts {
        for r in 0..n {
            for c in 0..k {
                let i = (e * n + r) * k + c;
                let s = scales[(e * nb + r / 128) * kb + c / 128];
                let w = codes[i] * s;
                assert!(
                    (w - values[i]).abs() <= values[i].abs() / 16.0 + s * 2f64.powi(-9),
                    "e{e} r{r} c{c}: {w} vs {}",
                    values[i]
                );
            }
        }
    }
}
