//! DeepSeek's FP8 weights for devices that compute in e4m3fnuz (AMD MI300).
//!
//! DeepSeek ships e4m3fn weights (OCP: bias 7, max 448, NaN = S.1111.111, ±0) with f32 block scales. MI300
//! (gfx940–942) multiplies e4m3fnuz (bias 8, max 240, NaN = 0x80, no −0). The same bits read with bias 8
//! are worth exactly half, so a weight converts by keeping its code and doubling its scale; only the codes
//! whose meaning differs change. The model loader converts weights this way on devices whose first FP8 format
//! is e4m3fnuz, so the activations are quantized to e4m3fnuz too and both GEMM operands are in the format the
//! matrix cores take.

/// Converts e4m3fn codes in place to e4m3fnuz and doubles their scales, so that every block keeps its
/// values: `fn(c)·s == fnuz(c')·2s` for every code `c` and scale `s`.
///
/// * Finite codes keep their bits (their fnuz value is half their fn value; the doubled scale restores it),
///   subnormals included.
/// * 0x80 (−0 in e4m3fn) becomes 0x00 (+0): 0x80 is NaN in e4m3fnuz, which has no −0; the value stays 0.
/// * 0x7F / 0xFF (NaN in e4m3fn) become 0x80, fnuz's one NaN (read as fnuz they would be ±240). DeepSeek's
///   checkpoints hold no NaN; one that did keeps it.
/// * Scales double exactly in f32, except a scale above f32::MAX / 2, which becomes +inf (DeepSeek's scales
///   are far below 1); NaN and ±inf scales stay as they are.
///
/// `codes` and `scales` are one tensor's codes and its whole scale grid: which scale covers which code does
/// not matter, since every code and every scale is converted the same way.
pub fn e4m3fn_to_fnuz(codes: &mut [u8], scales: &mut [f32]) {
    for c in codes.iter_mut() {
        *c = match *c {
            0x80 => 0x00,
            0x7F | 0xFF => 0x80,
            other => other,
        };
    }
    for s in scales.iter_mut() {
        *s *= 2.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fp8::Fp8Format;

    #[test]
    fn every_code_keeps_its_value_with_the_doubled_scale() {
        // Powers of two, DeepSeek-like scales (1/448-ish, inexact), 1 and a large one: the doubling is exact.
        let scales = [1.0f32, 2.0f32.powi(-20), 1.0 / 448.0, 3.0e-4, 0.1, 7.5, 1.0e30];
        for code in 0..=255u8 {
            for &s in &scales {
                let mut codes = [code];
                let mut scale = [s];
                e4m3fn_to_fnuz(&mut codes, &mut scale);
                assert_eq!(scale[0], 2.0 * s);
                let before = Fp8Format::E4M3Fn.decode(code) * s;
                let after = Fp8Format::E4M3Fnuz.decode(codes[0]) * scale[0];
                if before.is_nan() {
                    assert!(after.is_nan(), "code {code:#04x}: NaN must stay NaN");
                    assert_eq!(codes[0], 0x80);
                } else {
                    // −0 becomes +0, equal as numbers; every other value is bit-identical.
                    assert_eq!(before, after, "code {code:#04x} scale {s}");
                    if code != 0x80 {
                        assert_eq!(before.to_bits(), after.to_bits(), "code {code:#04x} scale {s}");
                    }
                }
            }
        }
    }

    #[test]
    fn only_negative_zero_and_nan_change_their_bits() {
        let mut codes: Vec<u8> = (0..=255).collect();
        e4m3fn_to_fnuz(&mut codes, &mut []);
        for (c, &n) in codes.iter().enumerate() {
            let want = match c {
                0x80 => 0x00,
                0x7F | 0xFF => 0x80,
                _ => c as u8,
            };
            assert_eq!(n, want, "code {c:#04x}");
        }
        // No converted code is fnuz's NaN unless it was a NaN, and the largest magnitudes map to ±max.
        assert_eq!(Fp8Format::E4M3Fnuz.decode(0x7E) * 2.0, Fp8Format::E4M3Fn.decode(0x7E));
        assert_eq!(Fp8Format::E4M3Fn.decode(0x7E), 448.0);
    }

    #[test]
    fn special_scales_stay_special() {
        let mut s = [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, 0.0, -0.0];
        e4m3fn_to_fnuz(&mut [], &mut s);
        assert_eq!(s[0], f32::INFINITY);
        assert_eq!(s[1], f32::NEG_INFINITY);
        assert!(s[2].is_nan());
        assert_eq!(s[3], f32::INFINITY, "overflow past f32::MAX is documented");
        assert_eq!((s[4], s[5].to_bits()), (0.0, (-0.0f32).to_bits()));
    }
}
