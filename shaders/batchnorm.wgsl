// batchnorm2d (PyTorch semantics), forward and backward, with fused ReLU and residual add.
//
//   x, y, residual, dy, dx: [N, C, H, W]; M = N*H*W
//   affine [2, C] = gamma then beta; saved [2, C] = batch mean then invstd;
//   running [2, C] = running_mean then running_var; dparams [2, C] = dgamma then dbeta
//   (pairs share one binding so a flat parameter buffer needs one aligned offset per layer)
//   train forward  mean = sum(x)/M, var = sum((x-mean)^2)/M (biased), invstd = 1/sqrt(var + eps)
//                  running_mean = (1-momentum)*running_mean + momentum*mean
//                  running_var  = (1-momentum)*running_var  + momentum*var*M/(M-1) (unbiased)
//   eval forward   mean = running_mean, invstd = 1/sqrt(running_var + eps)
//   apply          y = [relu]( (x-mean)*invstd*gamma + beta [+ residual] )
//   backward       g = dy * [y > 0];  dbeta = sum(g);  dgamma = sum(g * xhat),  xhat = (x-mean)*invstd
//                  dx = gamma*invstd * (g - dbeta/M - xhat*dgamma/M);  dresidual = g
//   backward with fixed (running) statistics, flag 4: the mean and invstd are constants, so
//                  dx = gamma*invstd * g  (frozen layers, --bn-eval)
//   across ranks, flag 8 (SyncBatchNorm, data-parallel training): the batch is spread over
//                  `ranks` processes, M = N*H*W*ranks. The host combines every rank's chunks
//                  and writes the whole batch's values into chunk 0 of `partial`: after
//                  bn_stats_chunk, (mean, biased var) for bn_stats; after bn_backward_reduce,
//                  (sum g*xhat, sum g) for bn_backward_dx. dgamma and dbeta stay this rank's sums (the gradient
//                  average across ranks makes them the whole batch's, as for every parameter).
// Reductions run in two steps, deterministic and without atomics: one workgroup per (channel,
// chunk of N*H*W) sums its chunk with a fixed-order tree into `partial`, then one invocation per
// channel merges the chunks in order. (One workgroup per channel left a GPU with as many busy
// cores as channels: 16 of an H200's 132 in ResNet-20's first stage.) The statistics of a chunk
// are its mean and sum of squared deviations, merged with Chan et al.'s pairwise formula, so the
// variance keeps the two-pass accuracy. Where the convolution before computed them in its
// epilogue (per run of 8 pixels), bn_stats_partials merges those instead and x is not read;
// where the convolution after computed the backward's sums in its backward to the input,
// bn_backward_partials adds those.

struct Params {
    n: u32, c: u32, hw: u32, flags: u32,   // flags: 1 relu, 2 residual, 4 eval (running stats), 8 across ranks,
                                           // 16 bn_stats_partials writes the BN-on-load parameters
    eps: f32, momentum: f32, chunks: u32, ranks: u32,  // chunks of N*H*W per channel; ranks sharing the batch
}

// The type activations (x, y, residual) and their gradients (dy, dx, dres) are stored in: f32
// here, f16 in the module of f16 activations (src/ops/activations.rs), which computes in f32
// between load and store. (bn_fold's x and y are weights, f32: it runs from this module only.)
alias act_t = f32;

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<act_t>;
@group(0) @binding(2) var<storage, read_write> y: array<act_t>;
@group(0) @binding(3) var<storage, read> affine: array<f32>;
@group(0) @binding(5) var<storage, read_write> saved: array<f32>;
@group(0) @binding(7) var<storage, read_write> running: array<f32>;
@group(0) @binding(9) var<storage, read> residual: array<act_t>;
@group(0) @binding(10) var<storage, read> dy: array<act_t>;
@group(0) @binding(11) var<storage, read_write> dx: array<act_t>;
@group(0) @binding(12) var<storage, read_write> dparams: array<f32>; // [dgamma(C), dbeta(C)]
@group(0) @binding(13) var<storage, read_write> dres: array<act_t>;
@group(0) @binding(14) var<storage, read_write> partial: array<f32>; // [C, chunks, 2]
// bn_fold's bias [C]; bn_stats_partials's BN-on-load parameters [2, C] (flag 16, below)
@group(0) @binding(15) var<storage, read_write> fold_bias: array<f32>;

const WG = 256u;
var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;
var<workgroup> red_n: array<f32, 256>;

fn tree_sum(lid: u32) {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            red_a[lid] += red_a[lid + s];
            red_b[lid] += red_b[lid + s];
        }
        workgroupBarrier();
    }
}

// (mean, invstd) of channel ch: the batch's (saved), or the running statistics with flag 4.
fn mean_invstd(ch: u32) -> vec2<f32> {
    if ((P.flags & 4u) != 0u) {
        return vec2<f32>(running[ch], 1.0 / sqrt(running[P.c + ch] + P.eps));
    }
    return vec2<f32>(saved[ch], saved[P.c + ch]);
}

fn at(i: u32, ch: u32) -> u32 {
    return ((i / P.hw) * P.c + ch) * P.hw + i % P.hw;
}

// Elements [begin, end) of N*H*W in chunk `chunk`.
fn chunk_range(chunk: u32) -> vec2<u32> {
    let m = P.n * P.hw;
    let len = (m + P.chunks - 1u) / P.chunks;
    return vec2<u32>(min(chunk * len, m), min(chunk * len + len, m));
}

// Training statistics, step 1: workgroup (channel, chunk) writes its chunk's mean and sum of
// squared deviations.
@compute @workgroup_size(256)
fn bn_stats_chunk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let r = chunk_range(wid.y);
    var s = 0.0;
    for (var i = r.x + lid; i < r.y; i += WG) { s += f32(x[at(i, ch)]); }
    red_a[lid] = s;
    red_b[lid] = 0.0;
    tree_sum(lid);
    let mu = red_a[0] / f32(max(r.y - r.x, 1u));
    workgroupBarrier();
    var v = 0.0;
    for (var i = r.x + lid; i < r.y; i += WG) {
        let d = f32(x[at(i, ch)]) - mu;
        v += d * d;
    }
    red_a[lid] = v;
    tree_sum(lid);
    if (lid == 0u) {
        let o = (ch * P.chunks + wid.y) * 2u;
        partial[o] = mu;
        partial[o + 1u] = red_a[0];
    }
}

// Training statistics, step 2: one invocation per channel merges the chunks in order, writes
// mean and invstd, updates the running statistics.
@compute @workgroup_size(64)
fn bn_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let ch = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (ch >= P.c) { return; }
    let m = P.n * P.hw * P.ranks;
    var mu = 0.0;
    var var_b = 0.0;
    if ((P.flags & 8u) != 0u) {
        mu = partial[ch * P.chunks * 2u];
        var_b = partial[ch * P.chunks * 2u + 1u];
    } else {
        let merged = merge_chunks(ch);
        mu = merged.x;
        var_b = merged.y / f32(m);
    }
    finish_stats(ch, mu, var_b, m);
}

// Writes channel ch's batch mean and invstd from its mean and biased variance over m values, and
// updates its running statistics.
fn finish_stats(ch: u32, mu: f32, var_b: f32, m: u32) {
    saved[ch] = mu;
    saved[P.c + ch] = 1.0 / sqrt(var_b + P.eps);
    let unbiased = var_b * f32(m) / f32(max(m, 2u) - 1u);
    running[ch] = (1.0 - P.momentum) * running[ch] + P.momentum * mu;
    running[P.c + ch] = (1.0 - P.momentum) * running[P.c + ch] + P.momentum * unbiased;
}

// (count, mean, sum of squared deviations) of two disjoint sets merged (Chan et al.).
fn merge_moments(a: vec3<f32>, b: vec3<f32>) -> vec3<f32> {
    if (b.x == 0.0) { return a; }
    if (a.x == 0.0) { return b; }
    let n = a.x + b.x;
    let delta = b.y - a.y;
    return vec3<f32>(n, a.y + delta * (b.x / n), a.z + b.z + delta * delta * (a.x * b.x / n));
}

// Training statistics from partial ones a convolution's epilogue wrote (conv2d.wgsl's
// write_stats8; `partial` [C, chunks, 3] of count, mean and sum of squared deviations): one
// workgroup per channel, invocation lid merges partials lid, lid + 256, ... in order, then a
// fixed tree merges the 256 results; writes mean and invstd, updates the running statistics.
@compute @workgroup_size(256)
fn bn_stats_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    var acc = vec3<f32>(0.0);
    for (var k = lid; k < P.chunks; k += WG) {
        let o = (ch * P.chunks + k) * 3u;
        acc = merge_moments(acc, vec3<f32>(partial[o], partial[o + 1u], partial[o + 2u]));
    }
    red_n[lid] = acc.x;
    red_a[lid] = acc.y;
    red_b[lid] = acc.z;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s) {
            let a = vec3<f32>(red_n[lid], red_a[lid], red_b[lid]);
            let b = vec3<f32>(red_n[lid + s], red_a[lid + s], red_b[lid + s]);
            let merged = merge_moments(a, b);
            red_n[lid] = merged.x;
            red_a[lid] = merged.y;
            red_b[lid] = merged.z;
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let m = P.n * P.hw;
        finish_stats(ch, red_a[0], red_b[0] / f32(max(m, 1u)), m);
        if ((P.flags & 16u) != 0u) { bn_on_load(ch); }
    }
}

// Flag 16: where no bn_apply runs because the convolution after applies the BN (and its ReLU) as
// it loads its input (conv2d.wgsl's bn_in), that BN as y = x * scale + shift per channel (scale =
// gamma * invstd, shift = beta - mean * scale, as bn_fold folds it): [scale(C), shift(C)] in
// fold_bias, bound where that convolution's bias would be.
fn bn_on_load(ch: u32) {
    let scale = affine[ch] * saved[P.c + ch];
    fold_bias[ch] = scale;
    fold_bias[P.c + ch] = affine[P.c + ch] - saved[ch] * scale;
}

// (mean, sum of squared deviations) of channel ch: its chunks merged in order.
fn merge_chunks(ch: u32) -> vec2<f32> {
    var count = 0.0;
    var mu = 0.0;
    var m2 = 0.0;
    for (var k = 0u; k < P.chunks; k++) {
        let r = chunk_range(k);
        let nb = f32(r.y - r.x);
        if (nb == 0.0) { continue; }
        let o = (ch * P.chunks + k) * 2u;
        let total = count + nb;
        let delta = partial[o] - mu;
        mu += delta * (nb / total);
        m2 += partial[o + 1u] + delta * delta * (count * nb / total);
        count = total;
    }
    return vec2<f32>(mu, m2);
}

// Inference with the running statistics, folded into the convolution before (flag 4): x = the
// convolution's weights [C, hw] (C its output channels, hw = Cin*R*S per channel), y = the
// folded weights x * scale, fold_bias = beta - mean * scale, where scale = gamma * invstd; the
// convolution with them computes BN(conv) in one pass (its epilogue adds the ReLU and residual).
@compute @workgroup_size(256)
fn bn_fold(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    let weights = P.c * P.hw;
    if (i < weights) {
        let ch = i / P.hw;
        y[i] = act_t(f32(x[i]) * (affine[ch] * mean_invstd(ch).y));
    } else if (i < weights + P.c) {
        let ch = i - weights;
        let s = mean_invstd(ch);
        fold_bias[ch] = affine[P.c + ch] - s.x * (affine[ch] * s.y);
    }
}

// y = [relu]((x - mean) * invstd * gamma + beta [+ residual]); batch stats, or running stats in eval.
@compute @workgroup_size(256)
fn bn_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= P.n * P.c * P.hw) { return; }
    let ch = (i / P.hw) % P.c;
    apply_one(i, ch, mean_invstd(ch));
}

// bn_apply on 4 consecutive values of one channel's plane (H*W a multiple of 4): the same
// arithmetic per value, a quarter of the index work (a division and a remainder per value are
// most of an elementwise kernel's instructions on CPU drivers).
@compute @workgroup_size(256)
fn bn_apply4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = ((wid.x + wid.y * nwg.x) * WG + lid) * 4u;
    if (i >= P.n * P.c * P.hw) { return; }
    let ch = (i / P.hw) % P.c;
    let s = mean_invstd(ch);
    for (var e = 0u; e < 4u; e++) { apply_one(i + e, ch, s); }
}

// y[i] of channel ch, whose (mean, invstd) is s.
fn apply_one(i: u32, ch: u32, s: vec2<f32>) {
    var v = (f32(x[i]) - s.x) * s.y * affine[ch] + affine[P.c + ch];
    if ((P.flags & 2u) != 0u) { v += f32(residual[i]); }
    if ((P.flags & 1u) != 0u) { v = max(v, 0.0); }
    y[i] = act_t(v);
}

// Backward reductions, step 1: workgroup (channel, chunk) sums g * xhat and g over its chunk,
// g = dy masked by y > 0 if relu.
@compute @workgroup_size(256)
fn bn_backward_chunk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    let r = chunk_range(wid.y);
    let s = mean_invstd(ch);
    let mu = s.x;
    let is = s.y;
    var sg = 0.0;
    var sgx = 0.0;
    for (var i = r.x + lid; i < r.y; i += WG) {
        let j = at(i, ch);
        var g = f32(dy[j]);
        if ((P.flags & 1u) != 0u && y[j] <= act_t(0.0)) { g = 0.0; }
        sg += g;
        sgx += g * (f32(x[j]) - mu) * is;
    }
    red_a[lid] = sgx;
    red_b[lid] = sg;
    tree_sum(lid);
    if (lid == 0u) {
        let o = (ch * P.chunks + wid.y) * 2u;
        partial[o] = red_a[0];
        partial[o + 1u] = red_b[0];
    }
}

// Backward reductions, step 2: dgamma = sum(g * xhat), dbeta = sum(g), chunks added in order.
@compute @workgroup_size(64)
fn bn_backward_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_index) lid: u32) {
    let ch = (wid.x + wid.y * nwg.x) * 64u + lid;
    if (ch >= P.c) { return; }
    var sgx = 0.0;
    var sg = 0.0;
    for (var k = 0u; k < P.chunks; k++) {
        let o = (ch * P.chunks + k) * 2u;
        sgx += partial[o];
        sg += partial[o + 1u];
    }
    dparams[ch] = sgx;
    dparams[P.c + ch] = sg;
}

// Backward reductions from the sums the convolution after the BN wrote in its backward to the
// input (conv2d.wgsl's bn_grad4, conv2d_gemm.wgsl's conv_dx_gemm_bn; `partial` [C, chunks, 2] of
// sum(g * xhat) and sum(g) per run of 4 pixels, dy already masked by the ReLU): one workgroup per channel, invocation lid
// adds runs lid, lid + 256, ... in order, then the fixed tree adds the 256 sums.
@compute @workgroup_size(256)
fn bn_backward_partials(@builtin(workgroup_id) wid: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let ch = wid.x;
    var sgx = 0.0;
    var sg = 0.0;
    for (var k = lid; k < P.chunks; k += WG) {
        let o = (ch * P.chunks + k) * 2u;
        sgx += partial[o];
        sg += partial[o + 1u];
    }
    red_a[lid] = sgx;
    red_b[lid] = sg;
    tree_sum(lid);
    if (lid == 0u) {
        dparams[ch] = red_a[0];
        dparams[P.c + ch] = red_b[0];
    }
}

// dx = gamma*invstd*(g - dbeta/M - xhat*dgamma/M); with a residual also dres = g.
@compute @workgroup_size(256)
fn bn_backward_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= P.n * P.c * P.hw) { return; }
    let ch = (i / P.hw) % P.c;
    dx_one(i, ch, mean_invstd(ch), backward_sums(ch));
}

// bn_backward_dx on 4 consecutive values of one channel's plane (H*W a multiple of 4), as
// bn_apply4.
@compute @workgroup_size(256)
fn bn_backward_dx4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let i = ((wid.x + wid.y * nwg.x) * WG + lid) * 4u;
    if (i >= P.n * P.c * P.hw) { return; }
    let ch = (i / P.hw) % P.c;
    let s = mean_invstd(ch);
    let sums = backward_sums(ch);
    for (var e = 0u; e < 4u; e++) { dx_one(i + e, ch, s, sums); }
}

// sum(g * xhat), sum(g) of channel ch: this rank's, or the whole batch's across ranks.
fn backward_sums(ch: u32) -> vec2<f32> {
    if ((P.flags & 8u) != 0u) {
        return vec2<f32>(partial[ch * P.chunks * 2u], partial[ch * P.chunks * 2u + 1u]);
    }
    return vec2<f32>(dparams[ch], dparams[P.c + ch]);
}

// dx[i] (and dres[i]) of channel ch, whose (mean, invstd) is s and backward sums `sums`.
fn dx_one(i: u32, ch: u32, s: vec2<f32>, sums: vec2<f32>) {
    let m = f32(P.n * P.hw * P.ranks);
    var g = f32(dy[i]);
    if ((P.flags & 1u) != 0u && y[i] <= act_t(0.0)) { g = 0.0; }
    if ((P.flags & 4u) != 0u) {
        dx[i] = act_t(affine[ch] * s.y * g);
    } else {
        let xhat = (f32(x[i]) - s.x) * s.y;
        dx[i] = act_t(affine[ch] * s.y * (g - sums.y / m - xhat * sums.x / m));
    }
    if ((P.flags & 2u) != 0u) { dres[i] = act_t(g); }
}
