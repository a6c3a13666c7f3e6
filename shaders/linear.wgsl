// linear (fully connected) with bias, forward and backward.
//
//   x [N, I], w [O, I] (PyTorch layout), b [O], y [N, O]
//   forward   y[n, o]  = b[o] + sum_i x[n, i] * w[o, i]
//   backward  dx[n, i] = sum_o dy[n, o] * w[o, i]
//             dw[o, i] = sum_n dy[n, o] * x[n, i]
//             db[o]    = sum_n dy[n, o]
// The classifier head of a ResNet is tiny next to its convolutions: one output per invocation.

struct Params { n: u32, i: u32, o: u32, _p: u32 }

// The type of x, the classifier's input, and of dx, its gradient: f32 here; f16 in the module of
// f16 activations (src/ops/activations.rs), which sums in f32. The logits, dy and the weights'
// gradients stay f32.
alias act_t = f32;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;
// linear_backward_input's output (binding 5 too: no kernel uses both)
@group(0) @binding(5) var<storage, read_write> dx: array<act_t>;
@group(0) @binding(6) var<storage, read_write> out_b: array<f32>;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * 64u + lid;
}

// out = y
@compute @workgroup_size(64)
fn linear_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let e = index(wid, nwg, lid);
    if (e >= P.n * P.o) { return; }
    let n = e / P.o;
    let o = e % P.o;
    var s = b[o];
    for (var i = 0u; i < P.i; i++) { s += f32(x[n * P.i + i]) * w[o * P.i + i]; }
    out[e] = s;
}

// dx = dy w
@compute @workgroup_size(64)
fn linear_backward_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_index) lid: u32) {
    let e = index(wid, nwg, lid);
    if (e >= P.n * P.i) { return; }
    let n = e / P.i;
    let i = e % P.i;
    var s = 0.0;
    for (var o = 0u; o < P.o; o++) { s += dy[n * P.o + o] * w[o * P.i + i]; }
    dx[e] = act_t(s);
}

// out = dw [O, I], out_b = db [O] (written by the invocations with i == 0)
@compute @workgroup_size(64)
fn linear_backward_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                          @builtin(local_invocation_index) lid: u32) {
    let e = index(wid, nwg, lid);
    if (e >= P.o * P.i) { return; }
    let o = e / P.i;
    let i = e % P.i;
    var s = 0.0;
    var sb = 0.0;
    for (var n = 0u; n < P.n; n++) {
        let g = dy[n * P.o + o];
        s += g * f32(x[n * P.i + i]);
        sb += g;
    }
    out[e] = s;
    if (i == 0u) { out_b[o] = sb; }
}
