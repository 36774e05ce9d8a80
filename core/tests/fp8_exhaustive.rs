//! The FP8 / UE8M0 codec checked against the format definitions alone (no torch).
//!
//! The expected values are built here by a different method from `fp8.rs`: instead of evaluating
//! `2^(e−bias)·(1+m/2^M)` per code, the test walks the positive codes in order and accumulates the
//! spacing between neighbours (one "quantum" through the subnormals and the first normal binade, then
//! doubling every 2^M codes). The reference encoder is a nearest-neighbour search on that grid, ties to
//! the even code.

use dsv3_core::dtype::DType;
use dsv3_core::fp8::{ue8m0, Fp8Format, Overflow};

const POLICIES: [Overflow; 2] = [Overflow::Saturate, Overflow::NonSaturating];

/// What the format definitions say, written out by hand per format.
struct Spec {
    format: Fp8Format,
    /// Mantissa bits M.
    man_bits: u32,
    /// Spacing of the subnormals (and of the first normal binade): 2^(1 − bias − M).
    quantum: f64,
    /// Largest finite positive code.
    max_code: u8,
    /// Largest finite value, as the format documents state it.
    max: f64,
    /// The value one step past `max` if the grid went on (what an out-of-range value would round to).
    next_past_max: f64,
}

fn spec(format: Fp8Format) -> Spec {
    match format {
        // bias 7, M 3: subnormal spacing 2^(1−7−3) = 2^−9. 0x7E = 1.1111.110 = 2^8·1.75 = 448; the code
        // after it (0x7F) is NaN, but the grid would continue with 2^8·1.875 = 480.
        Fp8Format::E4M3Fn => Spec {
            format,
            man_bits: 3,
            quantum: 2f64.powi(-9),
            max_code: 0x7E,
            max: 448.0,
            next_past_max: 480.0,
        },
        // bias 8, M 3: spacing 2^(1−8−3) = 2^−10. 0x7F = 1111.111 = 2^7·1.875 = 240; the grid would
        // continue into the next binade at 2^8 = 256.
        Fp8Format::E4M3Fnuz => Spec {
            format,
            man_bits: 3,
            quantum: 2f64.powi(-10),
            max_code: 0x7F,
            max: 240.0,
            next_past_max: 256.0,
        },
        // bias 15, M 2: spacing 2^(1−15−2) = 2^−16. 0x7B = 11110.11 = 2^15·1.75 = 57344; 0x7C is inf,
        // where the grid would continue at 2^16 = 65536.
        Fp8Format::E5M2 => Spec {
            format,
            man_bits: 2,
            quantum: 2f64.powi(-16),
            max_code: 0x7B,
            max: 57344.0,
            next_past_max: 65536.0,
        },
    }
}

/// Values of the positive codes 0..=max_code, index = code, built by accumulating the spacing.
fn positive_grid(s: &Spec) -> Vec<f64> {
    let per_binade = 1usize << s.man_bits;
    let mut grid = vec![0.0f64];
    let mut step = s.quantum;
    for code in 1..=s.max_code as usize {
        // Codes 1..2^(M+1) (subnormals, then the first normal binade) share the subnormal spacing;
        // every further binade of 2^M codes doubles it.
        if code > 2 * per_binade && (code - 1) % per_binade == 0 {
            step *= 2.0;
        }
        grid.push(grid[code - 1] + step);
    }
    grid
}

/// Expected decode of every code, from the definition: NaN / ±inf codes by rule, otherwise ±grid.
enum Expect {
    Nan,
    Value(f64),
}

fn expected_decode(s: &Spec, grid: &[f64], code: u8) -> Expect {
    let magnitude = code & 0x7F;
    let negative = code & 0x80 != 0;
    let signed = |v: f64| Expect::Value(if negative { -v } else { v });
    match s.format {
        // S.1111.111 is NaN (both signs); everything else is finite, 0x80 is −0.
        Fp8Format::E4M3Fn if magnitude == 0x7F => Expect::Nan,
        // 0x80 (the would-be −0) is the only NaN; every other code is finite.
        Fp8Format::E4M3Fnuz if code == 0x80 => Expect::Nan,
        // Exponent all ones: mantissa 0 is ±inf, anything else NaN.
        Fp8Format::E5M2 if magnitude == 0x7C => signed(f64::INFINITY),
        Fp8Format::E5M2 if magnitude > 0x7C => Expect::Nan,
        _ => signed(grid[magnitude as usize]),
    }
}

/// Slow reference encoder: nearest grid point, ties to the even code, then the overflow policy.
fn reference_encode(s: &Spec, grid: &[f64], x: f32, overflow: Overflow) -> u8 {
    let negative = x.is_sign_negative();
    if x.is_nan() {
        return match s.format {
            Fp8Format::E4M3Fnuz => 0x80,
            _ => 0x7F | if negative { 0x80 } else { 0 },
        };
    }
    let a = (x as f64).abs();
    // The grid extended by one virtual point past the maximum: landing there means overflow.
    let virtual_code = s.max_code as usize + 1;
    let overflowed = if a >= s.next_past_max {
        true
    } else {
        // a lies in [grid[lo], grid[lo+1]] with grid[virtual_code] = next_past_max.
        let at = |i: usize| if i == virtual_code { s.next_past_max } else { grid[i] };
        let lo = (0..virtual_code).rev().find(|&i| grid[i] <= a).unwrap();
        let (dl, dh) = (a - at(lo), at(lo + 1) - a);
        let pick = if dl < dh {
            lo
        } else if dh < dl {
            lo + 1
        } else if lo % 2 == 0 {
            lo
        } else {
            lo + 1
        };
        if pick == virtual_code {
            true
        } else {
            // fnuz has no −0: a negative value that rounds to zero is +0.
            let sign = if negative && !(pick == 0 && s.format == Fp8Format::E4M3Fnuz) { 0x80 } else { 0 };
            return pick as u8 | sign;
        }
    };
    assert!(overflowed);
    let sign = if negative { 0x80 } else { 0 };
    match (overflow, s.format) {
        (Overflow::Saturate, _) => s.max_code | sign,
        (Overflow::NonSaturating, Fp8Format::E4M3Fn) => 0x7F | sign,
        (Overflow::NonSaturating, Fp8Format::E4M3Fnuz) => 0x80,
        (Overflow::NonSaturating, Fp8Format::E5M2) => 0x7C | sign,
    }
}

/// The next f32 above / below a positive finite value (bit manipulation, as f32::next_up would).
fn up(x: f32) -> f32 {
    assert!(x >= 0.0 && x.is_finite());
    f32::from_bits(x.to_bits() + 1)
}
fn down(x: f32) -> f32 {
    assert!(x > 0.0 && x.is_finite());
    f32::from_bits(x.to_bits() - 1)
}

/// Encodes `x` under `overflow` and asserts the code, with a readable message.
#[track_caller]
fn check(format: Fp8Format, x: f32, overflow: Overflow, want: u8) {
    let got = format.encode(x, overflow);
    assert_eq!(
        got,
        want,
        "{} encode({x:e} = {:#010x}, {overflow:?}) = {got:#04x}, want {want:#04x}",
        format.name(),
        x.to_bits()
    );
}

#[test]
fn grid_anchors_match_the_format_documents() {
    // Sanity of the test's own grid against well-known values, so the grid cannot silently drift.
    for format in Fp8Format::ALL {
        let s = spec(format);
        let grid = positive_grid(&s);
        assert_eq!(grid[s.max_code as usize], s.max, "{}", format.name());
        assert_eq!(format.max() as f64, s.max, "{}", format.name());
        assert_eq!(grid[1], s.quantum, "{} min subnormal", format.name());
        // Strictly increasing, and exactly representable in f32.
        for w in grid.windows(2) {
            assert!(w[0] < w[1]);
            assert_eq!(w[1] as f32 as f64, w[1]);
        }
    }
    let e4m3fn = positive_grid(&spec(Fp8Format::E4M3Fn));
    assert_eq!(e4m3fn[0x38], 1.0); // exponent field 7 = bias
    assert_eq!(e4m3fn[0x08], 2f64.powi(-6)); // min normal
    assert_eq!(e4m3fn[0x7D], 416.0); // the value below 448
    let fnuz = positive_grid(&spec(Fp8Format::E4M3Fnuz));
    assert_eq!(fnuz[0x40], 1.0); // exponent field 8 = bias
    assert_eq!(fnuz[0x08], 2f64.powi(-7));
    let e5m2 = positive_grid(&spec(Fp8Format::E5M2));
    assert_eq!(e5m2[0x3C], 1.0); // exponent field 15 = bias
    assert_eq!(e5m2[0x04], 2f64.powi(-14));
    assert_eq!(e5m2[0x7A], 49152.0);
}

#[test]
fn decode_all_256_codes() {
    for format in Fp8Format::ALL {
        let s = spec(format);
        let grid = positive_grid(&s);
        let table = format.decode_table();
        for code in 0..=255u8 {
            let got = format.decode(code);
            assert_eq!(got.to_bits(), table[code as usize].to_bits(), "{} table[{code:#04x}]", format.name());
            match expected_decode(&s, &grid, code) {
                Expect::Nan => {
                    assert!(got.is_nan(), "{} decode({code:#04x}) = {got}, want NaN", format.name());
                    assert!(format.is_nan_code(code));
                }
                Expect::Value(v) => {
                    // Bitwise, so e4m3fn's 0x80 must be −0.0 and not +0.0.
                    assert_eq!(
                        got.to_bits(),
                        (v as f32).to_bits(),
                        "{} decode({code:#04x}) = {got:e}, want {v:e}",
                        format.name()
                    );
                    assert!(!format.is_nan_code(code), "{} {code:#04x}", format.name());
                }
            }
        }
    }
    // Counts the definitions imply: e4m3fn has 2 NaN codes and no inf, fnuz 1 NaN, e5m2 6 NaNs + 2 infs.
    let count = |f: Fp8Format, pred: fn(f32) -> bool| (0..=255u8).filter(|&c| pred(f.decode(c))).count();
    assert_eq!(count(Fp8Format::E4M3Fn, f32::is_nan), 2);
    assert_eq!(count(Fp8Format::E4M3Fnuz, f32::is_nan), 1);
    assert_eq!(count(Fp8Format::E5M2, f32::is_nan), 6);
    assert_eq!(count(Fp8Format::E4M3Fn, f32::is_infinite), 0);
    assert_eq!(count(Fp8Format::E4M3Fnuz, f32::is_infinite), 0);
    assert_eq!(count(Fp8Format::E5M2, f32::is_infinite), 2);
}

#[test]
fn encode_of_decode_is_identity() {
    for format in Fp8Format::ALL {
        for code in 0..=255u8 {
            if format.is_nan_code(code) {
                continue;
            }
            let v = format.decode(code);
            for overflow in POLICIES {
                // e5m2's ±inf codes only come back under NonSaturating; Saturate clamps inf to ±max.
                let want = if v.is_infinite() && overflow == Overflow::Saturate {
                    0x7B | (code & 0x80)
                } else {
                    code
                };
                // Both e4m3fn / e5m2 zeros come back (−0.0 keeps its sign bit); fnuz has a single zero.
                check(format, v, overflow, want);
            }
        }
    }
}

#[test]
fn midpoints_round_to_even_and_neighbours_to_nearest() {
    for format in Fp8Format::ALL {
        let s = spec(format);
        let grid = positive_grid(&s);
        for lo in 0..s.max_code as usize {
            let hi = lo + 1;
            // One more significant bit than an FP8 value: the midpoint is exact in f32.
            let mid = ((grid[lo] + grid[hi]) / 2.0) as f32;
            assert_eq!(mid as f64, (grid[lo] + grid[hi]) / 2.0);
            // Codes are consecutive, so the code's low bit is the mantissa's low bit: the even neighbour
            // is the one with the even code.
            let even = if lo % 2 == 0 { lo } else { hi } as u8;
            for overflow in POLICIES {
                for negative in [false, true] {
                    let sign = |c: u8| {
                        // A negative value rounding to zero: −0 (0x80), except fnuz, whose 0x80 is NaN.
                        if negative && !(c == 0 && format == Fp8Format::E4M3Fnuz) {
                            c | 0x80
                        } else {
                            c
                        }
                    };
                    let neg = |x: f32| if negative { -x } else { x };
                    check(format, neg(mid), overflow, sign(even));
                    check(format, neg(up(mid)), overflow, sign(hi as u8));
                    check(format, neg(down(mid)), overflow, sign(lo as u8));
                }
            }
        }
    }
}

#[test]
fn largest_finite_boundaries() {
    use Overflow::{NonSaturating as Non, Saturate as Sat};
    let f = Fp8Format::E4M3Fn;
    // 448 = 0x7E (mantissa 110, even). 464 is the midpoint to the would-be 480 (mantissa 111 = NaN):
    // the tie goes to the even 448. Above 464 the value rounds past the maximum: 448 saturating, NaN
    // (0x7F) not. 480 and inf likewise.
    for p in [Sat, Non] {
        check(f, 448.0, p, 0x7E);
        check(f, down(464.0), p, 0x7E);
        check(f, 464.0, p, 0x7E);
        check(f, -464.0, p, 0xFE);
    }
    for (x, sat, non) in
        [(up(464.0), 0x7E, 0x7F), (480.0, 0x7E, 0x7F), (1e6, 0x7E, 0x7F), (f32::MAX, 0x7E, 0x7F)]
    {
        check(f, x, Sat, sat);
        check(f, x, Non, non);
        check(f, -x, Sat, sat | 0x80);
        check(f, -x, Non, non | 0x80);
    }

    let f = Fp8Format::E4M3Fnuz;
    // 240 = 0x7F (mantissa 111, odd). 248 is the midpoint to the would-be 256 (exponent 16, mantissa
    // 000, even): the tie goes up, past the maximum. So 248 overflows, just below 248 is 240.
    // fnuz's one NaN code 0x80 has no sign.
    for p in [Sat, Non] {
        check(f, 240.0, p, 0x7F);
        check(f, down(248.0), p, 0x7F);
        check(f, -down(248.0), p, 0xFF);
    }
    for x in [248.0, up(248.0), 256.0, 1e6, f32::MAX] {
        check(f, x, Sat, 0x7F);
        check(f, x, Non, 0x80);
        check(f, -x, Sat, 0xFF);
        check(f, -x, Non, 0x80);
    }

    let f = Fp8Format::E5M2;
    // 57344 = 0x7B (mantissa 11, odd). 61440 is the midpoint to the would-be 65536 (= the inf code's
    // position): the tie goes up, so from 61440 on the value is ±inf non-saturating, ±57344 saturating.
    for p in [Sat, Non] {
        check(f, 57344.0, p, 0x7B);
        check(f, down(61440.0), p, 0x7B);
        check(f, -down(61440.0), p, 0xFB);
    }
    for x in [61440.0, up(61440.0), 65536.0, 1e9, f32::MAX] {
        check(f, x, Sat, 0x7B);
        check(f, x, Non, 0x7C);
        check(f, -x, Sat, 0xFB);
        check(f, -x, Non, 0xFC);
    }
}

#[test]
fn infinities_nan_and_zeros() {
    use Overflow::{NonSaturating as Non, Saturate as Sat};
    let inf = f32::INFINITY;
    // Infinity is out of range like any other huge value.
    check(Fp8Format::E4M3Fn, inf, Sat, 0x7E);
    check(Fp8Format::E4M3Fn, -inf, Sat, 0xFE);
    check(Fp8Format::E4M3Fn, inf, Non, 0x7F);
    check(Fp8Format::E4M3Fn, -inf, Non, 0xFF);
    check(Fp8Format::E4M3Fnuz, inf, Sat, 0x7F);
    check(Fp8Format::E4M3Fnuz, -inf, Sat, 0xFF);
    check(Fp8Format::E4M3Fnuz, inf, Non, 0x80);
    check(Fp8Format::E4M3Fnuz, -inf, Non, 0x80);
    check(Fp8Format::E5M2, inf, Sat, 0x7B);
    check(Fp8Format::E5M2, -inf, Sat, 0xFB);
    check(Fp8Format::E5M2, inf, Non, 0x7C);
    check(Fp8Format::E5M2, -inf, Non, 0xFC);

    // NaN stays NaN under both policies, whatever its sign or payload.
    let nans = [f32::NAN, -f32::NAN, f32::from_bits(0x7F80_0001), f32::from_bits(0xFFC0_1234)];
    for format in Fp8Format::ALL {
        for x in nans {
            for p in POLICIES {
                let c = format.encode(x, p);
                assert!(format.is_nan_code(c), "{} encode({:#010x}) = {c:#04x}", format.name(), x.to_bits());
            }
        }
    }
    // fnuz has exactly one NaN code.
    assert_eq!(Fp8Format::E4M3Fnuz.encode(-f32::NAN, Sat), 0x80);

    // Zeros: +0 is 0x00 everywhere; −0 is 0x80 where the format has −0, 0x00 for fnuz.
    for p in POLICIES {
        check(Fp8Format::E4M3Fn, 0.0, p, 0x00);
        check(Fp8Format::E4M3Fn, -0.0, p, 0x80);
        check(Fp8Format::E5M2, -0.0, p, 0x80);
        check(Fp8Format::E4M3Fnuz, 0.0, p, 0x00);
        check(Fp8Format::E4M3Fnuz, -0.0, p, 0x00);
    }
}

#[test]
fn smallest_subnormal_and_underflow() {
    for format in Fp8Format::ALL {
        let q = spec(format).quantum as f32; // 2^−9, 2^−10, 2^−16
                                             // The sign a negative result that rounds to zero gets: −0, except fnuz (0x80 is NaN).
        let neg_zero = if format == Fp8Format::E4M3Fnuz { 0x00 } else { 0x80 };
        for p in POLICIES {
            check(format, q, p, 0x01);
            check(format, -q, p, 0x81);
            // q/2 is the tie between 0 (even) and q (code 1, odd): it goes to zero.
            check(format, q / 2.0, p, 0x00);
            check(format, -q / 2.0, p, neg_zero);
            // Just above the tie is nearer q; just below, nearer 0.
            check(format, up(q / 2.0), p, 0x01);
            check(format, -up(q / 2.0), p, 0x81);
            check(format, down(q / 2.0), p, 0x00);
            check(format, -down(q / 2.0), p, neg_zero);
            // 1.5q is the tie between code 1 (odd) and code 2 (even): up.
            check(format, 1.5 * q, p, 0x02);
            // Far below half the min subnormal: ±0.
            for tiny in [q / 4.0, 1e-30, f32::MIN_POSITIVE, f32::from_bits(1)] {
                check(format, tiny, p, 0x00);
                check(format, -tiny, p, neg_zero);
            }
        }
    }
}

#[test]
fn encode_matches_reference_on_a_sweep_of_f32() {
    // Every 61st f32 bit pattern in the binades that matter (2^−20 .. 2^17, both signs) against the
    // nearest-grid-point reference: about 2.5 million values per format and policy pair.
    let lo_bits = 2f32.powi(-20).to_bits();
    let hi_bits = 2f32.powi(17).to_bits();
    for format in Fp8Format::ALL {
        let s = spec(format);
        let grid = positive_grid(&s);
        let mut checked = 0usize;
        for bits in (lo_bits..hi_bits).step_by(61) {
            for x in [f32::from_bits(bits), -f32::from_bits(bits)] {
                for p in POLICIES {
                    let want = reference_encode(&s, &grid, x, p);
                    check(format, x, p, want);
                }
                checked += 1;
            }
        }
        assert!(checked > 1_000_000);
    }
}

#[test]
fn ue8m0_decode() {
    // Value 2^(code − 127): 127 is 1, 0 is 2^−127 (an f32 subnormal, still exact), 254 is 2^127.
    for code in 0..=254u8 {
        let want = 2f64.powi(code as i32 - 127);
        assert_eq!(ue8m0::decode(code) as f64, want, "ue8m0 decode({code})");
    }
    assert_eq!(ue8m0::decode(127), 1.0);
    assert_eq!(ue8m0::decode(128), 2.0);
    assert_eq!(ue8m0::decode(126), 0.5);
    assert!(ue8m0::decode(255).is_nan());
}

/// Slow reference for `encode_ceil`: the smallest k with 2^k ≥ s, by walking k in f64, as a code
/// k + 127 clamped to [1, 254] (DeepGEMM's clamp: no 2^−127, no NaN code).
fn reference_ceil_code(s: f32) -> u8 {
    let s = s as f64;
    let mut k = -140i32; // below every f32 subnormal scale that matters: the clamp takes over
    while 2f64.powi(k) < s {
        k += 1;
    }
    (k + 127).clamp(1, 254) as u8
}

#[test]
fn ue8m0_encode_ceil() {
    // Exact powers of two map to themselves; a hair above goes up one; a hair below stays.
    for k in -126..=127i32 {
        let p = 2f32.powi(k);
        let code = (k + 127) as u8;
        assert_eq!(ue8m0::encode_ceil(p), code, "2^{k}");
        assert_eq!(ue8m0::ceil_pow2(p), p, "2^{k}");
        if k < 127 {
            assert_eq!(ue8m0::encode_ceil(up(p)), code + 1, "2^{k}·(1+ε)");
            assert_eq!(ue8m0::encode_ceil(1.5 * p), code + 1, "1.5·2^{k}");
        }
        if k > -126 {
            assert_eq!(ue8m0::encode_ceil(down(p)), code, "2^{k}·(1−ε)");
        }
    }
    // Clamps: beyond 2^127 stays 254 (2^127, below s — the documented clamp), and subnormal inputs,
    // including 2^−127 itself, become 1 (2^−126): code 0 is never produced.
    assert_eq!(ue8m0::encode_ceil(up(2f32.powi(127))), 254);
    assert_eq!(ue8m0::encode_ceil(f32::MAX), 254);
    assert_eq!(ue8m0::encode_ceil(2f32.powi(-127)), 1);
    assert_eq!(ue8m0::encode_ceil(f32::from_bits(1)), 1);
    // A typical activation scale: amax 3.0 / 448 → 2^−7 (3/448 ≈ 0.0067 lies in (2^−8, 2^−7]).
    assert_eq!(ue8m0::ceil_pow2(3.0 / 448.0), 2f32.powi(-7));

    // Sweep: every 4099th positive finite f32 against the slow reference.
    for bits in (1..0x7F80_0000u32).step_by(4099) {
        let s = f32::from_bits(bits);
        let want = reference_ceil_code(s);
        assert_eq!(ue8m0::encode_ceil(s), want, "encode_ceil({s:e} = {bits:#010x})");
        assert_eq!(ue8m0::ceil_pow2(s), ue8m0::decode(want));
        if want > 1 && want < 254 {
            let p = ue8m0::ceil_pow2(s);
            assert!(p >= s && p / 2.0 < s, "{s:e} → {p:e} is not the smallest power of two ≥ s");
        }
    }
}

// ---- DType element read / write ----

/// Writes `value` at element 1 of a 3-element buffer filled with 0xA5 and checks the neighbours are
/// untouched; returns the element's bytes.
fn write_one(dtype: DType, value: f64) -> Vec<u8> {
    let n = dtype.size();
    let mut buf = vec![0xA5u8; 3 * n];
    dtype.write_f64(&mut buf, 1, value);
    assert!(buf[..n].iter().chain(&buf[2 * n..]).all(|&b| b == 0xA5), "{dtype} write spilled");
    buf[n..2 * n].to_vec()
}

/// Reads element 1 of a 3-element buffer whose middle element is `elem`.
fn read_one(dtype: DType, elem: &[u8]) -> f64 {
    let n = dtype.size();
    let mut buf = vec![0x5Au8; 3 * n];
    buf[n..2 * n].copy_from_slice(elem);
    dtype.read_f64(&buf, 1)
}

/// Every stored element read as f64 and written back gives the same bytes (NaN: a NaN).
fn round_trip_bytes(dtype: DType, elem: &[u8]) {
    let v = read_one(dtype, elem);
    let back = write_one(dtype, v);
    if v.is_nan() {
        assert!(read_one(dtype, &back).is_nan(), "{dtype} {elem:02x?}");
    } else {
        assert_eq!(back, elem, "{dtype}: {elem:02x?} read as {v:e}, written back as {back:02x?}");
    }
}

#[test]
fn dtype_read_write_round_trips() {
    for dtype in DType::ALL {
        match dtype {
            DType::F32 => {
                // Every 65537th pattern plus the specials: f32 → f64 → f32 is exact.
                let specials = [0u32, 0x8000_0000, 1, 0x7F7F_FFFF, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000];
                for bits in (0..=u32::MAX).step_by(65537).chain(specials) {
                    round_trip_bytes(dtype, &bits.to_le_bytes());
                }
            }
            DType::F16 | DType::BF16 => {
                for bits in 0..=u16::MAX {
                    round_trip_bytes(dtype, &bits.to_le_bytes());
                }
            }
            DType::F8E4M3Fn | DType::F8E4M3Fnuz | DType::F8E5M2 => {
                let format = dtype.fp8_format().unwrap();
                assert_eq!(DType::from_fp8(format), dtype);
                for code in 0..=255u8 {
                    let v = read_one(dtype, &[code]);
                    assert_eq!(v.to_bits(), (format.decode(code) as f64).to_bits(), "{dtype} {code:#04x}");
                    if v.is_infinite() {
                        // write_f64 saturates (the kernels' policy): e5m2's ±inf is written as ±max.
                        assert_eq!(write_one(dtype, v), [0x7B | (code & 0x80)]);
                    } else {
                        round_trip_bytes(dtype, &[code]);
                    }
                }
                // Saturating write past the maximum, and rounding on the way in.
                assert_eq!(read_one(dtype, &write_one(dtype, 1e30)), format.max() as f64);
                assert_eq!(read_one(dtype, &write_one(dtype, -1e30)), -format.max() as f64);
            }
            DType::Ue8m0 => {
                for code in 1..=254u8 {
                    round_trip_bytes(dtype, &[code]);
                }
                // 0 (2^−127) reads exactly but is clamped to 1 on the way back (DeepGEMM's clamp).
                assert_eq!(read_one(dtype, &[0]), 2f64.powi(-127));
                assert_eq!(write_one(dtype, 2f64.powi(-127)), [1]);
                assert!(read_one(dtype, &[255]).is_nan());
                // Writing rounds a scale up to a power of two.
                assert_eq!(write_one(dtype, 3.0), [129]);
            }
            DType::I32 => {
                for v in [i32::MIN, -65536, -1, 0, 1, 7, 1 << 30, i32::MAX] {
                    round_trip_bytes(dtype, &v.to_le_bytes());
                    assert_eq!(read_one(dtype, &v.to_le_bytes()), v as f64);
                }
                // Documented: integers truncate toward zero.
                assert_eq!(write_one(dtype, -2.75), (-2i32).to_le_bytes());
            }
            DType::I64 => {
                // Exact through f64 up to 2^53, and at powers of two beyond.
                let big = 1i64 << 53;
                for v in [i64::MIN, -big, -1, 0, 1, big, 1 << 62] {
                    round_trip_bytes(dtype, &v.to_le_bytes());
                    assert_eq!(read_one(dtype, &v.to_le_bytes()), v as f64);
                }
                assert_eq!(write_one(dtype, 2.75), 2i64.to_le_bytes());
            }
            DType::U8 => {
                for v in 0..=255u8 {
                    round_trip_bytes(dtype, &[v]);
                    assert_eq!(read_one(dtype, &[v]), v as f64);
                }
            }
        }
    }
}

/// f64 → bf16 / f16 / FP8 through `write_f64` rounds once: compare against rounding the exact f64 value
/// by brute force (nearest of the two neighbouring bf16 values, ties to even) around bf16 midpoints,
/// where a double rounding through f32 would go wrong.
#[test]
fn write_f64_rounds_once_near_bf16_midpoints() {
    use dsv3_core::DType;
    use half::bf16;
    for hi in [0x3F80u16, 0x3FD0, 0x4049, 0xBE33, 0x0081, 0x7F7E] {
        let lo = bf16::from_bits(hi).to_f64();
        let up = bf16::from_bits(hi + 1).to_f64();
        let mid = (lo + up) / 2.0;
        let step = (up - lo) * 2f64.powi(-30);
        for delta in [-3.0, -1.0, 0.0, 1.0, 3.0] {
            let x = mid + delta * step;
            let expected = if x.abs() < mid.abs() || (x == mid && hi % 2 == 0) { hi } else { hi + 1 };
            let mut buf = [0u8; 2];
            DType::BF16.write_f64(&mut buf, 0, x);
            assert_eq!(u16::from_le_bytes(buf), expected, "x = {x:e} (midpoint {mid:e} {delta:+} steps)");
        }
    }
}

/// The kernels' bit-manipulation encoder equals the reference encoder with saturation on every input class
/// that can matter to rounding: every sign and f32 exponent, every value of the top 10 mantissa bits, and
/// below them the bit patterns that decide rounding (exact, just below / at / just above a tie, sticky
/// bits), plus infinities, NaNs and a sweep of pseudo-random bit patterns.
#[test]
fn encode_saturating_equals_encode() {
    let lows = [0u32, 1, 0x1FFF, 0x2000, 0x2001, 0x3FFF, 0x1000, 0xFFF, 0x7FFF, 0x4000, 0x4001, 0x3FFFF];
    let mut checked = 0u64;
    for format in [Fp8Format::E4M3Fn, Fp8Format::E4M3Fnuz, Fp8Format::E5M2] {
        let check = |bits: u32| {
            let x = f32::from_bits(bits);
            let (fast, slow) = (format.encode_saturating(x), format.encode(x, Overflow::Saturate));
            assert!(
                fast == slow || (format.is_nan_code(fast) && format.is_nan_code(slow)),
                "{format:?} {x:e} ({bits:#010x}): fast {fast:#04x}, reference {slow:#04x}"
            );
        };
        for sign in [0u32, 1 << 31] {
            for exp in 0u32..256 {
                for top in 0u32..1024 {
                    for low in lows {
                        // top 10 mantissa bits, then the low pattern shifted under them (wrapping into 13 bits).
                        check(sign | exp << 23 | top << 13 | (low & 0x1FFF));
                        check(sign | exp << 23 | top << 13 | (low >> 5 & 0x1FFF));
                        checked += 2;
                    }
                }
            }
        }
        let mut z = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..2_000_000 {
            z = z.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            check((z >> 32) as u32);
            checked += 1;
        }
    }
    assert!(checked > 30_000_000);
}
