// Shared by every dsv3 WGSL kernel: number formats WGSL has no type for (bf16, f16 without the shader-f16
// extension, the three FP8 formats, ue8m0), exact helpers (correctly rounded division, 64-bit integer
// arithmetic on u32 pairs) and f32 transcendental functions whose accuracy does not depend on the driver.
//
// Everything here works on bit patterns: WGSL leaves the rounding of narrowing conversions and the accuracy of
// exp / log / sin / cos to the implementation, while the op contracts in dsv3-core fix them (round to nearest
// even, saturating FP8), so each conversion is written out with integer operations that give the same bits
// as core's codec (core/src/fp8.rs, half's bf16 / f16) on every driver.
//
// The kernel assembler prepends this file, then the bindings and typed accessors of one kernel variant
// (`ld_NAME`, `st_NAME`, ...), then the kernel's own source.

// Parameters of one dispatch: element offsets, sizes and strides (read with `p(i)`).
fn p(i: u32) -> u32 {
    return P[i];
}

fn pf(i: u32) -> f32 {
    return bitcast<f32>(P[i]);
}

// ---- bf16 -------------------------------------------------------------------------------------------

fn dec_bf16(h: u32) -> f32 {
    return bitcast<f32>(h << 16u);
}

// Round to nearest even; NaN stays NaN (quiet bit set), overflow rounds to ±inf, as `half` does.
fn enc_bf16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b & 0x7fffffffu) > 0x7f800000u) {
        return (b >> 16u) | 0x40u;
    }
    return (b + 0x7fffu + ((b >> 16u) & 1u)) >> 16u;
}

// ---- f16 (without the shader-f16 extension: pack2x16float's rounding is implementation-defined) ---

fn dec_f16(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if (e == 0u) {
        // Subnormal or zero: m · 2^-24, exact in f32 (and a normal f32 unless zero).
        let v = f32(m) * 5.9604644775390625e-8;
        return bitcast<f32>(bitcast<u32>(v) | sign);
    }
    if (e == 31u) {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// `m >> s` rounded to nearest even, with `sticky` standing for nonzero bits already shifted out.
fn rne_shift(m: u32, s: u32, sticky: bool) -> u32 {
    if (s == 0u) {
        return m;
    }
    if (s >= 32u) {
        return 0u;
    }
    let q = m >> s;
    let rem = m & ((1u << s) - 1u);
    let half = 1u << (s - 1u);
    if (rem > half || (rem == half && (sticky || (q & 1u) == 1u))) {
        return q + 1u;
    }
    return q;
}

fn enc_f16(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    let sign = (b >> 16u) & 0x8000u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        return sign | 0x7e00u | ((a >> 13u) & 0x3ffu);
    }
    if (a >= 0x477ff000u) {
        return sign | 0x7c00u; // 65520 and above round to infinity
    }
    if (a >= 0x38800000u) {
        let r = a - 0x38000000u; // rebias the exponent from 127 to 15
        return sign | ((r + 0xfffu + ((r >> 13u) & 1u)) >> 13u);
    }
    if (a < 0x33000000u) {
        return sign; // below 2^-25 (a tie at 2^-25 rounds to the even zero)
    }
    // Subnormal f16: quanta of 2^-24; a carry into 0x400 is the smallest normal, which the bits encode.
    let e = a >> 23u;
    let m = (a & 0x7fffffu) | 0x800000u;
    return sign | rne_shift(m, 126u - e, false);
}

// ---- FP8: kind 0 = e4m3fn (bias 7), 1 = e4m3fnuz (bias 8), 2 = e5m2 (bias 15) -----------------------

fn fp8_mbits(kind: u32) -> u32 {
    return select(3u, 2u, kind == 2u);
}

fn fp8_bias(kind: u32) -> u32 {
    if (kind == 0u) {
        return 7u;
    }
    if (kind == 1u) {
        return 8u;
    }
    return 15u;
}

fn fp8_max_code(kind: u32) -> u32 {
    if (kind == 0u) {
        return 0x7eu;
    }
    if (kind == 1u) {
        return 0x7fu;
    }
    return 0x7bu;
}

fn fp8_max(kind: u32) -> f32 {
    if (kind == 0u) {
        return 448.0;
    }
    if (kind == 1u) {
        return 240.0;
    }
    return 57344.0;
}

fn dec_fp8(c: u32, kind: u32) -> f32 {
    let mag = c & 0x7fu;
    let sign = (c & 0x80u) << 24u;
    if ((kind == 0u && mag == 0x7fu) || (kind == 1u && c == 0x80u) || (kind == 2u && mag > 0x7cu)) {
        return bitcast<f32>(0x7fc00000u | sign);
    }
    if (kind == 2u && mag == 0x7cu) {
        return bitcast<f32>(0x7f800000u | sign);
    }
    let mb = fp8_mbits(kind);
    let bias = fp8_bias(kind);
    let e = mag >> mb;
    let m = mag & ((1u << mb) - 1u);
    if (e == 0u) {
        // m · 2^(1 − bias − mb): a small integer times a normal power of two, exact.
        let v = f32(m) * bitcast<f32>((128u - bias - mb) << 23u);
        return bitcast<f32>(bitcast<u32>(v) | sign);
    }
    return bitcast<f32>(sign | ((e + 127u - bias) << 23u) | (m << (23u - mb)));
}

// Round to nearest even in one step from the f32 value, saturating at the format's maximum (core's
// `Overflow::Saturate`, which kernels use); NaN gives the format's NaN code; fnuz has no negative zero.
fn enc_fp8(x: f32, kind: u32) -> u32 {
    let b = bitcast<u32>(x);
    let neg = (b >> 31u) == 1u;
    let a = b & 0x7fffffffu;
    if (a > 0x7f800000u) {
        if (kind == 1u) {
            return 0x80u;
        }
        return 0x7fu | select(0u, 0x80u, neg);
    }
    let mb = fp8_mbits(kind);
    let bias = i32(fp8_bias(kind));
    let max_code = fp8_max_code(kind);
    var code = 0u;
    if (a == 0x7f800000u) {
        code = max_code;
    } else if ((a >> 23u) != 0u) {
        // f32 zero and subnormals are far below every FP8 subnormal: they stay code 0.
        let m = (a & 0x7fffffu) | 0x800000u;
        let e = i32(a >> 23u) - 127;
        let min_e = 1 - bias;
        var ef = 0;
        var mant = 0u;
        if (e >= min_e) {
            var q = rne_shift(m, 23u - mb, false);
            ef = e + bias;
            if (q == (2u << mb)) {
                q = 1u << mb;
                ef = ef + 1;
            }
            mant = q - (1u << mb);
        } else {
            let s = 23u - mb + u32(min_e - e);
            let q = select(0u, rne_shift(m, s, false), s <= 25u);
            if (q >= (1u << mb)) {
                ef = 1;
                mant = q - (1u << mb);
            } else {
                mant = q;
            }
        }
        if (ef > i32(0x7fu >> mb)) {
            code = max_code;
        } else {
            code = min((u32(ef) << mb) | mant, max_code);
        }
    }
    if (code == 0u && kind == 1u) {
        return 0u;
    }
    return code | select(0u, 0x80u, neg);
}

// ---- ue8m0: 2^(e − 127), 255 = NaN ---------------------------------------------------------------------

fn dec_ue8m0(c: u32) -> f32 {
    if (c == 255u) {
        return bitcast<f32>(0x7f800000u | (c << 14u)); // NaN (built from c: a constant NaN is rejected)
    }
    if (c == 0u) {
        return bitcast<f32>(0x00400000u); // 2^-127, an f32 subnormal
    }
    return bitcast<f32>(c << 23u);
}

// The smallest power of two ≥ s as its exponent code, clamped to [1, 254] (core's `ue8m0::encode_ceil`).
fn enc_ue8m0_ceil(s: f32) -> u32 {
    let b = bitcast<u32>(s);
    let e = i32((b >> 23u) & 0xffu) + select(0, 1, (b & 0x7fffffu) != 0u);
    return u32(clamp(e, 1, 254));
}

// ---- correctly rounded f32 division ------------------------------------------------------------------

// Significand (with the implicit bit) and unbiased exponent of a nonzero finite |x|, normalised so that
// bit 23 is set (subnormals included).
fn unpack_f32(a: u32) -> vec2<i32> {
    var e = i32(a >> 23u);
    var m = a & 0x7fffffu;
    if (e == 0) {
        let shift = countLeadingZeros(m) - 8u;
        m = m << shift;
        e = 1 - i32(shift);
    } else {
        m = m | 0x800000u;
    }
    return vec2<i32>(i32(m), e - 127);
}

// x / y rounded to nearest even, by long division on the significands. WGSL allows 2.5 ulp for `/`; ops
// whose contract fixes one correctly rounded division (act_quant) use this. y must be finite and nonzero.
fn div_rn(x: f32, y: f32) -> f32 {
    let bx = bitcast<u32>(x);
    let by = bitcast<u32>(y);
    let sign = (bx ^ by) & 0x80000000u;
    let ax = bx & 0x7fffffffu;
    let ay = by & 0x7fffffffu;
    if (ax == 0u) {
        return bitcast<f32>(sign);
    }
    if (ax >= 0x7f800000u) {
        return x / y;
    }
    let ux = unpack_f32(ax);
    let uy = unpack_f32(ay);
    var mx = u32(ux.x);
    let my = u32(uy.x);
    var e = ux.y - uy.y;
    if (mx < my) {
        mx = mx << 1u;
        e = e - 1;
    }
    // 26 quotient bits: the leading one, 23 fraction bits, then two more for rounding.
    var q = 0u;
    var r = mx;
    for (var i = 0u; i < 26u; i = i + 1u) {
        q = q << 1u;
        if (r >= my) {
            r = r - my;
            q = q | 1u;
        }
        r = r << 1u;
    }
    let sticky = r != 0u;
    var biased = e + 127;
    if (biased >= 255) {
        return bitcast<f32>(sign | 0x7f800000u);
    }
    if (biased <= 0) {
        // Subnormal result: shift the extra 1 − biased bits out as well (the bits encode a carry into
        // the smallest normal by themselves).
        let s = u32(2 - biased + 1) ;
        return bitcast<f32>(sign | rne_shift(q, min(s, 31u), sticky));
    }
    var keep = rne_shift(q, 2u, sticky);
    if (keep == (1u << 24u)) {
        keep = keep >> 1u;
        biased = biased + 1;
        if (biased >= 255) {
            return bitcast<f32>(sign | 0x7f800000u);
        }
    }
    return bitcast<f32>(sign | (u32(biased) << 23u) | (keep & 0x7fffffu));
}

// ---- f32 transcendental functions with driver-independent accuracy (a few ulp) -------------------------

const LN2_HI: f32 = 0.693145751953125; // 16 significant bits: n · LN2_HI is exact for |n| < 256
const LN2_LO: f32 = 1.428606765330187e-06;
const LOG2E: f32 = 1.4426950408889634;

// 2^n for an integer n in the normal range, else 0 or +inf.
fn exp2i(n: i32) -> f32 {
    if (n < -126) {
        return 0.0;
    }
    if (n > 127) {
        return bitcast<f32>(0x7f800000u + u32(n - n));
    }
    return bitcast<f32>(u32(n + 127) << 23u);
}

// e^x: Cody–Waite reduction to |r| ≤ ln2/2 and a degree-7 Taylor polynomial (truncation < 2^-27),
// so the error is a few f32 roundings however large |x| is (WGSL allows 3 + 2|x| ulp). Results below
// the normal range flush to 0.
fn exp_f32(x: f32) -> f32 {
    if (x < -87.5) {
        return 0.0;
    }
    if (x > 88.7) {
        return bitcast<f32>(0x7f800000u + u32(i32(x) - i32(x)));
    }
    let n = round(x * LOG2E);
    let r = (x - n * LN2_HI) - n * LN2_LO;
    var s = 1.0 / 5040.0;
    s = s * r + 1.0 / 720.0;
    s = s * r + 1.0 / 120.0;
    s = s * r + 1.0 / 24.0;
    s = s * r + 1.0 / 6.0;
    s = s * r + 0.5;
    s = s * r + 1.0;
    s = s * r + 1.0;
    let ni = i32(n);
    // Split the scaling so that e^x just above the subnormal boundary keeps its bits.
    if (ni < -125) {
        return s * exp2i(ni + 64) * exp2i(-64);
    }
    return s * exp2i(ni);
}

// ln x for finite x > 0: x = f · 2^e with f in [√½, √2), ln f = 2 atanh(s), s = (f − 1)/(f + 1),
// |s| ≤ 0.1716, series to s^13 (truncation < 2^-30 relative).
fn ln_f32(x: f32) -> f32 {
    let u = unpack_f32(bitcast<u32>(x) & 0x7fffffffu);
    var e = u.y;
    var f = bitcast<f32>((u32(u.x) & 0x7fffffu) | 0x3f800000u); // in [1, 2)
    if (f > 1.41421356) {
        f = f * 0.5;
        e = e + 1;
    }
    let s = (f - 1.0) / (f + 1.0);
    let z = s * s;
    var t = 1.0 / 13.0;
    t = t * z + 1.0 / 11.0;
    t = t * z + 1.0 / 9.0;
    t = t * z + 1.0 / 7.0;
    t = t * z + 1.0 / 5.0;
    t = t * z + 1.0 / 3.0;
    let ln_f = 2.0 * s + 2.0 * s * z * t;
    let ef = f32(e);
    return ef * LN2_HI + (ef * LN2_LO + ln_f);
}

// ln(1 + x) for x in (−1, 1], accurate for small |x| (Goldberg: ln(w) · x / (w − 1) with w = 1 + x rounded).
fn ln1p_f32(x: f32) -> f32 {
    let w = 1.0 + x;
    if (w == 1.0) {
        return x;
    }
    return ln_f32(w) * x / (w - 1.0);
}

// π/2 as four 7-bit pieces (n · piece is exact for n < 2^17) and a rounded remainder: a Cody–Waite
// reduction good to ~1e-8 absolute for |x| < 2^17 · π/2 ≈ 205887 (RoPE angles reach 163840).
const PIO2_1: f32 = 1.5625;
const PIO2_2: f32 = 0.0081787109375;
const PIO2_3: f32 = 0.00011730194091796875;
const PIO2_4: f32 = 3.129243850708008e-07;
const PIO2_5: f32 = 9.92093629470503e-10;
const TWO_OVER_PI: f32 = 0.6366197723675814;

// Returns (sin x, cos x).
fn sincos_f32(x: f32) -> vec2<f32> {
    let n = round(x * TWO_OVER_PI);
    var r = x - n * PIO2_1;
    r = r - n * PIO2_2;
    r = r - n * PIO2_3;
    r = r - n * PIO2_4;
    r = r - n * PIO2_5;
    let z = r * r;
    // Taylor series on |r| ≤ π/4 (+ a little): truncation below 2^-26 relative.
    var sp = -1.0 / 39916800.0;
    sp = sp * z + 1.0 / 362880.0;
    sp = sp * z - 1.0 / 5040.0;
    sp = sp * z + 1.0 / 120.0;
    sp = sp * z - 1.0 / 6.0;
    let s = r + r * z * sp;
    var cp = 1.0 / 479001600.0;
    cp = cp * z - 1.0 / 3628800.0;
    cp = cp * z + 1.0 / 40320.0;
    cp = cp * z - 1.0 / 720.0;
    cp = cp * z + 1.0 / 24.0;
    let c = (1.0 - 0.5 * z) + z * z * cp;
    let q = u32(i32(n) & 3);
    if (q == 0u) {
        return vec2<f32>(s, c);
    }
    if (q == 1u) {
        return vec2<f32>(c, -s);
    }
    if (q == 2u) {
        return vec2<f32>(-s, -c);
    }
    return vec2<f32>(-c, s);
}

// ---- ordering -----------------------------------------------------------------------------------------

// A u32 whose unsigned order is f32 `total_cmp` order (−0 < +0; −inf lowest), for selections whose ties
// must go exactly as the CPU's.
fn order_key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    if ((b >> 31u) == 1u) {
        return ~b;
    }
    return b | 0x80000000u;
}

// ---- 64-bit integers as (lo, hi) u32 pairs ----------------------------------------------------------

fn mul32x32(a: u32, b: u32) -> vec2<u32> {
    let a0 = a & 0xffffu;
    let a1 = a >> 16u;
    let b0 = b & 0xffffu;
    let b1 = b >> 16u;
    let p00 = a0 * b0;
    let p01 = a0 * b1;
    let p10 = a1 * b0;
    let p11 = a1 * b1;
    let mid = (p00 >> 16u) + (p01 & 0xffffu) + (p10 & 0xffffu);
    let lo = (p00 & 0xffffu) | (mid << 16u);
    let hi = p11 + (p01 >> 16u) + (p10 >> 16u) + (mid >> 16u);
    return vec2<u32>(lo, hi);
}

// The low 64 bits of a · b.
fn mul64(a: vec2<u32>, b: vec2<u32>) -> vec2<u32> {
    let low = mul32x32(a.x, b.x);
    return vec2<u32>(low.x, low.y + a.x * b.y + a.y * b.x);
}

fn shr64(a: vec2<u32>, s: u32) -> vec2<u32> {
    // 0 < s < 32
    return vec2<u32>((a.x >> s) | (a.y << (32u - s)), a.y >> s);
}

// ---- device-side argument checks -----------------------------------------------------------------------

// Records the first failing check of this stream since its last sync: `site` names the op and argument
// (the host keeps the table), `index` and `value` the offending element.
fn report(site: u32, index: u32, value: u32) {
    loop {
        let r = atomicCompareExchangeWeak(&ERR[0], 0u, site);
        if (r.exchanged) {
            atomicStore(&ERR[1], index);
            atomicStore(&ERR[2], value);
            return;
        }
        if (r.old_value != 0u) {
            return;
        }
    }
}
