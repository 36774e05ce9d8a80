// dsv3.cuh: what every CUDA C kernel of dsv3 starts with, for three compilers:
//   * NVRTC (CUDA): DSV3_CUDA is defined by the assembler;
//   * hiprtc / hipcc (HIP): DSV3_HIP;
//   * a host C++20 compiler (the emulator that runs these kernels on the CPU in tests): DSV3_HOST, with
//     host_emulator.h placed before this file.
// The assembler also defines DSV3_WARP (32 on NVIDIA, 32 or 64 on AMD: it is a compile-time constant per
// target so that kernels size their shared memory and reductions with it) and, per variant, the element
// types of the arguments (`typedef dsv3::bf16 x_t;`) and the kernel's constants.
//
// Number formats are decoded and encoded here with integer operations, not with cuda_fp8.h / hip_fp8.h:
// the op contracts in dsv3-core fix the bits (round to nearest even, saturating FP8, e4m3fnuz next to
// e4m3fn), and one implementation that the CPU emulator runs too is what makes the three targets agree.

#if defined(DSV3_HIP) && !defined(__HIPCC_RTC__)
#include <hip/hip_runtime.h>  // hipcc (offline compilation); hiprtc provides the built-ins itself
#endif

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef int i32;
typedef unsigned long long u64;
typedef long long i64;

// DSV3_DEV marks device functions; DSV3_DEV_INLINE those that may not carry a storage class: explicit
// specialisations of a DSV3_DEV template (they take its linkage) and member functions.
#if defined(DSV3_CUDA)
#define DSV3_DEV __device__ __forceinline__
#define DSV3_DEV_INLINE __device__ __forceinline__
#define DSV3_KERNEL extern "C" __global__
#define DSV3_SHARED __shared__
DSV3_DEV u32 f2u(float x) { return __float_as_uint(x); }
DSV3_DEV float u2f(u32 x) { return __uint_as_float(x); }
DSV3_DEV void dsv3_sync() { __syncthreads(); }
DSV3_DEV float dsv3_shfl_xor(float v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
DSV3_DEV u32 dsv3_shfl_xor(u32 v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
DSV3_DEV i32 dsv3_shfl_xor(i32 v, int m) { return __shfl_xor_sync(0xffffffffu, v, m); }
#elif defined(DSV3_HIP)
#define DSV3_DEV __device__ __forceinline__
#define DSV3_DEV_INLINE __device__ __forceinline__
#define DSV3_KERNEL extern "C" __global__
#define DSV3_SHARED __shared__
DSV3_DEV u32 f2u(float x) { return __float_as_uint(x); }
DSV3_DEV float u2f(u32 x) { return __uint_as_float(x); }
DSV3_DEV void dsv3_sync() { __syncthreads(); }
// HIP's shuffles take the whole wavefront (no mask).
DSV3_DEV float dsv3_shfl_xor(float v, int m) { return __shfl_xor(v, m); }
DSV3_DEV u32 dsv3_shfl_xor(u32 v, int m) { return (u32)__shfl_xor((int)v, m); }
DSV3_DEV i32 dsv3_shfl_xor(i32 v, int m) { return __shfl_xor(v, m); }
#elif defined(DSV3_HOST)
// Internal linkage: a static local (shared memory) in an inline function with external linkage would go to
// a COMDAT section that conflicts with the kernel's own shared-memory section.
#define DSV3_DEV static inline
#define DSV3_DEV_INLINE inline
#define DSV3_KERNEL static
// Shared memory is one object per kernel: the emulator runs a block's threads as fibers on one OS thread
// and the blocks of a launch one after another. Its own section lets the emulator fill it with garbage at
// the start of every block.
#define DSV3_SHARED static __attribute__((section("dsv3_shared")))
DSV3_DEV u32 f2u(float x) { u32 u; memcpy(&u, &x, 4); return u; }
DSV3_DEV float u2f(u32 u) { float x; memcpy(&x, &u, 4); return x; }
// The call site identifies the barrier: threads waiting at different ones are an error.
#define dsv3_sync() dsv3_emu::block_barrier(__LINE__)
DSV3_DEV float dsv3_shfl_xor(float v, int m) { return dsv3_emu::shfl_xor(v, m); }
DSV3_DEV u32 dsv3_shfl_xor(u32 v, int m) { return dsv3_emu::shfl_xor(v, m); }
DSV3_DEV i32 dsv3_shfl_xor(i32 v, int m) { return dsv3_emu::shfl_xor(v, m); }
#else
#error "define DSV3_CUDA, DSV3_HIP or DSV3_HOST"
#endif

#ifndef DSV3_WARP
#error "DSV3_WARP (threads per warp / wavefront) must be defined"
#endif

// Dynamic shared memory: the block's whole dynamic allocation as one object `name` of type `T` (a struct,
// or an array typedef; aligned to at most 16 bytes), declared once in the kernel. Its size comes with the
// launch: the op's launch code computes it from the variant's constants (kernels.rs `Variant::shared`), the
// emulator checks that it is exactly sizeof(T), and above NVIDIA's 48 KiB the launch path opts the function
// in (backends/gpu/src/shared_memory.rs). Static shared memory (DSV3_SHARED) may sit beside it.
#if defined(DSV3_CUDA) || defined(DSV3_HIP)
#define DSV3_DYNAMIC_SHARED(T, name)                                         \
    extern __shared__ __attribute__((aligned(16))) u8 dsv3_dynamic_shared[]; \
    T& name = *reinterpret_cast<T*>(dsv3_dynamic_shared)
#else
#define DSV3_DYNAMIC_SHARED(T, name)                                              \
    static_assert(alignof(T) <= 16, "dynamic shared memory is 16-byte aligned"); \
    T& name = *static_cast<T*>(dsv3_emu::dynamic_shared(sizeof(T)))
#endif

// Asks for a loop to be unrolled completely (its trip count a constant): register arrays indexed by its
// counter then stay in registers. The host compiler decides for itself.
#if defined(DSV3_HOST)
#define DSV3_UNROLL
#else
#define DSV3_UNROLL _Pragma("unroll")
#endif

DSV3_DEV u32 dsv3_lane() { return threadIdx.x % DSV3_WARP; }

// Sum / max over the DSV3_WARP lanes of a warp; every lane gets the result. Fixed butterfly order.
DSV3_DEV float warp_sum(float v) {
    for (int m = DSV3_WARP / 2; m > 0; m /= 2) v += dsv3_shfl_xor(v, m);
    return v;
}
DSV3_DEV float warp_max(float v) {
    for (int m = DSV3_WARP / 2; m > 0; m /= 2) v = fmaxf(v, dsv3_shfl_xor(v, m));
    return v;
}

// Sum / max over a block whose size is a multiple of DSV3_WARP (at most 1024); every thread gets the
// same bits: warp butterflies, then the warps' partials added in warp order. Every thread of the block must
// call them (they hold barriers).
DSV3_DEV float block_sum(float v) {
    DSV3_SHARED float partial[1024 / DSV3_WARP];
    v = warp_sum(v);
    if (dsv3_lane() == 0) partial[threadIdx.x / DSV3_WARP] = v;
    dsv3_sync();
    float total = 0.0f;
    for (u32 w = 0; w < blockDim.x / DSV3_WARP; w++) total += partial[w];
    dsv3_sync();  // `partial` is reused by the next reduction
    return total;
}
// NaN is ignored, as by fmaxf.
DSV3_DEV float block_max(float v) {
    DSV3_SHARED float partial[1024 / DSV3_WARP];
    v = warp_max(v);
    if (dsv3_lane() == 0) partial[threadIdx.x / DSV3_WARP] = v;
    dsv3_sync();
    float m = partial[0];
    for (u32 w = 1; w < blockDim.x / DSV3_WARP; w++) m = fmaxf(m, partial[w]);
    dsv3_sync();
    return m;
}

// ---- element types -------------------------------------------------------------------------------------
// Storage types are structs around the bits, so that a kernel cannot use one as a number by accident:
// `to_f32(x)` decodes, `from_f32<T>(v)` encodes (round to nearest even; FP8 saturating, as core's kernels).

namespace dsv3 {
struct bf16 { u16 bits; };
struct f16 { u16 bits; };
struct e4m3fn { u8 bits; };
struct e4m3fnuz { u8 bits; };
struct e5m2 { u8 bits; };
struct ue8m0 { u8 bits; };
}  // namespace dsv3

template <class T> DSV3_DEV T from_f32(float v);

DSV3_DEV float to_f32(float x) { return x; }
template <> DSV3_DEV_INLINE float from_f32<float>(float v) { return v; }
DSV3_DEV float to_f32(i32 x) { return (float)x; }

// bf16: the high half of an f32. NaN stays NaN with the quiet bit set; overflow rounds to ±inf (as `half`).
DSV3_DEV float to_f32(dsv3::bf16 h) { return u2f((u32)h.bits << 16); }
template <> DSV3_DEV_INLINE dsv3::bf16 from_f32<dsv3::bf16>(float x) {
    u32 u = f2u(x);
    dsv3::bf16 r;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        r.bits = (u16)((u >> 16) | 0x40u);
    } else {
        r.bits = (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
    }
    return r;
}

// `m >> s` (1 ≤ s ≤ 31) rounded to nearest even.
DSV3_DEV u32 rne_shift(u32 m, u32 s) {
    u32 q = m >> s;
    u32 rem = m & ((1u << s) - 1u);
    u32 half = 1u << (s - 1u);
    if (rem > half || (rem == half && (q & 1u))) q += 1u;
    return q;
}

DSV3_DEV float to_f32(dsv3::f16 h) {
    u32 s = ((u32)h.bits & 0x8000u) << 16;
    u32 e = ((u32)h.bits >> 10) & 0x1fu;
    u32 m = (u32)h.bits & 0x3ffu;
    if (e == 0u) {
        float v = (float)m * u2f(0x33800000u);  // m · 2^-24, exact
        return u2f(f2u(v) | s);
    }
    if (e == 31u) return u2f(s | 0x7f800000u | (m << 13));
    return u2f(s | ((e + 112u) << 23) | (m << 13));
}
template <> DSV3_DEV_INLINE dsv3::f16 from_f32<dsv3::f16>(float x) {
    u32 u = f2u(x);
    u32 s = (u >> 16) & 0x8000u;
    u32 a = u & 0x7fffffffu;
    u32 h;
    if (a > 0x7f800000u) {
        h = 0x7e00u | ((a >> 13) & 0x3ffu);  // quiet NaN, payload kept (as `half`)
    } else if (a >= 0x477ff000u) {
        h = 0x7c00u;  // rounds past 65504: inf
    } else if (a >= 0x38800000u) {  // normal f16 range
        h = rne_shift(a - 0x38000000u, 13u);  // rebias 127 → 15; a carry moves into the exponent
    } else if (a >= 0x33000000u) {  // subnormal f16 (or rounds up to the smallest one)
        u32 e = a >> 23;
        h = rne_shift((a & 0x7fffffu) | 0x800000u, 126u - e);
    } else {
        h = 0u;
    }
    dsv3::f16 r;
    r.bits = (u16)(s | h);
    return r;
}

// FP8: e4m3fn (bias 7, max 448, NaN 0x7f/0xff), e4m3fnuz (bias 8, max 240, NaN 0x80 only, no −0),
// e5m2 (bias 15, max 57344, inf 0x7c, NaN above).
template <int MB, int BIAS> DSV3_DEV float fp8_magnitude(u32 c) {
    u32 e = (c & 0x7fu) >> MB;
    u32 m = c & ((1u << MB) - 1u);
    if (e == 0u) return (float)m * u2f((u32)(127 + 1 - BIAS - MB) << 23);
    return u2f(((e + 127u - BIAS) << 23) | (m << (23 - MB)));
}
DSV3_DEV float fp8_signed(u32 c, float mag) { return (c & 0x80u) ? -mag : mag; }

DSV3_DEV float to_f32(dsv3::e4m3fn x) {
    if ((x.bits & 0x7fu) == 0x7fu) return u2f(0x7fc00000u);
    return fp8_signed(x.bits, fp8_magnitude<3, 7>(x.bits));
}
DSV3_DEV float to_f32(dsv3::e4m3fnuz x) {
    if (x.bits == 0x80u) return u2f(0x7fc00000u);
    return fp8_signed(x.bits, fp8_magnitude<3, 8>(x.bits));
}
DSV3_DEV float to_f32(dsv3::e5m2 x) {
    u32 a = x.bits & 0x7fu;
    if (a > 0x7cu) return u2f(0x7fc00000u);
    if (a == 0x7cu) return u2f((x.bits & 0x80u) ? 0xff800000u : 0x7f800000u);
    return fp8_signed(x.bits, fp8_magnitude<2, 15>(x.bits));
}

// Two elements to f32 at once (`lo` to *x, `hi` to *y): each as to_f32 does. e4m3fn pairs use the hardware
// conversion where the device has one (sm_89+: cvt.rn.f16x2.e4m3x2, then f16 → f32): every e4m3fn value is
// an f16 value, so both steps are exact and give to_f32's bits for every finite code; a NaN code gives a NaN
// (its payload may differ, which no kernel looks at: arithmetic on it gives the device's canonical NaN).
// Everywhere else (sm_80, HIP, the host emulator) the integer codec.
template <class T> DSV3_DEV void to_f32x2(T lo, T hi, float* x, float* y) {
    *x = to_f32(lo);
    *y = to_f32(hi);
}
#if defined(DSV3_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
template <> DSV3_DEV_INLINE void to_f32x2<dsv3::e4m3fn>(dsv3::e4m3fn lo, dsv3::e4m3fn hi, float* x, float* y) {
    const u16 pair = (u16)(lo.bits | ((u32)hi.bits << 8));
    u32 h2;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(pair));
    asm("{.reg .b16 lo16, hi16;\n mov.b32 {lo16, hi16}, %2;\n cvt.f32.f16 %0, lo16;\n cvt.f32.f16 %1, hi16;}"
        : "=f"(*x), "=f"(*y)
        : "r"(h2));
}
#endif

// Round to nearest even in one step from the f32 bits, saturating at MAX_CODE; NaN gives NAN_CODE with
// the sign (e4m3fn, e5m2) or 0x80 (fnuz).
template <int MB, int BIAS, u32 MAX_CODE, bool FNUZ> DSV3_DEV u8 fp8_encode(float x) {
    u32 bits = f2u(x);
    u32 sign = (bits >> 24) & 0x80u;
    u32 a = bits & 0x7fffffffu;
    if (a > 0x7f800000u) return FNUZ ? (u8)0x80u : (u8)(0x7fu | sign);
    u32 mag;
    if (a < ((u32)(1 - BIAS + 127) << 23)) {
        // Subnormal: count quanta of 2^(1 − BIAS − MB); the scaling is exact, rintf rounds ties to even.
        float quanta = u2f(a) * u2f((u32)(MB - (1 - BIAS) + 127) << 23);
        mag = (u32)rintf(quanta);
    } else {
        const u32 shift = 23 - MB;
        u32 rounded = (a + (1u << (shift - 1u)) - 1u + ((a >> shift) & 1u)) >> shift;
        mag = rounded - ((u32)(127 - BIAS) << MB);
    }
    u32 code = mag < MAX_CODE ? mag : MAX_CODE;
    if (FNUZ && code == 0u) return 0;
    return (u8)(code | sign);
}
template <> DSV3_DEV_INLINE dsv3::e4m3fn from_f32<dsv3::e4m3fn>(float x) {
    dsv3::e4m3fn r;
    r.bits = fp8_encode<3, 7, 0x7eu, false>(x);
    return r;
}
template <> DSV3_DEV_INLINE dsv3::e4m3fnuz from_f32<dsv3::e4m3fnuz>(float x) {
    dsv3::e4m3fnuz r;
    r.bits = fp8_encode<3, 8, 0x7fu, true>(x);
    return r;
}
template <> DSV3_DEV_INLINE dsv3::e5m2 from_f32<dsv3::e5m2>(float x) {
    dsv3::e5m2 r;
    r.bits = fp8_encode<2, 15, 0x7bu, false>(x);
    return r;
}

// ue8m0: 2^(code − 127), 255 = NaN. Encoding takes the smallest power of two ≥ s, code clamped to
// [1, 254] (core's `ue8m0::encode_ceil`).
DSV3_DEV float to_f32(dsv3::ue8m0 x) {
    if (x.bits == 255u) return u2f(0x7fc00000u);
    if (x.bits == 0u) return u2f(0x00400000u);  // 2^-127, subnormal
    return u2f((u32)x.bits << 23);
}
template <> DSV3_DEV_INLINE dsv3::ue8m0 from_f32<dsv3::ue8m0>(float s) {
    u32 b = f2u(s);
    i32 e = (i32)((b >> 23) & 0xffu) + ((b & 0x7fffffu) != 0u ? 1 : 0);
    dsv3::ue8m0 r;
    r.bits = (u8)(e < 1 ? 1 : (e > 254 ? 254 : e));
    return r;
}

// ---- helpers -------------------------------------------------------------------------------------------

DSV3_DEV float f32_inf() { return u2f(0x7f800000u); }

// A u32 whose unsigned order is f32 `total_cmp` order (−0 < +0; −inf lowest; NaN ends), for selections
// whose ties must go exactly as the CPU's.
DSV3_DEV u32 order_key(float x) {
    u32 b = f2u(x);
    return (b >> 31) ? ~b : (b | 0x80000000u);
}

// Records the first failing device-side check of a stream since its last sync: `site` names the op and
// argument (the host keeps the table), `index` and `value` the offending element. `err` is the stream's
// error record {site, index, value}.
DSV3_DEV void report(u32* err, u32 site, u32 index, u32 value) {
    if (atomicCAS(err, 0u, site) == 0u) {
        err[1] = index;
        err[2] = value;
    }
}
