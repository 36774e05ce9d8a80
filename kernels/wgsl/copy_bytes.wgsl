// Byte-exact copy between any byte offsets: one thread per destination word; bytes of an edge word outside
// the range keep their value (this thread is the only writer of that word in the dispatch).
// P: [0] source byte offset, [1] destination byte offset (both from their bindings' starts), [2] bytes.

fn src_byte(b: u32) -> u32 {
    return (src[b >> 2u] >> ((b & 3u) * 8u)) & 0xffu;
}

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let so = p(0u);
    let d0 = p(1u);
    let n = p(2u);
    let t = gid.x + gid.y * nwg.x * WG;
    let w = d0 / 4u + t;
    if (w * 4u >= d0 + n) {
        return;
    }
    var word = 0u;
    var keep = 0u;
    for (var j = 0u; j < 4u; j = j + 1u) {
        let b = w * 4u + j;
        if (b >= d0 && b < d0 + n) {
            word = word | (src_byte(so + (b - d0)) << (j * 8u));
        } else {
            keep = keep | (0xffu << (j * 8u));
        }
    }
    if (keep != 0u) {
        word = word | (dst[w] & keep);
    }
    dst[w] = word;
}
