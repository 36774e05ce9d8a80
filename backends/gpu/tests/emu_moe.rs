//! moe_route, moe_dispatch and moe_combine on the host emulator against the CPU oracle: the quick set,
//! DeepSeek-V3's shapes, shapes that reach what the quick set's small ones do not (experts beyond one per
//! thread, dispatches over many index blocks, every copy width), selections among exact ties, the
//! device-side id checks, and the shared-memory limits `supports` reports.

mod common;

use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_conformance::case::{DispatchSpec, IdPattern, Inputs, RouteSpec, Spec};
use dsv3_conformance::gen::HostTensor;
use dsv3_conformance::runner::{execute, oracle};
use dsv3_conformance::{cases, tolerance, Case};
use dsv3_core::ops::{RouteConfig, Scoring, TopkMethod};
use dsv3_core::{Backend, DType, Device, Error, Support};
use std::sync::Arc;

#[test]
fn moe_route() {
    common::check_quick("moe_route");
}

#[test]
fn moe_dispatch() {
    common::check_quick("moe_dispatch");
}

#[test]
fn moe_combine() {
    common::check_quick("moe_combine");
}

fn device(warp: u32) -> Arc<dyn Device> {
    EmulatorBackend::new(warp).open(0).expect("the emulator opens")
}

fn v3_config(n_group: usize, topk_group: usize, top_k: usize) -> RouteConfig {
    RouteConfig {
        scoring: Scoring::Sigmoid,
        method: TopkMethod::NoAuxTc,
        n_group,
        topk_group,
        top_k,
        norm_topk_prob: true,
        routed_scaling_factor: 2.5,
    }
}

fn v2_config(method: TopkMethod, n_group: usize, topk_group: usize, top_k: usize) -> RouteConfig {
    RouteConfig {
        scoring: Scoring::Softmax,
        method,
        n_group,
        topk_group,
        top_k,
        norm_topk_prob: false,
        routed_scaling_factor: 16.0,
    }
}

fn route_case(name: &str, t: usize, e: usize, config: RouteConfig) -> Case {
    let max_bias = if config.method == TopkMethod::NoAuxTc { 0.1 } else { 0.0 };
    Case {
        op: "moe_route",
        name: format!("moe_route({name},t={t},e={e})"),
        dtypes: "logits=f32".into(),
        seed: 0x5eed_0000 + (t * 1000 + e) as u64,
        tolerance: tolerance::moe_route(e, config.top_k, max_bias, t * config.top_k),
        spec: Spec::MoeRoute(RouteSpec { t, e, config, max_bias }),
    }
}

fn dispatch_case(t: usize, d: usize, k: usize, experts: usize, x: DType, ids: IdPattern) -> Case {
    Case {
        op: "moe_dispatch",
        name: format!("moe_dispatch(t={t},d={d},k={k},experts={experts},x={x},ids={ids:?})"),
        dtypes: format!("x={x}"),
        seed: 0xd15_0000 + (t * 100 + k) as u64,
        tolerance: tolerance::exact(),
        spec: Spec::MoeDispatch(DispatchSpec { t, d, k, experts, x, ids }),
    }
}

/// The full set's DeepSeek-V3 cases: routing 64 tokens over 256 experts (8 groups, 4 kept, top 8),
/// dispatching their 512 slots (two index blocks) with 7168-wide rows, and the combine back.
#[test]
fn deepseek_v3_shapes() {
    let names = ["moe_route(kind=v3_noaux_tc,t=64,", "moe_dispatch(t=64,", "moe_combine(t=64,"];
    let set: Vec<Case> =
        cases::full().into_iter().filter(|c| names.iter().any(|n| c.name.starts_with(n))).collect();
    assert_eq!(set.len(), names.len(), "a listed full-set case is missing");
    for warp in [32, 64] {
        for op in ["moe_route", "moe_dispatch", "moe_combine"] {
            common::check_cases(warp, op, &set);
        }
    }
}

/// Routers with more experts than threads (each thread scores and ranks several), up to the limit.
#[test]
fn routing_over_many_experts() {
    let set = [
        route_case("v2_greedy", 3, 1024, v2_config(TopkMethod::Greedy, 1, 1, 6)),
        route_case("v2_group_limited", 3, 1000, v2_config(TopkMethod::GroupLimitedGreedy, 40, 5, 16)),
        route_case("v3_noaux_tc", 4, 1024, v3_config(16, 4, 8)),
    ];
    for warp in [32, 64] {
        common::check_cases(warp, "moe_route", &set);
    }
}

/// Dispatches whose slots span many index blocks (256 slots each), so that ranks, per-block prefixes and
/// offsets combine across blocks; every expert of 4096 counted; rows copied 16, 8, 4 and 2 bytes at a time.
#[test]
fn dispatch_over_many_blocks() {
    let set = [
        dispatch_case(1000, 7, 8, 256, DType::F32, IdPattern::Random), // 32 blocks, 4-byte words
        dispatch_case(700, 6, 1, 3, DType::F32, IdPattern::One(1)),    // one expert over 3 blocks, 8-byte
        dispatch_case(300, 5, 4, 16, DType::BF16, IdPattern::EvenOnly), // 2-byte words
        dispatch_case(40, 16, 8, 4096, DType::BF16, IdPattern::Random), // the experts limit, 16-byte
    ];
    for warp in [32, 64] {
        common::check_cases(warp, "moe_dispatch", &set);
    }
}

/// Logits from a few values, so that many scores (and group scores) tie exactly in f32 and in the oracle's
/// f64 alike, while distinct ones stay far apart: the ids must equal the oracle's, lower index first.
fn tied_inputs(case: &Case, t: usize, e: usize) -> Inputs {
    let mut logits = Vec::with_capacity(t * e);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for row in 0..t {
        let levels: &[f64] = match row % 3 {
            0 => &[0.0],
            1 => &[0.0, 1.0, 2.0, 3.0],
            _ => &[1.0, 3.0],
        };
        for _ in 0..e {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            logits.push(levels[(state % levels.len() as u64) as usize]);
        }
    }
    let mut tensors = vec![("logits", HostTensor::from_f64(DType::F32, &[t, e], &logits))];
    if let Spec::MoeRoute(r) = &case.spec {
        if r.config.method == TopkMethod::NoAuxTc {
            // One bias for all: selection scores stay exact ties where the scores are.
            tensors.push(("bias", HostTensor::from_f64(DType::F32, &[e], &vec![0.25; e])));
        }
    }
    Inputs { tensors }
}

#[test]
fn routing_breaks_exact_ties_as_the_oracle() {
    let t = 9;
    let set = [
        route_case("v3_noaux_tc", t, 256, v3_config(8, 4, 8)),
        route_case("v2_greedy", t, 64, v2_config(TopkMethod::Greedy, 1, 1, 6)),
        route_case("v2_group_limited", t, 32, v2_config(TopkMethod::GroupLimitedGreedy, 8, 3, 6)),
    ];
    let oracle = oracle().expect("the CPU oracle opens");
    for warp in [32, 64] {
        let dev = device(warp);
        for case in &set {
            let Spec::MoeRoute(r) = &case.spec else { unreachable!() };
            let inputs = tied_inputs(case, t, r.e);
            let want = execute(&oracle, case, &inputs).expect("oracle runs");
            let got = execute(&dev, case, &inputs).expect("emulator runs");
            assert_eq!(got.get("ids").i32s(), want.get("ids").i32s(), "{} at warp {warp}", case.name);
            let verdict = case.compare(&inputs, &want, &got);
            assert!(verdict.passed(), "{} at warp {warp}: {:?}", case.name, verdict.failures);
        }
    }
}

/// An id outside 0..E (dispatch) or a slot row outside 0..T·k (combine) is reported by the kernels and
/// surfaces at sync as the argument's error; the stream works normally afterwards.
#[test]
fn out_of_range_ids_are_reported() {
    let dev = device(32);
    let dispatch = dispatch_case(300, 8, 2, 5, DType::F32, IdPattern::Random);
    let mut inputs = dispatch.inputs();
    let mut ids = inputs.get("ids").i32s();
    ids[517] = 5;
    inputs.tensors.retain(|(n, _)| *n != "ids");
    inputs.tensors.push(("ids", HostTensor::from_i32(&[300, 2], &ids)));
    match execute(&dev, &dispatch, &inputs) {
        Err(Error::InvalidArgument { op: "moe_dispatch", arg: "ids", reason }) => {
            assert!(reason.contains("element 517, value 5"), "{reason}")
        }
        other => panic!("expected the ids error, got {other:?}"),
    }

    let combine = cases::quick().into_iter().find(|c| c.op == "moe_combine").unwrap();
    let mut inputs = combine.inputs();
    let mut rows = inputs.get("slot_rows").i32s();
    let n = rows.len();
    rows[n - 1] = -3;
    inputs.tensors.retain(|(name, _)| *name != "slot_rows");
    inputs.tensors.push(("slot_rows", HostTensor::from_i32(&[n], &rows)));
    match execute(&dev, &combine, &inputs) {
        Err(Error::InvalidArgument { op: "moe_combine", arg: "slot_rows", reason }) => {
            assert!(reason.contains(&format!("element {}, value -3", n - 1)), "{reason}")
        }
        other => panic!("expected the slot_rows error, got {other:?}"),
    }

    // The error record was cleared: a valid dispatch runs clean.
    execute(&dev, &dispatch, &dispatch.inputs()).expect("a valid dispatch after the errors");
}

#[test]
fn shared_memory_limits_are_unsupported_with_the_number() {
    let dev = device(32);
    let unsupported = |case: &Case, number: &str| {
        let bound = case.bind(&dev, &case.inputs(), false).expect("binds");
        match dev.supports(&bound.op) {
            Support::Unsupported { reason } => assert!(reason.contains(number), "{reason}"),
            s => panic!("{}: expected unsupported, got {s:?}", case.name),
        }
    };
    unsupported(&route_case("v2_greedy", 1, 1025, v2_config(TopkMethod::Greedy, 1, 1, 4)), "1025");
    unsupported(&dispatch_case(2, 4, 2, 4097, DType::F32, IdPattern::Random), "4097");
    let fits = route_case("v2_greedy", 1, 1024, v2_config(TopkMethod::Greedy, 1, 1, 4));
    let bound = fits.bind(&dev, &fits.inputs(), false).expect("binds");
    assert_eq!(dev.supports(&bound.op), Support::Native);
}
