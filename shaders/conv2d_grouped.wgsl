// Grouped conv2d (PyTorch's `groups` > 1, as ResNeXt's 3x3 convolutions), forward and both
// backwards, direct: one invocation per output value, per input gradient value, and one workgroup
// per weight gradient value and chunk of the batch's pixels. With G groups of C/G input and K/G output channels each:
//
//   x [N, C, H, W]   w [K, C/G, R, S]   y [N, K, P, Q]   g(k) = k / (K/G)
//   forward   y[n,k,p,q]    = sum_{cl,r,s} w[k,cl,r,s] * x[n, g(k)*C/G + cl, p*stride-pad+r, q*stride-pad+s]
//   backward  dx[n,c,h,w]   = sum_{k in c's group, r, s: h = p*stride-pad+r, w = q*stride-pad+s}
//                             w[k, c % (C/G), r, s] * dy[n,k,p,q]
//             dw[k,cl,r,s]  = sum_{n,p,q} dy[n,k,p,q] * x[n, g(k)*C/G + cl, p*stride-pad+r, q*stride-pad+s]
//
// Each sum runs in one fixed order (the weight gradient's over chunks of N*P*Q in order, the
// chunks' partial sums then added in order by conv2d.wgsl's conv_dw_reduce), so a run's bits do
// not depend on scheduling. The register and GEMM families
// (conv2d.wgsl, conv2d_gemm.wgsl) tile the dense case; a group's few channels (4 to 8 in the
// ResNeXts) give their tiles little to share, and the grouped convolutions hold a small part of
// a ResNeXt's arithmetic, so one plain kernel serves every adapter.

// conv2d.wgsl's parameters (src/ops/conv2d/mod.rs writes both): kpad and cpad unused here;
// splits, chunk: the backward to the weights sums N*P*Q in `splits` chunks of `chunk`; stats:
// the forward writes BatchNorm's partial statistics of its output (stats_out).
struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, p: u32, q: u32, r: u32,
    s: u32, stride: u32, pad: u32, epi: u32, // epi: the epilogue's OUT_* bits
    kpad: u32, cpad: u32, splits: u32, chunk: u32,
    stats: u32, groups: u32, pad2: u32, pad3: u32,
}

// The forward's epilogue, as conv2d.wgsl's: y = [relu](sum + [bias] [+ residual]) (an inference
// BatchNorm folded into the weights and bias); the backward to the input adds the gradient a
// block's shortcut brings to the same input under OUT_RESIDUAL.
const OUT_BIAS: u32 = 1u;
const OUT_RELU: u32 = 2u;
const OUT_RESIDUAL: u32 = 4u;

// The types activations are stored in, by binding, as in conv2d.wgsl: f32 here; the modules of
// f16 activations (src/ops/activations.rs) set act_t and out_t (`fwd16`: x or dy in, y or dx
// out) or act_t and a_t (`dw16`: x and dy in, dw staying f32) to f16 and compute in f32.
alias act_t = f32; // src, residual
alias out_t = f32; // dst
alias a_t = f32;   // dy of the backward to the weights

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> wts: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<act_t>;
@group(0) @binding(3) var<storage, read_write> dst: array<out_t>;
// The forward's bias, or the BatchNorm below as [scale, shift] per input channel (BN_IN).
@group(0) @binding(4) var<storage, read> bias: array<f32>;
// The weights' gradient's partial sums, [splits, K, C/G, R, S].
@group(0) @binding(5) var<storage, read_write> dw_partial: array<f32>;
@group(0) @binding(6) var<storage, read> dy_w: array<a_t>;
@group(0) @binding(7) var<storage, read> residual: array<act_t>;
// BatchNorm's partial statistics of the forward's output where P.stats != 0, laid out as
// conv2d.wgsl's: [K, ceil(N*P*Q / 8), 3], per channel and run of 8 output pixels (count, mean,
// sum of squared deviations) of the f32 sums before they are stored, merged by
// batchnorm.wgsl's bn_stats_partials.
@group(0) @binding(8) var<storage, read_write> stats_out: array<f32>;

// As in conv2d.wgsl: the input of the forward and of the backward to the weights is relu(BN(c))
// of the convolution below, applied as it is loaded where BN_IN (true in the modules
// src/ops/conv2d/mod.rs derives with `bn_in_module`).
const BN_IN = false;

// The operand as the convolution multiplies it: x (through the BatchNorm below where BN_IN) or
// a weight, rounded to the activations' type (the identity in f32; in the f16 modules the
// operands are f16, the sums f32, as the mixed-precision families compute).
fn operand(v: f32) -> f32 {
    return f32(act_t(v));
}

fn x_at(c: u32, i: u32) -> f32 {
    let v = f32(src[i]);
    if (!BN_IN) { return v; }
    return operand(max(v * bias[c] + bias[P.c + c], 0.0));
}

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wid.x + wid.y * nwg.x;
}

// The input row (or column) tap t of output p reads, or -1 in the padding.
fn tap(p: u32, t: u32, size: u32) -> i32 {
    let i = i32(p * P.stride + t) - i32(P.pad);
    if (i < 0 || i >= i32(size)) { return -1; }
    return i;
}

// The sum of output (n, k, p, q): its group's input channels under the kernel.
fn forward_sum(n: u32, k: u32, p: u32, q: u32) -> f32 {
    let cg = P.c / P.groups;
    let c0 = (k / (P.k / P.groups)) * cg;
    var sum = 0.0;
    for (var cl = 0u; cl < cg; cl++) {
        let c = c0 + cl;
        for (var r = 0u; r < P.r; r++) {
            let h = tap(p, r, P.h);
            if (h < 0) { continue; }
            for (var s = 0u; s < P.s; s++) {
                let w = tap(q, s, P.w);
                if (w < 0) { continue; }
                let xv = x_at(c, ((n * P.c + c) * P.h + u32(h)) * P.w + u32(w));
                sum += operand(wts[((k * cg + cl) * P.r + r) * P.s + s]) * xv;
            }
        }
    }
    return sum;
}

// One invocation per output channel k and run of 8 output pixels (in N, P, Q order): the runs
// of conv2d.wgsl's statistics, so that the BatchNorm after a grouped convolution merges the same
// partial statistics as after any other.
@compute @workgroup_size(64)
fn conv_fwd_grouped(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg) * 64u + lid;
    let pq = P.p * P.q;
    let npq = P.n * pq;
    let runs = (npq + 7u) / 8u;
    if (i >= P.k * runs) { return; }
    let k = i / runs;
    let run = i % runs;
    let count = min(8u, npq - run * 8u);
    var v: array<f32, 8>;
    var total = 0.0;
    for (var t = 0u; t < count; t++) {
        let m = run * 8u + t;
        let n = m / pq;
        var sum = forward_sum(n, k, (m % pq) / P.q, m % P.q);
        if ((P.epi & OUT_BIAS) != 0u) { sum += bias[k]; }
        v[t] = sum;
        total += sum;
        let at = (n * P.k + k) * pq + m % pq;
        if ((P.epi & OUT_RESIDUAL) != 0u) { sum += f32(residual[at]); }
        if ((P.epi & OUT_RELU) != 0u) { sum = max(sum, 0.0); }
        dst[at] = out_t(sum);
    }
    if (P.stats == 0u) { return; }
    // two passes over the registers, as conv2d.wgsl's write_stats8
    let mean = total / f32(count);
    var q = 0.0;
    for (var t = 0u; t < count; t++) {
        let d = v[t] - mean;
        q += d * d;
    }
    let o = (k * runs + run) * 3u;
    stats_out[o] = f32(count);
    stats_out[o + 1u] = mean;
    stats_out[o + 2u] = q;
}

// The output row (or column) that input h reads through tap t, or -1 where none does.
fn tapped_by(h: u32, t: u32, out: u32) -> i32 {
    let v = i32(h + P.pad) - i32(t);
    if (v < 0 || u32(v) % P.stride != 0u) { return -1; }
    let p = u32(v) / P.stride;
    if (p >= out) { return -1; }
    return i32(p);
}

@compute @workgroup_size(64)
fn conv_dx_grouped(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = linear_id(wid, nwg) * 64u + lid;
    let hw = P.h * P.w;
    if (i >= P.n * P.c * hw) { return; }
    let w = i % P.w;
    let h = (i / P.w) % P.h;
    let c = (i / hw) % P.c;
    let n = i / (hw * P.c);
    let cg = P.c / P.groups;
    let kg = P.k / P.groups;
    let cl = c % cg;
    let k0 = (c / cg) * kg;
    var sum = 0.0;
    for (var kl = 0u; kl < kg; kl++) {
        let k = k0 + kl;
        for (var r = 0u; r < P.r; r++) {
            let p = tapped_by(h, r, P.p);
            if (p < 0) { continue; }
            for (var s = 0u; s < P.s; s++) {
                let q = tapped_by(w, s, P.q);
                if (q < 0) { continue; }
                let d = f32(src[((n * P.k + k) * P.p + u32(p)) * P.q + u32(q)]);
                sum += operand(wts[((k * cg + cl) * P.r + r) * P.s + s]) * d;
            }
        }
    }
    if ((P.epi & OUT_RESIDUAL) != 0u) { sum += f32(residual[i]); }
    dst[i] = out_t(sum);
}

// One invocation per weight and chunk of the N*P*Q pixels: the chunk's sum, in pixel order.
@compute @workgroup_size(64)
fn conv_dw_grouped(@builtin(workgroup_id) wid: vec3<u32>,
                   @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let cg = P.c / P.groups;
    let total = P.k * cg * P.r * P.s;
    let i = linear_id(wid, nwg) * 64u + lid;
    if (i >= P.splits * total) { return; }
    let split = i / total;
    let j = i % total;
    let s = j % P.s;
    let r = (j / P.s) % P.r;
    let cl = (j / (P.r * P.s)) % cg;
    let k = j / (P.r * P.s * cg);
    let c = (k / (P.k / P.groups)) * cg + cl;
    let pq = P.p * P.q;
    let end = min(P.n * pq, (split + 1u) * P.chunk);
    var sum = 0.0;
    for (var t = split * P.chunk; t < end; t++) {
        let n = t / pq;
        let p = (t % pq) / P.q;
        let q = t % P.q;
        let h = tap(p, r, P.h);
        let w = tap(q, s, P.w);
        if (h < 0 || w < 0) { continue; }
        let xv = x_at(c, ((n * P.c + c) * P.h + u32(h)) * P.w + u32(w));
        sum += f32(dy_w[((n * P.k + k) * P.p + p) * P.q + q]) * xv;
    }
    dw_partial[i] = sum;
}
