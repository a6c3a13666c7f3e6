//! Every shader module parses and validates with naga, independent of any adapter: every .wgsl
//! file in shaders/, conv2d.wgsl as each of its register block sizes (the file itself is a
//! template whose marked lines are written out per block).

use std::path::Path;

fn validate(name: &str, src: &str) -> naga::Module {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    // the mixed-precision families declare `enable f16;` and need the adapter's SHADER_F16; the
    // tensor-core family needs cooperative matrices and subgroups too
    let caps = match (
        src.starts_with("enable f16;"),
        src.contains("coop_mat16x16"),
    ) {
        (_, true) => {
            naga::valid::Capabilities::SHADER_FLOAT16
                | naga::valid::Capabilities::COOPERATIVE_MATRIX
                | naga::valid::Capabilities::SUBGROUP
        }
        (true, false) => naga::valid::Capabilities::SHADER_FLOAT16,
        (false, false) => naga::valid::Capabilities::default(),
    };
    let mut v = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps);
    v.validate(&module)
        .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
    assert!(!module.entry_points.is_empty(), "{name} has no entry point");
    module
}

#[test]
fn every_wgsl_file_parses_and_validates() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("wgsl") {
            continue;
        }
        count += 1;
        let parts = [
            "conv2d.wgsl",
            "conv2d_coop.wgsl",
            "conv2d_coop_emulated.wgsl",
        ];
        if parts.iter().any(|p| path.ends_with(p)) {
            continue; // templates and parts: their expansions are checked below
        }
        let src = std::fs::read_to_string(&path).unwrap();
        validate(&path.display().to_string(), &src);
    }
    assert!(count >= 10, "expected the 10 shader files, found {count}");
}

/// Every module of f16 activations (mixed precision stores activations in f16): each shader with
/// activations, and each convolution block and tile, the tensor-core one included, as its f16
/// modules (`ops::activations`).
#[test]
fn every_module_of_f16_activations_validates() {
    use resnet::ops::activations::f16_modules;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut others = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".wgsl") || name.starts_with("conv2d") {
            continue; // the convolutions' templates: their expansions below
        }
        let src = std::fs::read_to_string(&path).unwrap();
        let (name, src): (&'static str, &'static str) = (name.leak(), src.leak());
        for (n, s) in f16_modules((name, src)) {
            assert!(
                s.starts_with("enable f16;") && s.contains("alias act_t = f16;"),
                "{n}"
            );
            validate(n, s);
            others += 1;
        }
    }
    assert_eq!(
        others, 5,
        "augment, batchnorm, elementwise, linear and pool"
    );
    for m in resnet::ops::conv2d::all_sources() {
        let modules = f16_modules(m);
        assert_eq!(
            modules.len(),
            2,
            "{}: the forward's and the weights' modules",
            m.0
        );
        for (n, s) in modules {
            validate(n, s);
        }
    }
}

/// The modules whose convolutions apply the BatchNorm below as they load their input (BN_IN set),
/// for every family, f32 and f16 activations, the tensor-core tile included.
#[test]
fn every_batchnorm_on_load_module_validates() {
    let modules = resnet::ops::conv2d::bn_in_modules();
    assert_eq!(
        modules.len(),
        45,
        "15 family modules, each with its two f16 ones"
    );
    for (name, src) in modules {
        assert!(
            name.ends_with("#bnin") && src.contains("const BN_IN = true;"),
            "{name}"
        );
        validate(name, src);
    }
}

/// The tensor-core family with its cooperative matrices emulated (what the tests run it as on
/// adapters without them): f32 and f16 activations, with and without BN_IN.
#[test]
fn the_emulated_tensor_core_modules_validate() {
    let modules = resnet::ops::conv2d::emulated_modules();
    assert_eq!(
        modules.len(),
        6,
        "its own and two f16 modules, each with BN_IN"
    );
    for (name, src) in modules {
        assert!(name.contains("#emulated") && !src.contains("enable wgpu_cooperative_matrix"));
        validate(name, src);
    }
}

#[test]
fn every_conv2d_block_and_tile_size_validates() {
    let sources = resnet::ops::conv2d::all_sources();
    assert_eq!(
        sources.len(),
        15,
        "the register blocks 16x16, 8x16, 16x8, 8x8 and the GEMM tiles 32x128, 64x64, 128x128, \
         in f32 and in f16, and the tensor-core tile"
    );
    for &(name, src) in &sources {
        let module = validate(name, src);
        let gemm_entries = name.starts_with("conv2d_gemm.wgsl") || name.starts_with("conv2d_coop");
        let entries = match gemm_entries {
            true => [
                "conv_fwd_gemm",
                "conv_fwd_gemm_stats",
                "conv_dx_gemm",
                "conv_dx_gemm_bn",
                "conv_dw_gemm",
            ]
            .as_slice(),
            false => [
                "conv_fwd_reg",
                "conv_dx_reg",
                "conv_dw_reg",
                "conv_fwd_tiled",
            ]
            .as_slice(),
        };
        for entry in entries {
            assert!(
                module.entry_points.iter().any(|e| e.name == *entry),
                "{name}: no {entry}"
            );
        }
        // an f16 module keeps its tiles in f16, the GEMM's statistics exchange in an f32 array of
        // its own (its tiles cannot hold f32), and nothing else of the f32 module changes
        if name.ends_with("f16)") && !name.starts_with("conv2d_coop") {
            let in_tiles = "fn xchg_put(i: u32, v: vec4<f32>) { tile_b[i] = v; }\n\
                            fn xchg_get(i: u32) -> vec4<f32> { return tile_b[i]; }";
            let own = format!(
                "var<workgroup> xchg: array<vec4<f32>, 256>;\n{}",
                in_tiles.replace("tile_b", "xchg")
            );
            let is_gemm = name.starts_with("conv2d_gemm");
            assert_eq!(src.contains(&own), is_gemm, "{name}: the exchange");
            assert!(src.contains("alias tile_t = f16;") && !src.contains("alias tile_t = f32;"));
            let f32_name = name.replace(" (f16)", "").replace(", f16)", ")");
            let f32_src = sources
                .iter()
                .find(|m| m.0 == f32_name)
                .expect("its f32 twin")
                .1;
            assert_eq!(
                src.replacen("enable f16;\n", "", 1)
                    .replace("alias tile_t = f16;", "alias tile_t = f32;")
                    .replace(&own, in_tiles),
                f32_src,
                "{name}"
            );
        }
        let marked = src.lines().find(|l| l.trim_start().starts_with("//%"));
        assert!(
            marked.is_none(),
            "{name}: a marked line was left unexpanded: {marked:?}"
        );
    }
}

/// The tensor-core module (no adapter here runs it): it validates with cooperative matrices,
/// shares the operand code of the 64x64 GEMM tile line for line, and naga writes it as SPIR-V,
/// the way wgpu hands it to a Vulkan driver.
#[test]
fn the_tensor_core_module_shares_the_gemm_operands_and_writes_spirv() {
    let sources = resnet::ops::conv2d::all_sources();
    let find = |name: &str| sources.iter().find(|m| m.0 == name).expect(name).1;
    let coop = find("conv2d_coop.wgsl (64x64, f16)");
    let gemm = find("conv2d_gemm.wgsl (64x64)");
    let body = coop
        .strip_prefix("enable f16;\nenable wgpu_cooperative_matrix;\n")
        .expect("the enables first");
    let marker = "// ==== the register-tile GEMM";
    let shared = &gemm[..gemm.find(marker).expect("the GEMM module's marker")];
    assert!(body.starts_with(shared), "the operand code differs");
    assert!(!body.contains(marker) && !body.contains("tile_t"));
    for op in ["coopLoad<", "coopLoadT<", "coopMultiplyAdd(", "coopStoreT("] {
        assert!(body.contains(op), "{op}");
    }

    let module = validate("conv2d_coop.wgsl", coop);
    let caps = naga::valid::Capabilities::SHADER_FLOAT16
        | naga::valid::Capabilities::COOPERATIVE_MATRIX
        | naga::valid::Capabilities::SUBGROUP;
    let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
        .validate(&module)
        .expect("validated above");
    let options = naga::back::spv::Options {
        lang_version: (1, 3),
        ..Default::default()
    };
    let words = naga::back::spv::write_vec(&module, &info, &options, None)
        .unwrap_or_else(|e| panic!("SPIR-V: {e}"));
    assert_eq!(words[0], 0x0723_0203, "SPIR-V's magic number");
    // OpCapability CooperativeMatrixKHR (6022) is declared: the multiplications are tensor-core ops
    let capability = |c: u32| words.windows(2).any(|w| w == [(2 << 16) | 17, c]);
    assert!(capability(6022), "no CooperativeMatrixKHR capability");
}

/// The grouped convolutions' modules: f32, f16 activations for the forward and for the weights'
/// gradient, each also applying the BatchNorm below on load.
#[test]
fn every_grouped_convolution_module_validates() {
    let modules = resnet::ops::conv2d::grouped_modules();
    let names: Vec<&str> = modules.iter().map(|m| m.0).collect();
    assert_eq!(modules.len(), 6, "{names:?}");
    for (name, src) in modules {
        assert_eq!(
            src.contains("alias act_t = f16;"),
            name.contains("16"),
            "{name}: f16 activations where its name says so"
        );
        assert_eq!(
            src.contains("const BN_IN = true;"),
            name.ends_with("#bnin"),
            "{name}"
        );
        validate(name, src);
    }
}
