//! Element types, their sizes, and exact conversion of one stored element to f64 / from f32.

use crate::fp8::{ue8m0, Fp8Format, Overflow};
use half::{bf16, f16};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
    F8E4M3Fn,
    F8E4M3Fnuz,
    F8E5M2,
    /// Power-of-two scale, value 2^(e−127).
    Ue8m0,
    I32,
    I64,
    U8,
}

impl DType {
    pub const ALL: [DType; 10] = [
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3Fn,
        DType::F8E4M3Fnuz,
        DType::F8E5M2,
        DType::Ue8m0,
        DType::I32,
        DType::I64,
        DType::U8,
    ];

    pub const fn size(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::F8E4M3Fn | DType::F8E4M3Fnuz | DType::F8E5M2 | DType::Ue8m0 | DType::U8 => 1,
            DType::I64 => 8,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::F8E4M3Fn => "f8e4m3fn",
            DType::F8E4M3Fnuz => "f8e4m3fnuz",
            DType::F8E5M2 => "f8e5m2",
            DType::Ue8m0 => "ue8m0",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
        }
    }

    pub fn parse(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    pub const fn fp8_format(self) -> Option<Fp8Format> {
        match self {
            DType::F8E4M3Fn => Some(Fp8Format::E4M3Fn),
            DType::F8E4M3Fnuz => Some(Fp8Format::E4M3Fnuz),
            DType::F8E5M2 => Some(Fp8Format::E5M2),
            _ => None,
        }
    }

    pub const fn from_fp8(format: Fp8Format) -> DType {
        match format {
            Fp8Format::E4M3Fn => DType::F8E4M3Fn,
            Fp8Format::E4M3Fnuz => DType::F8E4M3Fnuz,
            Fp8Format::E5M2 => DType::F8E5M2,
        }
    }

    pub const fn is_float(self) -> bool {
        !matches!(self, DType::I32 | DType::I64 | DType::U8)
    }

    /// Read element `index` of a little-endian array of this dtype, exactly, as f64.
    pub fn read_f64(self, bytes: &[u8], index: usize) -> f64 {
        let at = |n: usize| &bytes[index * n..index * n + n];
        match self {
            DType::F32 => f32::from_le_bytes(at(4).try_into().unwrap()) as f64,
            DType::F16 => f16::from_bits(u16::from_le_bytes(at(2).try_into().unwrap())).to_f64(),
            DType::BF16 => bf16::from_bits(u16::from_le_bytes(at(2).try_into().unwrap())).to_f64(),
            DType::F8E4M3Fn | DType::F8E4M3Fnuz | DType::F8E5M2 => {
                self.fp8_format().unwrap().decode_table()[bytes[index] as usize] as f64
            }
            DType::Ue8m0 => ue8m0::decode(bytes[index]) as f64,
            DType::I32 => i32::from_le_bytes(at(4).try_into().unwrap()) as f64,
            DType::I64 => i64::from_le_bytes(at(8).try_into().unwrap()) as f64,
            DType::U8 => bytes[index] as f64,
        }
    }

    /// Write `value` as element `index`, rounded once to nearest even (FP8 saturates; integers truncate
    /// toward zero). Narrow floats go through [`round_to_odd_f32`], so there is no double rounding.
    pub fn write_f64(self, bytes: &mut [u8], index: usize, value: f64) {
        let n = self.size();
        let dst = &mut bytes[index * n..index * n + n];
        match self {
            DType::F32 => dst.copy_from_slice(&(value as f32).to_le_bytes()),
            DType::F16 => {
                dst.copy_from_slice(&f16::from_f32(round_to_odd_f32(value)).to_bits().to_le_bytes())
            }
            DType::BF16 => {
                dst.copy_from_slice(&bf16::from_f32(round_to_odd_f32(value)).to_bits().to_le_bytes())
            }
            DType::F8E4M3Fn | DType::F8E4M3Fnuz | DType::F8E5M2 => {
                dst[0] = self.fp8_format().unwrap().encode(round_to_odd_f32(value), Overflow::Saturate)
            }
            DType::Ue8m0 => dst[0] = ue8m0::encode_ceil(value as f32),
            DType::I32 => dst.copy_from_slice(&(value as i32).to_le_bytes()),
            DType::I64 => dst.copy_from_slice(&(value as i64).to_le_bytes()),
            DType::U8 => dst[0] = value as u8,
        }
    }
}

/// `x` narrowed to f32 by rounding to odd: truncate toward zero, and set the last mantissa bit if anything
/// was lost. Rounding that result to nearest even in any format with at least two fewer mantissa bits
/// (f16, bf16, FP8) equals rounding `x` directly, so the f64 → narrow-float path rounds exactly once.
/// (`half`'s `bf16::from_f64` does not round correctly next to bf16 midpoints, so it is not used.)
pub fn round_to_odd_f32(x: f64) -> f32 {
    let nearest = x as f32;
    if x.is_nan() || nearest as f64 == x {
        return nearest;
    }
    let mut bits = nearest.to_bits();
    if (nearest as f64).abs() > x.abs() {
        bits -= 1; // one step toward zero (also turns an overflow to inf into ±f32::MAX)
    }
    f32::from_bits(bits | 1)
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
