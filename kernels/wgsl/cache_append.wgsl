// cache[b, kv_lens[b] - T + t, :] = rows[b, t, :] for one sequence b per dispatch: its cache rows are one
// binding window, so caches larger than a storage binding work. One thread per element of the sequence's
// rows. Numerics: none (f32 and bf16 pass through f32 unchanged). A length outside T..L is reported and
// the sequence is left unwritten.
// P: [0] T, [1] W, [2] L, [3] b, [4] rows offset (of the sequence's first row), [5] rows token stride,
//    [6] kv_lens offset, [7] cache offset (of the sequence's position 0), [8] cache position stride,
//    [9] check site.

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let t_n = p(0u);
    let w = p(1u);
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= t_n * w) {
        return;
    }
    let len = ldi_lens(p(6u) + p(3u));
    if (len < i32(t_n) || u32(len) > p(2u)) {
        if (e == 0u) {
            report(p(9u), p(3u), bitcast<u32>(len));
        }
        return;
    }
    let t = e / w;
    let c = e % w;
    st_cache(p(7u) + (u32(len) - t_n + t) * p(8u) + c, ld_rows(p(4u) + t * p(5u) + c));
}
