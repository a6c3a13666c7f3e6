// conv2d as implicit GEMM, forward and both backwards, PyTorch semantics (cross-correlation).
//
//   x  [N, C, H, W]   w [K, C, R, S] (OIHW)   bias [K]   y [N, K, P, Q]
//   P = (H + 2*pad - R) / stride + 1,  Q = (W + 2*pad - S) / stride + 1
//   forward   y[n,k,p,q]  = bias[k] + sum_{c,r,s} w[k,c,r,s] * x[n, c, p*stride-pad+r, q*stride-pad+s]
//   backward  dx[n,c,h,w] = sum_{k,r,s: h = p*stride-pad+r, w = q*stride-pad+s} w[k,c,r,s] * dy[n,k,p,q]
//             dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n, c, p*stride-pad+r, q*stride-pad+s]
//             db[k]       = sum_{n,p,q} dy[n,k,p,q]
//
// Kernel families (docs/ARCHITECTURE.md); the third, the GPU-class GEMM, is conv2d_gemm.wgsl:
//   *_reg    register blocking, CB channels x PB pixels (or weights) per invocation in several
//            block sizes, no workgroup memory. Fastest on lavapipe, which turns every per-lane load
//            into a scalar loop, so the kernels load little and do many FMAs per load; also chosen
//            for some of ResNet-20's narrow layers on an H200.
//   *_tiled  64x64 output tiles staged through one workgroup buffer, 4x4 per invocation, the first
//            GPU kernels (conv2d_gemm.wgsl's double-buffered tiles are 2-8x faster on an H200).
//            One GEMM skeleton; `mode` picks how A, B and C map onto the conv.
// The register kernels read weights re-laid out by transpose_w_fwd / transpose_w_dx so that four
// consecutive channels are one vec4 load (the GEMM family reads them too, from this module).
// conv_dw_reduce and conv_db serve every family.

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, p: u32, q: u32, r: u32,
    s: u32, stride: u32, pad: u32, epi: u32,  // epi: the epilogue's OUT_* bits (forward; dx: OUT_RESIDUAL)
    kpad: u32, cpad: u32, splits: u32, chunk: u32,
    // stats: conv_fwd_reg writes BatchNorm's partial statistics, conv_dx_reg its backward sums
    stats: u32, groups: u32, pad2: u32, pad3: u32, // groups: 1 (conv2d_grouped.wgsl's > 1)
}

// The forward's epilogue: y = [relu](sum + [bias] [+ residual]). An inference BatchNorm folded
// into the weights and bias (batchnorm.wgsl's bn_fold) leaves its ReLU and residual add here.
// The backward to the input uses OUT_RESIDUAL alone: dx + the gradient a block's shortcut
// brings to the same input (conv2d::backward_input_add).
const OUT_BIAS: u32 = 1u;
const OUT_RELU: u32 = 2u;
const OUT_RESIDUAL: u32 = 4u;

// The types activations are stored in, by binding: f32 here (every conversion through them below
// is the identity). The modules of f16 activations (src/ops/activations.rs) set some to f16 and
// compute in f32 between load and store: for the forward and the backward to the input (`fwd16`)
// act_t and out_t (x or dy in, y or dx out, residual, bn_side, bn_out), the weights and the
// BatchNorm's parameters in src_a staying f32; for the backward to the weights and the bias
// (`dw16`) act_t and a_t (dy in src_a, x in src_b), the partial sums in dst staying f32. Each
// module serves only the kernels its types fit (the weight re-layouts and conv_dw_reduce bind f32
// tensors alone and come from the f32 module).
alias act_t = f32; // src_b, residual, bn_side, bn_out
alias out_t = f32; // dst
alias a_t = f32;   // src_a

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src_a: array<a_t>;
@group(0) @binding(2) var<storage, read> src_b: array<act_t>;
@group(0) @binding(3) var<storage, read_write> dst: array<out_t>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> wt: array<vec4<f32>>;
// BatchNorm's statistics of the forward's output, fused into its epilogue (P.stats != 0):
// [K, ceil(N*P*Q / 8), 3], per channel and run of 8 output pixels (count, mean, sum of squared
// deviations), merged by batchnorm.wgsl's bn_stats_partials; the backward to the input's sums
// for BatchNorm's backward (conv_dx_reg, below: [C, ceil(N*H*W / 4), 2]).
@group(0) @binding(6) var<storage, read_write> stats_out: array<f32>;
// The residual the epilogue adds (OUT_RESIDUAL), shaped as the output; conv_dx_reg's sums read
// the BatchNorm's input here instead (never both).
@group(0) @binding(7) var<storage, read> residual: array<act_t>;

// y[i] from the sum (bias included) v: the residual added, then the ReLU, as P.epi says.
fn out_value(i: u32, v: f32) -> f32 {
    var r = v;
    if ((P.epi & OUT_RESIDUAL) != 0u) { r += f32(residual[i]); }
    if ((P.epi & OUT_RELU) != 0u) { r = max(r, 0.0); }
    return r;
}

// ---- the BatchNorm below, applied as the input is loaded (BN_IN) ----
// Inside a residual block, a convolution's input is relu(BN(c)) of the convolution below, and
// nothing else reads it: the forward and the backward to the weights read c instead and apply
// the BN and its ReLU as they load it, so that relu(BN(c)) is never stored (one write and its
// memory saved per such BN). `bias` then holds that BN as [scale, shift] per input channel,
// relu(x * scale + shift) (batchnorm.wgsl's bn_stats_partials writes them; the forward has no
// bias of its own there): one FMA per value, where bn_apply's (x - mean) * invstd * gamma + beta
// takes four; the two differ by rounding (f32 ulps), as inference's folded BatchNorm does.
// Zero padding stays zero: it pads the BN's output, as the convolution's input.
// BN_IN is false here and true in the modules src/ops/conv2d/mod.rs derives (`bn_in_module`):
// a constant, so that the kernels without it compile as before (a branch on a uniform in the
// register forward's loop cost lavapipe a tenth of its inference).
const BN_IN = false;

fn bn_params(c: u32) -> vec2<f32> {
    return vec2<f32>(bias[c], bias[P.c + c]);
}

// relu(BN(v)) of values whose scale and shift are the columns of bn (one per lane).
fn bn_relu4(v: vec4<f32>, bn: mat2x4<f32>) -> vec4<f32> {
    return max(v * bn[0] + bn[1], vec4<f32>(0.0));
}

// relu(BN(v)) of input channel c where BN_IN, else v.
fn bn_in(c: u32, v: f32) -> f32 {
    if (!BN_IN) { return v; }
    let b = bn_params(c);
    return max(v * b.x + b.y, 0.0);
}

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, size: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * size + lid;
}

// The type the register kernels' operands are rounded to: f32 here (every conversion below is the
// identity, the same bits as without it); f16 in the mixed-precision families, whose weights are
// rounded as they are re-laid and whose activations and gradients as they are loaded, then
// multiplied and accumulated in f32 (the numerics of tensor cores: f16 inputs, f32 sums).
alias tile_t = f32;

fn rnd(v: f32) -> f32 {
    return f32(tile_t(v));
}

fn rnd4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(vec4<tile_t>(v));
}

// ---- weight re-layouts (weights are small: these cost one dispatch each) ----

// src_a = w [K, C, R, S]  ->  dst [C*R*S, Kpad] (zero for k >= K)
@compute @workgroup_size(64)
fn transpose_w_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wid, nwg, lid, 64u);
    let crs = P.c * P.r * P.s;
    if (e >= crs * P.kpad) { return; }
    let kk = e / P.kpad;
    let k = e % P.kpad;
    var v = 0.0;
    if (k < P.k) { v = f32(src_a[k * crs + kk]); }
    dst[e] = out_t(rnd(v));
}

// src_a = w [K, C, R, S]  ->  dst [R*S, K, Cpad] (zero for c >= C)
@compute @workgroup_size(64)
fn transpose_w_dx(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let e = linear_id(wid, nwg, lid, 64u);
    let rs_n = P.r * P.s;
    if (e >= rs_n * P.k * P.cpad) { return; }
    let rs = e / (P.k * P.cpad);
    let rem = e % (P.k * P.cpad);
    let k = rem / P.cpad;
    let c = rem % P.cpad;
    var v = 0.0;
    if (c < P.c) { v = f32(src_a[(k * P.c + c) * rs_n + rs]); }
    dst[e] = out_t(rnd(v));
}

// ---- register-blocked kernels (lavapipe, CPUs) ----
// Each invocation owns CB channels x PB pixels (or PB weights): CB*PB accumulators, (CB/4)*(PB/4)
// mat4x4 values a{g}{j} whose column i holds channels 4g..4g+3 of pixel 4j+i. Measured on lavapipe,
// a per-lane storage load costs as much as ~10 multiply-adds, so the tile is as large as spills
// allow; how large that is depends on the CPU's registers (AVX2 or AVX-512) or the GPU's, so the
// block is a variant: CB and PB are set, and the lines marked //%[g<CB4], //%[j<PB4],
// //%[g<CB4,j<PB4] and //%[g<CB4,h<PB8] are written out once per channel group g (CB4 = CB / 4),
// pixel group j (PB4 = PB / 4), pair of pixel groups h or combination, with {g}, {j} and {4*g},
// {4*j} (its first channel or pixel) replaced and {#} by the combination's ordinal, when the
// pipeline is created (src/ops/conv2d/template.rs, for the rows of family.rs there). Every
// per-invocation array is spelled out as vectors, because lavapipe puts indexed arrays in
// scratch memory (5x slower). The epilogues loop over the blocks, a switch on {#} picking each
// block's accumulators: written out per block, they took LLVM seconds to compile.
const CB: u32 = 16u;
const PB: u32 = 16u;

fn outer(a: vec4<f32>, b: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(a * b.x, a * b.y, a * b.z, a * b.w);
}

fn gather4(off: vec4<i32>, ok: vec4<bool>) -> vec4<f32> {
    let o = select(vec4<i32>(0), off, ok);
    return select(vec4<f32>(0.0), rnd4(vec4<f32>(vec4<act_t>(src_b[o.x], src_b[o.y], src_b[o.z], src_b[o.w]))), ok);
}

// gather4 of the input of a forward or a backward to the weights: relu(BN(x)) where BN_IN, bn's
// columns each lane's channel's scale and shift.
fn gather4_in(off: vec4<i32>, ok: vec4<bool>, bn: mat2x4<f32>) -> vec4<f32> {
    if (!BN_IN) { return gather4(off, ok); }
    let o = select(vec4<i32>(0), off, ok);
    let v = vec4<f32>(vec4<act_t>(src_b[o.x], src_b[o.y], src_b[o.z], src_b[o.w]));
    return select(vec4<f32>(0.0), rnd4(bn_relu4(v, bn)), ok);
}

// The BN parameters of input channel c for all four lanes (unused without BN_IN).
fn bn_lanes1(c: u32) -> mat2x4<f32> {
    if (!BN_IN) { return mat2x4<f32>(); }
    let b = bn_params(c);
    return mat2x4<f32>(vec4<f32>(b.x), vec4<f32>(b.y));
}

// The BN parameters of input channels c (one per lane; unused without BN_IN).
fn bn_lanes(c: vec4<u32>) -> mat2x4<f32> {
    if (!BN_IN) { return mat2x4<f32>(); }
    return mat2x4<f32>(vec4<f32>(bias[c.x], bias[c.y], bias[c.z], bias[c.w]),
                       vec4<f32>(bias[P.c + c.x], bias[P.c + c.y], bias[P.c + c.z], bias[P.c + c.w]));
}

fn in_box(h: vec4<i32>, w: vec4<i32>) -> vec4<bool> {
    return (h >= vec4<i32>(0)) & (h < vec4<i32>(i32(P.h))) & (w >= vec4<i32>(0)) & (w < vec4<i32>(i32(P.w)));
}

const LANE4 = vec4<u32>(0u, 1u, 2u, 3u);

// Output pixel m = (n, p, q) -> top-left input row/column and the offset of x[n, 0, hb, wb].
struct Px { hb: vec4<i32>, wb: vec4<i32>, base: vec4<i32> }

// m / d per lane. lavapipe has no vector integer division: it runs one scalar division per
// lane (tens of cycles each), which cost the 16-channel convolutions a third of their time. Below
// 2^21 an f32 quotient is within one of the truth (Vulkan allows 2.5 ulp for division), and one
// correction step either way makes it exact; larger indices take the exact path.
fn udiv4(m: vec4<u32>, d: u32) -> vec4<u32> {
    // every index divided here is below the pixel count of the input or the output
    if (max(P.n * P.h * P.w, P.n * P.p * P.q) >= (1u << 21u)) {
        return m / d;
    }
    let t = vec4<u32>(vec4<f32>(m) / f32(d));
    let r = vec4<i32>(m) - vec4<i32>(t * d);
    return select(select(t, t + 1u, r >= vec4<i32>(i32(d))), t - 1u, r < vec4<i32>(0));
}

fn fwd_pixels(m0: u32, npq: u32) -> Px {
    let m = min(vec4<u32>(m0) + LANE4, vec4<u32>(npq - 1u));
    let t = udiv4(m, P.q);
    let q = m - t * P.q;
    let n = udiv4(t, P.p);
    let p = t - n * P.p;
    let hb = vec4<i32>(p * P.stride) - i32(P.pad);
    let wb = vec4<i32>(q * P.stride) - i32(P.pad);
    return Px(hb, wb, vec4<i32>(n * P.c * P.h * P.w) + hb * i32(P.w) + wb);
}

fn store_row(d: vec4<u32>, ok: vec4<bool>, v: vec4<f32>) {
    if (ok.x) { dst[d.x] = out_t(out_value(d.x, v.x)); }
    if (ok.y) { dst[d.y] = out_t(out_value(d.y, v.y)); }
    if (ok.z) { dst[d.z] = out_t(out_value(d.z, v.z)); }
    if (ok.w) { dst[d.w] = out_t(out_value(d.w, v.w)); }
}

// Stores channels c0..c0+3 (of `nch`, planes of `plane` values) of four consecutive pixels whose
// channel-0 offsets are `o`, plus `b` (one value per channel): column i of `a` holds the four
// channels of pixel i, so row j is channel c0+j of the four pixels.
fn store4(o: vec4<u32>, ok: vec4<bool>, c0: u32, nch: u32, plane: u32, b: vec4<f32>,
          a: mat4x4<f32>) {
    let t = transpose(a);
    if (c0 < nch) { store_row(o + vec4<u32>(c0 * plane), ok, t[0] + b.x); }
    if (c0 + 1u < nch) { store_row(o + vec4<u32>((c0 + 1u) * plane), ok, t[1] + b.y); }
    if (c0 + 2u < nch) { store_row(o + vec4<u32>((c0 + 2u) * plane), ok, t[2] + b.z); }
    if (c0 + 3u < nch) { store_row(o + vec4<u32>((c0 + 3u) * plane), ok, t[3] + b.w); }
}

// bias[k0..k0+3] of the forward (zero without bias or past K).
fn bias4(k0: u32) -> vec4<f32> {
    if ((P.epi & OUT_BIAS) == 0u) { return vec4<f32>(0.0); }
    let k = min(vec4<u32>(k0) + LANE4, vec4<u32>(P.k - 1u));
    return vec4<f32>(bias[k.x], bias[k.y], bias[k.z], bias[k.w]);
}

// Offsets of plane position 0 of channel 0 for pixels m0..m0+3 of an [N, nch, plane] tensor
// (m = n * plane + position), and which of them exist.
fn out4(m0: u32, count: u32, nch: u32, plane: u32, ok: ptr<function, vec4<bool>>) -> vec4<u32> {
    let m = vec4<u32>(m0) + LANE4;
    *ok = m < vec4<u32>(count);
    let n = udiv4(min(m, vec4<u32>(count - 1u)), plane);
    return n * (nch * plane) + (m - n * plane);
}

// Adds pixel value v (4 channels) to a run's sum and count if it exists.
fn stats_add(s: ptr<function, vec4<f32>>, n: ptr<function, f32>, v: vec4<f32>, ok: bool) {
    if (ok) {
        *s += v;
        *n += 1.0;
    }
}

// Adds its squared deviation from mean, if it exists.
fn stats_dev(q: ptr<function, vec4<f32>>, v: vec4<f32>, mean: vec4<f32>, ok: bool) {
    if (ok) {
        let d = v - mean;
        *q += d * d;
    }
}

// BatchNorm's partial statistics of output channels k0..k0+3 over run `run` of 8 pixels: the
// pixels of a0 and a1 (column i: the four channels of pixel i) that exist, plus the bias b, as
// stored. Two passes over registers (mean, then squared deviations): the two-pass accuracy of
// bn_stats_chunk without reading the output again.
fn write_stats8(k0: u32, run: u32, a0: mat4x4<f32>, a1: mat4x4<f32>, ok0: vec4<bool>,
                ok1: vec4<bool>, b: vec4<f32>) {
    var s = vec4<f32>(0.0);
    var n = 0.0;
    stats_add(&s, &n, a0[0] + b, ok0.x);
    stats_add(&s, &n, a0[1] + b, ok0.y);
    stats_add(&s, &n, a0[2] + b, ok0.z);
    stats_add(&s, &n, a0[3] + b, ok0.w);
    stats_add(&s, &n, a1[0] + b, ok1.x);
    stats_add(&s, &n, a1[1] + b, ok1.y);
    stats_add(&s, &n, a1[2] + b, ok1.z);
    stats_add(&s, &n, a1[3] + b, ok1.w);
    let mean = s / max(n, 1.0);
    var q = vec4<f32>(0.0);
    stats_dev(&q, a0[0] + b, mean, ok0.x);
    stats_dev(&q, a0[1] + b, mean, ok0.y);
    stats_dev(&q, a0[2] + b, mean, ok0.z);
    stats_dev(&q, a0[3] + b, mean, ok0.w);
    stats_dev(&q, a1[0] + b, mean, ok1.x);
    stats_dev(&q, a1[1] + b, mean, ok1.y);
    stats_dev(&q, a1[2] + b, mean, ok1.z);
    stats_dev(&q, a1[3] + b, mean, ok1.w);
    stats_store(k0, run, n, mean.x, q.x);
    stats_store(k0 + 1u, run, n, mean.y, q.y);
    stats_store(k0 + 2u, run, n, mean.z, q.z);
    stats_store(k0 + 3u, run, n, mean.w, q.w);
}

// Stores channel k's partial statistics of run `run` (a channel past K is padding, and so is a
// run past the last pixel: the last block of PB pixels may hold one).
fn stats_store(k: u32, run: u32, n: f32, mean: f32, q: f32) {
    let runs = (P.n * P.p * P.q + 7u) / 8u;
    if (k >= P.k || run >= runs) { return; }
    let o = (k * runs + run) * 3u;
    stats_out[o] = n;
    stats_out[o + 1u] = mean;
    stats_out[o + 2u] = q;
}

// forward: wt = w re-laid [C*R*S, Kpad] (Kpad a multiple of CB); src_b = x; dst = y.
// Invocation: CB out channels x PB pixels.
@compute @workgroup_size(64)
fn conv_fwd_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let npq = P.n * P.p * P.q;
    let pblocks = (npq + PB - 1u) / PB;
    let g = linear_id(wid, nwg, lid, 64u);
    if (g >= pblocks * (P.kpad / CB)) { return; }
    let kb = g / pblocks;
    let m0 = (g % pblocks) * PB;
    let hw = i32(P.h * P.w);
    let W = i32(P.w);
    //%[j<PB4] let x{j} = fwd_pixels(m0 + {4*j}u, npq);
    //%[g<CB4,j<PB4] var a{g}{j} = mat4x4<f32>();
    let wstride = P.r * P.s * (P.kpad / 4u);
    for (var r = 0; r < i32(P.r); r++) {
        for (var s = 0; s < i32(P.s); s++) {
            //%[j<PB4] let ok{j} = in_box(x{j}.hb + r, x{j}.wb + s);
            let d = r * W + s;
            //%[j<PB4] var o{j} = x{j}.base + d;
            var wi = u32(r * i32(P.s) + s) * (P.kpad / 4u) + kb * (CB / 4u);
            for (var c = 0u; c < P.c; c++) {
                //%[g<CB4] let w{g} = wt[wi + {g}u];
                let bn = bn_lanes1(c);
                //%[j<PB4] let v{j} = gather4_in(o{j}, ok{j}, bn);
                //%[g<CB4,j<PB4] a{g}{j} += outer(w{g}, v{j});
                wi += wstride;
                //%[j<PB4] o{j} += hw;
            }
        }
    }
    let k0 = kb * CB;
    let plane = P.p * P.q;
    // 4 channels x 8 pixels a turn (see conv_dx_reg's epilogue)
    for (var i = 0u; i < (CB / 4u) * (PB / 8u); i++) {
        var a0: mat4x4<f32>;
        var a1: mat4x4<f32>;
        switch i {
            //%[g<CB4,h<PB8] case {#}u: { a0 = a{g}{2*h}; a1 = a{g}{2*h+1}; }
            default: {}
        }
        let k = k0 + 4u * (i / (PB / 8u));
        let m = m0 + 8u * (i % (PB / 8u));
        let b = bias4(k);
        var ok0: vec4<bool>;
        var ok1: vec4<bool>;
        let y0 = out4(m, npq, P.k, plane, &ok0);
        let y1 = out4(m + 4u, npq, P.k, plane, &ok1);
        store4(y0, ok0, k, P.k, plane, b, a0);
        store4(y1, ok1, k, P.k, plane, b, a1);
        if (P.stats != 0u) {
            write_stats8(k, m / 8u, a0, a1, ok0, ok1, b);
        }
    }
}

// Input pixel m = (n, h, w) -> h + pad, w + pad and the offset of dy[n, 0, 0, 0].
fn dx_pixels(m0: u32, nhw: u32) -> Px {
    let m = min(vec4<u32>(m0) + LANE4, vec4<u32>(nhw - 1u));
    let t = udiv4(m, P.w);
    let w = m - t * P.w;
    let n = udiv4(t, P.h);
    let h = t - n * P.h;
    return Px(vec4<i32>(h + P.pad), vec4<i32>(w + P.pad), vec4<i32>(n * P.k * P.p * P.q));
}

// Which dy[n, :, p, q] feed input pixel (h, w) through kernel tap (r, s), and where.
fn dx_tap(x: Px, r: i32, s: i32, ok: ptr<function, vec4<bool>>) -> vec4<i32> {
    let st = i32(P.stride);
    let ph = x.hb - r;
    let pw = x.wb - s;
    // strides 1 and 2 (all ResNets use) without per-lane integer division (see udiv4)
    var p = ph;
    var q = pw;
    var on_grid = vec4<bool>(true);
    if (st == 2) {
        p = ph >> vec4<u32>(1u);
        q = pw >> vec4<u32>(1u);
        on_grid = ((ph | pw) & vec4<i32>(1)) == vec4<i32>(0);
    } else if (st != 1) {
        p = ph / st;
        q = pw / st;
        on_grid = (ph % st == vec4<i32>(0)) & (pw % st == vec4<i32>(0));
    }
    *ok = (ph >= vec4<i32>(0)) & (pw >= vec4<i32>(0)) & on_grid &
          (p < vec4<i32>(i32(P.p))) & (q < vec4<i32>(i32(P.q)));
    return x.base + p * i32(P.q) + q;
}

// backward to input: wt = w re-laid [R*S, K, Cpad] (Cpad a multiple of CB); src_b = dy; dst = dx.
// Invocation: CB input channels x PB input pixels.
@compute @workgroup_size(64)
fn conv_dx_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let nhw = P.n * P.h * P.w;
    let pblocks = (nhw + PB - 1u) / PB;
    let g = linear_id(wid, nwg, lid, 64u);
    if (g >= pblocks * (P.cpad / CB)) { return; }
    let cb = g / pblocks;
    let m0 = (g % pblocks) * PB;
    let pq = i32(P.p * P.q);
    //%[j<PB4] let x{j} = dx_pixels(m0 + {4*j}u, nhw);
    //%[g<CB4,j<PB4] var a{g}{j} = mat4x4<f32>();
    let kstride = P.cpad / 4u;
    for (var r = 0; r < i32(P.r); r++) {
        for (var s = 0; s < i32(P.s); s++) {
            var live = false;
            //%[j<PB4] var ok{j}: vec4<bool>;
            //%[j<PB4] var o{j} = dx_tap(x{j}, r, s, &ok{j});
            //%[j<PB4] live = live || any(ok{j});
            if (!live) { continue; }
            var wi = u32(r * i32(P.s) + s) * P.k * kstride + cb * (CB / 4u);
            for (var k = 0u; k < P.k; k++) {
                //%[g<CB4] let w{g} = wt[wi + {g}u];
                //%[j<PB4] let v{j} = gather4(o{j}, ok{j});
                //%[g<CB4,j<PB4] a{g}{j} += outer(w{g}, v{j});
                wi += kstride;
                //%[j<PB4] o{j} += pq;
            }
        }
    }
    let c0 = cb * CB;
    let plane = P.h * P.w;
    // One 4x4 block a turn, in a loop rather than written out per block: written out (16 copies
    // of the BatchNorm sums and stores at 16x16), lavapipe's LLVM took 15-19 s to compile this
    // kernel, 0.5 s so. The switch picks the block's accumulators by name (an array would
    // live in scratch memory; see template.rs).
    for (var i = 0u; i < (CB / 4u) * (PB / 4u); i++) {
        var a: mat4x4<f32>;
        switch i {
            //%[g<CB4,j<PB4] case {#}u: { a = a{g}{j}; }
            default: {}
        }
        let g = i / (PB / 4u);
        let j = i % (PB / 4u);
        var ok: vec4<bool>;
        let xo = out4(m0 + 4u * j, nhw, P.c, plane, &ok);
        if (P.stats != 0u) {
            a = bn_grad4(c0 + 4u * g, m0 / 4u + j, plane, xo, ok, a);
        }
        store4(xo, ok, c0 + 4u * g, P.c, plane, vec4<f32>(0.0), a);
    }
}

// ---- BatchNorm's backward sums in the backward to the input's epilogue (P.stats != 0) ----
// Where the convolution's input is relu(BN(x)) of a training BatchNorm, the dx it computes is
// that BN's dy. The epilogue masks it where the BN's pre-activation xhat * gamma + beta is not
// positive (the ReLU's backward, from x and bn_apply's arithmetic rather than a load of the
// BN's output), so that it stores g, and writes per channel and run of 4 pixels sum(g * xhat)
// and sum(g), xhat = (x - mean) * invstd (residual = the BN's input x, bias = its saved mean
// then invstd, src_a = its gamma then beta): stats_out [C, ceil(N*H*W / 4), 2], which
// batchnorm.wgsl's bn_backward_partials adds up, instead of bn_backward_chunk reading dy, the
// BN's output and x again. (conv2d_gemm.wgsl's conv_dx_gemm_bn does the same.)

// Where the BN added a residual (the last of a block), the convolution is the next block's
// first: P.stats bit 4 adds the gradient of that block's shortcut first (bn_side; the BN's dy
// is the sum of the two paths), and bit 2 masks by the BN's stored output (bn_out) instead of
// the recomputed pre-activation, which lacks the residual.
const BN_SUMS: u32 = 1u;
const BN_MASK_FROM_OUTPUT: u32 = 2u;
const BN_ADD_SIDE: u32 = 4u;
@group(0) @binding(8) var<storage, read> bn_side: array<act_t>;
@group(0) @binding(9) var<storage, read> bn_out: array<act_t>;

// Channel c at the run of 4 pixels o (those that exist, as store4 takes them): its gradients g
// masked, returned, and its sums written.
fn bn_grad_row(c: u32, run: u32, plane: u32, o: vec4<u32>, ok: vec4<bool>, g: vec4<f32>) -> vec4<f32> {
    let ch = min(c, P.c - 1u);
    let mean = bias[ch];
    let invstd = bias[P.c + ch];
    let d = select(vec4<u32>(0u), o + vec4<u32>(ch * plane), ok);
    let xhat = (vec4<f32>(vec4<act_t>(residual[d.x], residual[d.y], residual[d.z], residual[d.w])) - mean) * invstd;
    var dy = g;
    if ((P.stats & BN_ADD_SIDE) != 0u) {
        dy += vec4<f32>(vec4<act_t>(bn_side[d.x], bn_side[d.y], bn_side[d.z], bn_side[d.w]));
    }
    var pre = xhat * f32(src_a[ch]) + f32(src_a[P.c + ch]);
    if ((P.stats & BN_MASK_FROM_OUTPUT) != 0u) {
        pre = vec4<f32>(vec4<act_t>(bn_out[d.x], bn_out[d.y], bn_out[d.z], bn_out[d.w]));
    }
    let h = select(vec4<f32>(0.0), dy, ok & (pre > vec4<f32>(0.0)));
    let runs = (P.n * P.h * P.w + 3u) / 4u;
    if (c < P.c && run < runs) {
        let at = (c * runs + run) * 2u;
        stats_out[at] = dot(h, xhat);
        stats_out[at + 1u] = dot(h, vec4<f32>(1.0));
    }
    return h;
}

// Channels c0..c0+3 (rows of the transpose of acc) of run `run`, masked. The last block of PB
// pixels may hold runs past the last pixel: no sums are written for them.
fn bn_grad4(c0: u32, run: u32, plane: u32, o: vec4<u32>, ok: vec4<bool>, acc: mat4x4<f32>) -> mat4x4<f32> {
    let t = transpose(acc);
    return transpose(mat4x4<f32>(
        bn_grad_row(c0, run, plane, o, ok, t[0]),
        bn_grad_row(c0 + 1u, run, plane, o, ok, t[1]),
        bn_grad_row(c0 + 2u, run, plane, o, ok, t[2]),
        bn_grad_row(c0 + 3u, run, plane, o, ok, t[3])));
}

// Weight index j = (c, r, s) -> r, s and the offset of x[0, c, r, s] (relative to the window).
struct Taps { r: vec4<i32>, s: vec4<i32>, off: vec4<i32>, c: vec4<u32> }

fn dw_taps(j0: u32, crs: u32) -> Taps {
    let j = min(vec4<u32>(j0) + LANE4, vec4<u32>(crs - 1u));
    let rs_n = P.r * P.s;
    let c = j / rs_n;
    let rs = j % rs_n;
    let r = vec4<i32>(rs / P.s);
    let s = vec4<i32>(rs % P.s);
    return Taps(r, s, vec4<i32>(c * P.h * P.w) + r * i32(P.w) + s, c);
}

// Stores a 4x4 block of partial weight gradients: column i of `a` is weight j0+i, row l is
// output channel k0+l. info = (split, C*R*S).
fn store_dw4(j0: u32, k0: u32, info: vec2<u32>, a: mat4x4<f32>) {
    let split = info.x;
    let crs = info.y;
    for (var i = 0u; i < 4u; i++) {
        let j = j0 + i;
        if (j >= crs) { return; }
        for (var l = 0u; l < 4u; l++) {
            let k = k0 + l;
            if (k < P.k) { dst[(split * P.k + k) * crs + j] = out_t(a[i][l]); }
        }
    }
}

// dy[n, k..k+3, p, q] as a vec4 (zero past K); i = offset of dy[n, 0, p, q]
fn dy4(i: u32, k: u32, stride: u32) -> vec4<f32> {
    let kk = min(vec4<u32>(k) + LANE4, vec4<u32>(P.k - 1u));
    let ok = (vec4<u32>(k) + LANE4) < vec4<u32>(P.k);
    let o = vec4<u32>(i) + kk * stride;
    return select(vec4<f32>(0.0), rnd4(vec4<f32>(vec4<a_t>(src_a[o.x], src_a[o.y], src_a[o.z], src_a[o.w]))), ok);
}

// backward to weights, split over output rows (n, p): src_a = dy; src_b = x;
// dst = partial sums [splits, K, C*R*S], summed by conv_dw_reduce.
// Invocation: CB out channels x PB consecutive (c, r, s), one chunk of rows.
@compute @workgroup_size(64)
fn conv_dw_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let crs = P.c * P.r * P.s;
    let jblocks = (crs + PB - 1u) / PB;
    let kblocks = P.kpad / CB;
    let g = linear_id(wid, nwg, lid, 64u);
    if (g >= P.splits * kblocks * jblocks) { return; }
    let jb = g % jblocks;
    let t = g / jblocks;
    let kb = t % kblocks;
    let split = t / kblocks;
    let j0 = jb * PB;
    //%[j<PB4] let t{j} = dw_taps(j0 + {4*j}u, crs);
    // the BatchNorm below's parameters per lane, where it is applied on load (else unused)
    //%[j<PB4] let bn{j} = bn_lanes(t{j}.c);
    let H = vec4<i32>(i32(P.h));
    let W = vec4<i32>(i32(P.w));
    let zero = vec4<i32>(0);
    //%[g<CB4,j<PB4] var a{g}{j} = mat4x4<f32>();
    let pq = P.p * P.q;
    let k0 = kb * CB;
    let row0 = split * P.chunk;
    let row1 = min(row0 + P.chunk, P.n * P.p);
    for (var row = row0; row < row1; row++) {
        let n = row / P.p;
        let p = row % P.p;
        let hb = i32(p * P.stride) - i32(P.pad);
        //%[j<PB4] let h{j} = (t{j}.r + hb >= zero) & (t{j}.r + hb < H);
        let xrow = i32(n * P.c * P.h * P.w) + hb * i32(P.w);
        let yrow = n * P.k * pq + p * P.q;
        for (var q = 0u; q < P.q; q++) {
            let wb = i32(q * P.stride) - i32(P.pad);
            //%[g<CB4] let d{g} = dy4(yrow + q, k0 + {4*g}u, pq);
            let xb = xrow + wb;
            //%[j<PB4] let v{j} = gather4_in(t{j}.off + xb, h{j} & (t{j}.s + wb >= zero) & (t{j}.s + wb < W), bn{j});
            //%[g<CB4,j<PB4] a{g}{j} += outer(d{g}, v{j});
        }
    }
    let info = vec2<u32>(split, crs);
    // one block of 4 x 4 a turn (see conv_dx_reg's epilogue)
    for (var i = 0u; i < (CB / 4u) * (PB / 4u); i++) {
        var a: mat4x4<f32>;
        switch i {
            //%[g<CB4,j<PB4] case {#}u: { a = a{g}{j}; }
            default: {}
        }
        store_dw4(j0 + 4u * (i % (PB / 4u)), k0 + 4u * (i / (PB / 4u)), info, a);
    }
}

// ---- workgroup-memory tiled GEMM (real GPUs) ----
// C[M, Ncols] = A[M, KK] * B[KK, Ncols]
//   mode 0 forward:  M = K, KK = C*R*S, Ncols = N*P*Q; A = w, B = im2col(x), C -> y (+ bias)
//   mode 1 dx:       M = C, KK = K*R*S, Ncols = N*H*W; A = w (transposed view), B = gathered dy
//   mode 2 dw:       M = K, KK = N*P*Q (one chunk per split), Ncols = C*R*S; A = dy, B = im2col(x)^T

var<workgroup> tile_a: array<f32, 1024>; // [16][64]
var<workgroup> tile_b: array<f32, 1024>; // [16][64]

fn x_at(n: u32, c: u32, p: u32, q: u32, r: u32, s: u32) -> f32 {
    let h = i32(p * P.stride + r) - i32(P.pad);
    let w = i32(q * P.stride + s) - i32(P.pad);
    if (h < 0 || w < 0 || h >= i32(P.h) || w >= i32(P.w)) { return 0.0; }
    return bn_in(c, f32(src_b[((n * P.c + c) * P.h + u32(h)) * P.w + u32(w)]));
}

fn load_a(mode: u32, m: u32, kk: u32) -> f32 {
    let rs_n = P.r * P.s;
    if (mode == 0u) {
        if (m >= P.k || kk >= P.c * rs_n) { return 0.0; }
        return f32(src_a[m * P.c * rs_n + kk]);
    }
    if (mode == 1u) {
        if (m >= P.c || kk >= P.k * rs_n) { return 0.0; }
        return f32(src_a[((kk / rs_n) * P.c + m) * rs_n + kk % rs_n]);
    }
    let pq = P.p * P.q;
    if (m >= P.k || kk >= P.n * pq) { return 0.0; }
    return f32(src_a[((kk / pq) * P.k + m) * pq + kk % pq]);
}

fn load_b(mode: u32, kk: u32, col: u32) -> f32 {
    let rs_n = P.r * P.s;
    if (mode == 0u) {
        if (kk >= P.c * rs_n || col >= P.n * P.p * P.q) { return 0.0; }
        let q = col % P.q;
        let t = col / P.q;
        let rs = kk % rs_n;
        return x_at(t / P.p, kk / rs_n, t % P.p, q, rs / P.s, rs % P.s);
    }
    if (mode == 1u) {
        if (kk >= P.k * rs_n || col >= P.n * P.h * P.w) { return 0.0; }
        let w = col % P.w;
        let t = col / P.w;
        let h = t % P.h;
        let n = t / P.h;
        let k = kk / rs_n;
        let rs = kk % rs_n;
        let ph = i32(h + P.pad) - i32(rs / P.s);
        let pw = i32(w + P.pad) - i32(rs % P.s);
        let st = i32(P.stride);
        if (ph < 0 || pw < 0 || ph % st != 0 || pw % st != 0) { return 0.0; }
        let p = u32(ph / st);
        let q = u32(pw / st);
        if (p >= P.p || q >= P.q) { return 0.0; }
        return f32(src_b[((n * P.k + k) * P.p + p) * P.q + q]);
    }
    let npq = P.n * P.p * P.q;
    if (kk >= npq || col >= P.c * rs_n) { return 0.0; }
    let q = kk % P.q;
    let t = kk / P.q;
    let rs = col % rs_n;
    return x_at(t / P.p, col / rs_n, t % P.p, q, rs / P.s, rs % P.s);
}

fn tiled_gemm(mode: u32, wid: vec3<u32>, lid: u32) {
    var m_total: u32;
    var kk_total: u32;
    var n_total: u32;
    let rs_n = P.r * P.s;
    if (mode == 0u) {
        m_total = P.k; kk_total = P.c * rs_n; n_total = P.n * P.p * P.q;
    } else if (mode == 1u) {
        m_total = P.c; kk_total = P.k * rs_n; n_total = P.n * P.h * P.w;
    } else {
        m_total = P.k; kk_total = P.n * P.p * P.q; n_total = P.c * rs_n;
    }
    let m_tiles = (m_total + 63u) / 64u;
    let m0 = (wid.x % m_tiles) * 64u;
    let n0 = (wid.x / m_tiles) * 64u;
    var k_begin = 0u;
    var k_end = kk_total;
    if (mode == 2u) {
        k_begin = wid.y * P.chunk;
        k_end = min(k_begin + P.chunk, kk_total);
    }
    let tm = (lid % 16u) * 4u;
    let tn = (lid / 16u) * 4u;
    var acc: array<vec4<f32>, 4>; // acc[i] = row tm+i, columns tn..tn+3

    for (var t0 = k_begin; t0 < k_end; t0 += 16u) {
        for (var i = 0u; i < 4u; i++) {
            let e = lid + i * 256u;
            let row = e / 64u;
            let col = e % 64u;
            var a = 0.0;
            var b = 0.0;
            if (t0 + row < k_end) {
                a = load_a(mode, m0 + col, t0 + row);
                b = load_b(mode, t0 + row, n0 + col);
            }
            tile_a[e] = a;
            tile_b[e] = b;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 16u; kk++) {
            let av = vec4<f32>(tile_a[kk * 64u + tm], tile_a[kk * 64u + tm + 1u],
                               tile_a[kk * 64u + tm + 2u], tile_a[kk * 64u + tm + 3u]);
            let bv = vec4<f32>(tile_b[kk * 64u + tn], tile_b[kk * 64u + tn + 1u],
                               tile_b[kk * 64u + tn + 2u], tile_b[kk * 64u + tn + 3u]);
            acc[0] += av.x * bv;
            acc[1] += av.y * bv;
            acc[2] += av.z * bv;
            acc[3] += av.w * bv;
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let m = m0 + tm + i;
        if (m >= m_total) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = n0 + tn + j;
            if (col >= n_total) { continue; }
            let v = acc[i][j];
            if (mode == 0u) {
                let pq = P.p * P.q;
                var o = v;
                if ((P.epi & OUT_BIAS) != 0u) { o += bias[m]; }
                let at = ((col / pq) * P.k + m) * pq + col % pq;
                dst[at] = out_t(out_value(at, o));
            } else if (mode == 1u) {
                let hw = P.h * P.w;
                let at = ((col / hw) * P.c + m) * hw + col % hw;
                dst[at] = out_t(out_value(at, v));
            } else {
                dst[(wid.y * P.k + m) * n_total + col] = out_t(v);
            }
        }
    }
}

// forward: src_a = w, src_b = x, dst = y, bias
@compute @workgroup_size(256)
fn conv_fwd_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    tiled_gemm(0u, wid, lid);
}

// backward to input: src_a = w, src_b = dy, dst = dx
@compute @workgroup_size(256)
fn conv_dx_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    tiled_gemm(1u, wid, lid);
}

// backward to weights: src_a = dy, src_b = x, dst = partial [splits, K, C*R*S]; wid.y = split
@compute @workgroup_size(256)
fn conv_dw_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    tiled_gemm(2u, wid, lid);
}

// dw[e] = sum over splits of partial[split, e], in a fixed order (deterministic): src_a = partial
@compute @workgroup_size(64)
fn conv_dw_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let total = P.k * P.c * P.r * P.s;
    let e = linear_id(wid, nwg, lid, 64u);
    if (e >= total) { return; }
    // eight loads in flight at a time (a GPU waits out each load's latency otherwise), added in
    // the same fixed order as one at a time
    var sum = 0.0;
    var s = 0u;
    for (; s + 8u <= P.splits; s += 8u) {
        let v0 = f32(src_a[s * total + e]);
        let v1 = f32(src_a[(s + 1u) * total + e]);
        let v2 = f32(src_a[(s + 2u) * total + e]);
        let v3 = f32(src_a[(s + 3u) * total + e]);
        let v4 = f32(src_a[(s + 4u) * total + e]);
        let v5 = f32(src_a[(s + 5u) * total + e]);
        let v6 = f32(src_a[(s + 6u) * total + e]);
        let v7 = f32(src_a[(s + 7u) * total + e]);
        sum += v0; sum += v1; sum += v2; sum += v3;
        sum += v4; sum += v5; sum += v6; sum += v7;
    }
    for (; s < P.splits; s++) {
        sum += f32(src_a[s * total + e]);
    }
    dst[e] = out_t(sum);
}

var<workgroup> red: array<f32, 256>;

// db[k] = sum_{n,p,q} dy[n,k,p,q]: one workgroup per k, fixed-order tree. src_a = dy
@compute @workgroup_size(256)
fn conv_db(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let k = wid.x;
    let pq = P.p * P.q;
    let total = P.n * pq;
    var sum = 0.0;
    for (var i = lid; i < total; i += 256u) {
        sum += f32(src_a[((i / pq) * P.k + k) * pq + i % pq]);
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { red[lid] += red[lid + stride]; }
        workgroupBarrier();
    }
    if (lid == 0u) { dst[k] = out_t(red[0]); }
}
