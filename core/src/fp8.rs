//! FP8 formats and the power-of-two scale format UE8M0, converted by our own code.
//!
//! Encoding rounds to nearest, ties to even, in one step from the f32 value (no double rounding).
//! What happens past the largest finite value is an explicit [`Overflow`] policy, because libraries and
//! releases disagree (torch ≥ 2.15 saturates e4m3fn but returns NaN for e4m3fnuz and ±inf for e5m2).
//! dsv3's kernels use [`Overflow::Saturate`] — the "clamp before converting" engine rule — so a quantizer
//! rounding a hair past the maximum never produces NaN.

/// The three 8-bit float formats in use for DeepSeek-class weights and activations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fp8Format {
    /// OCP E4M3 (`torch.float8_e4m3fn`): bias 7, max 448, no inf, NaN = S.1111.111, ±0.
    E4M3Fn,
    /// E4M3 "fnuz" (AMD MI300, `torch.float8_e4m3fnuz`): bias 8, max 240, no inf, no −0, NaN = 0x80.
    E4M3Fnuz,
    /// E5M2 (IEEE-like): bias 15, max 57344, ±inf, NaNs.
    E5M2,
}

/// What an encoder does with a value whose rounding lands past the largest finite value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// Clamp to ±max (infinities included). NaN stays NaN.
    Saturate,
    /// ±inf where the format has it (e5m2), the NaN code otherwise (e4m3fn, e4m3fnuz).
    NonSaturating,
}

impl Fp8Format {
    pub const ALL: [Fp8Format; 3] = [Fp8Format::E4M3Fn, Fp8Format::E4M3Fnuz, Fp8Format::E5M2];

    const fn mantissa_bits(self) -> i32 {
        match self {
            Fp8Format::E4M3Fn | Fp8Format::E4M3Fnuz => 3,
            Fp8Format::E5M2 => 2,
        }
    }

    const fn bias(self) -> i32 {
        match self {
            Fp8Format::E4M3Fn => 7,
            Fp8Format::E4M3Fnuz => 8,
            Fp8Format::E5M2 => 15,
        }
    }

    /// Largest finite magnitude.
    pub const fn max(self) -> f32 {
        match self {
            Fp8Format::E4M3Fn => 448.0,
            Fp8Format::E4M3Fnuz => 240.0,
            Fp8Format::E5M2 => 57344.0,
        }
    }

    /// Code of the largest finite positive value.
    const fn max_code(self) -> u8 {
        match self {
            Fp8Format::E4M3Fn => 0x7E,
            Fp8Format::E4M3Fnuz => 0x7F,
            Fp8Format::E5M2 => 0x7B,
        }
    }

    /// The canonical NaN code this encoder produces for a value of the given sign.
    const fn nan_code(self, negative: bool) -> u8 {
        match self {
            Fp8Format::E4M3Fn => 0x7F | if negative { 0x80 } else { 0 },
            Fp8Format::E4M3Fnuz => 0x80,
            Fp8Format::E5M2 => 0x7F | if negative { 0x80 } else { 0 },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Fp8Format::E4M3Fn => "e4m3fn",
            Fp8Format::E4M3Fnuz => "e4m3fnuz",
            Fp8Format::E5M2 => "e5m2",
        }
    }

    pub fn is_nan_code(self, code: u8) -> bool {
        match self {
            Fp8Format::E4M3Fn => code & 0x7F == 0x7F,
            Fp8Format::E4M3Fnuz => code == 0x80,
            Fp8Format::E5M2 => code & 0x7F > 0x7C,
        }
    }

    /// Exact value of a code (every FP8 value is exactly representable in f32).
    pub fn decode(self, code: u8) -> f32 {
        if self.is_nan_code(code) {
            return f32::NAN;
        }
        // fnuz's only code with the top bit and no magnitude (0x80) is NaN, handled above.
        let negative = code & 0x80 != 0;
        let mb = self.mantissa_bits();
        let exp_field = ((code & 0x7F) >> mb) as i32;
        let mantissa = (code & ((1 << mb) - 1)) as i32;
        if self == Fp8Format::E5M2 && exp_field == 31 {
            return if negative { f32::NEG_INFINITY } else { f32::INFINITY };
        }
        let magnitude = if exp_field == 0 {
            mantissa as f32 * exp2i(1 - self.bias() - mb)
        } else {
            (((1 << mb) + mantissa) as f32) * exp2i(exp_field - self.bias() - mb)
        };
        if negative {
            -magnitude
        } else {
            magnitude
        }
    }

    /// The 256-entry decode table, the form kernels use (built once per format).
    pub fn decode_table(self) -> &'static [f32; 256] {
        static TABLES: [std::sync::OnceLock<[f32; 256]>; 3] = [const { std::sync::OnceLock::new() }; 3];
        TABLES[self as usize].get_or_init(|| std::array::from_fn(|code| self.decode(code as u8)))
    }

    /// `encode(x, Overflow::Saturate)` by bit manipulation of the f32 rather than through f64 logarithms:
    /// the form kernels use (several times faster). Equal to [`Fp8Format::encode`] for every input
    /// (core/tests/fp8_exhaustive.rs checks every exponent, rounding position and tie).
    pub fn encode_saturating(self, x: f32) -> u8 {
        let bits = x.to_bits();
        let sign = ((bits >> 24) & 0x80) as u8;
        let abs = bits & 0x7FFF_FFFF;
        if abs > 0x7F80_0000 {
            return self.nan_code(sign != 0);
        }
        let mb = self.mantissa_bits() as u32;
        let min_normal_exp = 1 - self.bias();
        let magnitude = if abs < ((min_normal_exp + 127) as u32) << 23 {
            // Subnormal range: count quanta of 2^(min_normal_exp − mb). Scaling by a power of two is exact,
            // so the one rounding is round_ties_even; 2^mb quanta is the smallest normal's code.
            let quanta_per_unit = f32::from_bits(((mb as i32 - min_normal_exp + 127) as u32) << 23);
            (f32::from_bits(abs) * quanta_per_unit).round_ties_even() as u32
        } else {
            // Normal: round the 23-bit mantissa to mb bits, ties to even (a carry moves into the exponent
            // as it should), then rebias the exponent from f32's 127 to the format's.
            let shift = 23 - mb;
            let rounded = (abs + (1 << (shift - 1)) - 1 + ((abs >> shift) & 1)) >> shift;
            rounded - (((127 - self.bias()) as u32) << mb)
        };
        let code = magnitude.min(self.max_code() as u32) as u8;
        if code == 0 && self == Fp8Format::E4M3Fnuz {
            0 // fnuz has no negative zero: 0x80 is NaN
        } else {
            code | sign
        }
    }

    /// Round `x` to the nearest code (ties to even), applying `overflow` past the maximum.
    pub fn encode(self, x: f32, overflow: Overflow) -> u8 {
        let negative = x.is_sign_negative();
        if x.is_nan() {
            return self.nan_code(negative);
        }
        let sign_bit = if negative { 0x80u8 } else { 0 };
        let a = x.abs();
        let mb = self.mantissa_bits();
        let min_normal_exp = 1 - self.bias();
        // Magnitude as an integer count of quanta, rounded to nearest even. f64 holds every f32 exactly
        // and dividing by a power of two is exact, so the only rounding is the one we do.
        let (exp_field, mantissa) = if a.is_infinite() {
            (i32::MAX, 0)
        } else {
            let a64 = a as f64;
            let e = if a64 == 0.0 { min_normal_exp } else { (a64.log2().floor() as i32).max(min_normal_exp) };
            // log2 of an f32 can be off by one at exact powers of two: fix it up exactly.
            let e = if e > min_normal_exp && exp2i64(e) > a64 {
                e - 1
            } else if exp2i64(e + 1) <= a64 {
                e + 1
            } else {
                e
            };
            let quanta = round_half_even(a64 / exp2i64(e - mb));
            if e == min_normal_exp && quanta < (1 << mb) as f64 {
                (0, quanta as i32) // subnormal (or zero)
            } else if quanta >= (2 << mb) as f64 {
                (e + 1 + self.bias(), 0) // rounding carried into the next binade
            } else {
                (e + self.bias(), quanta as i32 - (1 << mb))
            }
        };
        // The exponent field may take its top value 0x7F >> mb (e4m3's 256..448 / 128..240 binade, e5m2's
        // inf position): whether that code is finite is decided by `max_code` below. Only a larger field
        // does not fit in the 7 magnitude bits.
        let code_magnitude =
            if exp_field > 0x7F >> mb { None } else { Some(((exp_field << mb) | mantissa) as u8) };
        match code_magnitude {
            Some(c) if c <= self.max_code() => {
                if c == 0 && self == Fp8Format::E4M3Fnuz {
                    0 // fnuz has no negative zero: 0x80 is NaN
                } else {
                    c | sign_bit
                }
            }
            _ => match overflow {
                Overflow::Saturate => self.max_code() | sign_bit,
                Overflow::NonSaturating => match self {
                    Fp8Format::E5M2 => 0x7C | sign_bit,
                    _ => self.nan_code(negative),
                },
            },
        }
    }
}

fn round_half_even(v: f64) -> f64 {
    let r = v.round();
    if (r - v).abs() == 0.5 {
        2.0 * (v / 2.0).round()
    } else {
        r
    }
}

fn exp2i(e: i32) -> f32 {
    exp2i64(e) as f32
}

fn exp2i64(e: i32) -> f64 {
    2f64.powi(e)
}

/// UE8M0: an unsigned 8-bit exponent, value 2^(e − 127); 255 is NaN. DeepSeek-V3.1 uses it for
/// power-of-two activation scales.
pub mod ue8m0 {
    pub fn decode(code: u8) -> f32 {
        if code == 255 {
            f32::NAN
        } else {
            super::exp2i(code as i32 - 127)
        }
    }

    /// The smallest power of two ≥ `s`, as its exponent code (DeepGEMM's `ceil_to_ue8m0`: exponent field
    /// plus one when any mantissa bit is set, clamped to [1, 254]). Bit-exact, unlike exp2(ceil(log2 s)).
    /// `s` must be positive and finite (callers check; a scale is never zero after the amax floor).
    pub fn encode_ceil(s: f32) -> u8 {
        let bits = s.to_bits();
        let exponent = ((bits >> 23) & 0xFF) as i32;
        let mantissa = bits & 0x7F_FFFF;
        (exponent + (mantissa != 0) as i32).clamp(1, 254) as u8
    }

    /// `s` rounded up to a power of two, as f32.
    pub fn ceil_pow2(s: f32) -> f32 {
        decode(encode_ceil(s))
    }
}
