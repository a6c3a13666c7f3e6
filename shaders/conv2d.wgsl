// conv2d as implicit GEMM, forward and both backwards, PyTorch semantics (cross-correlation).
//
//   x  [N, C, H, W]   w [K, C, R, S] (OIHW)   bias [K]   y [N, K, P, Q]
//   P = (H + 2*pad - R) / stride + 1,  Q = (W + 2*pad - S) / stride + 1
//   forward   y[n,k,p,q]  = bias[k] + sum_{c,r,s} w[k,c,r,s] * x[n, c, p*stride-pad+r, q*stride-pad+s]
//   backward  dx[n,c,h,w] = sum_{k,r,s: h = p*stride-pad+r, w = q*stride-pad+s} w[k,c,r,s] * dy[n,k,p,q]
//             dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] * x[n, c, p*stride-pad+r, q*stride-pad+s]
//             db[k]       = sum_{n,p,q} dy[n,k,p,q]
//
// Two kernel families (DESIGN.md, principle 4):
//   *_reg    register blocking, 8 channels x 16 pixels (or 16 weights) per invocation, no workgroup
//            memory. Fastest on lavapipe, which turns every per-lane load into a scalar loop, so the
//            kernels load little and do many FMAs per load.
//   *_tiled  64x64 output tiles staged through workgroup memory, 4x4 per invocation. Fastest on real
//            GPUs. One GEMM skeleton; `mode` picks how A, B and C map onto the conv.
// The register kernels read weights re-laid out by transpose_w_fwd / transpose_w_dx so that eight
// consecutive channels are one pair of vec4 loads.

struct Params {
    n: u32, c: u32, h: u32, w: u32,
    k: u32, p: u32, q: u32, r: u32,
    s: u32, stride: u32, pad: u32, has_bias: u32,
    kpad: u32, cpad: u32, splits: u32, chunk: u32,
}

@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> src_a: array<f32>;
@group(0) @binding(2) var<storage, read> src_b: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst: array<f32>;
@group(0) @binding(4) var<storage, read> bias: array<f32>;
@group(0) @binding(5) var<storage, read> wt: array<vec4<f32>>;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: u32, size: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * size + lid;
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
    if (k < P.k) { v = src_a[k * crs + kk]; }
    dst[e] = v;
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
    if (c < P.c) { v = src_a[(k * P.c + c) * rs_n + rs]; }
    dst[e] = v;
}

// ---- register-blocked kernels (lavapipe) ----
// Each invocation owns 16 channels x 16 pixels (or 16 weights): 256 accumulators, 16 mat4x4 values
// a{g}{j} whose column i holds channels 4g..4g+3 of pixel 4j+i. Measured on lavapipe, a per-lane
// storage load costs as much as ~10 multiply-adds, so the tile is as large as spills allow; and
// every per-invocation array is spelled out as vectors, because lavapipe puts indexed arrays in
// scratch memory (5x slower).

fn outer(a: vec4<f32>, b: vec4<f32>) -> mat4x4<f32> {
    return mat4x4<f32>(a * b.x, a * b.y, a * b.z, a * b.w);
}

fn gather4(off: vec4<i32>, ok: vec4<bool>) -> vec4<f32> {
    let o = select(vec4<i32>(0), off, ok);
    return select(vec4<f32>(0.0), vec4<f32>(src_b[o.x], src_b[o.y], src_b[o.z], src_b[o.w]), ok);
}

fn in_box(h: vec4<i32>, w: vec4<i32>) -> vec4<bool> {
    return (h >= vec4<i32>(0)) & (h < vec4<i32>(i32(P.h))) & (w >= vec4<i32>(0)) & (w < vec4<i32>(i32(P.w)));
}

const LANE4 = vec4<u32>(0u, 1u, 2u, 3u);

fn pick(i: u32, c0: vec4<f32>, c1: vec4<f32>, c2: vec4<f32>, c3: vec4<f32>) -> f32 {
    let lo = select(c1[i % 4u], c0[i % 4u], i < 4u);
    let hi = select(c3[i % 4u], c2[i % 4u], i < 12u);
    return select(hi, lo, i < 8u);
}

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
    if (ok.x) { dst[d.x] = v.x; }
    if (ok.y) { dst[d.y] = v.y; }
    if (ok.z) { dst[d.z] = v.z; }
    if (ok.w) { dst[d.w] = v.w; }
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
    if (P.has_bias == 0u) { return vec4<f32>(0.0); }
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

// forward: wt = w re-laid [C*R*S, K16]; src_b = x; dst = y. Invocation: 16 out channels x 16 pixels.
@compute @workgroup_size(64)
fn conv_fwd_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let npq = P.n * P.p * P.q;
    let pblocks = (npq + 15u) / 16u;
    let g = linear_id(wid, nwg, lid, 64u);
    if (g >= pblocks * (P.kpad / 16u)) { return; }
    let kb = g / pblocks;
    let m0 = (g % pblocks) * 16u;
    let hw = i32(P.h * P.w);
    let W = i32(P.w);
    let x0 = fwd_pixels(m0, npq);
    let x1 = fwd_pixels(m0 + 4u, npq);
    let x2 = fwd_pixels(m0 + 8u, npq);
    let x3 = fwd_pixels(m0 + 12u, npq);

    var a00 = mat4x4<f32>(); var a01 = mat4x4<f32>(); var a02 = mat4x4<f32>(); var a03 = mat4x4<f32>();
    var a10 = mat4x4<f32>(); var a11 = mat4x4<f32>(); var a12 = mat4x4<f32>(); var a13 = mat4x4<f32>();
    var a20 = mat4x4<f32>(); var a21 = mat4x4<f32>(); var a22 = mat4x4<f32>(); var a23 = mat4x4<f32>();
    var a30 = mat4x4<f32>(); var a31 = mat4x4<f32>(); var a32 = mat4x4<f32>(); var a33 = mat4x4<f32>();
    let wstride = P.r * P.s * (P.kpad / 4u);
    for (var r = 0; r < i32(P.r); r++) {
        for (var s = 0; s < i32(P.s); s++) {
            let ok0 = in_box(x0.hb + r, x0.wb + s);
            let ok1 = in_box(x1.hb + r, x1.wb + s);
            let ok2 = in_box(x2.hb + r, x2.wb + s);
            let ok3 = in_box(x3.hb + r, x3.wb + s);
            let d = r * W + s;
            var o0 = x0.base + d; var o1 = x1.base + d; var o2 = x2.base + d; var o3 = x3.base + d;
            var wi = u32(r * i32(P.s) + s) * (P.kpad / 4u) + kb * 4u;
            for (var c = 0u; c < P.c; c++) {
                let w0 = wt[wi];
                let w1 = wt[wi + 1u];
                let w2 = wt[wi + 2u];
                let w3 = wt[wi + 3u];
                let v0 = gather4(o0, ok0);
                let v1 = gather4(o1, ok1);
                let v2 = gather4(o2, ok2);
                let v3 = gather4(o3, ok3);
                a00 += outer(w0, v0); a01 += outer(w0, v1); a02 += outer(w0, v2); a03 += outer(w0, v3);
                a10 += outer(w1, v0); a11 += outer(w1, v1); a12 += outer(w1, v2); a13 += outer(w1, v3);
                a20 += outer(w2, v0); a21 += outer(w2, v1); a22 += outer(w2, v2); a23 += outer(w2, v3);
                a30 += outer(w3, v0); a31 += outer(w3, v1); a32 += outer(w3, v2); a33 += outer(w3, v3);
                wi += wstride;
                o0 += hw; o1 += hw; o2 += hw; o3 += hw;
            }
        }
    }
    let k0 = kb * 16u;
    let b0 = bias4(k0);
    let b1 = bias4(k0 + 4u);
    let b2 = bias4(k0 + 8u);
    let b3 = bias4(k0 + 12u);
    var ok0: vec4<bool>;
    let y0 = out4(m0 + 0u, npq, P.k, P.p * P.q, &ok0);
    store4(y0, ok0, k0 + 0u, P.k, P.p * P.q, b0, a00);
    store4(y0, ok0, k0 + 4u, P.k, P.p * P.q, b1, a10);
    store4(y0, ok0, k0 + 8u, P.k, P.p * P.q, b2, a20);
    store4(y0, ok0, k0 + 12u, P.k, P.p * P.q, b3, a30);
    var ok1: vec4<bool>;
    let y1 = out4(m0 + 4u, npq, P.k, P.p * P.q, &ok1);
    store4(y1, ok1, k0 + 0u, P.k, P.p * P.q, b0, a01);
    store4(y1, ok1, k0 + 4u, P.k, P.p * P.q, b1, a11);
    store4(y1, ok1, k0 + 8u, P.k, P.p * P.q, b2, a21);
    store4(y1, ok1, k0 + 12u, P.k, P.p * P.q, b3, a31);
    var ok2: vec4<bool>;
    let y2 = out4(m0 + 8u, npq, P.k, P.p * P.q, &ok2);
    store4(y2, ok2, k0 + 0u, P.k, P.p * P.q, b0, a02);
    store4(y2, ok2, k0 + 4u, P.k, P.p * P.q, b1, a12);
    store4(y2, ok2, k0 + 8u, P.k, P.p * P.q, b2, a22);
    store4(y2, ok2, k0 + 12u, P.k, P.p * P.q, b3, a32);
    var ok3: vec4<bool>;
    let y3 = out4(m0 + 12u, npq, P.k, P.p * P.q, &ok3);
    store4(y3, ok3, k0 + 0u, P.k, P.p * P.q, b0, a03);
    store4(y3, ok3, k0 + 4u, P.k, P.p * P.q, b1, a13);
    store4(y3, ok3, k0 + 8u, P.k, P.p * P.q, b2, a23);
    store4(y3, ok3, k0 + 12u, P.k, P.p * P.q, b3, a33);
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

// backward to input: wt = w re-laid [R*S, K, C16]; src_b = dy; dst = dx.
// Invocation: 16 input channels x 16 input pixels.
@compute @workgroup_size(64)
fn conv_dx_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let nhw = P.n * P.h * P.w;
    let pblocks = (nhw + 15u) / 16u;
    let g = linear_id(wid, nwg, lid, 64u);
    if (g >= pblocks * (P.cpad / 16u)) { return; }
    let cb = g / pblocks;
    let m0 = (g % pblocks) * 16u;
    let pq = i32(P.p * P.q);
    let x0 = dx_pixels(m0, nhw);
    let x1 = dx_pixels(m0 + 4u, nhw);
    let x2 = dx_pixels(m0 + 8u, nhw);
    let x3 = dx_pixels(m0 + 12u, nhw);

    var a00 = mat4x4<f32>(); var a01 = mat4x4<f32>(); var a02 = mat4x4<f32>(); var a03 = mat4x4<f32>();
    var a10 = mat4x4<f32>(); var a11 = mat4x4<f32>(); var a12 = mat4x4<f32>(); var a13 = mat4x4<f32>();
    var a20 = mat4x4<f32>(); var a21 = mat4x4<f32>(); var a22 = mat4x4<f32>(); var a23 = mat4x4<f32>();
    var a30 = mat4x4<f32>(); var a31 = mat4x4<f32>(); var a32 = mat4x4<f32>(); var a33 = mat4x4<f32>();
    let kstride = P.cpad / 4u;
    for (var r = 0; r < i32(P.r); r++) {
        for (var s = 0; s < i32(P.s); s++) {
            var ok0: vec4<bool>; var ok1: vec4<bool>; var ok2: vec4<bool>; var ok3: vec4<bool>;
            var o0 = dx_tap(x0, r, s, &ok0);
            var o1 = dx_tap(x1, r, s, &ok1);
            var o2 = dx_tap(x2, r, s, &ok2);
            var o3 = dx_tap(x3, r, s, &ok3);
            if (!any(ok0 | ok1 | ok2 | ok3)) { continue; }
            var wi = u32(r * i32(P.s) + s) * P.k * kstride + cb * 4u;
            for (var k = 0u; k < P.k; k++) {
                let w0 = wt[wi];
                let w1 = wt[wi + 1u];
                let w2 = wt[wi + 2u];
                let w3 = wt[wi + 3u];
                let v0 = gather4(o0, ok0);
                let v1 = gather4(o1, ok1);
                let v2 = gather4(o2, ok2);
                let v3 = gather4(o3, ok3);
                a00 += outer(w0, v0); a01 += outer(w0, v1); a02 += outer(w0, v2); a03 += outer(w0, v3);
                a10 += outer(w1, v0); a11 += outer(w1, v1); a12 += outer(w1, v2); a13 += outer(w1, v3);
                a20 += outer(w2, v0); a21 += outer(w2, v1); a22 += outer(w2, v2); a23 += outer(w2, v3);
                a30 += outer(w3, v0); a31 += outer(w3, v1); a32 += outer(w3, v2); a33 += outer(w3, v3);
                wi += kstride;
                o0 += pq; o1 += pq; o2 += pq; o3 += pq;
            }
        }
    }
    let c0 = cb * 16u;
    var ok0: vec4<bool>;
    let x0o = out4(m0 + 0u, nhw, P.c, P.h * P.w, &ok0);
    store4(x0o, ok0, c0 + 0u, P.c, P.h * P.w, vec4<f32>(0.0), a00);
    store4(x0o, ok0, c0 + 4u, P.c, P.h * P.w, vec4<f32>(0.0), a10);
    store4(x0o, ok0, c0 + 8u, P.c, P.h * P.w, vec4<f32>(0.0), a20);
    store4(x0o, ok0, c0 + 12u, P.c, P.h * P.w, vec4<f32>(0.0), a30);
    var ok1: vec4<bool>;
    let x1o = out4(m0 + 4u, nhw, P.c, P.h * P.w, &ok1);
    store4(x1o, ok1, c0 + 0u, P.c, P.h * P.w, vec4<f32>(0.0), a01);
    store4(x1o, ok1, c0 + 4u, P.c, P.h * P.w, vec4<f32>(0.0), a11);
    store4(x1o, ok1, c0 + 8u, P.c, P.h * P.w, vec4<f32>(0.0), a21);
    store4(x1o, ok1, c0 + 12u, P.c, P.h * P.w, vec4<f32>(0.0), a31);
    var ok2: vec4<bool>;
    let x2o = out4(m0 + 8u, nhw, P.c, P.h * P.w, &ok2);
    store4(x2o, ok2, c0 + 0u, P.c, P.h * P.w, vec4<f32>(0.0), a02);
    store4(x2o, ok2, c0 + 4u, P.c, P.h * P.w, vec4<f32>(0.0), a12);
    store4(x2o, ok2, c0 + 8u, P.c, P.h * P.w, vec4<f32>(0.0), a22);
    store4(x2o, ok2, c0 + 12u, P.c, P.h * P.w, vec4<f32>(0.0), a32);
    var ok3: vec4<bool>;
    let x3o = out4(m0 + 12u, nhw, P.c, P.h * P.w, &ok3);
    store4(x3o, ok3, c0 + 0u, P.c, P.h * P.w, vec4<f32>(0.0), a03);
    store4(x3o, ok3, c0 + 4u, P.c, P.h * P.w, vec4<f32>(0.0), a13);
    store4(x3o, ok3, c0 + 8u, P.c, P.h * P.w, vec4<f32>(0.0), a23);
    store4(x3o, ok3, c0 + 12u, P.c, P.h * P.w, vec4<f32>(0.0), a33);
}

// Weight index j = (c, r, s) -> r, s and the offset of x[0, c, r, s] (relative to the window).
struct Taps { r: vec4<i32>, s: vec4<i32>, off: vec4<i32> }

fn dw_taps(j0: u32, crs: u32) -> Taps {
    let j = min(vec4<u32>(j0) + LANE4, vec4<u32>(crs - 1u));
    let rs_n = P.r * P.s;
    let c = j / rs_n;
    let rs = j % rs_n;
    let r = vec4<i32>(rs / P.s);
    let s = vec4<i32>(rs % P.s);
    return Taps(r, s, vec4<i32>(c * P.h * P.w) + r * i32(P.w) + s);
}

// column j of the accumulators holds weight j for channels k0..k0+15
fn store_dw(j: u32, info: vec3<u32>, a: vec4<f32>, b: vec4<f32>, c: vec4<f32>, d: vec4<f32>) {
    let split = info.x;
    let crs = info.y;
    let k0 = info.z;
    if (j >= crs) { return; }
    for (var i = 0u; i < 16u; i++) {
        let k = k0 + i;
        if (k >= P.k) { return; }
        dst[(split * P.k + k) * crs + j] = pick(i, a, b, c, d);
    }
}

// dy[n, k..k+3, p, q] as a vec4 (zero past K); i = offset of dy[n, 0, p, q]
fn dy4(i: u32, k: u32, stride: u32) -> vec4<f32> {
    let kk = min(vec4<u32>(k) + LANE4, vec4<u32>(P.k - 1u));
    let ok = (vec4<u32>(k) + LANE4) < vec4<u32>(P.k);
    let o = vec4<u32>(i) + kk * stride;
    return select(vec4<f32>(0.0), vec4<f32>(src_a[o.x], src_a[o.y], src_a[o.z], src_a[o.w]), ok);
}

// backward to weights, split over output rows (n, p): src_a = dy; src_b = x;
// dst = partial sums [splits, K, C*R*S], summed by conv_dw_reduce.
// Invocation: 16 out channels x 16 consecutive (c, r, s), one chunk of rows.
@compute @workgroup_size(64)
fn conv_dw_reg(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let crs = P.c * P.r * P.s;
    let jblocks = (crs + 15u) / 16u;
    let kblocks = P.kpad / 16u;
    let g = linear_id(wid, nwg, lid, 64u);
    if (g >= P.splits * kblocks * jblocks) { return; }
    let jb = g % jblocks;
    let t = g / jblocks;
    let kb = t % kblocks;
    let split = t / kblocks;
    let j0 = jb * 16u;
    let t0 = dw_taps(j0, crs);
    let t1 = dw_taps(j0 + 4u, crs);
    let t2 = dw_taps(j0 + 8u, crs);
    let t3 = dw_taps(j0 + 12u, crs);
    let H = vec4<i32>(i32(P.h));
    let W = vec4<i32>(i32(P.w));
    let zero = vec4<i32>(0);

    var a00 = mat4x4<f32>(); var a01 = mat4x4<f32>(); var a02 = mat4x4<f32>(); var a03 = mat4x4<f32>();
    var a10 = mat4x4<f32>(); var a11 = mat4x4<f32>(); var a12 = mat4x4<f32>(); var a13 = mat4x4<f32>();
    var a20 = mat4x4<f32>(); var a21 = mat4x4<f32>(); var a22 = mat4x4<f32>(); var a23 = mat4x4<f32>();
    var a30 = mat4x4<f32>(); var a31 = mat4x4<f32>(); var a32 = mat4x4<f32>(); var a33 = mat4x4<f32>();
    let pq = P.p * P.q;
    let k0 = kb * 16u;
    let row0 = split * P.chunk;
    let row1 = min(row0 + P.chunk, P.n * P.p);
    for (var row = row0; row < row1; row++) {
        let n = row / P.p;
        let p = row % P.p;
        let hb = i32(p * P.stride) - i32(P.pad);
        let h0 = (t0.r + hb >= zero) & (t0.r + hb < H);
        let h1 = (t1.r + hb >= zero) & (t1.r + hb < H);
        let h2 = (t2.r + hb >= zero) & (t2.r + hb < H);
        let h3 = (t3.r + hb >= zero) & (t3.r + hb < H);
        let xrow = i32(n * P.c * P.h * P.w) + hb * i32(P.w);
        let yrow = n * P.k * pq + p * P.q;
        for (var q = 0u; q < P.q; q++) {
            let wb = i32(q * P.stride) - i32(P.pad);
            let d0 = dy4(yrow + q, k0, pq);
            let d1 = dy4(yrow + q, k0 + 4u, pq);
            let d2 = dy4(yrow + q, k0 + 8u, pq);
            let d3 = dy4(yrow + q, k0 + 12u, pq);
            let xb = xrow + wb;
            let v0 = gather4(t0.off + xb, h0 & (t0.s + wb >= zero) & (t0.s + wb < W));
            let v1 = gather4(t1.off + xb, h1 & (t1.s + wb >= zero) & (t1.s + wb < W));
            let v2 = gather4(t2.off + xb, h2 & (t2.s + wb >= zero) & (t2.s + wb < W));
            let v3 = gather4(t3.off + xb, h3 & (t3.s + wb >= zero) & (t3.s + wb < W));
                a00 += outer(d0, v0); a01 += outer(d0, v1); a02 += outer(d0, v2); a03 += outer(d0, v3);
                a10 += outer(d1, v0); a11 += outer(d1, v1); a12 += outer(d1, v2); a13 += outer(d1, v3);
                a20 += outer(d2, v0); a21 += outer(d2, v1); a22 += outer(d2, v2); a23 += outer(d2, v3);
                a30 += outer(d3, v0); a31 += outer(d3, v1); a32 += outer(d3, v2); a33 += outer(d3, v3);
        }
    }
    let info = vec3<u32>(split, crs, k0);
    store_dw(j0 + 0u, info, (a00[0]), a10[0], a20[0], a30[0]);
    store_dw(j0 + 1u, info, (a00[1]), a10[1], a20[1], a30[1]);
    store_dw(j0 + 2u, info, (a00[2]), a10[2], a20[2], a30[2]);
    store_dw(j0 + 3u, info, (a00[3]), a10[3], a20[3], a30[3]);
    store_dw(j0 + 4u, info, (a01[0]), a11[0], a21[0], a31[0]);
    store_dw(j0 + 5u, info, (a01[1]), a11[1], a21[1], a31[1]);
    store_dw(j0 + 6u, info, (a01[2]), a11[2], a21[2], a31[2]);
    store_dw(j0 + 7u, info, (a01[3]), a11[3], a21[3], a31[3]);
    store_dw(j0 + 8u, info, (a02[0]), a12[0], a22[0], a32[0]);
    store_dw(j0 + 9u, info, (a02[1]), a12[1], a22[1], a32[1]);
    store_dw(j0 + 10u, info, (a02[2]), a12[2], a22[2], a32[2]);
    store_dw(j0 + 11u, info, (a02[3]), a12[3], a22[3], a32[3]);
    store_dw(j0 + 12u, info, (a03[0]), a13[0], a23[0], a33[0]);
    store_dw(j0 + 13u, info, (a03[1]), a13[1], a23[1], a33[1]);
    store_dw(j0 + 14u, info, (a03[2]), a13[2], a23[2], a33[2]);
    store_dw(j0 + 15u, info, (a03[3]), a13[3], a23[3], a33[3]);
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
    return src_b[((n * P.c + c) * P.h + u32(h)) * P.w + u32(w)];
}

fn load_a(mode: u32, m: u32, kk: u32) -> f32 {
    let rs_n = P.r * P.s;
    if (mode == 0u) {
        if (m >= P.k || kk >= P.c * rs_n) { return 0.0; }
        return src_a[m * P.c * rs_n + kk];
    }
    if (mode == 1u) {
        if (m >= P.c || kk >= P.k * rs_n) { return 0.0; }
        return src_a[((kk / rs_n) * P.c + m) * rs_n + kk % rs_n];
    }
    let pq = P.p * P.q;
    if (m >= P.k || kk >= P.n * pq) { return 0.0; }
    return src_a[((kk / pq) * P.k + m) * pq + kk % pq];
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
        return src_b[((n * P.k + k) * P.p + p) * P.q + q];
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
                if (P.has_bias != 0u) { o += bias[m]; }
                dst[((col / pq) * P.k + m) * pq + col % pq] = o;
            } else if (mode == 1u) {
                let hw = P.h * P.w;
                dst[((col / hw) * P.c + m) * hw + col % hw] = v;
            } else {
                dst[(wid.y * P.k + m) * n_total + col] = v;
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
    var sum = 0.0;
    for (var s = 0u; s < P.splits; s++) {
        sum += src_a[s * total + e];
    }
    dst[e] = sum;
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
        sum += src_a[((i / pq) * P.k + k) * pq + i % pq];
    }
    red[lid] = sum;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) { red[lid] += red[lid + stride]; }
        workgroupBarrier();
    }
    if (lid == 0u) { dst[k] = red[0]; }
}
