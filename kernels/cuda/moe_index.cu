// moe_dispatch, pass 1 of 3 (then moe_offsets, moe_gather): the stable counting sort of slots by expert
// (slot s = t·k + j holds expert ids[s]). Each block takes blockDim.x consecutive slots, one per thread:
// it counts them per expert into its row of `counts` [blocks, E], and gives each slot its rank among the
// block's earlier slots of the same expert — its place within the block's run of that expert, so that
// slots of an expert keep slot order. Integers only.
// A slot whose id is outside 0..E is reported, counted nowhere and given no rank (moe_gather skips it).

#define MAX_EXPERTS 4096
// Most threads per block (sizes the block's copy of its slots' ids).
#define MAX_THREADS 1024

struct Params {
    const i32* ids;  // [S]
    u32* counts;     // [blocks, E]
    i32* rank;       // [S]
    u64 slots, e;
    u32* err;
    u64 site;
};

DSV3_KERNEL void moe_index(const Params p) {
    DSV3_SHARED u32 hist[MAX_EXPERTS];
    DSV3_SHARED i32 block_ids[MAX_THREADS];

    const u32 tid = threadIdx.x, nt = blockDim.x, e_n = (u32)p.e;
    const u64 s = (u64)blockIdx.x * nt + tid;
    for (u32 e = tid; e < e_n; e += nt) hist[e] = 0;
    i32 id = -1;
    if (s < p.slots) {
        id = p.ids[s];
        if (id < 0 || (u64)id >= p.e) {
            report(p.err, (u32)p.site, (u32)s, (u32)id);
            id = -1;
        }
    }
    block_ids[tid] = id;
    dsv3_sync();
    if (id >= 0) {
        atomicAdd(&hist[id], 1u);
        i32 r = 0;
        // Every lane of a warp reads the same element at once (a broadcast).
        for (u32 j = 0; j < tid; j++) r += block_ids[j] == id;
        p.rank[s] = r;
    }
    dsv3_sync();
    u32* row = p.counts + (u64)blockIdx.x * p.e;
    for (u32 e = tid; e < e_n; e += nt) row[e] = hist[e];
}
