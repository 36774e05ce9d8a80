// moe_route: the router, one block per token (launched with 256 threads), E ≤ MAX_EXPERTS experts.
//
// Numerics, all in f32 from the f32 logits:
//   * scores s: SCORING 0, s = 1 / (1 + expf(−logit)); SCORING 1, a softmax over the row: the max and the
//     sum of expf(logit − max) are reduced per thread (its experts in order), across the warp (fixed
//     butterfly) and across warps (in warp order), then s = expf(logit − max) / sum;
//   * selection scores c = s + bias (METHOD 2, noaux_tc), else c = s;
//   * group scores: METHOD 2, top1 + top2 of c in the group (one f32 addition); METHOD 1, the max of c;
//     METHOD 0 (greedy) has no groups;
//   * weights: w_j = s[id_j]; with `norm`, w_j / Σ_j s[id_j] (summed in j order); then × scale.
// Selections are exact, ties included: items compare by order_key (the f32 total order, as the CPU's
// total_cmp) and ties go to the lower index. An item's rank is the number of items ahead of it, so the
// top k are the items of rank < k, found in parallel without a sort, and placed at their rank: the kept
// groups are those of rank < topk_group among the group scores (experts of the others are excluded), and
// ids[j] is the allowed expert of rank j among the selection scores.

#define MAX_EXPERTS 1024

struct Params {
    const float* logits;  // [T, E]
    const float* bias;    // [E]; read by noaux_tc only
    i32* ids;             // [T, top_k]
    float* weights;       // [T, top_k]
    u64 e, n_group, topk_group, top_k;
    u64 norm;      // 1: divide the weights by their sum
    double scale;  // routed_scaling_factor (an f32 value)
};

// Whether item `j` (key kj) is ahead of item `i` (key ki): a larger key, or an equal key and a lower index.
DSV3_DEV bool ahead_of(u32 kj, u32 j, u32 ki, u32 i) {
    return kj > ki || (kj == ki && j < i);
}

DSV3_KERNEL void moe_route(const Params p) {
    DSV3_SHARED float score[MAX_EXPERTS];   // s
    DSV3_SHARED float sel[MAX_EXPERTS];     // c
    DSV3_SHARED u32 key[MAX_EXPERTS];       // order_key(c)
    DSV3_SHARED u32 gkey[MAX_EXPERTS];      // order_key(group score)
    DSV3_SHARED u8 kept[MAX_EXPERTS];       // per group
    DSV3_SHARED u8 allowed[MAX_EXPERTS];    // per expert: its group is kept
    DSV3_SHARED i32 chosen[MAX_EXPERTS];    // the expert of each rank < top_k
    DSV3_SHARED float chosen_sum;

    const u32 tid = threadIdx.x, nt = blockDim.x;
    const u32 e_n = (u32)p.e, k_n = (u32)p.top_k;
    const u64 t = blockIdx.x;
    const float* logits = p.logits + t * p.e;

#if SCORING == 0
    for (u32 e = tid; e < e_n; e += nt) score[e] = 1.0f / (1.0f + expf(-logits[e]));
#else
    float m = -f32_inf();
    for (u32 e = tid; e < e_n; e += nt) m = fmaxf(m, logits[e]);
    m = block_max(m);
    float sum = 0.0f;
    for (u32 e = tid; e < e_n; e += nt) {
        float x = expf(logits[e] - m);
        score[e] = x;
        sum += x;
    }
    sum = block_sum(sum);
    // Each thread divides the scores it wrote: no barrier needed before.
    for (u32 e = tid; e < e_n; e += nt) score[e] = score[e] / sum;
#endif
    for (u32 e = tid; e < e_n; e += nt) {
#if METHOD == 2
        float c = score[e] + p.bias[e];
#else
        float c = score[e];
#endif
        sel[e] = c;
        key[e] = order_key(c);
    }
    dsv3_sync();

#if METHOD == 0
    for (u32 e = tid; e < e_n; e += nt) allowed[e] = 1;
#else
    const u32 groups = (u32)p.n_group, per = e_n / groups;
    for (u32 g = tid; g < groups; g += nt) {
        const u32 first = g * per, end = first + per;
        // The group's best member: scanning upwards, only a strictly larger key replaces (ties: lower index).
        u32 b1 = first;
        for (u32 e = first + 1; e < end; e++)
            if (key[e] > key[b1]) b1 = e;
#if METHOD == 2
        // The second best: the best of the others (per ≥ 2, checked by validation).
        u32 b2 = b1 == first ? first + 1 : first;
        for (u32 e = first; e < end; e++)
            if (e != b1 && key[e] > key[b2]) b2 = e;
        gkey[g] = order_key(sel[b1] + sel[b2]);
#else
        gkey[g] = key[b1];
#endif
    }
    dsv3_sync();
    for (u32 g = tid; g < groups; g += nt) {
        u32 ahead = 0;
        for (u32 h = 0; h < groups; h++) ahead += ahead_of(gkey[h], h, gkey[g], g);
        kept[g] = ahead < (u32)p.topk_group;
    }
    dsv3_sync();
    for (u32 e = tid; e < e_n; e += nt) allowed[e] = kept[e / per];
#endif
    dsv3_sync();

    // Validation guarantees at least top_k allowed experts, so every rank < top_k is filled.
    for (u32 e = tid; e < e_n; e += nt) {
        if (allowed[e]) {
            const u32 mine = key[e];
            u32 ahead = 0;
            for (u32 j = 0; j < e_n && ahead < k_n; j++) ahead += allowed[j] && ahead_of(key[j], j, mine, e);
            if (ahead < k_n) chosen[ahead] = (i32)e;
        }
    }
    dsv3_sync();

    if (tid == 0) {
        float s = 0.0f;
        for (u32 j = 0; j < k_n; j++) s += score[chosen[j]];
        chosen_sum = s;
    }
    dsv3_sync();
    const float scale = (float)p.scale;
    for (u32 j = tid; j < k_n; j += nt) {
        float w = score[chosen[j]];
        if (p.norm) w = w / chosen_sum;
        p.ids[t * k_n + j] = chosen[j];
        p.weights[t * k_n + j] = w * scale;
    }
}
