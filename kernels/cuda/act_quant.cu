// DeepSeek's act_quant: for each row and each group of 128 consecutive channels (the last may be partial),
// amax = max(max |x|, 1e-4), s = amax / fp8_max (448 e4m3fn, 240 e4m3fnuz, 57344 e5m2), rounded up to a
// power of two when UE8M0 = 1, and q = fp8(x / s), rounded to nearest even and saturated.
//
// Numerics: |x| is exact and its max is order-free, so amax is exact; s and x / s are each one correctly
// rounded f32 division (IEEE `/`: neither NVRTC nor hipcc is given fast-math flags; a reciprocal would
// round some FP8 ties the other way); the ue8m0 rounding and the FP8 encoding are dsv3.cuh's bit-exact
// codecs. Scales are stored as f32 or as ue8m0 codes (scales_t).
//
// One warp per (row, group): each lane holds 128 / DSV3_WARP channels in registers, warp_max gives amax,
// so there is no shared memory and no barrier. blockDim / DSV3_WARP groups per block.

#define QB 128
#define PER_LANE (QB / DSV3_WARP)

struct Params {
    u64 rows, k;
    const x_t* x;
    u64 x_stride;
    codes_t* codes;
    u64 codes_stride;
    scales_t* scales;
};

DSV3_DEV float fp8_max(dsv3::e4m3fn) { return 448.0f; }
DSV3_DEV float fp8_max(dsv3::e4m3fnuz) { return 240.0f; }
DSV3_DEV float fp8_max(dsv3::e5m2) { return 57344.0f; }

DSV3_KERNEL void act_quant(const Params p) {
    const u32 lane = dsv3_lane();
    const u64 kb_n = (p.k + QB - 1) / QB;
    const u64 id = (u64)blockIdx.x * (blockDim.x / DSV3_WARP) + threadIdx.x / DSV3_WARP;
    // Warps past the last group still take part in warp_max (all lanes of a warp must), with zeros.
    const bool valid = id < p.rows * kb_n;
    const u64 row = valid ? id / kb_n : 0, g = valid ? id % kb_n : 0;
    float x[PER_LANE];
    float amax = 0.0f;
    for (u32 i = 0; i < PER_LANE; i++) {
        const u64 col = g * QB + lane + i * DSV3_WARP;
        x[i] = valid && col < p.k ? to_f32(p.x[row * p.x_stride + col]) : 0.0f;
        amax = fmaxf(amax, fabsf(x[i]));
    }
    amax = warp_max(amax);
    float s = fmaxf(amax, 1e-4f) / fp8_max(codes_t{});
#if UE8M0
    s = to_f32(from_f32<dsv3::ue8m0>(s));
#endif
    if (valid) {
        for (u32 i = 0; i < PER_LANE; i++) {
            const u64 col = g * QB + lane + i * DSV3_WARP;
            if (col < p.k) p.codes[row * p.codes_stride + col] = from_f32<codes_t>(x[i] / s);
        }
        if (lane == 0) p.scales[row * kb_n + g] = from_f32<scales_t>(s);
    }
}
