// Cooperative matrices emulated in scalar code, for testing the tensor-core family
// (shaders/conv2d_coop.wgsl) on adapters without them: src/ops/conv2d/emulated.rs rewrites that
// family's module to call these functions instead of coopLoad, coopLoadT, coopMultiplyAdd and
// coopStoreT, and to take its subgroup as 32 consecutive invocations (emu_subgroup).
//
// As on hardware, an accumulator is spread over its subgroup's 32 lanes: lane l holds the 8
// elements of column l % 16 in rows l / 16 + 2q (q = 0..7). A loaded operand is where it lies in
// workgroup memory, read by the multiplication: in the family's kernel each load is followed by
// its products with no barrier and no store to that buffer between (emulated.rs checks), so they
// read what the load would have copied, without a 128-element private copy per lane (which made
// lavapipe run this ten times slower). The layouts are SPIR-V's (VK_KHR_cooperative_matrix),
// which naga emits: coopLoad reads column-major (element (r, c) at at + c * stride + r),
// coopLoadT and coopStoreT row-major (at + r * stride + c). The products are exact in f32 and
// summed in f32 in depth order, one of the orders a tensor core may take.

struct emu_a { at: u32, stride: u32 }  // where A lies in tile_a
struct emu_b { at: u32, stride: u32 }  // where B lies in tile_b
struct emu_acc { v: array<f32, 8> }    // [q]: (row l / 16 + 2q, column l % 16) of C

var<private> emu_lane: u32;

// The subgroup of invocation `lid` (remembering its lane).
fn emu_subgroup(lid: u32) -> u32 {
    emu_lane = lid % 32u;
    return lid / 32u;
}

// coopLoad<coop_mat16x16<f16, A>>(&tile_a[at], stride)
fn emu_load_a(at: u32, stride: u32) -> emu_a { return emu_a(at, stride); }

// coopLoadT<coop_mat16x16<f16, B>>(&tile_b[at], stride)
fn emu_load_b(at: u32, stride: u32) -> emu_b { return emu_b(at, stride); }

// coopMultiplyAdd(a, b, c): a * b + c, this lane's elements (row r of A column-major, column
// col of B row-major).
fn emu_multiply_add(a: emu_a, b: emu_b, c: emu_acc) -> emu_acc {
    var out = c;
    let col = emu_lane % 16u;
    for (var q = 0u; q < 8u; q++) {
        let r = emu_lane / 16u + 2u * q;
        var s = out.v[q];
        for (var k = 0u; k < 16u; k++) {
            s += f32(tile_a[a.at + k * a.stride + r]) * f32(tile_b[b.at + k * b.stride + col]);
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
