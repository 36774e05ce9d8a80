//! gemm, grouped_gemm, act_quant and dequantize on the host emulator against the CPU oracle: the quick
//! set, then shapes that reach what it does not (tiled grouped GEMMs, block-wide expert scans, decode GEMMs
//! with long K, W8A8 at N = 576, DeepSeek-V3's act_quant size, e4m3fnuz on gfx94x's FP8 MFMA and gfx90a).

mod common;

use dsv3_backend_gpu::emulator::EmulatorBackend;
use dsv3_conformance::case::Operand;
use dsv3_conformance::cases::{self, gemm, gemm_strided, grouped_gemm};
use dsv3_conformance::gen::ScaleStore;
use dsv3_conformance::Case;
use dsv3_core::fp8::Fp8Format;
use dsv3_core::ops::{Activations, Gemm, GroupedGemm, Weights};
use dsv3_core::DType::{self, BF16, F32};
use dsv3_core::{Backend, Error, Op, Support, Tensor};

const BF: Operand = Operand::Dense(BF16);
const F: Operand = Operand::Dense(F32);
const FP8: Operand = Operand::Fp8(Fp8Format::E4M3Fn, ScaleStore::F32);
const FP8_UE8M0: Operand = Operand::Fp8(Fp8Format::E4M3Fn, ScaleStore::Ue8m0);
const FNUZ: Operand = Operand::Fp8(Fp8Format::E4M3Fnuz, ScaleStore::F32);
const FNUZ_UE8M0: Operand = Operand::Fp8(Fp8Format::E4M3Fnuz, ScaleStore::Ue8m0);

fn check_both_warps(op: &str, cases: &[Case]) {
    for warp in [32, 64] {
        common::check_cases(warp, op, cases);
    }
}

/// The cases of the full set whose names start with `prefix` (at least one).
fn from_full(prefix: &str) -> Vec<Case> {
    let set: Vec<Case> = cases::full().into_iter().filter(|c| c.name.starts_with(prefix)).collect();
    assert!(!set.is_empty(), "no full-set case starts with {prefix}");
    set
}

#[test]
fn gemm_quick() {
    common::check_quick("gemm");
}

#[test]
fn grouped_gemm_quick() {
    common::check_quick("grouped_gemm");
}

#[test]
fn act_quant_quick() {
    common::check_quick("act_quant");
}

#[test]
fn dequantize_quick() {
    common::check_quick("dequantize");
}

#[test]
fn gemm_tiles_and_decode() {
    check_both_warps(
        "gemm",
        &[
            // Tiled: partial row and column tiles, a partial last K block, W8A8 at kv_a_proj's N = 576.
            gemm(200, 72, 384, BF, BF, BF16),
            gemm(70, 576, 320, FP8, FP8, BF16),
            gemm(9, 200, 200, FP8_UE8M0, FP8_UE8M0, F32),
            gemm(65, 130, 130, F, FP8, F32),
            // Decode: long K (many chunks of A), W8A8 at N = 576 with V3's K (split K: 18 column blocks).
            gemm(4, 64, 16384, F, F, F32),
            gemm(8, 96, 18432, BF, FP8, BF16),
            gemm(8, 576, 7168, FP8, FP8, BF16),
            gemm(2, 40, 1000, FP8, BF, F32),
        ],
    );
}

/// The tensor-core kernel (gemm_mma.cu), which both warp widths run (mma.sync at 32, MFMA at 64) for
/// bf16 × bf16 with more than 16 rows and 16-byte aligned rows: partial row and column tiles, K shorter than one 32-wide slice, K with a partial
/// last slice and more slices than the ring has stages, a padded A pitch, bf16 and f32 C, batched products
/// (per-head slices, a shared B); and shapes it declines (K not a multiple of 8, an odd A pitch), which the
/// SIMT kernel computes.
#[test]
fn gemm_on_tensor_cores() {
    check_both_warps(
        "gemm",
        &[
            gemm(17, 8, 16, BF, BF, F32),
            gemm(130, 72, 40, BF, BF, BF16),
            gemm(64, 64, 264, BF, BF, F32),
            gemm_strided(33, 100, 96, BF, BF, BF16, 104, 0),
            gemm(40, 24, 12, BF, BF, F32),
            gemm_strided(20, 16, 64, BF, BF, F32, 65, 0),
        ],
    );
    check_both_warps(
        "batched_gemm",
        &[
            cases::batched_gemm(3, 20, 40, 64, BF16, BF16, BF16, "heads"),
            cases::batched_gemm(2, 33, 16, 48, BF16, BF16, F32, "shared_b"),
        ],
    );
}

/// W8A8 block FP8 (e4m3fn × e4m3fn) on tensor cores (gemm_mma.cu's tile_mma_e4m3 with per-128-block
/// promotion: e4m3 mma.sync at warp 32, two bf16 MFMA on decoded codes at 64), for more than 16 rows and K
/// a multiple of 16: partial row tiles, K over several
/// 128-blocks with a ragged last one (64 and 16 wide), N past one 128-row block of B's scale grid (a
/// column tile in the second), f32 and ue8m0 scales, a padded A pitch; and K = 136 (not a multiple of 16),
/// which the SIMT kernel computes.
#[test]
fn gemm_w8a8_on_tensor_cores() {
    check_both_warps(
        "gemm",
        &[
            gemm(70, 72, 320, FP8, FP8, BF16),
            gemm(33, 200, 400, FP8_UE8M0, FP8_UE8M0, F32),
            gemm(130, 64, 128, FP8, FP8, F32),
            gemm_strided(40, 64, 256, FP8, FP8, BF16, 272, 0),
            gemm(20, 64, 136, FP8, FP8, BF16),
        ],
    );
}

/// bf16 activations × block-FP8 weights on tensor cores at both warp widths (B's codes decoded to bf16
/// fragments, its scales
/// applied per 128-wide K block as for W8A8): partial row and column tiles, K with ragged last blocks of
/// 64 and 16, f32 and ue8m0 scales, a padded A pitch; K = 200 (not a multiple of 16: the SIMT kernel).
#[test]
fn gemm_bf16_by_fp8_weights_on_tensor_cores() {
    check_both_warps(
        "gemm",
        &[
            gemm(70, 72, 320, BF, FP8, BF16),
            gemm(33, 200, 400, BF, FP8_UE8M0, F32),
            gemm_strided(40, 64, 256, BF, FP8, BF16, 264, 0),
            gemm(20, 64, 200, BF, FP8, BF16),
        ],
    );
}

/// Grouped GEMM on tensor cores at both warp widths (contiguous layout, offsets read on the device, row
/// tiles inside one expert: 64 rows, or 16 where the experts average at most 16 — "mma_third", "mma_last"),
/// bf16, W8A8 and bf16 × block FP8: experts with no rows, a partial tile, several tiles, the only rows in
/// the last expert; K with a ragged last 128-block.
#[test]
fn grouped_gemm_on_tensor_cores() {
    check_both_warps(
        "grouped_gemm",
        &[
            grouped_gemm(&[70, 0, 3, 140, 0, 1], 72, 96, BF, BF, BF16, "mma"),
            grouped_gemm(&[33, 0, 31, 65], 200, 320, FP8, FP8, BF16, "mma"),
            grouped_gemm(&[0, 0, 17, 0], 72, 400, FP8_UE8M0, FP8_UE8M0, F32, "mma_third"),
            grouped_gemm(&[0, 0, 0, 20], 64, 256, FP8, FP8, BF16, "mma_last"),
            grouped_gemm(&[40, 0, 2, 66], 136, 384, BF, FP8, BF16, "mma"),
        ],
    );
}

/// The 128-row prefill tile (gemm_mma.cu BM = 128, its 4-stage ring in dynamic shared memory: 52 to 60 KB,
/// opted in above 48 KiB at warp 32, within the 64 KiB LDS at 64; bf16 activations) at both warp widths: a
/// whole tile, a tile and a one-row tail, partial row, column and K tiles, K over more slices than the ring
/// has stages (K = 40 is two slices, fewer than its stages), bf16 × bf16 and bf16 × block FP8 with f32 and
/// ue8m0 scales, a padded A pitch; grouped with at least 128 rows per expert on average (an empty expert,
/// an expert of one tile and a short tail, one of several tiles).
#[test]
fn prefills_on_the_128_row_tile() {
    check_both_warps(
        "gemm",
        &[
            gemm(128, 64, 320, BF, BF, F32),
            gemm(129, 72, 40, BF, BF, BF16),
            gemm(200, 130, 400, BF, FP8, BF16),
            gemm(256, 64, 256, BF, FP8_UE8M0, F32),
            gemm(140, 200, 336, BF, FP8, BF16),
            gemm_strided(130, 64, 256, BF, FP8, F32, 264, 0),
        ],
    );
    check_both_warps(
        "grouped_gemm",
        &[
            grouped_gemm(&[300, 0, 129, 200], 72, 320, BF, BF, BF16, "mma128"),
            grouped_gemm(&[129, 0, 256], 136, 384, BF, FP8, BF16, "mma128"),
            grouped_gemm(&[0, 130, 256], 64, 400, BF, FP8_UE8M0, F32, "mma128"),
        ],
    );
}

/// Decode batches of grouped_gemm on tensor cores at both warp widths: more than 16 rows in all and at
/// most 16 per expert on average, so gemm_mma.cu runs with its 16-row tile (ops/gemm.rs mma_row_tile), each
/// block one expert's rows. 1 row per expert (20 experts; K over 16 slices, more than the ring's stages),
/// 3 per expert with empty experts between full ones and last, 16 per expert (one full tile each), 17
/// (a full tile and a one-row tail that must stop at the expert's end), an empty first expert; bf16, W8A8
/// and bf16 × block FP8, f32 and ue8m0 scales, N past one 128-row scale block, partial column tiles, K with
/// ragged last 128-blocks (64 and 16 wide).
#[test]
fn grouped_gemm_decode_batches_on_tensor_cores() {
    check_both_warps(
        "grouped_gemm",
        &[
            grouped_gemm(&[1; 20], 72, 1024, FP8, FP8, BF16, "mma16_1"),
            grouped_gemm(&[3, 3, 0, 3, 3, 0, 3, 3, 0, 0], 64, 320, BF, FP8, BF16, "mma16_3"),
            grouped_gemm(&[16, 0, 16, 16], 200, 400, FP8_UE8M0, FP8_UE8M0, F32, "mma16_16"),
            grouped_gemm(&[17, 0, 0, 17], 72, 256, BF, BF, BF16, "mma16_17"),
            grouped_gemm(&[0, 17, 0, 0, 3, 0], 130, 384, FP8, FP8, BF16, "mma16_17_3"),
            grouped_gemm(&[2, 5, 0, 1, 16, 0, 9, 0], 136, 400, BF, FP8, F32, "mma16_mixed"),
        ],
    );
}

/// The three emulated chips for e4m3fnuz products: NVIDIA (warp 32: no such format on its tile layer, the
/// SIMT kernel), gfx94x (hip-emu: gfx94x's FP8 MFMA) and gfx90a (the codes decoded to bf16 MFMA).
fn fnuz_chips() -> [EmulatorBackend; 3] {
    [EmulatorBackend::new(32), EmulatorBackend::new(64), EmulatorBackend::gfx90a()]
}

/// W8A8 in e4m3fnuz (MI300's format, both operands; the loader converts weights to it there), and bf16 ×
/// e4m3fnuz weights, on every emulated chip: on the tensor-core kernel at wave64 (the FP8 MFMA as gfx94x,
/// decoded as gfx90a) with per-128-block promotion — partial row and column tiles, K with ragged last
/// 128-blocks (64 and 16 wide), N past one 128-row scale block, f32 and ue8m0 scales, a padded A pitch, the
/// grouped GEMM's 64-row and 16-row tiles with empty experts — and K = 136 (not a multiple of 16: the SIMT
/// kernel everywhere).
#[test]
fn fnuz_gemms_on_tensor_cores() {
    for backend in fnuz_chips() {
        common::check_backend(
            &backend,
            "gemm",
            &[
                gemm(70, 72, 320, FNUZ, FNUZ, BF16),
                gemm(33, 200, 400, FNUZ_UE8M0, FNUZ_UE8M0, F32),
                gemm(130, 64, 128, FNUZ, FNUZ, F32),
                gemm_strided(40, 64, 256, FNUZ, FNUZ, BF16, 272, 0),
                gemm(70, 72, 320, BF, FNUZ, BF16),
                gemm(20, 64, 136, FNUZ, FNUZ, BF16),
            ],
        );
        common::check_backend(
            &backend,
            "grouped_gemm",
            &[
                grouped_gemm(&[33, 0, 31, 65], 200, 320, FNUZ, FNUZ, BF16, "mma"),
                grouped_gemm(&[1; 20], 72, 1024, FNUZ, FNUZ, BF16, "mma16_1"),
                grouped_gemm(&[0, 17, 0, 0, 3, 0], 130, 384, FNUZ_UE8M0, FNUZ_UE8M0, F32, "mma16_17_3"),
                grouped_gemm(&[2, 5, 0, 1, 16, 0, 9, 0], 136, 400, BF, FNUZ, F32, "mma16_mixed"),
            ],
        );
    }
}

/// An e4m3fnuz W8A8 gemm (40 rows: the tensor-core kernel at wave64) whose codes say 1 (0x40 in e4m3fnuz,
/// bias 8) everywhere, scales 1, except: the NaN code 0x80 at A[5, 100] and Bᵀ[7, 200], and ±240 (0x7f,
/// 0xff: finite in e4m3fnuz, NaN in e4m3fn) at A[10, 3] and A[10, 4]. So C is K everywhere, K − 2 in row 10
/// (the two ±240 products cancel), NaN in row 5 and column 7 only. A decoder with e4m3fn's bias (7) gives
/// 4K, one with e4m3fn's NaN codes NaN in row 10 and a finite row 5; a tile that mixes rows or columns
/// spreads the NaN. The path each chip takes is asserted: gfx94x's FP8 MFMA (native), gfx90a's decoded
/// bf16 MFMA, NVIDIA's SIMT kernel; mixing e4m3fn A with e4m3fnuz B is not a tensor-core product anywhere.
#[test]
fn fnuz_codes_decode_exactly_and_nan_stays_in_its_row_and_column() {
    let (m, n, k) = (40usize, 72usize, 256usize);
    let kb = k.div_ceil(128);
    let mut wrongs = Vec::new();
    for backend in fnuz_chips() {
        let device = backend.open(0).unwrap();
        let on = device.info().name.clone();
        let stream = device.default_stream();
        let tensor = |shape: &[usize], dtype: DType, bytes: &[u8]| {
            let buffer = device.alloc(bytes.len()).unwrap();
            stream.upload(&buffer, 0, bytes).unwrap();
            Tensor::contiguous(buffer, 0, shape, dtype)
        };
        let f32s = |count: usize| 1.0f32.to_le_bytes().repeat(count);
        let mut a_codes = vec![0x40u8; m * k];
        a_codes[5 * k + 100] = 0x80;
        a_codes[10 * k + 3] = 0x7f;
        a_codes[10 * k + 4] = 0xff;
        let mut b_codes = vec![0x40u8; n * k];
        b_codes[7 * k + 200] = 0x80;
        let a = |dtype: DType| Activations::Fp8 {
            codes: tensor(&[m, k], dtype, &a_codes),
            scales: tensor(&[m, kb], F32, &f32s(m * kb)),
        };
        let b = Weights::BlockFp8 {
            codes: tensor(&[n, k], DType::F8E4M3Fnuz, &b_codes),
            scales: tensor(&[n.div_ceil(128), kb], F32, &f32s(n.div_ceil(128) * kb)),
        };
        let c = tensor(&[m, n], F32, &vec![0; m * n * 4]);
        let op = Op::Gemm(Gemm { a: a(DType::F8E4M3Fnuz), b: b.clone(), c: c.clone() });
        let support = device.supports(&op);
        let path_ok = match (backend.name(), &support) {
            ("cuda-emu", Support::Emulated { via }) => via.contains("f32 FMA"),
            ("hip-emu", Support::Native) => on.contains("gfx94x"),
            ("hip-emu", Support::Emulated { via }) => {
                on.contains("gfx90a") && via.contains("bf16 tensor cores")
            }
            _ => false,
        };
        assert!(path_ok, "{on}: {support:?}");
        let mixed = Op::Gemm(Gemm { a: a(DType::F8E4M3Fn), b, c: c.clone() });
        let mixed_support = device.supports(&mixed);
        assert!(
            matches!(&mixed_support, Support::Emulated { via } if via.contains("f32 FMA")),
            "{on}: e4m3fn × e4m3fnuz: {mixed_support:?}"
        );
        stream.launch(&op).unwrap();
        stream.sync().unwrap();
        let mut bytes = vec![0u8; m * n * 4];
        stream.download(&c.buffer, 0, &mut bytes).unwrap();
        // Every chip's first wrong value, so that a failure shows which paths share it.
        let values = bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()));
        let wrong = values.enumerate().find_map(|(i, v)| {
            let (row, col) = (i / n, i % n);
            let want = if row == 5 || col == 7 {
                f32::NAN
            } else if row == 10 {
                (k - 2) as f32
            } else {
                k as f32
            };
            let ok = if want.is_nan() { v.is_nan() } else { v == want };
            (!ok).then(|| format!("{on}: C[{row}, {col}] = {v}, want {want}"))
        });
        wrongs.extend(wrong);
    }
    assert!(wrongs.is_empty(), "{wrongs:#?}");
}

/// The full set's decode batch (32 tokens × 8 of 64 experts, K = 2048) on the 16-row tensor-core tile,
/// W8A8 and bf16 × FP8, at both warp widths.
#[test]
fn grouped_gemm_decode_batch_of_the_full_set() {
    check_both_warps("grouped_gemm", &from_full("grouped_gemm(experts=64,rows=256,tokens=32x8_of_64"));
}

/// A NaN weight code on the 16-row tensor-core tile stays in its expert's rows and its column: every
/// weight is 1 (e4m3fn 0x38, scale 1) but one NaN code (0x7f) in expert 1's column 5, every activation
/// 1, so C is K everywhere except NaN in rows 3 .. 8 (expert 1) of column 5. A block that took another
/// expert's rows or weights, or wrote a tail past its expert, would spread the NaN to other rows.
#[test]
fn a_nan_weight_stays_in_its_expert_on_the_16_row_tile() {
    let (counts, n, k) = ([3usize, 5, 0, 4, 17], 72usize, 256usize);
    let (experts, rows) = (counts.len(), counts.iter().sum::<usize>());
    for warp in [32, 64] {
        for w8a8 in [false, true] {
            let device = EmulatorBackend::new(warp).open(0).unwrap();
            let stream = device.default_stream();
            let tensor = |shape: &[usize], dtype: DType, bytes: &[u8]| {
                let buffer = device.alloc(bytes.len()).unwrap();
                stream.upload(&buffer, 0, bytes).unwrap();
                Tensor::contiguous(buffer, 0, shape, dtype)
            };
            let f32s = |count: usize| 1.0f32.to_le_bytes().repeat(count);
            let kb = k.div_ceil(128);
            let a = if w8a8 {
                Activations::Fp8 {
                    codes: tensor(&[rows, k], DType::F8E4M3Fn, &vec![0x38; rows * k]),
                    scales: tensor(&[rows, kb], F32, &f32s(rows * kb)),
                }
            } else {
                Activations::Dense(tensor(&[rows, k], BF16, &0x3f80u16.to_le_bytes().repeat(rows * k)))
            };
            let mut codes = vec![0x38u8; experts * n * k];
            codes[(n + 5) * k + 100] = 0x7f; // expert 1, column 5, k = 100
            let b = Weights::BlockFp8 {
                codes: tensor(&[experts, n, k], DType::F8E4M3Fn, &codes),
                scales: tensor(&[experts, n.div_ceil(128), kb], F32, &f32s(experts * n.div_ceil(128) * kb)),
            };
            let mut offsets = vec![0i32];
            for c in counts {
                offsets.push(offsets.last().unwrap() + c as i32);
            }
            let offsets: Vec<u8> = offsets.iter().flat_map(|v| v.to_le_bytes()).collect();
            // C with 16 guard rows of -7 after it: the last expert's one-row tail tile must not write past
            // its end (its second tile, rows 28 .. 44, holds one row: 28).
            let guard = (-7.0f32).to_le_bytes().repeat(16 * n);
            let c = tensor(&[rows, n], F32, &[vec![0; rows * n * 4], guard.clone()].concat());
            let op = Op::GroupedGemm(GroupedGemm {
                a,
                b,
                expert_offsets: tensor(&[experts + 1], DType::I32, &offsets),
                c: c.clone(),
            });
            // The tensor cores take it (exact decoding of the codes at warp 64 and for bf16 A).
            let support = device.supports(&op);
            let on_tensor_cores = match &support {
                Support::Native => w8a8 && warp == 32,
                Support::Emulated { via } => via.contains("tensor cores"),
                _ => false,
            };
            assert!(on_tensor_cores, "warp {warp}, w8a8 {w8a8}: {support:?}");
            stream.launch(&op).unwrap();
            stream.sync().unwrap();
            let mut bytes = vec![0u8; (rows + 16) * n * 4];
            stream.download(&c.buffer, 0, &mut bytes).unwrap();
            assert!(bytes[rows * n * 4..] == guard, "warp {warp}, w8a8 {w8a8}: written past C's last row");
            bytes.truncate(rows * n * 4);
            for (i, v) in bytes.chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).enumerate() {
                let (m, col) = (i / n, i % n);
                if (3..8).contains(&m) && col == 5 {
                    assert!(v.is_nan(), "warp {warp}, w8a8 {w8a8}: C[{m}, {col}] = {v}, not NaN");
                } else {
                    assert_eq!(v, k as f32, "warp {warp}, w8a8 {w8a8}: C[{m}, {col}]");
                }
            }
        }
    }
}

/// The decode kernel's paths: each row bucket (1, 4, 8, 16 rows), 16-byte runs of B and the element-wise
/// fallback (K · element size not a multiple of 16), K split over blocks (few columns; a partial last split)
/// and not (more than 256 column blocks), and A chunks smaller than K at 16 rows.
#[test]
fn gemm_decode_paths() {
    check_both_warps(
        "gemm",
        &[
            gemm(1, 40, 1000, FP8, FP8, BF16),
            gemm(1, 8200, 160, FP8, FP8, BF16),
            gemm(3, 130, 1024, FP8, FP8, F32),
            gemm(4, 300, 2048, FP8_UE8M0, FP8_UE8M0, BF16),
            gemm(16, 200, 1100, BF, FP8, BF16),
            gemm(16, 72, 3000, FP8, FP8, F32),
            gemm(11, 33, 136, F, BF, F32),
        ],
    );
}

#[test]
fn grouped_gemm_tiles() {
    // 300 experts, most empty: more experts than threads, so each thread counts a run of two.
    let mut many = vec![0usize; 300];
    for (i, c) in [(0, 5), (1, 70), (130, 1), (257, 64), (299, 3)] {
        many[i] = c;
    }
    check_both_warps(
        "grouped_gemm",
        &[
            // More than 16 rows: the tiled kernel, experts with a partial tile, several tiles, none.
            grouped_gemm(&[70, 0, 3, 140, 0, 1], 128, 200, BF, FP8, BF16, "tiled"),
            grouped_gemm(&[33, 31], 256, 256, FP8, FP8, F32, "tiled"),
            grouped_gemm(&[20, 0, 45], 130, 72, BF, BF, BF16, "tiled"),
            grouped_gemm(&[0, 0, 0, 17], 200, 130, FP8_UE8M0, FP8_UE8M0, BF16, "tiled_last"),
            grouped_gemm(&many, 64, 128, BF, FP8, BF16, "many_experts"),
            // Decode rows (at most 16), each to its own expert or shared.
            grouped_gemm(&[4, 0, 1, 0, 11], 72, 3000, FP8, FP8, BF16, "decode"),
        ],
    );
}

/// The grouped decode kernel: several experts with 1–3 rows each (one block row per expert, its weights
/// read once for all its rows), at each row bucket, with and without 16-byte runs of B; at 16 rows K takes
/// three chunks of A (640 each for FP8 activations), their scales staged per chunk.
#[test]
fn grouped_gemm_decode_experts() {
    check_both_warps(
        "grouped_gemm",
        &[
            grouped_gemm(&[1], 72, 1024, FP8, FP8, BF16, "one_row"),
            grouped_gemm(&[0, 2, 1, 0], 40, 300, BF, FP8, F32, "rows_1_2"),
            grouped_gemm(&[1, 2, 0, 3, 1, 1, 0, 2], 72, 1024, FP8, FP8, BF16, "rows_1_3"),
            grouped_gemm(&[3, 3, 2, 0, 3, 3, 2], 64, 1500, FP8_UE8M0, FP8_UE8M0, BF16, "rows_16"),
        ],
    );
}

#[test]
fn act_quant_at_v3_size() {
    check_both_warps("act_quant", &from_full("act_quant(m=128,k=7168"));
}

/// Offsets that break the contract (not starting at 0, decreasing, not ending at the row count) are
/// reported at sync by the tiled kernel (40 rows) and the decode kernel (12 rows) alike.
#[test]
fn grouped_gemm_reports_bad_offsets() {
    let device = EmulatorBackend::new(32).open(0).unwrap();
    let stream = device.default_stream();
    let tensor = |shape: &[usize], dtype: DType| {
        let bytes = shape.iter().product::<usize>() * dtype.size();
        let buffer = device.alloc(bytes).unwrap();
        stream.upload(&buffer, 0, &vec![0; bytes]).unwrap();
        Tensor::contiguous(buffer, 0, shape, dtype)
    };
    for rows in [40i32, 12] {
        for bad in [[1, 5, rows], [0, 9, 5], [0, 5, rows - 1]] {
            let offsets = tensor(&[3], DType::I32);
            let bytes: Vec<u8> = bad.iter().flat_map(|v| v.to_le_bytes()).collect();
            stream.upload(&offsets.buffer, 0, &bytes).unwrap();
            let op = Op::GroupedGemm(GroupedGemm {
                a: Activations::Dense(tensor(&[rows as usize, 64], BF16)),
                b: Weights::Dense(tensor(&[2, 32, 64], BF16)),
                expert_offsets: offsets,
                c: tensor(&[rows as usize, 32], F32),
            });
            stream.launch(&op).unwrap();
            match stream.sync() {
                Err(Error::InvalidArgument { op: "grouped_gemm", arg: "expert_offsets", .. }) => {}
                other => panic!("rows {rows}, offsets {bad:?}: {other:?}"),
            }
        }
    }
}
