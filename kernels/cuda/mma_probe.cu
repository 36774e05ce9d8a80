// The tile layer's layout probe: one warp runs mma.cuh's operations on small-integer matrices, for which
// every product and every sum is exact in f32, so a GPU and the emulator must write the same bits. The host
// (backends/gpu/src/probe.rs) derives what each lane must hold from the PTX ISA's and AMD's tables itself,
// not from the emulator. Launched as one block of one warp (32 threads; 64 on AMD).
//
// The operands reach shared memory through the warp tile's staging (NVIDIA: cp.async; each lane copies
// 16-byte pieces, one commit group, wait_group 0, then a barrier), so the probe covers that path too.
// NVIDIA only (mma.sync, ldmatrix), written:
//   pos[lane][slot] = {acc_row(slot), acc_col(slot)}, and pos[256] = whether e4m3 mma ran (DSV3_MMA_E4M3);
//   out[r][lane][slot], the accumulator slots of result r:
//     0  A · B, n 0..7: A by ldmatrix.x4, Bᵀ by ldmatrix.x4 (the first n-tile of the pair), C = 0
//     1  A · B, n 8..15: the second n-tile of the same ldmatrix
//     2  A · B + C, n 0..7: B from its k-major copy by ldmatrix.x4.trans, C[lane][slot] = lane · 4 + slot
//     3  A · B, n 0..7: both fragments loaded through registers from global memory (load_a / load_b)
//     4  A8 · B8 (e4m3, K = 32): A8 by ldmatrix.x4 from shared, B8ᵀ through registers from global
// Both vendors, the warp tile (16 × 16 of C, TILE_SLOTS slots a lane, 256 values in all):
//   tile_pos[lane][slot] = {tile_row(slot), tile_col(slot)}, and tile_pos[512] = whether gfx94x's FP8 MFMA
//   is compiled in (DSV3_MFMA_FP8);
//   tile_out[r][lane][slot]:
//     0  A · B, n 0..15 (tile_load_a, tile_load_b, tile_mma_bf16), C = 0
//     1  the same + C, C[lane][slot] = lane · TILE_SLOTS + slot
//     2  A8 · B8 (e4m3fn, K = 32; tile_mma_fp8), n 0..15
//     3  A · B8 with B8ᵀ's first 16 codes of each row decoded to bf16 (tile_load_b_fp8_as_bf16), n 0..15
//     4  AMD only: A8 · B8 as e4m3fnuz codes (K = 32; tile_mma_fp8: the FP8 MFMA on gfx94x, decoded on
//        gfx90a), n 0..15

struct Params {
    const dsv3::bf16* a;   // A [16][16]
    const dsv3::bf16* bt;  // Bᵀ [16 n][16 k]
    const dsv3::bf16* bk;  // the same B, k-major: [16 k][16 n]
    const u8* a8;          // A8 [16][32], e4m3fn codes
    const u8* bt8;         // B8ᵀ [16 n][32 k], e4m3fn codes (the NVIDIA part uses rows 0..7)
    const u8* a8z;         // the same A8, e4m3fnuz codes
    const u8* bt8z;        // the same B8ᵀ, e4m3fnuz codes
    i32* pos;              // [32][4][2] + 1
    float* out;            // [5][32][4]
    i32* tile_pos;         // [256][2] + 1
    float* tile_out;       // [5][256]
};

// A 16 × 32-byte tile, aligned for ldmatrix and cp.async.
struct alignas(16) Tile {
    u8 bytes[16 * 32];
};

DSV3_DEV void stage(Tile* dst, const void* src, u32 lane) {
    for (u32 piece = lane; piece < sizeof(Tile) / 16; piece += DSV3_WARP) {
        mma::stage16(dst->bytes + 16 * piece, static_cast<const u8*>(src) + 16 * piece);
    }
}

#if DSV3_WARP == 32
DSV3_DEV void store(const Params& p, u32 result, const mma::FragC& d, u32 lane) {
    for (u32 i = 0; i < 4; i++) p.out[(result * 32 + lane) * 4 + i] = d.v[i];
}

// mma.sync, ldmatrix and the register loads, as the PTX ISA has them.
DSV3_DEV void probe_nvidia(const Params& p, const Tile& sa, const Tile& sbt, const Tile& sbk, const Tile& sa8) {
    const u32 lane = dsv3_lane();

    for (u32 i = 0; i < 4; i++) {
        p.pos[(lane * 4 + i) * 2] = (i32)mma::acc_row(i);
        p.pos[(lane * 4 + i) * 2 + 1] = (i32)mma::acc_col(i);
    }
    if (lane == 0) p.pos[256] = DSV3_MMA_E4M3;

    // Rows are 32 bytes: lane l points at A's row l % 16, byte 16·(l / 16); at Bᵀ's row (l % 8) + 8·(l / 16),
    // byte 16·((l / 8) % 2); at the k-major B's row (l % 8) + 8·((l / 8) % 2), byte 16·(l / 16).
    mma::FragA a;
    mma::ldmatrix_x4(a.r, sa.bytes + 32 * (lane % 16) + 16 * (lane / 16));
    u32 bt[4];
    mma::ldmatrix_x4(bt, sbt.bytes + 32 * (lane % 8 + 8 * (lane / 16)) + 16 * ((lane / 8) % 2));
    u32 bk[4];
    mma::ldmatrix_x4_trans(bk, sbk.bytes + 32 * (lane % 8 + 8 * ((lane / 8) % 2)) + 16 * (lane / 16));

    for (u32 tile = 0; tile < 2; tile++) {
        mma::FragB b = {{bt[2 * tile], bt[2 * tile + 1]}};
        mma::FragC d = mma::zero_c();
        mma::mma_bf16(d, a, b);
        store(p, tile, d, lane);
    }
    {
        mma::FragB b = {{bk[0], bk[1]}};
        mma::FragC d;
        for (u32 i = 0; i < 4; i++) d.v[i] = (float)(lane * 4 + i);
        mma::mma_bf16(d, a, b);
        store(p, 2, d, lane);
    }
    {
        mma::FragC d = mma::zero_c();
        mma::mma_bf16(d, mma::load_a(p.a, 32), mma::load_b(p.bt, 32));
        store(p, 3, d, lane);
    }
#if DSV3_MMA_E4M3
    {
        mma::FragA a8;
        mma::ldmatrix_x4(a8.r, sa8.bytes + 32 * (lane % 16) + 16 * (lane / 16));
        mma::FragC d = mma::zero_c();
        mma::mma_e4m3(d, a8, mma::load_b(p.bt8, 32));
        store(p, 4, d, lane);
    }
#endif
}
#endif

DSV3_DEV void store_tile(const Params& p, u32 result, const mma::TileC& d, u32 lane) {
    for (u32 s = 0; s < mma::TILE_SLOTS; s++) p.tile_out[result * 256 + lane * mma::TILE_SLOTS + s] = d.v[s];
}

DSV3_KERNEL void mma_probe(const Params p) {
    DSV3_SHARED Tile sa, sbt, sbk, sa8, sbt8, sa8z, sbt8z;
    const u32 lane = dsv3_lane();
    stage(&sa, p.a, lane);
    stage(&sbt, p.bt, lane);
    stage(&sbk, p.bk, lane);
    stage(&sa8, p.a8, lane);
    stage(&sbt8, p.bt8, lane);
    stage(&sa8z, p.a8z, lane);
    stage(&sbt8z, p.bt8z, lane);
    mma::stage_commit();
    mma::stage_wait<0>();
    dsv3_sync();

#if DSV3_WARP == 32
    probe_nvidia(p, sa, sbt, sbk, sa8);
#endif

    for (u32 s = 0; s < mma::TILE_SLOTS; s++) {
        p.tile_pos[(lane * mma::TILE_SLOTS + s) * 2] = (i32)mma::tile_row(s);
        p.tile_pos[(lane * mma::TILE_SLOTS + s) * 2 + 1] = (i32)mma::tile_col(s);
    }
    if (lane == 0) p.tile_pos[512] = DSV3_MFMA_FP8;
    const mma::TileA a = mma::tile_load_a(sa.bytes, 32);
    const mma::TileB b = mma::tile_load_b(sbt.bytes, 32);
    mma::TileC d;
    for (u32 s = 0; s < mma::TILE_SLOTS; s++) d.v[s] = 0.0f;
    mma::tile_mma_bf16(d, a, b);
    store_tile(p, 0, d, lane);
    for (u32 s = 0; s < mma::TILE_SLOTS; s++) d.v[s] = (float)(lane * mma::TILE_SLOTS + s);
    mma::tile_mma_bf16(d, a, b);
    store_tile(p, 1, d, lane);
    for (u32 s = 0; s < mma::TILE_SLOTS; s++) d.v[s] = 0.0f;
    mma::tile_mma_fp8(d, mma::tile_load_a(sa8.bytes, 32), mma::tile_load_b(sbt8.bytes, 32), dsv3::e4m3fn{});
    store_tile(p, 2, d, lane);
    for (u32 s = 0; s < mma::TILE_SLOTS; s++) d.v[s] = 0.0f;
    mma::tile_mma_bf16(d, a, mma::tile_load_b_fp8_as_bf16(sbt8.bytes, 32, dsv3::e4m3fn{}));
    store_tile(p, 3, d, lane);
#if DSV3_WARP == 64
    for (u32 s = 0; s < mma::TILE_SLOTS; s++) d.v[s] = 0.0f;
    mma::tile_mma_fp8(d, mma::tile_load_a(sa8z.bytes, 32), mma::tile_load_b(sbt8z.bytes, 32), dsv3::e4m3fnuz{});
    store_tile(p, 4, d, lane);
#endif
}
