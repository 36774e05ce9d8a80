// moe_dispatch, part 1: the stable counting sort of slots by expert, in one workgroup. The threads count
// the slots per expert (workgroup atomics), one thread turns counts into offsets, then thread e hands out
// rows offsets[e], offsets[e] + 1, ... to its slots in slot order — the order every backend produces.
// Slots whose id is outside 0..E are reported, and get row −1 (the gather then skips them).
// P: [0] slots (T·k), [1] E, [2] ids offset, [3] expert_offsets offset, [4] slot_rows offset, [5] check site.

const MAXE: u32 = 4096u;

var<workgroup> start: array<atomic<u32>, MAXE>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
    let s_n = p(0u);
    let e_n = p(1u);
    for (var e = lid; e < e_n; e = e + WG) {
        atomicStore(&start[e], 0u);
    }
    workgroupBarrier();
    for (var s = lid; s < s_n; s = s + WG) {
        let id = ldi_ids(p(2u) + s);
        if (id < 0 || u32(id) >= e_n) {
            report(p(5u), s, bitcast<u32>(id));
            sti_slot_rows(p(4u) + s, -1);
        } else {
            atomicAdd(&start[u32(id)], 1u);
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        var acc = 0u;
        for (var e = 0u; e < e_n; e = e + 1u) {
            let c = atomicLoad(&start[e]);
            sti_offsets(p(3u) + e, i32(acc));
            atomicStore(&start[e], acc);
            acc = acc + c;
        }
        sti_offsets(p(3u) + e_n, i32(acc));
    }
    workgroupBarrier();
    for (var e = lid; e < e_n; e = e + WG) {
        var row = atomicLoad(&start[e]);
        for (var s = 0u; s < s_n; s = s + 1u) {
            if (ldi_ids(p(2u) + s) == i32(e)) {
                sti_slot_rows(p(4u) + s, i32(row));
                row = row + 1u;
            }
        }
    }
}
