// Pooling, forward and backward.
//
//   maxpool   x [N, C, H, W] -> y [N, C, P, Q], window R x R, stride st, padding pad (padding never
//             wins); arg [N, C, P, Q] holds the flat h*W+w of the first maximum (PyTorch's tie rule).
//             backward: dx[n, c, h, w] = sum of dy[n, c, p, q] over windows whose argmax is (h, w)
//   avgpool   global average: x [N, C, H, W] -> y [N, C];  dx[n, c, h, w] = dy[n, c] / (H*W)

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    p: u32, q: u32, r: u32, stride: u32,
    pad: u32, _p0: u32, _p1: u32, _p2: u32,
}

// The type activations are stored in: f32 here; f16 in the modules of f16 activations
// (src/ops/activations.rs), which compute in f32 between the load and the store.
alias act_t = f32;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src: array<act_t>;
@group(0) @binding(2) var<storage, read_write> dst: array<act_t>;
@group(0) @binding(3) var<storage, read_write> arg: array<u32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 256u + lid;
}

// src = x, dst = y, arg = argmax
@compute @workgroup_size(256)
fn maxpool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= P.n * P.c * P.p * P.q) { return; }
    let q = i % P.q;
    let t = i / P.q;
    let p = t % P.p;
    let plane = (t / P.p) * P.h * P.w;
    var best = -3.4e38;
    var best_i = 0u;
    var found = false;
    for (var r = 0u; r < P.r; r++) {
        let h = i32(p * P.stride + r) - i32(P.pad);
        if (h < 0 || h >= i32(P.h)) { continue; }
        for (var s = 0u; s < P.r; s++) {
            let w = i32(q * P.stride + s) - i32(P.pad);
            if (w < 0 || w >= i32(P.w)) { continue; }
            let j = u32(h) * P.w + u32(w);
            let v = f32(src[plane + j]);
            if (!found || v > best) {
                best = v;
                best_i = j;
                found = true;
            }
        }
    }
    dst[i] = act_t(best);
    arg[i] = best_i;
}

// src = dy, dst = dx, arg = argmax from the forward
@compute @workgroup_size(256)
fn maxpool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= P.n * P.c * P.h * P.w) { return; }
    let j = i % (P.h * P.w);
    let nc = i / (P.h * P.w);
    let h = j / P.w;
    let w = j % P.w;
    // windows p with p*st - pad <= h <= p*st - pad + R - 1
    let p_lo = max(i32(h + P.pad) - i32(P.r) + 1, 0);
    let q_lo = max(i32(w + P.pad) - i32(P.r) + 1, 0);
    let p_first = u32((p_lo + i32(P.stride) - 1) / i32(P.stride));
    let q_first = u32((q_lo + i32(P.stride) - 1) / i32(P.stride));
    let p_last = min((h + P.pad) / P.stride, P.p - 1u);
    let q_last = min((w + P.pad) / P.stride, P.q - 1u);
    var g = 0.0;
    for (var p = p_first; p <= p_last; p++) {
        for (var q = q_first; q <= q_last; q++) {
            let o = (nc * P.p + p) * P.q + q;
            if (arg[o] == j) { g += f32(src[o]); }
        }
    }
    dst[i] = act_t(g);
}

// src = x, dst = y [N, C]
@compute @workgroup_size(256)
fn avgpool_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= P.n * P.c) { return; }
    let hw = P.h * P.w;
    var s = 0.0;
    for (var j = 0u; j < hw; j++) { s += f32(src[i * hw + j]); }
    dst[i] = act_t(s / f32(hw));
}

// src = dy [N, C], dst = dx [N, C, H, W]
@compute @workgroup_size(256)
fn avgpool_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    let hw = P.h * P.w;
    if (i >= P.n * P.c * hw) { return; }
    dst[i] = act_t(f32(src[i / hw]) / f32(hw));
}
