//! The tensor-core family with its cooperative matrices emulated in scalar code
//! (shaders/conv2d_coop_emulated.wgsl), so that its indexing, layouts and epilogues are tested on
//! adapters without tensor cores (`GpuOptions::emulate_cooperative`, `RESNET_COOPERATIVE=emulate`).
//! The module is the family's own, with each cooperative operation swapped for its emulation and
//! its subgroups made of 32 consecutive invocations; nothing else of the kernel changes.

const EMULATION: &str = include_str!("../../../shaders/conv2d_coop_emulated.wgsl");

/// The tag of emulated modules (src/ops/derived.rs).
const TAG: &str = "emulated";

/// What the emulation rewrites, each expected exactly as often as given: the cooperative types
/// and operations of shaders/conv2d_coop.wgsl, and its entry points' subgroup (an emulated
/// subgroup is 32 consecutive invocations, whatever the adapter's subgroups are).
const EDITS: &[(&str, &str, usize)] = &[
    ("enable wgpu_cooperative_matrix;\n", "", 1),
    ("coop_mat16x16<f32, C>", "emu_acc", 2),
    (
        "coopLoad<coop_mat16x16<f16, A>>(&tile_a[ab + mb], TM)",
        "emu_load_a(ab + mb, TM)",
        1,
    ),
    (
        "coopLoadT<coop_mat16x16<f16, B>>(&tile_b[bb + nb], TN)",
        "emu_load_b(bb + nb, TN)",
        1,
    ),
    (
        "coopLoadT<coop_mat16x16<f16, B>>(&tile_b[bb + nb + BLOCK], TN)",
        "emu_load_b(bb + nb + BLOCK, TN)",
        1,
    ),
    ("coopMultiplyAdd(", "emu_multiply_add(", 2),
    (
        "coopStoreT(acc0, &stage[sg * BLOCK * BLOCK], BLOCK)",
        "emu_store_stage(acc0, sg * BLOCK * BLOCK, BLOCK)",
        1,
    ),
    (
        "coopStoreT(acc1, &stage[sg * BLOCK * BLOCK], BLOCK)",
        "emu_store_stage(acc1, sg * BLOCK * BLOCK, BLOCK)",
        1,
    ),
    (", @builtin(subgroup_id) sg: u32)", ")", 5),
    ("lid, sg);", "lid, emu_subgroup(lid));", 5),
];

/// The emulated twin of the tensor-core module `m`, named `name#emulated`.
pub(super) fn module(m: (&'static str, &'static str)) -> (&'static str, &'static str) {
    super::super::derived::module(m, TAG, |name, source| {
        let mut out = source.to_string();
        for (from, to, count) in EDITS {
            assert_eq!(
                out.matches(from).count(),
                *count,
                "{name}: the emulation expects `{from}` {count} time(s)"
            );
            out = out.replace(from, to);
        }
        assert_loads_beside_products(name, &out);
        for left in [
            "coop_mat",
            "coopLoad",
            "coopStore",
            "coopMultiply",
            "subgroup_id",
        ] {
            assert!(
                !out.contains(left),
                "{name}: `{left}` is left, which the emulation does not know"
            );
        }
        format!("{out}\n{EMULATION}")
    })
}

/// The emulation's operands are read by the multiplication, not copied at the load: that reads
/// what the load would have copied only where nothing between them can change the tiles. Checks
/// that the emulated loads and products are one run of lines with no barrier or store between.
fn assert_loads_beside_products(name: &str, source: &str) {
    let (first, last) = (source.find("emu_load_"), source.rfind("emu_multiply_add("));
    let (Some(first), Some(last)) = (first, last) else {
        panic!("{name}: no emulated loads and products");
    };
    assert!(first < last, "{name}: an emulated product before the loads");
    let between = &source[first..last];
    for forbidden in ["Barrier", "store", "tile_a[", "tile_b[", "for ", "if "] {
        assert!(
            !between.contains(forbidden),
            "{name}: `{forbidden}` between the emulated loads and products: the emulation reads \
             the operands at the products, which then need not equal what the loads copied"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::assert_loads_beside_products;

    const ADJACENT: &str = "let a = emu_load_a(0u, 64u);\nlet b = emu_load_b(0u, 64u);\n\
                            acc = emu_multiply_add(a, b, acc);\n";

    #[test]
    fn adjacent_loads_and_products_pass() {
        assert_loads_beside_products("adjacent", ADJACENT);
    }

    #[test]
    #[should_panic(expected = "`Barrier` between")]
    fn a_barrier_between_loads_and_products_fails() {
        let barrier = ADJACENT.replace("acc =", "workgroupBarrier();\nacc =");
        assert_loads_beside_products("barrier", &barrier);
    }

    #[test]
    #[should_panic(expected = "`tile_b[` between")]
    fn a_store_before_the_first_load_of_b_fails() {
        let store = ADJACENT.replace("let b =", "tile_b[0] = 1h;\nlet b =");
        assert_loads_beside_products("store", &store);
    }
}
