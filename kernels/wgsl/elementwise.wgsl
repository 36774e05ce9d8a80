// Element-wise ops over [R, N] row views (rows may be strided, elements within a row are adjacent):
// OPK 0: out = a + b; 1: out = silu(a) · b (a = gate, b = up); 2: out = a converted (cast).
// Inputs are decoded exactly to f32, the result is computed in f32 and rounded once when stored.
// P: [0] R, [1] N, [2] a offset, [3] a row stride, [4] b offset, [5] b row stride, [6] out offset,
//    [7] out row stride (elements, from the bindings' starts).

@compute @workgroup_size(WG)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let rows = p(0u);
    let n = p(1u);
    let e = gid.x + gid.y * nwg.x * WG;
    if (e >= rows * n) {
        return;
    }
    let r = e / n;
    let c = e % n;
    let x = ld_a(p(2u) + r * p(3u) + c);
    var v: f32;
    if (OPK == 0u) {
        v = x + ld_b(p(4u) + r * p(5u) + c);
    } else if (OPK == 1u) {
        v = x / (1.0 + exp_f32(-x)) * ld_b(p(4u) + r * p(5u) + c);
    } else {
        v = x;
    }
    st_out(p(6u) + r * p(7u) + c, v);
}
