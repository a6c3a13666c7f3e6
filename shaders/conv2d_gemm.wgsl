// conv2d as implicit GEMM for GPUs: the GPU-class family (shapes and math as in conv2d.wgsl).
//
//   C[M, NC] = A[M, D] * B[D, NC], never materialised:
//   mode 0 forward:  M = K, D = C*R*S (c, r, s),  NC = N*P*Q; A = w, B = im2col(x); C -> y (+ bias);
//                    conv_fwd_gemm_stats also writes BatchNorm's partial statistics of y (below)
//   mode 1 dx:       M = C, D = R*S*K (r, s, k),  NC = N*H*W; A = w^T, B = dy gathered through the
//                    taps that reach each input pixel (zero where the stride skips it);
//                    conv_dx_gemm_bn also does the ReLU's and BatchNorm's backward sums (below)
//   mode 2 dw:       M = K, D = N*P*Q, one chunk per split (split-K); NC = C*R*S; A = dy^T,
//                    B = im2col(x)^T; C -> partial sums [splits, K, C*R*S], added in a fixed order
//                    by conv2d.wgsl's conv_dw_reduce (bit-reproducible)
//
// A workgroup of 256 invocations owns a TM x TN tile of C, each invocation RM x RN of it in
// registers (groups of four rows and columns strided across the tile, so that neighbouring
// invocations read neighbouring vec4 of workgroup memory and write neighbouring columns of the
// output). The depth runs in steps of TK through two workgroup-memory buffers: while the tile of
// step t is multiplied, the global loads of step t+1 are in flight into registers and then stored
// into the other buffer, so one barrier a step suffices (the double-buffered scheme of TF.js's
// conv2d_mm and ONNX Runtime's WebGPU conv, written for this engine's layouts). A of modes 0 and 1
// is read as vec4 from weights re-laid [D, Mpad] (conv2d.wgsl's transpose_w_fwd / transpose_w_dx,
// Mpad = M rounded up to 4). Each invocation loads B at one fixed column of the tile, so the
// column's coordinates (n, p, q) are decomposed once, not per step.
//
// Everything above the line marked `====` (parameters, geometry, operand loads, the output's
// layout) is shared with the tensor-core family: shaders/conv2d_coop.wgsl replaces what follows
// it (the register tiles), with the same entry points and grid.
//
// Tile sizes are set per variant by src/ops/conv2d/family.rs (the `const` lines below); both
// buffers together stay within 16 KiB, WebGPU's default workgroup storage. Per-invocation values
// are named variables, never arrays: a private array indexed in a loop lands in local memory on
// NVIDIA's compiler (measured 5-10x slower on an H200) and in scratch memory on lavapipe. Lines
// marked `//%[v<COUNT,...]` are written out once per value of each loop variable by
// src/ops/conv2d/template.rs, with {v}, {v/4} and {v%4} replaced by the value.

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, p: u32, q: u32, r: u32,
    s: u32, stride: u32, pad: u32, epi: u32,  // epi: the forward's epilogue, OUT_* bits
    kpad: u32, cpad: u32, splits: u32, chunk: u32,
    stats: u32, groups: u32, pad2: u32, pad3: u32,  // stats: conv_dx_gemm_bn's BN_* bits; groups: 1
}

// The types activations are stored in, by binding, as in conv2d.wgsl (which says what each
// module of f16 activations sets to f16): f32 here.
alias act_t = f32; // src_b, residual, bn_side, bn_out
alias out_t = f32; // dst
alias a_t = f32;   // src_a

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src_a: array<a_t>;
@group(0) @binding(2) var<storage, read> src_b: array<act_t>;
@group(0) @binding(3) var<storage, read_write> dst: array<out_t>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> wt: array<vec4<f32>>;
// The residual the epilogue adds (OUT_RESIDUAL), shaped as the output; conv_dx_gemm_bn reads the
// BatchNorm's input here instead (never both).
@group(0) @binding(7) var<storage, read> residual: array<act_t>;

// The epilogue, as in conv2d.wgsl: y = [relu](sum + [bias] [+ residual]) (an inference
// BatchNorm folded into the weights and bias leaves its ReLU and residual add here); dx +
// residual in the backward to the input (the gradient a block's shortcut brings).
const OUT_BIAS: u32 = 1u;
const OUT_RELU: u32 = 2u;
const OUT_RESIDUAL: u32 = 4u;

const TM: u32 = 64u;
const TN: u32 = 64u;
const TK: u32 = 16u;

const THREADS: u32 = 256u;
const A_VEC: u32 = TK * TM / 4u;        // vec4 in one buffer of A
const B_VEC: u32 = TK * TN / 4u;
// per invocation and step: one vec4 of A (modes 0, 1; A_VEC <= THREADS), A_SLOADS values of A
// (mode 2), B_LOADS values of B
const A_SLOADS: u32 = TK * TM / THREADS;
const B_LOADS: u32 = TK * TN / THREADS;

// The GEMM's sizes for a mode and this workgroup's place in it.
struct Geometry {
    m: u32,       // rows of C
    mpad: u32,    // row length of the re-laid weights (modes 0, 1)
    nc: u32,      // columns of C
    d_begin: u32, // this workgroup's depth range
    d_end: u32,
    m0: u32,      // this workgroup's first row and column of C
    n0: u32,
    split: u32,
    live: bool,   // false for the padding workgroups of a 2-D grid
}

fn geometry(mode: u32, wid: vec3<u32>, nwg: vec3<u32>) -> Geometry {
    var g: Geometry;
    let rs = P.r * P.s;
    let npq = P.n * P.p * P.q;
    var tile = wid.x + wid.y * nwg.x;
    g.split = 0u;
    g.d_begin = 0u;
    if (mode == 0u) {
        g.m = P.k; g.mpad = P.kpad; g.nc = npq; g.d_end = P.c * rs;
    } else if (mode == 1u) {
        g.m = P.c; g.mpad = P.cpad; g.nc = P.n * P.h * P.w; g.d_end = rs * P.k;
    } else {
        g.m = P.k; g.mpad = P.kpad; g.nc = P.c * rs;
        tile = wid.x;
        g.split = wid.y;
        g.d_begin = wid.y * P.chunk;
        g.d_end = min(g.d_begin + P.chunk, npq);
    }
    let m_tiles = (g.m + TM - 1u) / TM;
    let n_tiles = (g.nc + TN - 1u) / TN;
    g.live = tile < m_tiles * n_tiles;
    g.m0 = (tile % m_tiles) * TM;
    g.n0 = (tile / m_tiles) * TN;
    return g;
}

// The fixed column an invocation loads B at, decomposed once. Modes 0 and 2 use (n, p, q) of
// an output pixel as (base of x[n], p*stride - pad, q*stride - pad); mode 1 uses (n, h, w) of an
// input pixel as (base of dy[n], h + pad, w + pad). Mode 2's columns are weights and change with
// the load: see b_weight.
struct Column {
    base: u32,
    y: i32,
    x: i32,
    ok: bool,
}

fn b_column(mode: u32, col: u32, nc: u32) -> Column {
    var c: Column;
    c.ok = col < nc;
    if (mode == 1u) {
        let hw = P.h * P.w;
        let n = col / hw;
        let i = col % hw;
        c.base = n * P.k * P.p * P.q;
        c.y = i32(i / P.w + P.pad);
        c.x = i32(i % P.w + P.pad);
        return c;
    }
    let pq = P.p * P.q;
    let n = col / pq;
    let i = col % pq;
    c.base = n * P.c * P.h * P.w;
    c.y = i32((i / P.q) * P.stride) - i32(P.pad);
    c.x = i32((i % P.q) * P.stride) - i32(P.pad);
    return c;
}

// relu(BN(v)) of input channel c where BN_IN (true in the derived modules, as in conv2d.wgsl,
// whose bn_in says why), else v: the BatchNorm below applied as the input is loaded, in the
// forward and the backward to the weights, with `bias` holding its [scale, shift] per channel.
const BN_IN = false;

fn bn_in(c: u32, v: f32) -> f32 {
    if (!BN_IN) { return v; }
    return max(v * bias[c] + bias[P.c + c], 0.0);
}

// B[d, col] of mode 0: x at channel c, tap (r, s) of the column's window.
fn b_forward(col: Column, d: u32, d_end: u32) -> f32 {
    if (!col.ok || d >= d_end) { return 0.0; }
    let rs_n = P.r * P.s;
    let c = d / rs_n;
    let rs = d % rs_n;
    let h = col.y + i32(rs / P.s);
    let w = col.x + i32(rs % P.s);
    if (h < 0 || w < 0 || h >= i32(P.h) || w >= i32(P.w)) { return 0.0; }
    return bn_in(c, f32(src_b[col.base + (c * P.h + u32(h)) * P.w + u32(w)]));
}

// B[d, col] of mode 1: dy[n, k, p, q] for the output pixel that reaches the column's input pixel
// through tap (r, s), d = (r*S + s)*K + k; zero where no output pixel does.
fn b_input(col: Column, d: u32, d_end: u32) -> f32 {
    if (!col.ok || d >= d_end) { return 0.0; }
    let rs = d / P.k;
    let k = d % P.k;
    let st = i32(P.stride);
    let ph = col.y - i32(rs / P.s);
    let pw = col.x - i32(rs % P.s);
    if (ph < 0 || pw < 0 || ph % st != 0 || pw % st != 0) { return 0.0; }
    let p = u32(ph / st);
    let q = u32(pw / st);
    if (p >= P.p || q >= P.q) { return 0.0; }
    return f32(src_b[col.base + (k * P.p + p) * P.q + q]);
}

// Weight column j = (c, r, s) of mode 2 as (offset of x[0, c] plus r*W + s, r, s, c + 1 where
// in range, else 0).
fn b_weight(j: u32) -> vec4<i32> {
    let rs_n = P.r * P.s;
    let rs = j % rs_n;
    let r = rs / P.s;
    let s = rs % P.s;
    let c = j / rs_n;
    return vec4<i32>(i32(c * P.h * P.w + r * P.w + s), i32(r), i32(s), select(0, i32(c) + 1, c < P.c));
}

// B[d, j] of mode 2: x at output pixel d (given as its Column) through weight j.
fn b_dw(px: Column, j: vec4<i32>) -> f32 {
    if (!px.ok || j.w == 0) { return 0.0; }
    let h = px.y + j.y;
    let w = px.x + j.z;
    if (h < 0 || w < 0 || h >= i32(P.h) || w >= i32(P.w)) { return 0.0; }
    return bn_in(u32(j.w - 1), f32(src_b[u32(i32(px.base) + px.y * i32(P.w) + px.x + j.x)]));
}

// Load l of A in mode 2: dy[n, m, pq] at the invocation's depth d = (n, pq).
fn load_a2(g: Geometry, d: u32, lid: u32, l: u32) -> f32 {
    let m = g.m0 + lid / TK + l * (THREADS / TK);
    if (d >= g.d_end || m >= g.m) { return 0.0; }
    let pq = P.p * P.q;
    return f32(src_a[((d / pq) * P.k + m) * pq + d % pq]);
}

// The vec4 of A in modes 0 and 1: the re-laid weights at row d0 + e / (TM/4), columns m..m+3.
fn load_a4(g: Geometry, d0: u32, lid: u32) -> vec4<f32> {
    let d = d0 + lid / (TM / 4u);
    let m = g.m0 + (lid % (TM / 4u)) * 4u;
    if (lid >= A_VEC || d >= g.d_end || m >= g.mpad) { return vec4<f32>(0.0); }
    return wt[(d * g.mpad + m) / 4u];
}

// Load l of B. Modes 0 and 1: the invocation's column `col`, depth row lid / TN + l * (THREADS /
// TN). Mode 2: the invocation's depth (output pixel `px`), weight column `j`.
fn load_b(mode: u32, g: Geometry, d0: u32, lid: u32, col: Column, px: Column, j: vec4<i32>, l: u32) -> f32 {
    if (mode == 2u) { return b_dw(px, j); }
    let d = d0 + lid / TN + l * (THREADS / TN);
    if (mode == 0u) { return b_forward(col, d, g.d_end); }
    return b_input(col, d, g.d_end);
}

// The output pixel of mode 2 at depth d (off the end of the chunk: not ok).
fn dw_pixel(g: Geometry, d: u32) -> Column {
    var px = b_column(2u, d, P.n * P.p * P.q);
    px.ok = px.ok && d < g.d_end;
    return px;
}

// Offset of C[0, col] in the output and the step between its rows.
fn out_column(mode: u32, g: Geometry, col: u32) -> vec2<u32> {
    if (mode == 0u) {
        let pq = P.p * P.q;
        return vec2<u32>((col / pq) * P.k * pq + col % pq, pq);
    }
    if (mode == 1u) {
        let hw = P.h * P.w;
        return vec2<u32>((col / hw) * P.c * hw + col % hw, hw);
    }
    return vec2<u32>(g.split * P.k * g.nc + col, g.nc);
}

// Writes C[m, col] (through the epilogue in modes 0 and 1), where both are in range.
fn write_one(mode: u32, g: Geometry, m: u32, col: u32, v: f32) {
    if (m >= g.m || col >= g.nc) { return; }
    let o = out_column(mode, g, col);
    let at = o.x + m * o.y;
    if (mode == 2u) {
        dst[at] = out_t(v);
        return;
    }
    var r = v;
    if (mode == 0u && (P.epi & OUT_BIAS) != 0u) { r += bias[m]; }
    if ((P.epi & OUT_RESIDUAL) != 0u) { r += f32(residual[at]); }
    if ((P.epi & OUT_RELU) != 0u) { r = max(r, 0.0); }
    dst[at] = out_t(r);
}

// BatchNorm's partial statistics of the forward's output (conv_fwd_gemm_stats), in the layout of
// conv2d.wgsl's write_stats8: per channel and run of 8 pixels (N*P*Q order) the count, mean and
// sum of squared deviations, [K, ceil(N*P*Q / 8), 3] in stats_out, each family computing them
// from where it holds its outputs (registers, or the tensor cores' staging tile). The backward to
// the input's BatchNorm sums (conv_dx_gemm_bn, bn_grad below) go here too.
@group(0) @binding(6) var<storage, read_write> stats_out: array<f32>;

// Stores channel k's statistics of run `run`, where both are in range and the run has pixels.
fn stats_store_gemm(g: Geometry, k: u32, run: u32, n: f32, mean: f32, q: f32) {
    let runs = (g.nc + 7u) / 8u;
    if (k >= g.m || run >= runs || n == 0.0) { return; }
    let o = (k * runs + run) * 3u;
    stats_out[o] = n;
    stats_out[o + 1u] = mean;
    stats_out[o + 2u] = q;
}

// BatchNorm's backward sums in the backward to the input's epilogue (conv_dx_gemm_bn), as
// conv2d.wgsl's bn_grad4 computes them (its comment says what and why): C[m, col..col + 3]
// (channel m, 4 consecutive input pixels), `v`, masked where the BN's pre-activation is not
// positive and returned; sum(g * xhat) and sum(g) of the 4 pixels written into stats_out
// [C, ceil(N*H*W / 4), 2]. src_a = the BN's gamma then beta, bias = its saved mean then invstd,
// residual = its input x; P.stats's bits and bn_side, bn_out as there (a block's last BN: its
// shortcut's gradient added first, the mask from its stored output).
const BN_MASK_FROM_OUTPUT: u32 = 2u;
const BN_ADD_SIDE: u32 = 4u;
@group(0) @binding(8) var<storage, read> bn_side: array<act_t>;
@group(0) @binding(9) var<storage, read> bn_out: array<act_t>;

fn bn_grad(g: Geometry, m: u32, col: u32, v: vec4<f32>) -> vec4<f32> {
    if (m >= g.m || col >= g.nc) { return v; }
    let cols = vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u);
    let ok = cols < vec4<u32>(g.nc);
    let c = min(cols, vec4<u32>(g.nc - 1u));
    // 4 consecutive pixels may span two images (H*W not a multiple of 4)
    let hw = P.h * P.w;
    let at = (c / hw) * (P.c * hw) + c % hw + vec4<u32>(m * hw);
    let x = vec4<f32>(vec4<act_t>(residual[at.x], residual[at.y], residual[at.z], residual[at.w]));
    let xhat = (x - bias[m]) * bias[P.c + m];
    var dy = v;
    if ((P.stats & BN_ADD_SIDE) != 0u) {
        dy += vec4<f32>(vec4<act_t>(bn_side[at.x], bn_side[at.y], bn_side[at.z], bn_side[at.w]));
    }
    var pre = xhat * f32(src_a[m]) + f32(src_a[P.c + m]);
    if ((P.stats & BN_MASK_FROM_OUTPUT) != 0u) {
        pre = vec4<f32>(vec4<act_t>(bn_out[at.x], bn_out[at.y], bn_out[at.z], bn_out[at.w]));
    }
    let h = select(vec4<f32>(0.0), dy, ok & (pre > vec4<f32>(0.0)));
    let o = (m * ((g.nc + 3u) / 4u) + col / 4u) * 2u;
    stats_out[o] = dot(h, xhat);
    stats_out[o + 1u] = dot(h, vec4<f32>(1.0));
    return h;
}

// ==== the register-tile GEMM (shaders/conv2d_coop.wgsl replaces everything from here) ====

// The type of the workgroup tiles: f32 here; f16 in the mixed-precision families, whose operands
// are rounded to f16 once, as they are stored into the tiles, then multiplied and accumulated in
// f32 (the numerics of tensor cores: f16 inputs, exact products, f32 sums). In f32 every
// conversion below is the identity, so the fp32 families compute the same bits as before.
alias tile_t = f32;

const RM: u32 = 4u;
const RN: u32 = 4u;
const GN: u32 = TN / RN;                // invocations along a row of the tile
const RM4: u32 = RM / 4u;               // vec4 of A and B multiplied per depth
const RN4: u32 = RN / 4u;

var<workgroup> tile_a: array<vec4<tile_t>, 2u * A_VEC>; // [buffer][TK][TM / 4]
var<workgroup> tile_b: array<vec4<tile_t>, 2u * B_VEC>; // [buffer][TK][TN / 4]

// Stores load l of A (mode 2) and of B into workgroup buffer `buf`.
fn store_a2(buf: u32, lid: u32, l: u32, v: f32) {
    let m = lid / TK + l * (THREADS / TK);
    tile_a[buf * A_VEC + (lid % TK) * (TM / 4u) + m / 4u][m % 4u] = tile_t(v);
}

fn store_b(mode: u32, buf: u32, lid: u32, l: u32, v: f32) {
    var d: u32;
    var c: u32;
    if (mode == 2u) {
        d = lid % TK;
        c = lid / TK + l * (THREADS / TK);
    } else {
        d = lid / TN + l * (THREADS / TN);
        c = lid % TN;
    }
    tile_b[buf * B_VEC + d * (TN / 4u) + c / 4u][c % 4u] = tile_t(v);
}

// Writes row r (of RM) and column group j (of RN4) of the invocation's outputs.
fn write_out(mode: u32, g: Geometry, tm: u32, tn: u32, r: u32, j: u32, v: vec4<f32>) {
    let m = g.m0 + ((r / 4u) * (TM / RM) + tm) * 4u + r % 4u;
    for (var jj = 0u; jj < 4u; jj++) {
        write_one(mode, g, m, g.n0 + (j * GN + tn) * 4u + jj, v[jj]);
    }
}

// The statistics in the register tiles: an invocation holds 4 consecutive pixels of each of its
// rows per column group; the pair (tn, tn + 1) holds a run of 8 (n0 is a multiple of 64, GN is
// even). Each computes its 4 pixels' mean and sum of squared deviations (two passes over
// registers), the odd one hands them to the even one through workgroup memory, and the even one
// merges the two (Chan et al.) and stores the run.

// The exchange: 256 vec4<f32> of workgroup memory, free once the last step is multiplied. The
// f32 families use their B tiles (2 * B_VEC >= 256 vec4, checked in Rust); the f16 families, whose
// tiles cannot hold f32, get an array of their own instead of these two lines (Scheme::source).
fn xchg_put(i: u32, v: vec4<f32>) { tile_b[i] = v; }
fn xchg_get(i: u32) -> vec4<f32> { return tile_b[i]; }

// The statistics of rows 4i..4i+3 (of the invocation's RM) and column group j, whose values are
// the columns of `v` (without a bias: conv2d::forward_with_stats takes none, a convolution before
// a BatchNorm has none). Every invocation of a live workgroup calls it (it holds barriers).
fn stats_pass(g: Geometry, tm: u32, tn: u32, lid: u32, i: u32, j: u32, v: mat4x4<f32>) {
    let col = g.n0 + (j * GN + tn) * 4u;
    let m = g.m0 + (i * (TM / RM) + tm) * 4u;
    let ok = vec4<f32>((vec4<u32>(col) + vec4<u32>(0u, 1u, 2u, 3u)) < vec4<u32>(g.nc));
    let n = ok.x + ok.y + ok.z + ok.w;
    let s = vec4<f32>(dot(v[0], ok), dot(v[1], ok), dot(v[2], ok), dot(v[3], ok));
    let mean = s / max(n, 1.0);
    let d0 = (v[0] - mean.x) * ok;
    let d1 = (v[1] - mean.y) * ok;
    let d2 = (v[2] - mean.z) * ok;
    let d3 = (v[3] - mean.w) * ok;
    let q = vec4<f32>(dot(d0, d0), dot(d1, d1), dot(d2, d2), dot(d3, d3));
    let slot = (lid / 2u) * 2u;
    if (tn % 2u == 1u) {
        xchg_put(slot, mean);
        xchg_put(slot + 1u, q);
    }
    workgroupBarrier();
    if (tn % 2u == 0u) {
        let nb = f32(min(g.nc - min(col + 4u, g.nc), 4u));
        let total = n + nb;
        let delta = xchg_get(slot) - mean;
        let run_mean = mean + delta * (nb / max(total, 1.0));
        let run_q = q + xchg_get(slot + 1u) + delta * delta * (n * nb / max(total, 1.0));
        for (var r = 0u; r < 4u; r++) { stats_store_gemm(g, m + r, col / 8u, total, run_mean[r], run_q[r]); }
    }
    // the next pass writes the exchange again
    workgroupBarrier();
}

// bn_grad of row r (of RM) and column group j (of RN4) of the invocation's outputs.
fn bn_grad_gemm(g: Geometry, tm: u32, tn: u32, r: u32, j: u32, v: vec4<f32>) -> vec4<f32> {
    let m = g.m0 + ((r / 4u) * (TM / RM) + tm) * 4u + r % 4u;
    let col = g.n0 + (j * GN + tn) * 4u;
    return bn_grad(g, m, col, v);
}

fn gemm(mode: u32, stats: bool, wid: vec3<u32>, nwg: vec3<u32>, lid: u32) {
    let g = geometry(mode, wid, nwg);
    if (!g.live) { return; }
    let tn = lid % GN;
    let tm = lid / GN;
    // the fixed B coordinates of this invocation: a column (modes 0, 1) or weights (mode 2)
    let col = b_column(mode, g.n0 + lid % TN, g.nc);
    //%[l<B_LOADS] let wj{l} = b_weight(g.n0 + lid / TK + {l}u * (THREADS / TK));
    //%[r<RM,j<RN4] var acc{r}_{j} = vec4<f32>(0.0);
    var va = vec4<f32>(0.0);
    //%[l<A_SLOADS] var sa{l} = 0.0;
    //%[l<B_LOADS] var sb{l} = 0.0;
    let steps = (g.d_end - g.d_begin + TK - 1u) / TK;
    for (var t = 0u; t <= steps; t++) {
        // loads of step t (into registers, then buffer t % 2) while step t - 1 is multiplied
        let d0 = g.d_begin + t * TK;
        let more = t < steps;
        if (more) {
            var px: Column;
            if (mode == 2u) {
                px = dw_pixel(g, d0 + lid % TK);
                //%[l<A_SLOADS] sa{l} = load_a2(g, d0 + lid % TK, lid, {l}u);
            } else {
                va = load_a4(g, d0, lid);
            }
            //%[l<B_LOADS] sb{l} = load_b(mode, g, d0, lid, col, px, wj{l}, {l}u);
        }
        if (t > 0u) {
            let ab = ((t - 1u) % 2u) * A_VEC;
            let bb = ((t - 1u) % 2u) * B_VEC;
            for (var d = 0u; d < TK; d++) {
                //%[i<RM4] let a{i} = vec4<f32>(tile_a[ab + d * (TM / 4u) + {i}u * (TM / RM) + tm]);
                //%[j<RN4] let b{j} = vec4<f32>(tile_b[bb + d * (TN / 4u) + {j}u * GN + tn]);
                //%[r<RM,j<RN4] acc{r}_{j} += a{r/4}[{r%4}u] * b{j};
            }
        }
        if (more) {
            let buf = t % 2u;
            if (mode == 2u) {
                //%[l<A_SLOADS] store_a2(buf, lid, {l}u, sa{l});
            } else if (lid < A_VEC) {
                tile_a[buf * A_VEC + lid] = vec4<tile_t>(va);
            }
            //%[l<B_LOADS] store_b(mode, buf, lid, {l}u, sb{l});
        }
        workgroupBarrier();
    }
    // One row and column group a turn, in a loop rather than written out per pair (which took
    // lavapipe's LLVM seconds to compile); the switch picks the pair's accumulator by name.
    for (var i = 0u; i < RM * RN4; i++) {
        var acc: vec4<f32>;
        switch i {
            //%[r<RM,j<RN4] case {#}u: { acc = acc{r}_{j}; }
            default: {}
        }
        let r = i / RN4;
        let j = i % RN4;
        if (mode == 1u && stats) {
            acc = bn_grad_gemm(g, tm, tn, r, j, acc);
        }
        write_out(mode, g, tm, tn, r, j, acc);
    }
    if (mode == 0u && stats) {
        //%[i<RM4,j<RN4] stats_pass(g, tm, tn, lid, {i}u, {j}u, mat4x4<f32>(acc{4*i}_{j}, acc{4*i+1}_{j}, acc{4*i+2}_{j}, acc{4*i+3}_{j}));
    }
}

// forward: wt = w re-laid [C*R*S, Kpad], src_b = x, dst = y, bias
@compute @workgroup_size(256)
fn conv_fwd_gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    gemm(0u, false, wid, nwg, lid);
}

// forward with BatchNorm's partial statistics of y: as conv_fwd_gemm, and stats_out
@compute @workgroup_size(256)
fn conv_fwd_gemm_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32) {
    gemm(0u, true, wid, nwg, lid);
}

// backward to input: wt = w re-laid [R*S, K, Cpad], src_b = dy, dst = dx
@compute @workgroup_size(256)
fn conv_dx_gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    gemm(1u, false, wid, nwg, lid);
}

// backward to input with BatchNorm's backward sums (bn_grad_gemm): as conv_dx_gemm, and src_a,
// bias, residual, stats_out as bn_grad_gemm says
@compute @workgroup_size(256)
fn conv_dx_gemm_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32) {
    gemm(1u, true, wid, nwg, lid);
}

// backward to weights: src_a = dy, src_b = x, dst = partial [splits, K, C*R*S]; wid.y = split
@compute @workgroup_size(256)
fn conv_dw_gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    gemm(2u, false, wid, nwg, lid);
}
