// Cooperative matrices emulated in scalar code, for testing the tensor-core family
// (shaders/conv2d_coop.wgsl) on adapters without them: src/ops/conv2d/emulated.rs rewrites that
// family's module to call these functions instead of coopLoad, coopLoadT, coopMultiplyAdd and
// coopStoreT, and to take its subgroup as 32 consecutive invocations (emu_subgroup).
//
// As on hardware, a 16x16 matrix is spread over its subgroup's 32 lanes: lane l holds the 8
// elements of column l % 16 in rows l / 16 + 2q (q = 0..7) of an accumulator, and what its
// products need of the operands, copied when they are loaded (those 8 rows of A, that column of
// B). The layouts are SPIR-V's (VK_KHR_cooperative_matrix), which naga emits: coopLoad reads
// column-major (element (r, c) at at + c * stride + r), coopLoadT and coopStoreT row-major
// (at + r * stride + c). The products are exact in f32 and summed in f32 in depth order, one of
// the orders a tensor core may take.

struct emu_a { v: array<f16, 128> }  // [q][k]: row l / 16 + 2q of A
struct emu_b { v: array<f16, 16> }   // [k]: column l % 16 of B
struct emu_acc { v: array<f32, 8> }  // [q]: (row l / 16 + 2q, column l % 16) of C

var<private> emu_lane: u32;

// The subgroup of invocation `lid` (remembering its lane).
fn emu_subgroup(lid: u32) -> u32 {
    emu_lane = lid % 32u;
    return lid / 32u;
}

// coopLoad<coop_mat16x16<f16, A>>(&tile_a[at], stride): this lane's rows.
fn emu_load_a(at: u32, stride: u32) -> emu_a {
    var m: emu_a;
    for (var q = 0u; q < 8u; q++) {
        let r = emu_lane / 16u + 2u * q;
        for (var k = 0u; k < 16u; k++) {
            m.v[q * 16u + k] = tile_a[at + k * stride + r];
        }
    }
    return m;
}

// coopLoadT<coop_mat16x16<f16, B>>(&tile_b[at], stride): this lane's column.
fn emu_load_b(at: u32, stride: u32) -> emu_b {
    var m: emu_b;
    let c = emu_lane % 16u;
    for (var k = 0u; k < 16u; k++) {
        m.v[k] = tile_b[at + k * stride + c];
    }
    return m;
}

// coopMultiplyAdd(a, b, c): a * b + c, this lane's elements.
fn emu_multiply_add(a: emu_a, b: emu_b, c: emu_acc) -> emu_acc {
    var out = c;
    for (var q = 0u; q < 8u; q++) {
        var s = out.v[q];
        for (var k = 0u; k < 16u; k++) {
            s += f32(a.v[q * 16u + k]) * f32(b.v[k]);
        }
        out.v[q] = s;
    }
    return out;
}

// coopStoreT(m, &stage[at], stride): this lane's elements.
fn emu_store_stage(m: emu_acc, at: u32, stride: u32) {
    for (var q = 0u; q < 8u; q++) {
        stage[at + (emu_lane / 16u + 2u * q) * stride + emu_lane % 16u] = m.v[q];
    }
}
