//! The conformance suite on the wgpu backend against the CPU oracle: the quick set (every op, edge
//! shapes), cases that reach the kernel paths the quick set's small shapes do not (the tiled grouped
//! GEMM, attention split over the keys), and the quick set again with storage bindings capped far below
//! the tensors' sizes, so that every op runs through its split bindings; and PyTorch's case file.

mod common;

use dsv3_conformance::case::{v3_softmax_scale, AttentionSpec, Operand, Spec};
use dsv3_conformance::cases::{self, gemm, grouped_gemm};
use dsv3_conformance::gen::ScaleStore;
use dsv3_conformance::{run, run_quick_against_oracle, tolerance, Case, Options, Report, Status};
use dsv3_core::fp8::Fp8Format;
use dsv3_core::DType;

fn check(report: &Report) {
    println!("{}", report.table());
    assert!(report.count(Status::Pass) > 0, "nothing ran: {}", report.summary());
    let not_run: Vec<_> = report.results.iter().filter(|r| r.status != Status::Pass).collect();
    assert!(not_run.is_empty(), "cases that did not pass: {}\n{}", report.summary(), report.table());
}

/// PyTorch's and numpy's cases (`conformance/fixtures/*-op-cases.safetensors`): the expected outputs come
/// from outside the project, not from the oracle.
#[test]
fn outside_op_cases_pass() {
    let Some(backend) = common::backend() else { return };
    for path in dsv3_conformance::case_file::OUTSIDE_CASE_FILES.iter().map(std::path::Path::new) {
        let cases = dsv3_conformance::case_file::read(path).expect("the shipped case file reads").cases.len();
        let report =
            dsv3_conformance::case_file::run_file(&backend, path).expect("the shipped case file reads");
        check(&report);
        assert_eq!(report.count(Status::Pass), cases, "every case of the file ran and passed");
    }
}

/// Sampling's distribution: 20,000 draws against the exact nucleus (chi-square p ≥ 1e-4, none outside).
#[test]
fn sampling_draws_the_nucleus_distribution() {
    let Some(device) = common::device() else { return };
    let stats = dsv3_conformance::sampling_stats::check(&device, dsv3_conformance::sampling_stats::DRAWS)
        .expect("sampling runs");
    assert!(stats.passed(), "{stats:?}");
}

#[test]
fn quick_set_matches_the_oracle() {
    let Some(backend) = common::backend() else { return };
    let report = run_quick_against_oracle(&backend);
    check(&report);
    // Every core op ran (nothing unsupported, nothing skipped).
    for op in dsv3_core::ops::OP_NAMES {
        assert!(report.results.iter().any(|r| r.op == *op && r.status == Status::Pass), "{op} did not run");
    }
}

#[test]
fn larger_shapes_reach_the_tiled_and_split_paths() {
    let Some(backend) = common::backend() else { return };
    let fp8 = Operand::Fp8(Fp8Format::E4M3Fn, ScaleStore::F32);
    let bf16 = Operand::Dense(DType::BF16);
    let set = vec![
        // More than 16 rows: the tiled grouped GEMM, experts with partial and several tiles, empty ones.
        // (Stacked FP8 weights with N a multiple of 128: the generator's block quantizer assumes it.)
        grouped_gemm(&[70, 0, 3, 140, 0, 1], 128, 200, bf16, fp8, DType::BF16, "tiled"),
        grouped_gemm(&[33, 31], 256, 256, fp8, fp8, DType::F32, "tiled"),
        grouped_gemm(&[20, 0, 45], 130, 72, bf16, bf16, DType::BF16, "tiled"),
        gemm(200, 72, 384, bf16, bf16, DType::BF16),
        // Decode GEMMs with long K: every invocation loops over K / subgroup lanes (lavapipe stops a shader
        // after 65535 loop iterations in all, which a runtime-bounded inner loop once exceeded).
        gemm(4, 64, 16384, Operand::Dense(DType::F32), Operand::Dense(DType::F32), DType::F32),
        gemm(8, 96, 18432, bf16, fp8, DType::BF16),
    ];
    // DeepSeek-V3 shapes that stay cheap here (the 128-head attention prefills take ~30 s on lavapipe and
    // run in the full set): rope over 128 heads at V3's positions, the full vocabulary for sampling,
    // routing and dispatch over 256 experts; and decode over a cache long enough to be split over the keys
    // (then combined) with V3's head dims.
    let real = [
        "rope(t=128,h=128",
        "sample(r=4,v=129280",
        "argmax(r=4,n=129280",
        "softmax(r=4,n=129280",
        "topk(r=64,",
        "moe_route(kind=v3_noaux_tc,t=64,",
        "moe_dispatch(t=64,",
        "moe_combine(t=64,",
    ];
    let mut set = set;
    set.push(mla_decode_split(700, &[700, 333]));
    set.extend(cases::full().into_iter().filter(|c| real.iter().any(|r| c.name.starts_with(r))));
    assert_eq!(set.len(), 8 + real.len(), "a listed full-set case is missing");
    check(&run(&[&backend], &set, &Options::default()));
}

/// MLA decode with V3's 512 + 64 head dims, 8 heads, over `l` cache rows (several key splits).
fn mla_decode_split(l: usize, lens: &[usize]) -> Case {
    let (b, h, dc, dr) = (lens.len(), 8, 512, 64);
    let scale = v3_softmax_scale();
    let name = format!("mla_attention(b={b},t=1,h={h},dc={dc},dr={dr},l={l},kv_lens={lens:?},split)");
    Case {
        op: "mla_attention",
        seed: 0x5eed_0000 + l as u64,
        dtypes: "io=bf16,out=bf16".into(),
        tolerance: tolerance::attention(dc + dr, l, scale as f64, DType::BF16, b * h * dc),
        spec: Spec::MlaAttention(AttentionSpec {
            b,
            t: 1,
            h,
            d1: dc,
            d2: dr,
            l,
            kv_lens: lens.to_vec(),
            causal: true,
            dtype: DType::BF16,
            out: DType::BF16,
            scale,
            page: 0,
        }),
        name,
    }
}

#[test]
fn quick_set_through_small_storage_bindings() {
    // 8 KiB per binding: weights, tables, activations and caches of the quick set are all larger, so
    // every op runs split into several dispatches over windows of its tensors.
    let Some(backend) = common::backend_with_binding_limit(8 << 10) else { return };
    let mut report = run_quick_against_oracle(&backend);
    // Except page pools, which are bound whole (the pages a dispatch reads are known only on the device):
    // a paged case passes where its pool fits 8 KiB and is unsupported, saying why, where it does not —
    // the quick set has both.
    let (paged, windowed): (Vec<_>, Vec<_>) =
        report.results.drain(..).partition(|r| r.case.contains("page="));
    let too_large = |r: &&dsv3_conformance::report::Row| {
        r.status == Status::Unsupported && r.reason.contains("page pool")
    };
    for r in &paged {
        assert!(r.status == Status::Pass || too_large(&r), "{}: {:?} {}", r.case, r.status, r.reason);
    }
    assert!(paged.iter().any(|r| r.status == Status::Pass) && paged.iter().any(|r| too_large(&r)));
    report.results = windowed;
    check(&report);
}

#[test]
fn gemm_family_without_subgroups() {
    // lavapipe has subgroups, so the quick set takes the subgroup decode GEMM; this runs the other path.
    let Some(backend) = common::backend_without_subgroups() else { return };
    let set: Vec<_> =
        cases::quick().into_iter().filter(|c| c.op == "gemm" || c.op == "grouped_gemm").collect();
    check(&run(&[&backend], &set, &Options::default()));
}
