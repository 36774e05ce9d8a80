//! mla_attention and mha_attention on the host emulator against the CPU oracle: the quick set, then the
//! paths it misses — decode over a cache long enough to be split over the keys (then combined) with V3's
//! head dims, a causal prefill whose queries see different numbers of keys across splits, MHA split —
//! and the cache-length check made on the device, and `supports` for head dims past shared memory.
//! MLA with V3's head dims and a bf16 cache runs on the tile-layer kernel (attention_mma.cu) at both
//! widths (warp 32: mma.sync, NVIDIA; warp 64: MFMA, AMD), other dims and caches on the SIMT kernel; the
//! tile-layer path gets its own cases at both widths (partial head groups, tiles cut by lengths and
//! splits, pages that tiles straddle) and device-side checks.

mod common;

use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_conformance::case::{v3_softmax_scale, AttentionSpec, Spec};
use dsv3_conformance::{tolerance, Case};
use dsv3_core::ops::MlaAttention;
use dsv3_core::{Backend, DType, Device, Error, Op, Support, Tensor};
use std::sync::Arc;

#[test]
fn mla_attention() {
    common::check_quick("mla_attention");
}

#[test]
fn mha_attention() {
    common::check_quick("mha_attention");
}

/// A bf16 case of either form over `l` cache rows; `d1, d2` are (Dc, Dr) for MLA, (Dk, Dv) for MHA.
#[allow(clippy::too_many_arguments)]
fn case(mla: bool, b: usize, t: usize, h: usize, d1: usize, d2: usize, l: usize, lens: &[usize]) -> Case {
    let scale = v3_softmax_scale();
    let (op, score_dim, out_dim) =
        if mla { ("mla_attention", d1 + d2, d1) } else { ("mha_attention", d1, d2) };
    let spec = AttentionSpec {
        b,
        t,
        h,
        d1,
        d2,
        l,
        kv_lens: lens.to_vec(),
        causal: true,
        dtype: DType::BF16,
        out: DType::BF16,
        scale,
        page: 0,
    };
    Case {
        op,
        name: format!("{op}(b={b},t={t},h={h},d1={d1},d2={d2},l={l},kv_lens={lens:?},gpu)"),
        dtypes: "io=bf16,out=bf16".into(),
        seed: 0x5eed_a770 + l as u64 + t as u64,
        tolerance: tolerance::attention(score_dim, l, scale as f64, DType::BF16, b * t * h * out_dim),
        spec: if mla { Spec::MlaAttention(spec) } else { Spec::MhaAttention(spec) },
    }
}

#[test]
fn mla_decode_split_over_the_keys() {
    // 10 heads: a full group of 8 and a partial one; 600 keys: three splits of 224, of which the second
    // sequence (250 keys) fills one, part of the next and none of the last. Then V3's 128 heads (16
    // groups) over a short cache: one split (the emulator pays for every head of every key).
    let cases = [case(true, 2, 1, 10, 512, 64, 600, &[600, 250]), case(true, 1, 1, 128, 512, 64, 48, &[40])];
    for warp in [32, 64] {
        common::check_cases(warp, "mla_attention", &cases);
    }
}

/// `c` over a paged cache of `page`-position pages (shuffled through a pool, the first two sequences
/// sharing their first page).
fn paged(mut c: Case, page: usize) -> Case {
    if let Spec::MlaAttention(a) = &mut c.spec {
        a.page = page;
    }
    c.name = format!("{},page={page})", c.name.trim_end_matches(')'));
    c
}

#[test]
fn paged_mla_decode_split_over_the_keys() {
    // Splits of 224 keys start and end inside 64-position pages; 250 keys end inside a page.
    let cases = [paged(case(true, 2, 1, 10, 512, 64, 600, &[600, 250]), 64)];
    common::check_cases(32, "mla_attention", &cases);
}

#[test]
fn mla_causal_prefill_across_splits() {
    // 40 new tokens over 300 rows (two splits): the first sequence's queries see 261..=300 keys, the
    // second's (kv_len 45) see 6..=45, so its second split is empty.
    let cases = [case(true, 2, 40, 2, 512, 64, 300, &[300, 45])];
    for warp in [32, 64] {
        common::check_cases(warp, "mla_attention", &cases);
    }
}

#[test]
fn wide_latents_take_smaller_head_groups() {
    // D1 + D2 = 1064: five heads' queries fit shared memory (groups of 5 and 1), and 1000 output values
    // take four per thread.
    let cases = [case(true, 1, 1, 6, 1000, 64, 40, &[37])];
    for warp in [32, 64] {
        common::check_cases(warp, "mla_attention", &cases);
    }
}

#[test]
fn mha_decode_split_and_wide_values() {
    // V3's naive head dims over three splits (the second sequence fills only the first), then a prefill
    // with 300 value dims (two per thread).
    let cases = [case(false, 2, 1, 2, 192, 128, 600, &[600, 200]), case(false, 1, 3, 2, 40, 300, 20, &[20])];
    for warp in [32, 64] {
        common::check_cases(warp, "mha_attention", &cases);
    }
}

/// `values` as an i32 tensor of `shape` on `dev`.
fn i32s(dev: &Arc<dyn Device>, shape: &[usize], values: &[i32]) -> Tensor {
    let buf = dev.alloc(4 * values.len()).unwrap();
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    dev.default_stream().upload(&buf, 0, &bytes).unwrap();
    Tensor::contiguous(buf, 0, shape, DType::I32)
}

/// An MLA op over fresh (zeroed) f32 buffers with cache lengths `lens`.
fn mla_op(dev: &Arc<dyn Device>, h: usize, dc: usize, dr: usize, l: usize, lens: &[i32]) -> Op {
    mla_op_of(DType::F32, dev, h, dc, dr, l, lens)
}

/// [`mla_op`] with every float tensor of `dtype`.
fn mla_op_of(
    dtype: DType,
    dev: &Arc<dyn Device>,
    h: usize,
    dc: usize,
    dr: usize,
    l: usize,
    lens: &[i32],
) -> Op {
    let b = lens.len();
    let zeros = |shape: &[usize]| {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let buf = dev.alloc(bytes).unwrap();
        dev.default_stream().upload(&buf, 0, &vec![0u8; bytes]).unwrap();
        Tensor::contiguous(buf, 0, shape, dtype)
    };
    let lens_buf = i32s(dev, &[b], lens).buffer;
    Op::MlaAttention(MlaAttention {
        q_latent: zeros(&[b, 1, h, dc]),
        q_pe: zeros(&[b, 1, h, dr]),
        kv_cache: zeros(&[b, l, dc + dr]),
        block_table: None,
        kv_lens: Tensor::contiguous(lens_buf, 0, &[b], DType::I32),
        softmax_scale: 0.1,
        causal: true,
        out: zeros(&[b, 1, h, dc]),
    })
}

#[test]
fn cache_lengths_outside_the_cache_fail_at_sync() {
    // The SIMT kernel (f32, small dims) and the tile-layer one (bf16, V3's dims), at both widths.
    for (warp, dtype, dc, dr) in
        [(32, DType::F32, 32, 16), (32, DType::BF16, 512, 64), (64, DType::BF16, 512, 64)]
    {
        let dev = EmulatorBackend::new(warp).open(0).unwrap();
        let s = dev.default_stream();
        s.launch(&mla_op_of(dtype, &dev, 2, dc, dr, 8, &[8, 9]))
            .expect("the lengths are only known on the device");
        match s.sync() {
            Err(Error::InvalidArgument { op: "mla_attention", arg: "kv_lens", reason }) => {
                assert!(reason.contains("element 1, value 9"), "warp {warp}, {dtype}: {reason}")
            }
            other => {
                panic!("warp {warp}, {dtype}: expected the device to report kv_lens[1] = 9, got {other:?}")
            }
        }
        // Reported once; the stream goes on.
        s.launch(&mla_op_of(dtype, &dev, 2, dc, dr, 8, &[8, 1])).unwrap();
        s.sync().unwrap();
    }
}

#[test]
fn v3_mla_takes_the_tensor_cores_where_the_tile_layer_runs() {
    let (dev32, dev64) =
        (EmulatorBackend::new(32).open(0).unwrap(), EmulatorBackend::new(64).open(0).unwrap());
    let tensor_cores =
        |s: Support| matches!(s, Support::TensorCore { rounding } if rounding.contains("bf16"));
    // mma.sync at warp 32, MFMA at warp 64; other head dims and f32 caches stay on the SIMT kernel.
    assert!(tensor_cores(dev32.supports(&mla_op_of(DType::BF16, &dev32, 128, 512, 64, 4, &[4]))));
    assert!(tensor_cores(dev64.supports(&mla_op_of(DType::BF16, &dev64, 128, 512, 64, 4, &[4]))));
    assert_eq!(dev64.supports(&mla_op_of(DType::BF16, &dev64, 4, 256, 64, 4, &[4])), Support::Native);
    assert_eq!(dev32.supports(&mla_op_of(DType::BF16, &dev32, 4, 256, 64, 4, &[4])), Support::Native);
    assert_eq!(dev32.supports(&mla_op(&dev32, 128, 512, 64, 4, &[4])), Support::Native);
}

#[test]
fn a_non_finite_query_stays_in_its_own_head_on_the_tensor_cores() {
    // One key: the tile's other 15 rows are not keys. Head 1's query is NaN, head 0's zeros (as is the
    // cache row), so head 0's output is 0 and head 1's NaN, as the oracle's would be. The stage that holds
    // the key held the heads' queries just before; a kernel that left the non-key rows as they were (their
    // weights are 0, but 0 · NaN is NaN) would spread head 1's NaN to every head.
    for warp in [32, 64] {
        nan_query_stays_in_its_head(warp);
    }
}

fn nan_query_stays_in_its_head(warp: u32) {
    let dev = EmulatorBackend::new(warp).open(0).unwrap();
    let Op::MlaAttention(op) = mla_op_of(DType::BF16, &dev, 2, 512, 64, 16, &[1]) else { unreachable!() };
    let s = dev.default_stream();
    let nan = 0x7fc0u16.to_le_bytes().repeat(512);
    s.upload(&op.q_latent.buffer, op.q_latent.offset + 2 * 512, &nan).unwrap();
    let out = (op.out.buffer.clone(), op.out.offset);
    assert!(matches!(dev.supports(&Op::MlaAttention(op.clone())), Support::TensorCore { .. }));
    s.launch(&Op::MlaAttention(op)).unwrap();
    s.sync().unwrap();
    let mut bytes = vec![0u8; 2 * 2 * 512];
    s.download(&out.0, out.1, &mut bytes).unwrap();
    let bits: Vec<u16> = bytes.chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    let nan_bits = |b: &u16| b & 0x7f80 == 0x7f80 && b & 0x7f != 0;
    assert!(bits[..512].iter().all(|&b| b & 0x7fff == 0), "head 0 is not 0: {:x?}", &bits[..8]);
    assert!(bits[512..].iter().all(nan_bits), "head 1 is not NaN: {:x?}", &bits[512..520]);
}

#[test]
fn misaligned_queries_fall_back_to_the_simt_kernel() {
    // q_latent 2 bytes into its buffer: no 16-byte cp.async can copy its rows (the emulator fails such a
    // copy), so the launch takes the SIMT kernel, which computes the same attention (all zeros in, the
    // mean of zero rows out).
    let dev = EmulatorBackend::new(32).open(0).unwrap();
    let Op::MlaAttention(mut op) = mla_op_of(DType::BF16, &dev, 2, 512, 64, 16, &[3]) else { unreachable!() };
    let buf = dev.alloc(2 + 2 * 2 * 512).unwrap();
    let s = dev.default_stream();
    s.upload(&buf, 0, &vec![0u8; 2 + 2 * 2 * 512]).unwrap();
    op.q_latent = Tensor::contiguous(buf, 2, &[1, 1, 2, 512], DType::BF16);
    s.launch(&Op::MlaAttention(op)).unwrap();
    s.sync().unwrap();
}

/// Runs `cases` at warp 32 (mma.sync) and 64 (MFMA) and checks that every one ran on the tile layer.
fn check_tensor_cores(cases: &[Case]) {
    for warp in [32, 64] {
        let report = common::check_cases(warp, "mla_attention", cases);
        for r in &report.results {
            assert!(r.reason.contains("native on tensor cores"), "warp {warp}: {}: {}", r.case, r.reason);
        }
    }
}

#[test]
fn mla_tensor_cores_decode_split_with_a_partial_head_group() {
    // 40 heads: a group of 32 and one of 8 (its second m-tile all padding); 600 keys: three splits of 224
    // keys (14 tiles of 16), the second sequence's 250 keys filling the first split, 26 of the next (a tile
    // cut at 10 keys) and none of the last.
    check_tensor_cores(&[case(true, 2, 1, 40, 512, 64, 600, &[600, 250])]);
}

#[test]
fn mla_tensor_cores_cache_length_edges() {
    // One key (15 zero rows in the tile), exactly one tile, one past it, the whole cache.
    let c = case(true, 4, 1, 8, 512, 64, 48, &[1, 16, 17, 48]);
    check_tensor_cores(&[c.clone(), paged(c, 8)]);
}

#[test]
fn paged_mla_tensor_cores_tiles_straddle_pages() {
    // Pages of 24 positions: tiles of 16 keys and splits of 224 start and end inside pages.
    check_tensor_cores(&[paged(case(true, 2, 1, 40, 512, 64, 600, &[600, 250]), 24)]);
}

#[test]
fn mla_tensor_cores_causal_prefill_across_splits() {
    // 6 new tokens over 300 rows (two splits of 160 keys): the first sequence's queries see 295..=300
    // keys, the second's (kv_len 163) 158..=163 — its first two queries none of the second split, the
    // others 1..=4 keys of it —, each query's last tile cut at its own position.
    check_tensor_cores(&[case(true, 2, 6, 4, 512, 64, 300, &[300, 163])]);
}

#[test]
fn head_dims_past_shared_memory_are_unsupported_with_the_number() {
    let dev = EmulatorBackend::new(32).open(0).unwrap();
    // DeepSeek-V3: 128 heads of 512 + 64.
    assert_eq!(dev.supports(&mla_op(&dev, 128, 512, 64, 4, &[4])), Support::Native);
    match dev.supports(&mla_op(&dev, 1, 8192, 64, 1, &[1])) {
        Support::Unsupported { reason } => assert!(reason.contains("8256"), "{reason}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    match dev.supports(&mla_op(&dev, 1, 2048, 64, 1, &[1])) {
        Support::Unsupported { reason } => assert!(reason.contains("2048"), "{reason}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn block_table_entries_outside_the_pool_fail_at_sync() {
    // The SIMT kernel (f32, small dims) and the tile-layer one (bf16, V3's dims), at both widths.
    for (warp, dtype, dc, dr) in
        [(32, DType::F32, 32, 16), (32, DType::BF16, 512, 64), (64, DType::BF16, 512, 64)]
    {
        let dev = EmulatorBackend::new(warp).open(0).unwrap();
        let s = dev.default_stream();
        // Two sequences over a pool of 4 pages of 4 positions (the cache's [2, 8] rows seen as 4 pages):
        // the second sequence's second page is 4, one past the pool.
        let Op::MlaAttention(mut op) = mla_op_of(dtype, &dev, 2, dc, dr, 8, &[8, 6]) else { unreachable!() };
        op.kv_cache = op.kv_cache.reshape(&[4, 4, dc + dr]).unwrap();
        op.block_table = Some(i32s(&dev, &[2, 2], &[0, 1, 2, 4]));
        s.launch(&Op::MlaAttention(op)).expect("the table is only read on the device");
        match s.sync() {
            Err(Error::InvalidArgument { op: "mla_attention", arg: "block_table", reason }) => {
                assert!(
                    reason.contains("0..4") && reason.contains("element 3, value 4"),
                    "warp {warp}, {dtype}: {reason}"
                )
            }
            other => panic!(
                "warp {warp}, {dtype}: expected the device to report block_table[1, 1] = 4, got {other:?}"
            ),
        }
    }
}
