// moe_dispatch, pass 2 of 3, one block (launched with 1024 threads): thread e walks expert e's column of
// `counts` [blocks, E] from moe_index and replaces each count by the number of e's slots in the blocks
// before it (so a slot's row within expert e's range is that prefix plus its rank in its block); the
// experts' totals become `offsets` [E + 1] by an exclusive scan in expert order: each thread sums a
// contiguous run of experts, a Hillis–Steele scan runs over the threads' sums in shared memory, and each
// thread writes its run's offsets. Integers only; offsets[E] is the number of slots with a valid id.

#define MAX_EXPERTS 4096
#define MAX_THREADS 1024

struct Params {
    u32* counts;   // [blocks, E]: counts in, prefixes out
    i32* offsets;  // [E + 1]
    u64 blocks, e;
};

DSV3_KERNEL void moe_offsets(const Params p) {
    DSV3_SHARED u32 total[MAX_EXPERTS];
    DSV3_SHARED u32 scan[MAX_THREADS];

    const u32 tid = threadIdx.x, nt = blockDim.x, e_n = (u32)p.e;
    for (u32 e = tid; e < e_n; e += nt) {
        u32 run = 0;
        // Consecutive threads read consecutive experts of one block's row (coalesced).
        for (u64 b = 0; b < p.blocks; b++) {
            u32* c = p.counts + b * p.e + e;
            u32 v = *c;
            *c = run;
            run += v;
        }
        total[e] = run;
    }
    dsv3_sync();

    const u32 per = (e_n + nt - 1) / nt;
    const u32 lo = min(tid * per, e_n), hi = min(lo + per, e_n);
    u32 sum = 0;
    for (u32 e = lo; e < hi; e++) sum += total[e];
    scan[tid] = sum;
    dsv3_sync();
    for (u32 d = 1; d < nt; d *= 2) {
        u32 v = tid >= d ? scan[tid - d] : 0u;
        dsv3_sync();
        scan[tid] += v;
        dsv3_sync();
    }
    u32 off = scan[tid] - sum;  // inclusive → exclusive
    for (u32 e = lo; e < hi; e++) {
        p.offsets[e] = (i32)off;
        off += total[e];
    }
    if (tid == nt - 1) p.offsets[e_n] = (i32)scan[tid];
}
