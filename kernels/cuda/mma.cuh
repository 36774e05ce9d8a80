// mma.cuh: the tile layer, warp-level matrix multiply-accumulate on NVIDIA tensor cores (mma.sync), with
// the shared-memory loads that feed it (ldmatrix) and the asynchronous global → shared copies that feed
// those (cp.async). Under DSV3_HOST the same functions are executed exactly by the emulator, per the PTX
// ISA's fragment layouts ("Matrix Fragments for mma.m16n8k16 / mma.m16n8k32"), so kernels written on this
// layer are tested without a GPU; `kernels/cuda/mma_probe.cu` checks on a GPU that the two agree bit for bit.
//
// Operands, for both shapes (bf16 m16n8k16: sm_80+; e4m3 m16n8k32: see DSV3_MMA_E4M3), the same in bytes:
// A is a 16 × 32-byte tile (16 rows of K, row-major), B a 32-byte × 8 tile given as Bᵀ (8 rows n of K,
// k contiguous: `.col`, which is how dsv3's B[N, K] is stored), D / C 16 × 8 f32. With lane = g·4 + t
// (g = lane / 4, t = lane % 4):
//   A  register r holds bytes 4t .. 4t+3 + 16·(r / 2) of row g + 8·(r % 2)   (bf16: 2 elements, e4m3: 4)
//   B  register r holds bytes 4t .. 4t+3 + 16·r of Bᵀ row (column of B) g
//   C  slot i is row g + 8·(i / 2), column 2t + i % 2
// (the ISA's per-element tables, regrouped by register; lower-indexed elements in the lower bits).
// `acc_row` / `acc_col` give a slot's place, so block scales can be applied outside the MMA.
//
// ldmatrix.x4 loads four 8 × 16-byte matrices: lane l gives the address of row l % 8 of matrix l / 8, and
// register j of lane l receives bytes 4·(l % 4) .. +3 of row l / 4 of matrix j (.trans: the 16-bit elements
// (2·(l % 4), l / 4) and (2·(l % 4) + 1, l / 4) of matrix j, i.e. of its transpose). So an A fragment is one
// x4 with lane l pointing at row l % 16, byte 16·(l / 16) of the tile, and a Bᵀ fragment pair (two n-tiles of
// 8) one x4 with lane l pointing at row (l % 8) + 8·(l / 16), byte 16·((l / 8) % 2). Rows 16-byte aligned.
//
// Numerics of the emulator: every product of two bf16 or two e4m3 values is exact in f32; each output slot
// is c + p_0 + p_1 + … + p_{K−1} added in ascending k, each addition rounded to nearest even in f32.
// Tensor cores add in an order (and, for FP8 on Hopper, with a precision) of their own: outputs agree bit
// for bit whenever the sums are exact (the probe's small integers), and within the tolerance of a K-long
// f32 sum otherwise — which is why FP8 kernels promote partial sums to f32 every 128-wide K block.
//
// A whole warp (32 lanes, all present) must call mma, ldmatrix and syncwarp together; the emulator reports
// lanes that do not, and ldmatrix / cp.async addresses that are misaligned or outside shared memory.
//
// AMD (not implemented): the same API over MFMA would need, per architecture (gfx90a, gfx942), the
// v_mfma_f32_16x16x16bf16_1k / v_mfma_f32_32x32x8bf16_1k operand layouts (a wave64 lane holds 4 bf16 of A
// and of B, 4 f32 of C for 16×16×16), acc_row / acc_col for them, v_mfma_f32_16x16x32_fp8_fp8 with
// e4m3fnuz on gfx942, no ldmatrix (ds_read_b64 per lane, or LDS transposes), global → LDS loads through
// registers (gfx942 has no cp.async: buffer_load ... lds exists but is restricted), and emulation of those
// layouts at warp 64. The fragment structs would change size, so kernels use them only through this API.
//
// wgmma / TMA (sm_90a, the next step): warpgroup-wide (128 threads) m64nNk16 with A and B read from shared
// memory through descriptors (swizzled layouts), asynchronous with wgmma.fence / commit_group / wait_group,
// and TMA bulk tensor copies with mbarriers instead of cp.async. The accumulator layout per warp is the
// m16n8 one repeated along N, so acc_row / acc_col extend to it; the emulator would add descriptor decoding
// and the mbarrier's transaction counts.

#if DSV3_WARP != 32
#error "mma.cuh is NVIDIA's tile layer (32-lane warps); AMD's MFMA is not implemented (see above)"
#endif

// Whether e4m3 mma.sync (m16n8k32) exists on this target; mma_e4m3 runs everywhere the layer does:
//   * sm_89 (Ada), sm_100+: the instruction, native (SASS QMMA.16832.F32.E4M3.E4M3);
//   * sm_90a: the instruction too, though Hopper has no FP8 mma.sync: ptxas lowers it to exact hardware
//     conversions and two f16 HMMA (SASS F2FP.F16.E4M3.UNPACK_B and HMMA.16816.F32, the conversions done
//     once per fragment: 64 F2FP and 32 HMMA for gemm_mma.cu's 16 e4m3 mma per slice, CUDA 13.0). That is
//     exact (e4m3 ⊂ f16, f32 accumulation), and cheaper than our own lowering below, whose decode is
//     integer code; the rate is f16 mma.sync's, the same as bf16's — Hopper's FP8 rate needs wgmma;
//   * sm_80, sm_86: no FP8 anywhere in the hardware: mma_e4m3_by_bf16 (two bf16 mma on exactly decoded
//     codes; chosen over the SIMT kernel for its fewer instructions per product, not measured).
#if defined(DSV3_HOST) || (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890)
#define DSV3_MMA_E4M3 1
#else
#define DSV3_MMA_E4M3 0
#endif

namespace mma {

struct FragA {
    u32 r[4];
};
struct FragB {
    u32 r[2];
};
struct FragC {
    float v[4];
};

DSV3_DEV FragC zero_c() {
    FragC c;
    DSV3_UNROLL
    for (int i = 0; i < 4; i++) c.v[i] = 0.0f;
    return c;
}

// Row and column of accumulator slot i (0..3) of the calling lane, within the 16 × 8 tile.
DSV3_DEV u32 acc_row(u32 i) { return dsv3_lane() / 4 + 8 * (i / 2); }
DSV3_DEV u32 acc_col(u32 i) { return 2 * (dsv3_lane() % 4) + i % 2; }

// Fragments from any memory, through registers: `tile` points at the A tile's row 0 (or Bᵀ's row 0), `ld`
// bytes between rows; each register is one 4-byte load, so rows and `ld` must be 4-byte aligned.
DSV3_DEV FragA load_a(const void* tile, u64 ld) {
    const u8* p = static_cast<const u8*>(tile);
    const u32 g = dsv3_lane() / 4, t = dsv3_lane() % 4;
    FragA a;
    DSV3_UNROLL
    for (u32 r = 0; r < 4; r++) a.r[r] = *reinterpret_cast<const u32*>(p + (g + 8 * (r % 2)) * ld + 4 * t + 16 * (r / 2));
    return a;
}
DSV3_DEV FragB load_b(const void* tile_t, u64 ld) {
    const u8* p = static_cast<const u8*>(tile_t);
    const u32 g = dsv3_lane() / 4, t = dsv3_lane() % 4;
    FragB b;
    DSV3_UNROLL
    for (u32 r = 0; r < 2; r++) b.r[r] = *reinterpret_cast<const u32*>(p + g * ld + 4 * t + 16 * r);
    return b;
}

#if defined(DSV3_CUDA)

DSV3_DEV u32 shared_addr(const void* p) {
    u32 a;
    asm("{ .reg .u64 s; cvta.to.shared.u64 s, %1; cvt.u32.u64 %0, s; }" : "=r"(a) : "l"(p));
    return a;
}
DSV3_DEV void ldmatrix_x4(u32 (&r)[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_addr(row)));
}
DSV3_DEV void ldmatrix_x4_trans(u32 (&r)[4], const void* row) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(shared_addr(row)));
}
// d += a · b.
DSV3_DEV void mma_bf16(FragC& d, const FragA& a, const FragB& b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d.v[0]), "+f"(d.v[1]), "+f"(d.v[2]), "+f"(d.v[3])
                 : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}
#if DSV3_MMA_E4M3
DSV3_DEV void mma_e4m3(FragC& d, const FragA& a, const FragB& b) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d.v[0]), "+f"(d.v[1]), "+f"(d.v[2]), "+f"(d.v[3])
                 : "r"(a.r[0]), "r"(a.r[1]), "r"(a.r[2]), "r"(a.r[3]), "r"(b.r[0]), "r"(b.r[1]));
}
#endif
// 16 bytes from global to shared memory, asynchronously (bypassing L1: .cg); both 16-byte aligned.
DSV3_DEV void cp_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(shared_addr(dst)), "l"(src) : "memory");
}
DSV3_DEV void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N of the thread's committed groups are pending (its own copies only: a barrier must
// follow before other threads read them).
template <int N> DSV3_DEV void cp_async_wait() { asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory"); }
DSV3_DEV void syncwarp() { __syncwarp(); }

#elif defined(DSV3_HOST)

// The emulator: each function is a rendezvous of the warp (host_emulator.h's warp_gather / warp_done).

// The calling thread's warp must be whole: 32 lanes present.
DSV3_DEV void need_whole_warp(const char* what) {
    if (dsv3_emu::warp_lanes() != 32) dsv3_emu::fail_here(what);
}

// ldmatrix: each lane's row address is checked (16-byte aligned, 16 bytes inside shared memory), then lane
// l reads its registers from the rows the ISA assigns it.
DSV3_DEV void ldmatrix(u32 (&r)[4], const void* row, bool trans) {
    need_whole_warp("ldmatrix with fewer than 32 lanes in the warp");
    if ((size_t)row % 16 != 0) dsv3_emu::fail_here("ldmatrix: a row address is not 16-byte aligned");
    if (!dsv3_emu::in_shared(row, 16)) dsv3_emu::fail_here("ldmatrix: a row address is not in shared memory");
    u32 words[2];
    memcpy(words, &row, sizeof row);
    const dsv3_emu::WarpOp op = trans ? dsv3_emu::WARP_LDMATRIX_TRANS : dsv3_emu::WARP_LDMATRIX;
    const dsv3_emu::WarpWords* lanes = dsv3_emu::warp_gather(op, words, 2);
    const u32 l = dsv3_lane();
    auto row_of = [&](u32 lane) {
        const u8* p;
        memcpy(&p, lanes[lane], sizeof p);
        return p;
    };
    for (u32 j = 0; j < 4; j++) {
        if (!trans) {
            memcpy(&r[j], row_of(8 * j + l / 4) + 4 * (l % 4), 4);
        } else {
            u16 lo, hi;
            memcpy(&lo, row_of(8 * j + 2 * (l % 4)) + 2 * (l / 4), 2);
            memcpy(&hi, row_of(8 * j + 2 * (l % 4) + 1) + 2 * (l / 4), 2);
            r[j] = (u32)lo | ((u32)hi << 16);
        }
    }
    dsv3_emu::warp_done(op);
}
DSV3_DEV void ldmatrix_x4(u32 (&r)[4], const void* row) { ldmatrix(r, row, false); }
DSV3_DEV void ldmatrix_x4_trans(u32 (&r)[4], const void* row) { ldmatrix(r, row, true); }

// Byte `byte` of row `row` of the warp's A tile, and of Bᵀ's row `n`, from the lanes' deposits (A's four
// registers in words 0..3, B's two in 4..5), by the register layout at the top of this file.
DSV3_DEV u32 a_byte(const dsv3_emu::WarpWords* lanes, u32 row, u32 byte) {
    const u32 lane = (row % 8) * 4 + (byte % 16) / 4, reg = row / 8 + 2 * (byte / 16);
    return (lanes[lane][reg] >> (8 * (byte % 4))) & 0xffu;
}
DSV3_DEV u32 b_byte(const dsv3_emu::WarpWords* lanes, u32 n, u32 byte) {
    const u32 lane = n * 4 + (byte % 16) / 4, reg = 4 + byte / 16;
    return (lanes[lane][reg] >> (8 * (byte % 4))) & 0xffu;
}

// d += a · b over the whole warp; E4M3 selects m16n8k32 e4m3 over m16n8k16 bf16. Each lane computes its own
// four slots, in the order documented at the top.
template <bool E4M3> DSV3_DEV void mma_emulated(FragC& d, const FragA& a, const FragB& b) {
    need_whole_warp("mma with fewer than 32 lanes in the warp");
    const u32 words[6] = {a.r[0], a.r[1], a.r[2], a.r[3], b.r[0], b.r[1]};
    const dsv3_emu::WarpOp op = E4M3 ? dsv3_emu::WARP_MMA_E4M3 : dsv3_emu::WARP_MMA_BF16;
    const dsv3_emu::WarpWords* lanes = dsv3_emu::warp_gather(op, words, 6);
    for (u32 i = 0; i < 4; i++) {
        const u32 row = acc_row(i), col = acc_col(i);
        float sum = d.v[i];
        for (u32 k = 0; k < 16 * (E4M3 ? 2 : 1); k++) {
            float x, y;
            if (E4M3) {
                x = to_f32(dsv3::e4m3fn{(u8)a_byte(lanes, row, k)});
                y = to_f32(dsv3::e4m3fn{(u8)b_byte(lanes, col, k)});
            } else {
                x = to_f32(dsv3::bf16{(u16)(a_byte(lanes, row, 2 * k) | a_byte(lanes, row, 2 * k + 1) << 8)});
                y = to_f32(dsv3::bf16{(u16)(b_byte(lanes, col, 2 * k) | b_byte(lanes, col, 2 * k + 1) << 8)});
            }
            sum += x * y;
        }
        d.v[i] = sum;
    }
    dsv3_emu::warp_done(op);
}
DSV3_DEV void mma_bf16(FragC& d, const FragA& a, const FragB& b) { mma_emulated<false>(d, a, b); }
DSV3_DEV void mma_e4m3(FragC& d, const FragA& a, const FragB& b) { mma_emulated<true>(d, a, b); }

DSV3_DEV void cp_async16(void* dst, const void* src) { dsv3_emu::cp_async16(dst, src); }
DSV3_DEV void cp_async_commit() { dsv3_emu::cp_async_commit(); }
template <int N> DSV3_DEV void cp_async_wait() { dsv3_emu::cp_async_wait(N); }
DSV3_DEV void syncwarp() { dsv3_emu::syncwarp(); }

#else
#error "mma.cuh: NVIDIA (DSV3_CUDA) or the emulator (DSV3_HOST) only"
#endif

// Two e4m3fn codes (the low 16 bits, lowest byte first) as a bf16 pair (the first in the low half). Exact:
// every e4m3fn value (subnormals, ±448, NaN) is a bf16 value.
DSV3_DEV u32 e4m3x2_to_bf16(u32 w) {
    u32 h[2];
    DSV3_UNROLL
    for (u32 i = 0; i < 2; i++) h[i] = from_f32<dsv3::bf16>(to_f32(dsv3::e4m3fn{(u8)(w >> (8 * i))})).bits;
    return h[0] | h[1] << 16;
}
// Four codes (one e4m3 A or B register) as bf16 pairs: codes 0, 1 in `lo`, 2, 3 in `hi`.
DSV3_DEV void e4m3x4_to_bf16(u32 w, u32& lo, u32& hi) {
    lo = e4m3x2_to_bf16(w & 0xffffu);
    hi = e4m3x2_to_bf16(w >> 16);
}

// A bf16 B fragment (m16n8k16) from e4m3fn codes, for bf16 activations × FP8 weights: `tile_t` points at
// Bᵀ's row 0 (8 rows n of 16 codes, `ld` bytes apart, 2-byte aligned), register r of lane 4g + t holds
// codes 2t, 2t + 1 + 8r of row g (load_b's layout in elements), decoded exactly (their scales apply
// outside the MMA). Two 2-byte loads per lane.
DSV3_DEV FragB load_b_e4m3_as_bf16(const void* tile_t, u64 ld) {
    const u8* p = static_cast<const u8*>(tile_t);
    const u32 g = dsv3_lane() / 4, t = dsv3_lane() % 4;
    FragB b;
    DSV3_UNROLL
    for (u32 r = 0; r < 2; r++) {
        b.r[r] = e4m3x2_to_bf16(*reinterpret_cast<const u16*>(p + g * ld + 2 * t + 8 * r));
    }
    return b;
}

// d += a · b for e4m3 fragments, as two bf16 mma (m16n8k16) on the codes decoded exactly to bf16: for
// targets with bf16 but not e4m3 mma.sync (sm_80, sm_86). Lane t's e4m3 A register holds k = 4t .. 4t + 3
// (+ 16 for registers 2, 3) of its row, where a bf16 A register holds k = 2t, 2t + 1 (+ 8 for registers
// 2, 3): so codes 0, 1 of a register go to bf16 register r and codes 2, 3 to r + 2, i.e. bf16 position
// 2t + i holds e4m3 position 4t + i and 8 + 2t + i holds 4t + 2 + i. B's registers are regrouped by the
// same map (codes 0, 1 to register 0, codes 2, 3 to register 1), so both operands see one permutation of
// K within each 16-wide half, and the dot products are the same sums (in another order).
DSV3_DEV void mma_e4m3_by_bf16(FragC& d, const FragA& a, const FragB& b) {
    DSV3_UNROLL
    for (u32 half = 0; half < 2; half++) {
        FragA x;
        FragB y;
        e4m3x4_to_bf16(a.r[2 * half], x.r[0], x.r[2]);
        e4m3x4_to_bf16(a.r[2 * half + 1], x.r[1], x.r[3]);
        e4m3x4_to_bf16(b.r[half], y.r[0], y.r[1]);
        mma_bf16(d, x, y);
    }
}

#if !DSV3_MMA_E4M3
DSV3_DEV void mma_e4m3(FragC& d, const FragA& a, const FragB& b) { mma_e4m3_by_bf16(d, a, b); }
#endif

}  // namespace mma
