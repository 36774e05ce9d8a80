//! Weights are checked for NaN and ±Inf once, as they are read: a non-finite weight makes every backend
//! wrong in its own way (the fast CPU path decodes an FP8 NaN code as a finite value, `cpu-ref` rejects
//! it), so the load refuses it and names the tensor. One pass over bytes already in memory, cheap next to
//! reading them.

use dsv3_core::{DType, Error, Result};

/// The first element of `bytes` (a tensor of `dtype`) that is NaN or ±Inf, with its value as text.
fn first_non_finite(dtype: DType, bytes: &[u8]) -> Option<(usize, String)> {
    // Exponent all ones (NaN or Inf) in the little-endian IEEE formats.
    let ieee = |width: usize, mask: u32| {
        bytes.chunks_exact(width).position(|c| {
            let bits = c.iter().rev().fold(0u32, |acc, &b| (acc << 8) | b as u32);
            bits & mask == mask
        })
    };
    let index = match dtype {
        DType::F32 => ieee(4, 0x7F80_0000),
        DType::BF16 => ieee(2, 0x7F80),
        DType::F16 => ieee(2, 0x7C00),
        _ => match dtype.fp8_format() {
            Some(format) => {
                let table = format.decode_table();
                bytes.iter().position(|&b| !table[b as usize].is_finite())
            }
            None => None, // integer tensors
        },
    }?;
    Some((index, dtype.read_f64(bytes, index).to_string()))
}

/// Fails naming `tensor` (from `file`) when it holds a NaN or ±Inf.
pub fn check_weight(file: &str, tensor: &str, dtype: DType, bytes: &[u8]) -> Result<()> {
    match first_non_finite(dtype, bytes) {
        None => Ok(()),
        Some((index, value)) => Err(Error::Data {
            file: file.to_string(),
            field: tensor.to_string(),
            reason: format!("element {index} is {value} ({}): weights must be finite", dtype.name()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nan_and_inf_codes_of_every_float_format_are_found() {
        let cases: &[(DType, &[u8], usize)] = &[
            (DType::F8E4M3Fn, &[0x00, 0x7E, 0x7F], 2),
            (DType::F8E4M3Fn, &[0x01, 0xFF], 1),
            (DType::F8E4M3Fnuz, &[0x00, 0x7F, 0x80], 2), // fnuz: 0x80 is the only NaN, 0x7F is finite
            (DType::F8E5M2, &[0x00, 0x7C], 1),           // +Inf
            (DType::F8E5M2, &[0x00, 0xFF], 1),           // NaN
            (DType::BF16, &[0x80, 0x3F, 0x80, 0x7F], 1), // 1.0, +Inf
            (DType::F16, &[0x00, 0x3C, 0x01, 0xFE], 1),  // 1.0, NaN
            (DType::F32, &[0, 0, 0x80, 0x3F, 0, 0, 0xC0, 0x7F], 1),
        ];
        for &(dtype, bytes, index) in cases {
            let err = check_weight("f", "w", dtype, bytes).unwrap_err().to_string();
            assert!(err.contains(&format!("element {index} is")) && err.contains(dtype.name()), "{err}");
        }
        check_weight("f", "w", DType::F8E4M3Fn, &[0x7E, 0xFE, 0x00, 0x80]).unwrap();
        check_weight("f", "w", DType::BF16, &[0x7F, 0x7F]).unwrap(); // the largest finite bf16
    }
}
