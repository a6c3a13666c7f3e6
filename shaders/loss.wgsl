// Softmax cross-entropy (mean over the batch), its gradient, and the correct-prediction count,
// with label smoothing e as torch.nn.CrossEntropyLoss(label_smoothing=e):
//
//   logits [N, O], labels [N] (u32); target q[n,o] = (1 - e) [o == label_n] + e / O
//   loss_n  = log(sum_o exp(z[n, o])) - sum_o q[n,o] z[n,o];     loss = sum_n loss_n / N
//   dz[n,o] = (softmax(z[n])[o] - q[n,o]) / N   (times the loss scale under dynamic loss scaling)
//   correct = #{n : argmax_o z[n, o] == label_n}  (first maximum wins, as torch.argmax)
//   top-5   = #{n : fewer than 5 classes rank before label_n} (above it, or level with it and
//             of a smaller index: the same tie rule), torchvision's Acc@5
// MixUp and CutMix (src/preprocess/mix.rs) mix each image with the one before it in the batch,
// and its target with weight `lambda` on its own label's q and 1 - lambda on the other's (by
// linearity so is the loss); it counts as correct when the argmax is the label of the larger
// weight, the smaller class on a tie (torchvision's accuracy against the soft target's argmax,
// torch.max's first maximum). lambda = 1: the above, bits and all.
// ce_reduce sums the rows in a fixed order into stats = [loss, correct, top-5] and adds
// [loss * N, correct, N, _, top-5] to a running accumulator that is read back only now and then;
// its fourth slot records the first batch (1-based, since the last clear) whose loss was not
// finite, so a divergence is reported at its exact step however rarely the host reads.

struct Params {
    n: u32, o: u32, smoothing: f32, scaled: u32,  // scaled: dlogits times amp's scale
    lambda: f32, _p1: u32, _p2: u32, _p3: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> rows: array<f32>;   // [N, 3]: loss_n, correct_n, top-5_n
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;  // [loss, correct, top-5]
@group(0) @binding(6) var<storage, read_write> accum: array<f32>;  // [loss sum, correct, count, first bad batch, top-5]
@group(0) @binding(7) var<storage, read> amp: array<u32>;  // dynamic loss scaling's state (amp.wgsl)

@compute @workgroup_size(64)
fn ce_forward_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    let n = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (n >= P.n) { return; }
    let base = n * P.o;
    let label = min(labels[n], P.o - 1u);
    let other = min(labels[(n + P.n - 1u) % P.n], P.o - 1u);
    let lambda = P.lambda;
    var mx = logits[base];
    var arg = 0u;
    for (var o = 1u; o < P.o; o++) {
        let z = logits[base + o];
        if (z > mx) { mx = z; arg = o; }
    }
    var se = 0.0;
    for (var o = 0u; o < P.o; o++) { se += exp(logits[base + o] - mx); }
    let inv_n = 1.0 / f32(P.n);
    // the loss scale (a power of two: scaling is exact), or 1
    let scale = select(1.0, bitcast<f32>(amp[0]), P.scaled != 0u);
    let e = P.smoothing;
    let uniform_q = e / f32(P.o);
    var sum_z = 0.0;
    for (var o = 0u; o < P.o; o++) {
        let z = logits[base + o];
        let sm = exp(z - mx) / se;
        let mixed = select(0.0, 1.0 - e, o == label) * lambda + select(0.0, 1.0 - e, o == other) * (1.0 - lambda);
        let q = mixed + uniform_q;
        dlogits[base + o] = (sm - q) * inv_n * scale;
        sum_z += z;
    }
    // without smoothing exactly the plain cross-entropy (e = 0 adds 0 * sum_z)
    // unmixed, the other label's term is left out rather than added times 0 (an infinite logit)
    let mixed_z = logits[base + label] * lambda + logits[base + other] * (1.0 - lambda);
    let z_target = select(mixed_z, logits[base + label], lambda == 1.0);
    rows[3u * n] = log(se) + mx - (1.0 - e) * z_target - uniform_q * sum_z;
    // the soft target's argmax: the label of the larger weight, the smaller class on a tie
    var larger = select(other, label, lambda > 0.5);
    if (lambda == 0.5) { larger = min(label, other); }
    rows[3u * n + 1u] = select(0.0, 1.0, arg == larger);
    rows[3u * n + 2u] = select(0.0, 1.0, classes_before(base, larger) < 5u);
}

// How many classes of the row at `base` rank before class c: above it, or level with it and
// of a smaller index.
fn classes_before(base: u32, c: u32) -> u32 {
    let zc = logits[base + c];
    var before = 0u;
    for (var o = 0u; o < P.o; o++) {
        let z = logits[base + o];
        before += select(0u, 1u, z > zc || (z == zc && o < c));
    }
    return before;
}

var<workgroup> red_l: array<f32, 256>;
var<workgroup> red_c: array<f32, 256>;
var<workgroup> red_5: array<f32, 256>;

@compute @workgroup_size(256)
fn ce_reduce(@builtin(local_invocation_index) lid: u32) {
    var l = 0.0;
    var c = 0.0;
    var c5 = 0.0;
    for (var n = lid; n < P.n; n += 256u) {
        l += rows[3u * n];
        c += rows[3u * n + 1u];
        c5 += rows[3u * n + 2u];
    }
    red_l[lid] = l;
    red_c[lid] = c;
    red_5[lid] = c5;
    workgroupBarrier();
    for (var s = 128u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_l[lid] += red_l[lid + s];
            red_c[lid] += red_c[lid + s];
            red_5[lid] += red_5[lid + s];
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        // exponent all ones: inf or NaN (a bit test, since `x != x` may be folded away)
        let bad = (bitcast<u32>(red_l[0]) & 0x7f800000u) == 0x7f800000u;
        if (bad && accum[3] == 0.0) {
            accum[3] = accum[2] / f32(P.n) + 1.0;
        }
        stats[0] = red_l[0] / f32(P.n);
        stats[1] = red_c[0];
        stats[2] = red_5[0];
        accum[0] += red_l[0];
        accum[1] += red_c[0];
        accum[2] += f32(P.n);
        accum[4] += red_5[0];
    }
}
