// argmax (OPK 0) and top-k (OPK 1), one workgroup per row: k rounds, each a tree reduction for the best
// element strictly after the previous pick in the order (value descending in f32 total order, index
// ascending) — the order the contract fixes, ties to the lower index, no arithmetic on the values.
// P: [0] R, [1] N, [2] k, [3] x offset, [4] x row stride, [5] values offset, [6] ids offset.

var<workgroup> rkey: array<u32, WG>;
var<workgroup> ridx: array<u32, WG>;

// Whether (ka, ia) comes before (kb, ib).
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ka > kb || (ka == kb && ia < ib);
}

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p(0u)) {
        return;
    }
    let n = p(1u);
    let xb = p(3u) + row * p(4u);
    var prev_key = 0xffffffffu;
    var prev_idx = 0u;
    var first = true;
    for (var j = 0u; j < p(2u); j = j + 1u) {
        var bk = 0u;
        var bi = 0xffffffffu;
        for (var c = lid; c < n; c = c + WG) {
            let key = order_key(ld_x(xb + c));
            let after_prev = first || before(prev_key, prev_idx, key, c);
            if (after_prev && (bi == 0xffffffffu || before(key, c, bk, bi))) {
                bk = key;
                bi = c;
            }
        }
        rkey[lid] = bk;
        ridx[lid] = bi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s = s / 2u) {
            if (lid < s) {
                let ok = ridx[lid + s];
                if (ok != 0xffffffffu && (ridx[lid] == 0xffffffffu || before(rkey[lid + s], ok, rkey[lid], ridx[lid]))) {
                    rkey[lid] = rkey[lid + s];
                    ridx[lid] = ok;
                }
            }
            workgroupBarrier();
        }
        prev_key = rkey[0];
        prev_idx = ridx[0];
        first = false;
        workgroupBarrier();
        if (lid == 0u) {
            sti_ids(p(6u) + row * p(2u) + j, i32(prev_idx));
            if (OPK == 1u) {
                st_values(p(5u) + row * p(2u) + j, ld_x(xb + prev_idx));
            }
        }
    }
}
