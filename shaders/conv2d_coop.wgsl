// conv2d as implicit GEMM on cooperative matrices (tensor cores): the mixed-precision family
// `coop64x64-f16`. Not a module by itself: src/ops/conv2d/family.rs appends it to the shared part
// of shaders/conv2d_gemm.wgsl (everything above its `====` line: parameters, geometry, operand
// loads, the output's layout), so the three modes, the grid and the entry points are the GEMM
// family's; only the multiplication differs.
//
// A workgroup of 256 invocations is 8 subgroups of 32 (the family is offered only where the
// adapter's subgroups are exactly 32 wide and it lists 16x16x16 f16*f16+f32 matrices). It owns a
// 64x64 tile of C as 4 x 4 blocks of 16x16: subgroup s multiplies the blocks at rows
// 16 * (s % 4) and columns 32 * (s / 4) + {0, 16}, one 16x16x16 product per block and depth
// step, accumulated in f32 matrices. The operands go through workgroup memory as in the GEMM
// family (double-buffered, the loads of step t+1 in flight while step t is multiplied), rounded
// to f16 as they are stored: A [TK][TM] (a column-major 16-row strip per block), B [TK][TN]
// (row-major). At the end each subgroup stores one block at a time into its 16x16 of `stage`,
// and the whole workgroup writes the staged blocks out through the layout of the mode (and the
// epilogue of modes 0 and 1: write_one), so no output layout has to be a strided matrix; the
// GEMM family's BatchNorm epilogues (the forward's partial statistics, the backward to the
// input's mask and sums) read the staged blocks too. Workgroup memory: 4 + 4 KiB of f16 tiles
// and 8 KiB of staging, WebGPU's default 16 KiB.

const SUBGROUP: u32 = 32u;
const SUBGROUPS: u32 = THREADS / SUBGROUP;
const BLOCK: u32 = 16u;                 // the cooperative matrices' M, N and K
const ROW_BLOCKS: u32 = TM / BLOCK;     // 4: the subgroups of one column of blocks

var<workgroup> tile_a: array<f16, 2u * TK * TM>;             // [buffer][TK][TM]
var<workgroup> tile_b: array<f16, 2u * TK * TN>;             // [buffer][TK][TN]
var<workgroup> stage: array<f32, SUBGROUPS * BLOCK * BLOCK>; // [subgroup][16][16], row-major

// Stores load l of A (mode 2), the vec4 of A (modes 0, 1) and load l of B into buffer `buf`:
// the same places as the GEMM family's, as scalars.
fn store_a2(buf: u32, lid: u32, l: u32, v: f32) {
    let m = lid / TK + l * (THREADS / TK);
    tile_a[buf * TK * TM + (lid % TK) * TM + m] = f16(v);
}

fn store_a4(buf: u32, lid: u32, v: vec4<f32>) {
    let at = buf * TK * TM + lid * 4u;
    for (var i = 0u; i < 4u; i++) {
        tile_a[at + i] = f16(v[i]);
    }
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
    tile_b[buf * TK * TN + d * TN + c] = f16(v);
}

// Element (i, j) of the block subgroup s staged, column block `half` (0 or 1): its row m and
// column col of C, and where it lies in `stage` (at).
struct Staged { m: u32, col: u32, at: u32 }

fn staged(g: Geometry, s: u32, i: u32, j: u32, half: u32) -> Staged {
    return Staged(g.m0 + (s % ROW_BLOCKS) * BLOCK + i,
                  g.n0 + (s / ROW_BLOCKS) * 2u * BLOCK + half * BLOCK + j,
                  s * BLOCK * BLOCK + i * BLOCK + j);
}

// Writes out the block every subgroup staged, its column block `half`: invocation lid writes
// element lid of each, so neighbouring invocations write neighbouring columns.
fn write_stage(mode: u32, g: Geometry, lid: u32, half: u32) {
    for (var s = 0u; s < SUBGROUPS; s++) {
        let e = staged(g, s, lid / BLOCK, lid % BLOCK, half);
        write_one(mode, g, e.m, e.col, stage[e.at]);
    }
}

// BatchNorm's partial statistics (stats_store_gemm) of the blocks every subgroup staged, column
// block `half`: per block 16 rows and 2 runs of 8 columns (a run never straddles two blocks:
// their first columns are multiples of 16), one (row, run) per invocation, its mean and sum of
// squared deviations in two passes over the staged values.
fn stats_stage(g: Geometry, lid: u32, half: u32) {
    let r = staged(g, lid / 32u, (lid % 32u) / 2u, (lid % 2u) * 8u, half);
    let n = min(g.nc - min(r.col, g.nc), 8u);
    var sum = 0.0;
    for (var e = 0u; e < n; e++) { sum += stage[r.at + e]; }
    let mean = sum / max(f32(n), 1.0);
    var q = 0.0;
    for (var e = 0u; e < n; e++) {
        let d = stage[r.at + e] - mean;
        q += d * d;
    }
    stats_store_gemm(g, r.m, r.col / 8u, f32(n), mean, q);
}

// The backward to the input's BatchNorm epilogue (bn_grad) on the blocks every subgroup staged,
// column block `half`, written out: per block 16 rows and 4 groups of 4 columns, two groups per
// invocation.
fn bn_grad_stage(g: Geometry, lid: u32, half: u32) {
    for (var u = 0u; u < 2u; u++) {
        let e = lid + u * THREADS;
        let r = staged(g, e / 64u, (e % 64u) / 4u, (e % 4u) * 4u, half);
        let v = vec4<f32>(stage[r.at], stage[r.at + 1u], stage[r.at + 2u], stage[r.at + 3u]);
        let h = bn_grad(g, r.m, r.col, v);
        for (var c = 0u; c < 4u; c++) { write_one(1u, g, r.m, r.col + c, h[c]); }
    }
}

// Writes out column block `half` of the staged blocks: with `stats`, the forward also stores
// BatchNorm's partial statistics, and the backward to the input goes through BatchNorm's
// backward epilogue.
fn finish_stage(mode: u32, stats: bool, g: Geometry, lid: u32, half: u32) {
    if (mode == 1u && stats) {
        bn_grad_stage(g, lid, half);
        return;
    }
    write_stage(mode, g, lid, half);
    if (mode == 0u && stats) {
        stats_stage(g, lid, half);
    }
}

fn gemm_coop(mode: u32, stats: bool, wid: vec3<u32>, nwg: vec3<u32>, lid: u32, sg: u32) {
    // no early return for the padding workgroups of a 2-D grid (cooperative operations need the
    // whole workgroup's control flow uniform): their loads read zeros or real data and their
    // columns lie past the output, so they write nothing
    let g = geometry(mode, wid, nwg);
    let col = b_column(mode, g.n0 + lid % TN, g.nc);
    //%[l<B_LOADS] let wj{l} = b_weight(g.n0 + lid / TK + {l}u * (THREADS / TK));
    // this subgroup's blocks: rows mb.., columns nb.. and nb + 16..
    let mb = (sg % ROW_BLOCKS) * BLOCK;
    let nb = (sg / ROW_BLOCKS) * 2u * BLOCK;
    var acc0: coop_mat16x16<f32, C>;
    var acc1: coop_mat16x16<f32, C>;
    var va = vec4<f32>(0.0);
    //%[l<A_SLOADS] var sa{l} = 0.0;
    //%[l<B_LOADS] var sb{l} = 0.0;
    let steps = (g.d_end - g.d_begin + TK - 1u) / TK;
    for (var t = 0u; t <= steps; t++) {
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
        // step t - 1's product, unconditionally: cooperative operations need uniform control
        // flow, and naga counts any branch on a local variable as non-uniform. At t = 0 this
        // multiplies buffer 1, still all zeros (WGSL zero-initializes workgroup memory), so the
        // sums stay exactly zero.
        let ab = ((t + 1u) % 2u) * TK * TM;
        let bb = ((t + 1u) % 2u) * TK * TN;
        let a = coopLoad<coop_mat16x16<f16, A>>(&tile_a[ab + mb], TM);
        let b0 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[bb + nb], TN);
        let b1 = coopLoadT<coop_mat16x16<f16, B>>(&tile_b[bb + nb + BLOCK], TN);
        acc0 = coopMultiplyAdd(a, b0, acc0);
        acc1 = coopMultiplyAdd(a, b1, acc1);
        if (more) {
            let buf = t % 2u;
            if (mode == 2u) {
                //%[l<A_SLOADS] store_a2(buf, lid, {l}u, sa{l});
            } else if (lid < A_VEC) {
                store_a4(buf, lid, va);
            }
            //%[l<B_LOADS] store_b(mode, buf, lid, {l}u, sb{l});
        }
        workgroupBarrier();
    }
    coopStoreT(acc0, &stage[sg * BLOCK * BLOCK], BLOCK);
    workgroupBarrier();
    finish_stage(mode, stats, g, lid, 0u);
    workgroupBarrier();
    coopStoreT(acc1, &stage[sg * BLOCK * BLOCK], BLOCK);
    workgroupBarrier();
    finish_stage(mode, stats, g, lid, 1u);
}

// forward: wt = w re-laid [C*R*S, Kpad], src_b = x, dst = y, bias
@compute @workgroup_size(256)
fn conv_fwd_gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32) {
    gemm_coop(0u, false, wid, nwg, lid, sg);
}

// forward with BatchNorm's partial statistics of y: as conv_fwd_gemm, and stats_out
@compute @workgroup_size(256)
fn conv_fwd_gemm_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32) {
    gemm_coop(0u, true, wid, nwg, lid, sg);
}

// backward to input: wt = w re-laid [R*S, K, Cpad], src_b = dy, dst = dx
@compute @workgroup_size(256)
fn conv_dx_gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32) {
    gemm_coop(1u, false, wid, nwg, lid, sg);
}

// backward to input with BatchNorm's backward sums (bn_grad): as conv_dx_gemm, and src_a, bias,
// residual, stats_out as bn_grad says
@compute @workgroup_size(256)
fn conv_dx_gemm_bn(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32) {
    gemm_coop(1u, true, wid, nwg, lid, sg);
}

// backward to weights: src_a = dy, src_b = x, dst = partial [splits, K, C*R*S]; wid.y = split
@compute @workgroup_size(256)
fn conv_dw_gemm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32, @builtin(subgroup_id) sg: u32) {
    gemm_coop(2u, false, wid, nwg, lid, sg);
}
