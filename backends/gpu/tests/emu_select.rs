//! argmax, topk and sample on the host emulator against the CPU oracle: the quick set, the full
//! vocabulary of DeepSeek-V3, and shapes that reach what the quick set does not (1024-thread blocks, many
//! top-k rounds over repeated bf16 values, nucleus cuts through runs of equal probabilities).

mod common;

use dsv3_backend_cpu::{CpuBackend, Mode};
use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_conformance::case::{RowsSpec, SampleSpec, Spec, TopKSpec};
use dsv3_conformance::{cases, tolerance, Case};
use dsv3_core::ops::Sample;
use dsv3_core::DType::{self, BF16, F32};
use dsv3_core::{Backend, Buffer, Device, Op, Tensor};
use std::sync::Arc;

/// The full set's cases whose names start with one of `prefixes` (each must match at least one).
fn full_cases(prefixes: &[&str]) -> Vec<Case> {
    let set: Vec<Case> =
        cases::full().into_iter().filter(|c| prefixes.iter().any(|p| c.name.starts_with(p))).collect();
    for p in prefixes {
        assert!(set.iter().any(|c| c.name.starts_with(p)), "no full-set case {p}");
    }
    set
}

fn case(op: &'static str, name: String, tolerance: tolerance::Tolerance, spec: Spec) -> Case {
    let seed = name.bytes().fold(0x5e1ec7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    Case { op, name, dtypes: String::new(), seed, tolerance, spec }
}

fn argmax(r: usize, n: usize, x: DType) -> Case {
    let spec = Spec::Argmax(RowsSpec { r, n, a: x, b: x, out: DType::I32, std: 1.0 });
    case("argmax", format!("argmax(r={r},n={n},x={x},emu)"), tolerance::argmax(), spec)
}

fn topk(r: usize, n: usize, k: usize, x: DType) -> Case {
    let spec = Spec::TopK(TopKSpec { r, n, k, x });
    case("topk", format!("topk(r={r},n={n},k={k},x={x},emu)"), tolerance::topk(), spec)
}

fn sample(r: usize, v: usize, x: DType, temperature: f32, top_p: f32, sample_seed: u64) -> Case {
    let spec = Spec::Sample(SampleSpec { r, v, x, temperature, top_p, sample_seed, per_row: None });
    let name = format!("sample(r={r},v={v},x={x},temperature={temperature},top_p={top_p},emu)");
    case("sample", name, tolerance::sample(v), spec)
}

#[test]
fn argmax_matches() {
    common::check_quick("argmax");
    let mut set = full_cases(&["argmax(r=4,n=129280"]);
    set.push(argmax(3, 20000, BF16)); // 1024-thread blocks over repeated values
    common::check_cases(32, "argmax", &set);
    common::check_cases(64, "argmax", &[argmax(2, 3000, BF16)]);
}

#[test]
fn topk_matches() {
    common::check_quick("topk");
    let mut set = full_cases(&["topk(r=64,", "topk(r=4,n=129280"]);
    // Many rounds, each winner's thread rescanning its slice, through runs of equal bf16 values.
    set.push(topk(2, 3000, 300, BF16));
    set.push(topk(2, 20000, 40, BF16));
    set.push(topk(1, 300, 300, F32)); // every element, in order
    for warp in [32, 64] {
        common::check_cases(warp, "topk", &set);
    }
}

#[test]
fn sample_matches() {
    common::check_quick("sample");
    // The vocabulary, sampled (T = 0.8, top_p = 0.9) and greedy.
    let mut set = full_cases(&["sample(r=4,v=129280", "sample(r=5,v=129280"]);
    // bf16 logits repeat values, so the nucleus cut falls inside runs of equal p: the index search.
    set.push(sample(4, 5000, BF16, 1.0, 0.5, 7));
    set.push(sample(4, 5000, BF16, 0.7, 0.05, 8));
    set.push(sample(2, 3000, F32, 2.0, 1.0, 9)); // the whole vocabulary races
                                                 // Rows spread over blocks: the cut inside runs of equal bf16 p, and top_p = 1 (every token, or a
                                                 // cut at the very bottom where the row's mass exceeds 1 by rounding).
    set.push(sample(4, 20000, BF16, 0.7, 0.05, 11));
    set.push(sample(2, 20000, F32, 2.0, 1.0, 12));
    // Each row its own parameters (a greedy row among them), over blocks and in one block per row.
    set.push(cases::sample_per_row(6, 20000, BF16, 13));
    common::check_cases(32, "sample", &set);
    common::check_cases(
        64,
        "sample",
        &[sample(2, 20000, BF16, 1.0, 0.3, 10), cases::sample_per_row(5, 3000, F32, 14)],
    );
}

/// Runs `op(device)` on the emulator (warp 32 and 64) and on the CPU oracle; the i32 outputs of each.
fn on_emulator_and_oracle(op: impl Fn(&Arc<dyn Device>) -> (Op, Buffer)) -> Vec<Vec<i32>> {
    let mut devices = vec![CpuBackend::new(Mode::Reference).open(0).unwrap()];
    devices.extend([32, 64].map(|w| EmulatorBackend::new(w).open(0).unwrap()));
    devices
        .iter()
        .map(|d| {
            let (op, out) = op(d);
            let s = d.default_stream();
            s.launch(&op).unwrap();
            s.sync().unwrap();
            let mut bytes = vec![0u8; out.len()];
            s.download(&out, 0, &mut bytes).unwrap();
            bytes.chunks(4).map(|b| i32::from_le_bytes(b.try_into().unwrap())).collect()
        })
        .collect()
}

/// Rows of `v` tokens: 200 at logit 0 spread `stride` apart, the rest at −20 (p ≈ 1e-11 each). With
/// top_p = 0.3025 the nucleus is the 61 lowest ids of the run (60.5 of p ≈ 1/200), so the winner must be
/// one of them; the race over all 200 would pick outside them in ~70 % of the rows.
fn cut_inside_a_run(v: usize, stride: usize) {
    let (rows, run) = (8, 200);
    let in_run = |r: usize, i: usize| i % stride == r % stride && i / stride < run;
    let logits: Vec<u8> =
        (0..rows * v).flat_map(|e| if in_run(e / v, e % v) { 0.0f32 } else { -20.0 }.to_le_bytes()).collect();
    let results = on_emulator_and_oracle(|d| {
        let x = d.alloc(logits.len()).unwrap();
        d.default_stream().upload(&x, 0, &logits).unwrap();
        let out = d.alloc(4 * rows).unwrap();
        let op = Op::Sample(Sample {
            logits: Tensor::contiguous(x, 0, &[rows, v], F32),
            temperature: 1.0,
            top_p: 0.3025,
            seed: 0x0123_4567_89ab_cdef,
            row_params: None,
            out: Tensor::contiguous(out.clone(), 0, &[rows], DType::I32),
        });
        (op, out)
    });
    for (r, &id) in results[0].iter().enumerate() {
        let id = id as usize;
        assert!(in_run(r, id) && id / stride < 61, "row {r}: the oracle chose {id}, outside the nucleus");
    }
    assert_eq!(results[1], results[0], "warp 32, v = {v}");
    assert_eq!(results[2], results[0], "warp 64, v = {v}");
}

#[test]
fn nucleus_cut_inside_a_run_of_equal_probabilities() {
    cut_inside_a_run(3000, 15); // one block per row: the binary search over the index
                                // Rows spread over 9 blocks, the run over all of them: the ties' ranks carried from block to block.
    cut_inside_a_run(20000, 97);
}

/// A per-row entry outside the rules is reported at sync, naming `row_params`, on both kernel paths (one
/// block per row, rows over many blocks); the other rows are still drawn.
#[test]
fn a_bad_per_row_entry_is_reported_at_sync() {
    use dsv3_core::ops::RowSampling;
    let d = EmulatorBackend::new(32).open(0).unwrap();
    for v in [3000, 20000] {
        let good = RowSampling { temperature: 0.7, top_p: 0.9, seed: 3 };
        for bad in [RowSampling { top_p: 0.0, ..good }, RowSampling { temperature: f32::NAN, ..good }] {
            let words = RowSampling::encode(&[good, bad]);
            let params = d.alloc(words.len() * 4).unwrap();
            let x = d.alloc(2 * v * 4).unwrap();
            let out = d.alloc(8).unwrap();
            let s = d.default_stream();
            let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            s.upload(&params, 0, &bytes).unwrap();
            s.upload(&x, 0, &vec![0u8; 2 * v * 4]).unwrap();
            s.upload(&out, 0, &[0xff; 8]).unwrap();
            let op = Op::Sample(Sample {
                logits: Tensor::contiguous(x, 0, &[2, v], F32),
                temperature: 1.0,
                top_p: 1.0,
                seed: 0,
                row_params: Some(Tensor::contiguous(params, 0, &[2, RowSampling::WORDS], DType::I32)),
                out: Tensor::contiguous(out.clone(), 0, &[2], DType::I32),
            });
            s.launch(&op).unwrap();
            let err = s.sync().unwrap_err().to_string();
            assert!(err.contains("sample") && err.contains("row_params"), "v = {v}: {err}");
            let mut ids = [0u8; 8];
            s.download(&out, 0, &mut ids).unwrap();
            let first = i32::from_le_bytes(ids[..4].try_into().unwrap());
            assert!((0..v as i32).contains(&first), "v = {v}: the good row drew {first}");
            assert_eq!(ids[4..], [0xff; 4], "v = {v}: the bad row is left unwritten");
        }
    }
}
