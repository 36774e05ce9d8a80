//! The in-shader number formats against core's codec, bit for bit: every FP8 code decoded, and a sweep of
//! f32 bit patterns (every exponent, both signs, random low bits, exact ties, NaN, ±inf, subnormals)
//! encoded to each FP8 format (saturating), bf16 and f16, through the `cast` op.

mod common;

use dsv3_core::ops::Cast;
use dsv3_core::{DType, Device, Fp8Format, Op, Overflow, Tensor};
use half::{bf16, f16};
use std::sync::Arc;

fn cast(dev: &Arc<dyn Device>, input: &[u8], from: DType, to: DType) -> Vec<u8> {
    let n = input.len() / from.size();
    let s = dev.default_stream();
    let x = dev.alloc(input.len()).unwrap();
    s.upload(&x, 0, input).unwrap();
    let out = dev.alloc(n * to.size()).unwrap();
    let op = Op::Cast(Cast {
        x: Tensor::contiguous(x, 0, &[n], from),
        out: Tensor::contiguous(out.clone(), 0, &[n], to),
    });
    s.launch(&op).unwrap();
    let mut bytes = vec![0u8; n * to.size()];
    s.download(&out, 0, &mut bytes).unwrap();
    bytes
}

/// f32 patterns: 2^18 spread over the whole bit space, plus exact midpoints of bf16, f16 and FP8 grids.
fn sweep() -> Vec<f32> {
    let mut v = Vec::new();
    let mut h = 0x9e37_79b9u32;
    for i in 0..(1u32 << 18) {
        h ^= h << 13;
        h ^= h >> 17;
        h ^= h << 5;
        v.push(f32::from_bits((i << 14) ^ (h & 0x3fff)));
    }
    for e in 100u32..160 {
        for m in 0..64u32 {
            let base = (e << 23) | (m << 17);
            for low in [1u32 << 16, 1 << 12, 1 << 19, 1 << 20, 1 << 21] {
                v.push(f32::from_bits(base | low));
                v.push(-f32::from_bits(base | low));
            }
        }
    }
    v.extend([
        0.0,
        -0.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NAN,
        65520.0,
        65519.99,
        448.0,
        464.0,
        240.0,
        248.0,
    ]);
    v.extend([57344.0, 61440.0, 1e-45, -1e-40, 2f32.powi(-25), 2f32.powi(-24) * 1.5]);
    v
}

#[test]
fn every_fp8_code_decodes_exactly() {
    let Some(dev) = common::device() else { return };
    let codes: Vec<u8> = (0..=255).collect();
    for format in Fp8Format::ALL {
        let dtype = DType::from_fp8(format);
        let got = cast(&dev, &codes, dtype, DType::F32);
        for (c, bytes) in got.chunks(4).enumerate() {
            let g = f32::from_le_bytes(bytes.try_into().unwrap());
            let want = format.decode(c as u8);
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{format:?} code {c:#x}: {g} vs {want}"
            );
        }
        let got = cast(&dev, &codes, dtype, DType::BF16);
        for (c, bytes) in got.chunks(2).enumerate() {
            let g = bf16::from_le_bytes([bytes[0], bytes[1]]);
            let want = bf16::from_f32(format.decode(c as u8));
            assert!(
                g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                "{format:?} code {c:#x} → bf16"
            );
        }
    }
}

#[test]
fn f32_encodes_like_core_and_half() {
    let Some(dev) = common::device() else { return };
    let values = sweep();
    let input: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    for format in Fp8Format::ALL {
        let got = cast(&dev, &input, DType::F32, DType::from_fp8(format));
        for (i, &x) in values.iter().enumerate() {
            let want = format.encode(x, Overflow::Saturate);
            assert_eq!(
                got[i],
                want,
                "{format:?}: {x:e} ({:#010x}) → {:#04x}, core {want:#04x}",
                x.to_bits(),
                got[i]
            );
        }
    }
    let got = cast(&dev, &input, DType::F32, DType::BF16);
    for (i, &x) in values.iter().enumerate() {
        let g = u16::from_le_bytes([got[2 * i], got[2 * i + 1]]);
        let want = bf16::from_f32(x).to_bits();
        assert!(
            g == want || (x.is_nan() && bf16::from_bits(g).is_nan()),
            "bf16: {x:e} → {g:#06x}, half {want:#06x}"
        );
    }
    let got = cast(&dev, &input, DType::F32, DType::F16);
    for (i, &x) in values.iter().enumerate() {
        let g = u16::from_le_bytes([got[2 * i], got[2 * i + 1]]);
        let want = f16::from_f32(x).to_bits();
        assert!(
            g == want || (x.is_nan() && f16::from_bits(g).is_nan()),
            "f16: {x:e} ({:#010x}) → {g:#06x}, half {want:#06x}",
            x.to_bits()
        );
    }
}

#[test]
fn every_f16_pattern_widens_exactly() {
    let Some(dev) = common::device() else { return };
    let input: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
    let got = cast(&dev, &input, DType::F16, DType::F32);
    for h in 0..=u16::MAX {
        let g = f32::from_le_bytes(got[4 * h as usize..4 * h as usize + 4].try_into().unwrap());
        let want = f16::from_bits(h).to_f32();
        assert!(
            g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
            "f16 {h:#06x}: {g:e} vs {want:e}"
        );
    }
}
