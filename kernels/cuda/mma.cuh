// mma.cuh: the tile layer, warp-level matrix multiply-accumulate on NVIDIA tensor cores (mma.sync), with
// the shared-memory loads that feed it (ldmatrix) and the asynchronous global → shared copies that feed
// those (cp.async), and on AMD CDNA matrix cores (MFMA, below). Under DSV3_HOST the same functions are executed exactly by the emulator, per the PTX
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
// A whole warp (32 lanes, all present; on AMD 64 for MFMA) must call mma, ldmatrix and syncwarp together; the
// emulator reports lanes that do not, and ldmatrix / cp.async addresses that are misaligned or outside shared memory.
//
// AMD CDNA (gfx90a, gfx94x; DSV3_WARP 64): v_mfma_f32_16x16x16bf16_1k (gfx94x's assembler calls it
// v_mfma_f32_16x16x16_bf16), through clang's __builtin_amdgcn_mfma_f32_16x16x16bf16_1k. A is 16 × 16 (M × K),
// B 16 × 16 (K × N), C / D 16 × 16 f32; for lane l of the 64 (q = l / 16):
//   A  lane l holds A[l % 16][4q .. 4q + 3]   (two registers, two bf16 each, lower k in the low half)
//   B  lane l holds B[4q .. 4q + 3][l % 16]   (so, with dsv3's B[N, K]: Bᵀ row l % 16, k 4q .. 4q + 3)
//   C  slot i is row 4q + i, column l % 16
// Sources: AMD's "AMD matrix cores" lab notes (ROCm blogs; the 16x16x16 example and its figures) and the
// AMD Matrix Instruction Calculator's tables for v_mfma_f32_16x16x16bf16_1k (CDNA2) / _bf16 (CDNA3), which
// agree with composable_kernel's xdlops description of the instruction (16 threads per block, 4 input
// blocks of k, groups of 4 output rows). `dsv3 probe` checks them against a GPU.
// FP8 (gfx94x only, DSV3_MFMA_FP8): v_mfma_f32_16x16x32_fp8_fp8, through clang's
// __builtin_amdgcn_mfma_f32_16x16x32_fp8_fp8(long a, long b, float4 c, cbsz, abid, blgp) (LLVM 15 knows it for
// gfx940). A is 16 × 32, B 32 × 16, C / D 16 × 16 f32; for lane l of the 64 (q = l / 16):
//   A  lane l holds A[l % 16][8q .. 8q + 7]   (two registers, four codes each, lower k in the lower byte)
//   B  lane l holds B[8q .. 8q + 7][l % 16]   (Bᵀ row l % 16, k 8q .. 8q + 7)
//   C  slot i is row 4q + i, column l % 16    (the bf16 instruction's accumulator)
// — the bf16 instruction's layout in bytes, 8 a lane. Sources: the AMD Matrix Instruction Calculator's
// table for v_mfma_f32_16x16x32_fp8_fp8 (CDNA3) and composable_kernel's xdlops description of the
// instruction (mfma_f32_16x16x32f8f8: 16 threads per block, 4 input blocks of k_per_blk = 8, groups of 4
// output rows, one group per block). On gfx94x its codes are e4m3fnuz (CDNA3's FP8: bias 8, max 240, 0x80
// the only NaN, no −0), not DeepSeek's e4m3fn (bias 7, max 448, NaN 0x7f / 0xff, 0x80 = −0): the same bits
// are half the value except 0x80 (fn −0, fnuz NaN) and 0x7f / 0xff (fn NaN, fnuz ±240). On MI300 dsv3's
// loader converts weights to e4m3fnuz (dsv3_core::fnuz) and W8A8 quantizes activations to it, so W8A8 there
// is e4m3fnuz × e4m3fnuz, which tile_mma_fp8 gives the instruction as it is. e4m3fn products on AMD, and
// e4m3fnuz products on gfx90a (no FP8 MFMA), run as two bf16 MFMA on the codes decoded exactly (every
// e4m3fn and e4m3fnuz value is a bf16 value); e4m3fn on the FP8 MFMA would need 0x80 → 0x00 and 0x7f /
// 0xff → 0x80 rewritten per code and every product scaled by 4 at promotion, not done. (gfx950's instruction
// of the same name takes OCP e4m3fn; gfx950 is not on the layer.) Not confirmed on hardware, which dsv3 has
// never run on: that a 0x80 code gives a NaN output, as the ISA's NaN would and the emulator does;
// `dsv3 probe --backend hip` checks the layout on a gfx94x (hiprtc 5.2, this machine's, cannot even
// compile gfx94x; hipcc with LLVM 15 compiles gfx940).
// gfx90a / gfx94x have no ldmatrix and no cp.async: fragments are read from shared memory (LDS) by each lane
// (ds_read_b64), and global → LDS copies go through registers (stage16), finished when they return. gfx1100
// and other RDNA parts (wave32, WMMA) are not on the layer: they keep the SIMT kernels.
// The emulator runs MFMA at DSV3_WARP 64 as a rendezvous of all 64 lanes, adding each slot's products in
// ascending k after c, as for mma.sync; it executes the FP8 instruction when the variant is built for a
// gfx94x-class emulator (DSV3_HOST_MFMA_FP8: Target::Host's mfma_fp8, hip-emu), and stands for gfx90a,
// which has none, otherwise.
//
// The warp tile: the vendor-neutral API kernels use (gemm_mma.cu, attention_mma.cu), so that they compile
// for both with no #if. A TileC is a 16 × 16 tile of C with TILE_SLOTS f32 per lane (NVIDIA: 8, two m16n8
// mma; AMD: 4), `tile_row(s)` / `tile_col(s)` place slot s; tile_load_a / tile_load_b read a 16-row × 32-byte
// tile of A / Bᵀ from shared memory (16 bf16 or 32 FP8 codes of K), tile_load_b_fp8_as_bf16 16 rows × 16 FP8
// codes of Bᵀ decoded to a bf16 fragment, tile_load_b_trans B from a K-major 16 × 16 bf16 tile (attention's
// V; with tile_zero, at the end of this file); tile_mma_bf16 / tile_mma_fp8 multiply-accumulate (the FP8
// format, e4m3fn or on AMD e4m3fnuz, given by the type of the last argument: `tile_mma_fp8(d, a, b, a_t{})`,
// so a kernel needs no #if per format); stage16 /
// stage_commit / stage_wait<N> copy 16 bytes global → shared (NVIDIA: cp.async; AMD: through registers).
// The fragment structs differ in size per vendor, so kernels hold them only through these functions.
//
// wgmma / TMA (sm_90a, the next step): warpgroup-wide (128 threads) m64nNk16 with A and B read from shared
// memory through descriptors (swizzled layouts), asynchronous with wgmma.fence / commit_group / wait_group,
// and TMA bulk tensor copies with mbarriers instead of cp.async. The accumulator layout per warp is the
// m16n8 one repeated along N, so acc_row / acc_col extend to it; the emulator would add descriptor decoding
// and the mbarrier's transaction counts.

#if !((DSV3_WARP == 32 && (defined(DSV3_CUDA) || defined(DSV3_HOST))) || \
      (DSV3_WARP == 64 && (defined(DSV3_HIP) || defined(DSV3_HOST))))
#error "mma.cuh: NVIDIA (32-lane warps) or AMD CDNA (64-lane wavefronts) only; wave32 AMD has no tile layer"
#endif

// Whether gfx94x's FP8 MFMA (v_mfma_f32_16x16x32_fp8_fp8 on e4m3fnuz) exists: hipcc / hiprtc define the
// architecture's macro for the chip compiled for (so one source serves gfx90a and gfx94x), the emulator is
// told by its target (kernels.rs). Runtime-side twin: Target::mfma_fp8_fnuz.
#if (defined(DSV3_HIP) && (defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__))) || \
    (defined(DSV3_HOST) && defined(DSV3_HOST_MFMA_FP8) && DSV3_WARP == 64)
#define DSV3_MFMA_FP8 1
#else
#define DSV3_MFMA_FP8 0
#endif

namespace mma {

// Two FP8 codes of format T (e4m3fn or e4m3fnuz; the low 16 bits, lowest byte first) as a bf16 pair (the
// first in the low half). Exact: every e4m3fn and e4m3fnuz value (subnormals, ±448 / ±240) is a bf16 value,
// so its f32's low half is zero and the high half is the bf16 (NaN: 0x7fc0, what from_f32 would give); no
// rounding code (fewer registers: gfx90a's W8A8 variant spilled SGPRs with it).
template <class T> DSV3_DEV u32 fp8x2_to_bf16(u32 w) {
    u32 h[2];
    DSV3_UNROLL
    for (u32 i = 0; i < 2; i++) h[i] = f2u(to_f32(T{(u8)(w >> (8 * i))})) >> 16;
    return h[0] | h[1] << 16;
}
// Four codes (one FP8 A or B register) as bf16 pairs: codes 0, 1 in `lo`, 2, 3 in `hi`.
template <class T> DSV3_DEV void fp8x4_to_bf16(u32 w, u32& lo, u32& hi) {
    lo = fp8x2_to_bf16<T>(w & 0xffffu);
    hi = fp8x2_to_bf16<T>(w >> 16);
}

}  // namespace mma

#if DSV3_WARP == 32  // NVIDIA

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

// A bf16 B fragment (m16n8k16) from FP8 codes of format T, for bf16 activations × FP8 weights: `tile_t`
// points at Bᵀ's row 0 (8 rows n of 16 codes, `ld` bytes apart, 2-byte aligned), register r of lane 4g + t
// holds codes 2t, 2t + 1 + 8r of row g (load_b's layout in elements), decoded exactly (their scales apply
// outside the MMA). Two 2-byte loads per lane.
template <class T> DSV3_DEV FragB load_b_fp8_as_bf16(const void* tile_t, u64 ld) {
    const u8* p = static_cast<const u8*>(tile_t);
    const u32 g = dsv3_lane() / 4, t = dsv3_lane() % 4;
    FragB b;
    DSV3_UNROLL
    for (u32 r = 0; r < 2; r++) {
        b.r[r] = fp8x2_to_bf16<T>(*reinterpret_cast<const u16*>(p + g * ld + 2 * t + 8 * r));
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
        fp8x4_to_bf16<dsv3::e4m3fn>(a.r[2 * half], x.r[0], x.r[2]);
        fp8x4_to_bf16<dsv3::e4m3fn>(a.r[2 * half + 1], x.r[1], x.r[3]);
        fp8x4_to_bf16<dsv3::e4m3fn>(b.r[half], y.r[0], y.r[1]);
        mma_bf16(d, x, y);
    }
}

#if !DSV3_MMA_E4M3
DSV3_DEV void mma_e4m3(FragC& d, const FragA& a, const FragB& b) { mma_e4m3_by_bf16(d, a, b); }
#endif

// ---- The warp tile (NVIDIA) ----------------------------------------------------------------------------
// A 16 × 16 tile of C is two m16n8 mma side by side: B's two n-tiles come from one ldmatrix.x4. Slot s of
// the tile is slot s % 4 of n-tile s / 4.

const u32 TILE_SLOTS = 8;
struct TileA {
    FragA f;
};
struct TileB {
    FragB f[2];
};
struct TileC {
    float v[TILE_SLOTS];
};

DSV3_DEV u32 tile_row(u32 s) { return acc_row(s % 4); }
DSV3_DEV u32 tile_col(u32 s) { return 8 * (s / 4) + acc_col(s % 4); }

// A: lane l points at row l % 16, byte 16·(l / 16); Bᵀ: lane l at row (l % 8) + 8·(l / 16), byte
// 16·((l / 8) % 2) (see the top of this file). Rows 16-byte aligned, in shared memory.
DSV3_DEV TileA tile_load_a(const u8* tile, u32 pitch) {
    const u32 l = dsv3_lane();
    TileA a;
    ldmatrix_x4(a.f.r, tile + (l % 16) * pitch + 16 * (l / 16));
    return a;
}
DSV3_DEV TileB tile_load_b(const u8* tile_t, u32 pitch) {
    const u32 l = dsv3_lane();
    u32 r[4];
    ldmatrix_x4(r, tile_t + (l % 8 + 8 * (l / 16)) * pitch + 16 * ((l / 8) % 2));
    TileB b;
    b.f[0] = {{r[0], r[1]}};
    b.f[1] = {{r[2], r[3]}};
    return b;
}
template <class T> DSV3_DEV TileB tile_load_b_fp8_as_bf16(const u8* tile_t, u32 pitch, T) {
    TileB b;
    DSV3_UNROLL
    for (u32 j = 0; j < 2; j++) b.f[j] = load_b_fp8_as_bf16<T>(tile_t + 8 * j * pitch, pitch);
    return b;
}

template <bool E4M3> DSV3_DEV void tile_mma(TileC& d, const TileA& a, const TileB& b) {
    DSV3_UNROLL
    for (u32 j = 0; j < 2; j++) {
        FragC c = {{d.v[4 * j], d.v[4 * j + 1], d.v[4 * j + 2], d.v[4 * j + 3]}};
        if (E4M3) {
            mma_e4m3(c, a.f, b.f[j]);
        } else {
            mma_bf16(c, a.f, b.f[j]);
        }
        DSV3_UNROLL
        for (u32 i = 0; i < 4; i++) d.v[4 * j + i] = c.v[i];
    }
}
DSV3_DEV void tile_mma_bf16(TileC& d, const TileA& a, const TileB& b) { tile_mma<false>(d, a, b); }
// e4m3fn only: NVIDIA has no e4m3fnuz (ops/gemm.rs never gives it one).
DSV3_DEV void tile_mma_fp8(TileC& d, const TileA& a, const TileB& b, dsv3::e4m3fn) { tile_mma<true>(d, a, b); }

// Staging global → shared memory: cp.async, 16-byte aligned both sides.
DSV3_DEV void stage16(void* dst, const void* src) { cp_async16(dst, src); }
DSV3_DEV void stage_commit() { cp_async_commit(); }
template <int N> DSV3_DEV void stage_wait() { cp_async_wait<N>(); }

}  // namespace mma

#else  // DSV3_WARP == 64: AMD CDNA

namespace mma {

// ---- MFMA (AMD) ----------------------------------------------------------------------------------------
// One lane's operand of a 16 × 16 MFMA, 8 bytes: four bf16 of v_mfma_f32_16x16x16bf16_1k (k ascending, two
// per register, the lower k in the low half) or eight FP8 codes of v_mfma_f32_16x16x32_fp8_fp8 (k ascending
// from the lowest byte of r[0]); the accumulator: four f32.
struct MfmaAB {
    u32 r[2];
};
struct MfmaC {
    float v[4];
};

// Row and column of accumulator slot i (0..3) of the calling lane within the 16 × 16 tile.
DSV3_DEV u32 mfma_row(u32 i) { return 4 * (dsv3_lane() / 16) + i; }
DSV3_DEV u32 mfma_col(u32) { return dsv3_lane() % 16; }

#if defined(DSV3_HIP)

typedef short dsv3_short4 __attribute__((ext_vector_type(4)));
typedef float dsv3_float4 __attribute__((ext_vector_type(4)));

// d += a · b (cbsz, abid, blgp 0: no broadcast, no lane-group permutation).
DSV3_DEV void mfma_bf16(MfmaC& d, const MfmaAB& a, const MfmaAB& b) {
    dsv3_short4 x, y;
    __builtin_memcpy(&x, a.r, 8);
    __builtin_memcpy(&y, b.r, 8);
    dsv3_float4 c = {d.v[0], d.v[1], d.v[2], d.v[3]};
    c = __builtin_amdgcn_mfma_f32_16x16x16bf16_1k(x, y, c, 0, 0, 0);
    DSV3_UNROLL
    for (u32 i = 0; i < 4; i++) d.v[i] = c[i];
}
#if DSV3_MFMA_FP8
// d += a · b on e4m3fnuz codes, K = 32 (the builtin takes each lane's 8 codes as one 64-bit integer).
DSV3_DEV void mfma_fp8_fnuz(MfmaC& d, const MfmaAB& a, const MfmaAB& b) {
    long x, y;
    __builtin_memcpy(&x, a.r, 8);
    __builtin_memcpy(&y, b.r, 8);
    dsv3_float4 c = {d.v[0], d.v[1], d.v[2], d.v[3]};
    c = __builtin_amdgcn_mfma_f32_16x16x32_fp8_fp8(x, y, c, 0, 0, 0);
    DSV3_UNROLL
    for (u32 i = 0; i < 4; i++) d.v[i] = c[i];
}
#endif

#elif defined(DSV3_HOST)

// The emulator: a rendezvous of the whole wavefront (host_emulator.h's warp_gather / warp_done).
DSV3_DEV void need_whole_wave(const char* what) {
    if (dsv3_emu::warp_lanes() != 64) dsv3_emu::fail_here(what);
}

// Element k (0..15) of A's row `row` and of B's column `col`, from the lanes' deposits (A's two registers
// in words 0, 1, B's in 2, 3), by the layout at the top of this file: lane row + 16·(k / 4), register
// (k % 4) / 2, half k % 2 (and the same with col for B).
DSV3_DEV float mfma_a(const dsv3_emu::WarpWords* lanes, u32 row, u32 k) {
    const u32 w = lanes[row + 16 * (k / 4)][(k % 4) / 2];
    return to_f32(dsv3::bf16{(u16)(w >> (16 * (k % 2)))});
}
DSV3_DEV float mfma_b(const dsv3_emu::WarpWords* lanes, u32 col, u32 k) {
    const u32 w = lanes[col + 16 * (k / 4)][2 + (k % 4) / 2];
    return to_f32(dsv3::bf16{(u16)(w >> (16 * (k % 2)))});
}

// Code k (0..31) of A's row `row` and of B's column `col` for the FP8 MFMA, from the same deposits, by the
// FP8 layout at the top of this file: lane row + 16·(k / 8), register (k % 8) / 4, byte k % 4; decoded as
// e4m3fnuz, gfx94x's FP8 (dsv3.cuh's to_f32: bias 8, 0x80 NaN).
DSV3_DEV float mfma_fp8_a(const dsv3_emu::WarpWords* lanes, u32 row, u32 k) {
    return to_f32(dsv3::e4m3fnuz{(u8)(lanes[row + 16 * (k / 8)][(k % 8) / 4] >> (8 * (k % 4)))});
}
DSV3_DEV float mfma_fp8_b(const dsv3_emu::WarpWords* lanes, u32 col, u32 k) {
    return to_f32(dsv3::e4m3fnuz{(u8)(lanes[col + 16 * (k / 8)][2 + (k % 8) / 4] >> (8 * (k % 4)))});
}

// d += a · b over the whole wavefront, bf16 (K = 16) or FP8 (K = 32); each lane computes its four slots,
// c + Σ a·b in ascending k.
template <bool FP8> DSV3_DEV void mfma_emulated(MfmaC& d, const MfmaAB& a, const MfmaAB& b) {
    need_whole_wave("mfma with fewer than 64 lanes in the wavefront");
    const u32 words[4] = {a.r[0], a.r[1], b.r[0], b.r[1]};
    const dsv3_emu::WarpOp op = FP8 ? dsv3_emu::WARP_MFMA_FP8 : dsv3_emu::WARP_MFMA_BF16;
    const dsv3_emu::WarpWords* lanes = dsv3_emu::warp_gather(op, words, 4);
    for (u32 i = 0; i < 4; i++) {
        const u32 row = mfma_row(i), col = mfma_col(i);
        float sum = d.v[i];
        for (u32 k = 0; k < (FP8 ? 32u : 16u); k++) {
            sum += FP8 ? mfma_fp8_a(lanes, row, k) * mfma_fp8_b(lanes, col, k)
                       : mfma_a(lanes, row, k) * mfma_b(lanes, col, k);
        }
        d.v[i] = sum;
    }
    dsv3_emu::warp_done(op);
}
DSV3_DEV void mfma_bf16(MfmaC& d, const MfmaAB& a, const MfmaAB& b) { mfma_emulated<false>(d, a, b); }
#if DSV3_MFMA_FP8
DSV3_DEV void mfma_fp8_fnuz(MfmaC& d, const MfmaAB& a, const MfmaAB& b) { mfma_emulated<true>(d, a, b); }
#endif

#endif

// ---- The warp tile (AMD) -------------------------------------------------------------------------------
// A 16 × 16 tile of C is one MFMA 16x16x16 (bf16), one MFMA 16x16x32 FP8 (e4m3fnuz on gfx94x) or two bf16
// ones (other FP8: decoded). Lane l holds 8 bytes of A's row l % 16 and of Bᵀ's row l % 16, bytes
// 8·(l / 16) .. +7: bf16 k = 4·(l / 16) .. +3 and FP8 k = 8·(l / 16) .. +7, which are the instructions'
// layouts; decoded, codes 0..3 go to one bf16 MFMA and 4..7 to the other (A and B permuted alike, so the
// two MFMA add the same 32 products: see tile_mma_decoded).

const u32 TILE_SLOTS = 4;
struct TileA {
    u32 r[2];
};
typedef TileA TileB;
struct TileC {
    float v[TILE_SLOTS];
};

DSV3_DEV u32 tile_row(u32 s) { return mfma_row(s); }
DSV3_DEV u32 tile_col(u32 s) { return mfma_col(s); }

// No ldmatrix on AMD: each lane reads its 8 bytes (ds_read_b64; rows and `pitch` 8-byte aligned).
DSV3_DEV TileA tile_load_a(const u8* tile, u32 pitch) {
    const u32 l = dsv3_lane();
    const u8* p = tile + (l % 16) * pitch + 8 * (l / 16);
    TileA a;
    a.r[0] = reinterpret_cast<const u32*>(p)[0];
    a.r[1] = reinterpret_cast<const u32*>(p)[1];
    return a;
}
DSV3_DEV TileB tile_load_b(const u8* tile_t, u32 pitch) { return tile_load_a(tile_t, pitch); }
// Bᵀ as 16 rows of 16 FP8 codes of format T for bf16 A: lane l's four codes 4·(l / 16) .. +3 of row l % 16
// (one 4-byte read; 4-byte aligned), decoded exactly to MFMA's bf16 operand.
template <class T> DSV3_DEV TileB tile_load_b_fp8_as_bf16(const u8* tile_t, u32 pitch, T) {
    const u32 l = dsv3_lane();
    TileB b;
    fp8x4_to_bf16<T>(*reinterpret_cast<const u32*>(tile_t + (l % 16) * pitch + 4 * (l / 16)), b.r[0], b.r[1]);
    return b;
}

DSV3_DEV void tile_mma_bf16(TileC& d, const TileA& a, const TileB& b) {
    MfmaC c = {{d.v[0], d.v[1], d.v[2], d.v[3]}};
    mfma_bf16(c, MfmaAB{{a.r[0], a.r[1]}}, MfmaAB{{b.r[0], b.r[1]}});
    DSV3_UNROLL
    for (u32 i = 0; i < 4; i++) d.v[i] = c.v[i];
}
// 32 FP8 codes of format T of K as two bf16 MFMA on the codes decoded exactly: register h (codes 4h .. 4h + 3,
// k = 8·(l / 16) + 4h + j) of every lane makes the MFMA's k = 4·(l / 16) + j.
template <class T> DSV3_DEV void tile_mma_decoded(TileC& d, const TileA& a, const TileB& b) {
    MfmaC c = {{d.v[0], d.v[1], d.v[2], d.v[3]}};
    DSV3_UNROLL
    for (u32 h = 0; h < 2; h++) {
        MfmaAB x, y;
        fp8x4_to_bf16<T>(a.r[h], x.r[0], x.r[1]);
        fp8x4_to_bf16<T>(b.r[h], y.r[0], y.r[1]);
        mfma_bf16(c, x, y);
    }
    DSV3_UNROLL
    for (u32 i = 0; i < 4; i++) d.v[i] = c.v[i];
}
// e4m3fn: decoded on every AMD chip (the FP8 MFMA takes e4m3fnuz on gfx94x: see the top of this file).
DSV3_DEV void tile_mma_fp8(TileC& d, const TileA& a, const TileB& b, dsv3::e4m3fn) {
    tile_mma_decoded<dsv3::e4m3fn>(d, a, b);
}
// e4m3fnuz: gfx94x's FP8 MFMA on the codes as they are (one instruction for the 32 products); decoded on
// gfx90a.
DSV3_DEV void tile_mma_fp8(TileC& d, const TileA& a, const TileB& b, dsv3::e4m3fnuz) {
#if DSV3_MFMA_FP8
    MfmaC c = {{d.v[0], d.v[1], d.v[2], d.v[3]}};
    mfma_fp8_fnuz(c, MfmaAB{{a.r[0], a.r[1]}}, MfmaAB{{b.r[0], b.r[1]}});
    DSV3_UNROLL
    for (u32 i = 0; i < 4; i++) d.v[i] = c.v[i];
#else
    tile_mma_decoded<dsv3::e4m3fnuz>(d, a, b);
#endif
}

// Staging global → shared memory: no cp.async on gfx90a / gfx94x (gfx94x's buffer_load ... lds moves 4
// bytes a lane and is not exposed by our compilers), so a plain 16-byte copy through registers, finished
// when it returns; commit and wait have nothing to do.
struct alignas(16) Bytes16 {
    u32 w[4];
};
DSV3_DEV void stage16(void* dst, const void* src) {
    *static_cast<Bytes16*>(dst) = *static_cast<const Bytes16*>(src);
}
DSV3_DEV void stage_commit() {}
template <int N> DSV3_DEV void stage_wait() {}

}  // namespace mma

#endif

// ---- Tile additions for attention (attention_mma.cu) ---------------------------------------------------
// P·V multiplies by V stored K-major (cache rows are keys, the product's k; columns are the output's n), the
// transpose of tile_load_b's Bᵀ tile, and starts its accumulators at zero.

namespace mma {

DSV3_DEV TileC tile_zero() {
    TileC c;
    DSV3_UNROLL
    for (u32 s = 0; s < TILE_SLOTS; s++) c.v[s] = 0.0f;
    return c;
}

// The B operand of a 16 (k) × 16 (n) bf16 tile stored row-major by k: `tile` points at row k = 0, `pitch`
// bytes between rows (tile_load_b's Bᵀ tile, transposed by the load).
#if DSV3_WARP == 32
// ldmatrix.x4 .trans: matrix j = l / 8 is rows k = 8·(j % 2) .. +7 of columns 8·(j / 2) .. +7, lane l pointing
// at its row l % 8; register j of lane 4g + t gets k = 2t, 2t + 1 of column g of matrix j, an m16n8k16 B
// register (k = 2t, 2t + 1, + 8 for register 1): matrices 0, 1 make n-tile 0, matrices 2, 3 n-tile 1.
// Rows 16-byte aligned, in shared memory.
DSV3_DEV TileB tile_load_b_trans(const u8* tile, u32 pitch) {
    const u32 l = dsv3_lane();
    u32 r[4];
    ldmatrix_x4_trans(r, tile + (8 * ((l / 8) % 2) + l % 8) * pitch + 16 * (l / 16));
    TileB b;
    b.f[0] = {{r[0], r[1]}};
    b.f[1] = {{r[2], r[3]}};
    return b;
}
#else
// MFMA's B: lane l holds B[4q .. 4q + 3][l % 16] (q = l / 16), so four 2-byte reads down column l % 16
// (ds_read_u16; rows and `pitch` 2-byte aligned), packed lower k in the low half.
DSV3_DEV TileB tile_load_b_trans(const u8* tile, u32 pitch) {
    const u32 l = dsv3_lane();
    const u8* p = tile + 4 * (l / 16) * pitch + 2 * (l % 16);
    u32 e[4];
    DSV3_UNROLL
    for (u32 j = 0; j < 4; j++) e[j] = *reinterpret_cast<const u16*>(p + j * pitch);
    TileB b;
    b.r[0] = e[0] | e[1] << 16;
    b.r[1] = e[2] | e[3] << 16;
    return b;
}
#endif

}  // namespace mma
