//! The harness catches small numeric errors, not only missed writes: a test backend wraps the oracle and
//! plants one error — 4 ulps in one element, a softmax scale 1 % off, a RoPE pair swapped, kv_lens off by
//! one, a top-k tie broken the other way — and each must fail its cases, while the unmutated wrapper
//! passes them (so the failure is the mutation's).

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_conformance::case::{Case, Inputs, Spec, TopKSpec};
use dsv3_conformance::gen::HostTensor;
use dsv3_conformance::runner::{execute, oracle, run_given, Given, Options};
use dsv3_conformance::{cases, run, Report, Status};
use dsv3_core::{
    Backend, Buffer, Capabilities, DType, Device, DeviceId, DeviceInfo, Op, Peak, Result, Stream, Support,
    Tensor,
};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mutation {
    None,
    /// The first element of a bf16 output 4 ulps larger in magnitude.
    FourUlps,
    /// Attention's softmax scale × 1.01.
    SoftmaxScale,
    /// RoPE's output pairs 0 and 1 exchanged in every row.
    RopePairSwapped,
    /// The first sequence's kv_len one short.
    KvLensOffByOne,
    /// Top-k ties broken to the higher index.
    TopkTieReversed,
}

struct MutantBackend(Mutation);

impl Backend for MutantBackend {
    fn name(&self) -> &'static str {
        "mutant"
    }

    fn devices(&self) -> Result<Vec<DeviceInfo>> {
        CpuBackend::new(Mode::Reference).devices()
    }

    fn open(&self, ordinal: usize) -> Result<Arc<dyn Device>> {
        let inner = CpuBackend::new(Mode::Reference).open(ordinal)?;
        let stream = Arc::new(MutantStream { inner: inner.default_stream(), mutation: self.0 });
        Ok(Arc::new(MutantDevice { inner, stream }))
    }
}

struct MutantDevice {
    inner: Arc<dyn Device>,
    stream: Arc<MutantStream>,
}

impl Device for MutantDevice {
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
        self.inner.alloc(bytes)
    }
    fn default_stream(&self) -> Arc<dyn Stream> {
        self.stream.clone()
    }
    fn new_stream(&self) -> Result<Arc<dyn Stream>> {
        Ok(self.stream.clone())
    }
}

struct MutantStream {
    inner: Arc<dyn Stream>,
    mutation: Mutation,
}

impl MutantStream {
    fn read(&self, t: &Tensor) -> Result<Vec<u8>> {
        let mut bytes = vec![0u8; t.shape.iter().product::<usize>() * t.dtype.size()];
        self.inner.download(&t.buffer, t.offset, &mut bytes)?;
        Ok(bytes)
    }

    /// Launches `op` and rewrites its output `out` with `edit` (contiguous outputs, as the harness binds).
    fn launch_then_edit(&self, op: &Op, out: &Tensor, edit: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        self.inner.launch(op)?;
        let mut bytes = self.read(out)?;
        edit(&mut bytes);
        self.inner.upload(&out.buffer, out.offset, &bytes)
    }
}

impl Stream for MutantStream {
    fn upload(&self, dst: &Buffer, offset: usize, src: &[u8]) -> Result<()> {
        self.inner.upload(dst, offset, src)
    }
    fn download(&self, src: &Buffer, offset: usize, dst: &mut [u8]) -> Result<()> {
        self.inner.download(src, offset, dst)
    }
    fn copy(
        &self,
        src: &Buffer,
        src_offset: usize,
        dst: &Buffer,
        dst_offset: usize,
        bytes: usize,
    ) -> Result<()> {
        self.inner.copy(src, src_offset, dst, dst_offset, bytes)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }

    fn launch(&self, op: &Op) -> Result<()> {
        match (self.mutation, op) {
            (Mutation::FourUlps, Op::SiluMul(o)) if o.out.dtype == DType::BF16 => {
                self.launch_then_edit(op, &o.out, |b| {
                    let v = u16::from_le_bytes([b[0], b[1]]) + 4;
                    b[..2].copy_from_slice(&v.to_le_bytes());
                })
            }
            (Mutation::SoftmaxScale, Op::MlaAttention(o)) => {
                let mut o = o.clone();
                o.softmax_scale *= 1.01;
                self.inner.launch(&Op::MlaAttention(o))
            }
            (Mutation::SoftmaxScale, Op::MhaAttention(o)) => {
                let mut o = o.clone();
                o.softmax_scale *= 1.01;
                self.inner.launch(&Op::MhaAttention(o))
            }
            (Mutation::RopePairSwapped, Op::Rope(o)) => {
                let pair = 2 * o.out.dtype.size();
                let row = o.params.dim * o.out.dtype.size();
                self.launch_then_edit(op, &o.out, |b| {
                    for r in b.chunks_mut(row) {
                        let (first, rest) = r.split_at_mut(pair);
                        first.swap_with_slice(&mut rest[..pair]);
                    }
                })
            }
            (Mutation::KvLensOffByOne, Op::MlaAttention(o)) => self.with_short_len(op, &o.kv_lens),
            (Mutation::KvLensOffByOne, Op::MhaAttention(o)) => self.with_short_len(op, &o.kv_lens),
            (Mutation::TopkTieReversed, Op::TopK(o)) => {
                let x = self.read(&o.x)?;
                let n = o.x.shape[1];
                let values: Vec<f64> = (0..x.len() / 4).map(|i| DType::F32.read_f64(&x, i)).collect();
                let mut ids = Vec::new();
                let mut vals = Vec::new();
                for row in values.chunks(n) {
                    let mut order: Vec<usize> = (0..n).collect();
                    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(b.cmp(&a)));
                    for &i in &order[..o.k] {
                        ids.extend((i as i32).to_le_bytes());
                        vals.extend((row[i] as f32).to_le_bytes());
                    }
                }
                self.inner.upload(&o.ids.buffer, o.ids.offset, &ids)?;
                self.inner.upload(&o.values.buffer, o.values.offset, &vals)
            }
            _ => self.inner.launch(op),
        }
    }
}

impl MutantStream {
    /// Runs `op` with the first sequence's length one short, then restores it.
    fn with_short_len(&self, op: &Op, lens: &Tensor) -> Result<()> {
        let saved = self.read(lens)?;
        let mut short = saved.clone();
        let first = i32::from_le_bytes(short[..4].try_into().unwrap());
        short[..4].copy_from_slice(&(first - 1).max(0).to_le_bytes());
        self.inner.upload(&lens.buffer, lens.offset, &short)?;
        self.inner.launch(op)?;
        self.inner.upload(&lens.buffer, lens.offset, &saved)
    }
}

fn quick(op: &str, filter: impl Fn(&Case) -> bool) -> Vec<Case> {
    let set: Vec<Case> = cases::quick().into_iter().filter(|c| c.op == op && filter(c)).collect();
    assert!(!set.is_empty(), "no quick case of {op}");
    set
}

/// Runs `cases` unmutated (all must pass) and mutated (all must fail); returns the mutated report.
fn caught(mutation: Mutation, cases: &[Case]) -> Report {
    let clean = run(&[&MutantBackend(Mutation::None)], cases, &Options::default());
    assert_eq!(clean.count(Status::Pass), cases.len(), "unmutated:\n{}", clean.table());
    let report = run(&[&MutantBackend(mutation)], cases, &Options::default());
    println!("{}", report.table());
    assert_eq!(report.count(Status::Fail), cases.len(), "{mutation:?} not caught:\n{}", report.table());
    report
}

#[test]
fn four_ulps_in_one_element_fail_where_the_nmse_cannot_see_them() {
    let cases = quick("silu_mul", |c| c.dtypes.contains("out=bf16"));
    let report = caught(Mutation::FourUlps, &cases);
    for (row, case) in report.results.iter().zip(&cases) {
        // The NMSE stays inside its bound: only the per-element gate sees the error.
        assert!(row.nmse.unwrap() <= case.tolerance.nmse, "{}", row.reason);
        assert!(row.reason.contains("element 0") && !row.reason.contains("nmse"), "{}", row.reason);
    }
}

#[test]
fn a_softmax_scale_one_percent_off_fails() {
    let mut cases = quick("mla_attention", |_| true);
    cases.extend(quick("mha_attention", |_| true));
    caught(Mutation::SoftmaxScale, &cases);
}

#[test]
fn a_swapped_rope_pair_fails() {
    caught(Mutation::RopePairSwapped, &quick("rope", |_| true));
}

#[test]
fn kv_lens_off_by_one_fail() {
    let mut cases = quick("mla_attention", |_| true);
    cases.extend(quick("mha_attention", |_| true));
    caught(Mutation::KvLensOffByOne, &cases);
}

/// A top-k case with ties inside the selection and at its boundary: rows of 16 values with repeats.
#[test]
fn a_topk_tie_broken_the_other_way_fails() {
    let (r, n, k) = (3, 16, 5);
    let values: Vec<f64> = (0..r * n).map(|i| ((i * 7) % 5) as f64 - (i / n) as f64).collect();
    let spec = TopKSpec { r, n, k, x: DType::F32 };
    let case = Case {
        op: "topk",
        name: "topk(ties)".into(),
        dtypes: "x=f32".into(),
        seed: 0,
        tolerance: Spec::TopK(spec.clone()).tolerance(),
        spec: Spec::TopK(spec),
    };
    let mut inputs = Inputs::default();
    inputs.tensors.push(("x", HostTensor::from_f64(DType::F32, &[r, n], &values)));
    let expected = execute(&oracle().unwrap(), &case, &inputs).unwrap();
    let given = [Given { case: &case, inputs: &inputs, expected: &expected }];
    let clean = run_given(&[&MutantBackend(Mutation::None)], &given, &Options::default()).0;
    assert_eq!(clean.count(Status::Pass), 1, "{}", clean.table());
    let mutated = run_given(&[&MutantBackend(Mutation::TopkTieReversed)], &given, &Options::default()).0;
    println!("{}", mutated.table());
    assert_eq!(mutated.count(Status::Fail), 1, "{}", mutated.table());
    assert!(mutated.results[0].reason.contains("`ids`"), "{}", mutated.results[0].reason);
}
