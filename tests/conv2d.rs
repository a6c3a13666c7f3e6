//! conv2d forward and backward against the f64 CPU reference and finite differences, at every
//! shape class ResNets use, with both kernel families. Error norm: max |gpu - ref| / max |ref|.

mod common;
use common::*;
use resnet::gpu::Gpu;
use resnet::gpu::Precision;
use resnet::ops::conv2d::{self, Conv2dShape, KernelFamily};
use resnet::reference::{conv_backward, conv_forward, Conv};

const TOL: f64 = 1e-4;

fn shapes() -> Vec<(&'static str, Conv2dShape, bool)> {
    vec![
        (
            "3x3 s1 p1 16ch 32x32",
            Conv2dShape::new(2, 16, 32, 32, 16, 3, 1, 1),
            false,
        ),
        (
            "3x3 s2 p1 16->32",
            Conv2dShape::new(2, 16, 32, 32, 32, 3, 2, 1),
            false,
        ),
        (
            "3x3 s1 p1 3 input channels + bias",
            Conv2dShape::new(2, 3, 32, 32, 16, 3, 1, 1),
            true,
        ),
        (
            "1x1 s2 p0 projection",
            Conv2dShape::new(2, 16, 16, 16, 32, 1, 2, 0),
            false,
        ),
        (
            "1x1 s1 bottleneck 64->16",
            Conv2dShape::new(3, 64, 8, 8, 16, 1, 1, 0),
            false,
        ),
        // an odd size: 15x15 outputs, no tile divides them (larger is slow for the emulated
        // tensor-core tile, whose 64-wide tile pads the 3 channels of dx)
        (
            "7x7 s2 p3 stem 30x30",
            Conv2dShape::new(1, 3, 30, 30, 64, 7, 2, 3),
            false,
        ),
        (
            "3x3 s1 p1 batch 1 7x7 odd channels + bias",
            Conv2dShape::new(1, 12, 7, 7, 20, 3, 1, 1),
            true,
        ),
        (
            "3x3 s2 p1 odd 7x7",
            Conv2dShape::new(2, 8, 7, 7, 8, 3, 2, 1),
            false,
        ),
    ]
}

fn cpu(sh: &Conv2dShape) -> Conv {
    Conv::from(sh)
}

struct Data {
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
}

fn data(sh: &Conv2dShape, seed: u64) -> Data {
    Data {
        x: rand_vec(sh.x_shape().iter().product(), seed),
        w: rand_vec(sh.w_shape().iter().product(), seed + 1),
        b: rand_vec(sh.k, seed + 2),
        dy: rand_vec(sh.y_shape().iter().product(), seed + 3),
    }
}

/// GPU (y, dx, dw, db).
fn run_gpu(
    gpu: &Gpu,
    sh: &Conv2dShape,
    d: &Data,
    bias: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let x = gpu.upload(&d.x, &sh.x_shape()).unwrap();
    let w = gpu.upload(&d.w, &sh.w_shape()).unwrap();
    let b = gpu.upload(&d.b, &[sh.k]).unwrap();
    let dy = gpu.upload(&d.dy, &sh.y_shape()).unwrap();
    let y = gpu.zeros(&sh.y_shape()).unwrap();
    let dx = gpu.zeros(&sh.x_shape()).unwrap();
    let dw = gpu.zeros(&sh.w_shape()).unwrap();
    let db = gpu.zeros(&[sh.k]).unwrap();
    let mut ks = conv2d::forward(gpu, sh, &x, &w, bias.then_some(&b), &y).unwrap();
    ks.extend(conv2d::backward_input(gpu, sh, &dy, &w, &dx).unwrap());
    ks.extend(conv2d::backward_weight(gpu, sh, &x, &dy, &dw, bias.then_some(&db)).unwrap());
    run(gpu, &ks);
    (
        read(gpu, &y),
        read(gpu, &dx),
        read(gpu, &dw),
        read(gpu, &db),
    )
}

#[test]
fn conv2d_forward_and_backward_match_cpu_reference() {
    for kernel_family in kernel_families() {
        let gpu = gpu_with(Some(kernel_family));
        for (i, (name, sh, bias)) in shapes().into_iter().enumerate() {
            let d = data(&sh, 10 + i as u64);
            let (y, dx, dw, db) = run_gpu(&gpu, &sh, &d, bias);
            let g = cpu(&sh);
            let (x64, w64, b64, dy64) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.dy));
            let y_ref = conv_forward(&g, &x64, &w64, bias.then_some(&b64[..]));
            let (dx_ref, dw_ref, db_ref) = conv_backward(&g, &x64, &w64, &dy64);
            let tag = format!("{kernel_family:?} {name}");
            assert_close(&format!("{tag} forward"), &y, &y_ref, TOL);
            assert_close(&format!("{tag} backward input"), &dx, &dx_ref, TOL);
            assert_close(&format!("{tag} backward weight"), &dw, &dw_ref, TOL);
            if bias {
                assert_close(&format!("{tag} backward bias"), &db, &db_ref, TOL);
            }
        }
    }
}

/// The f16 families (mixed precision) against the f64 reference, each output within the bound
/// of f16 operands and f32 sums (`selftest::f16_bounds`: one f16 ulp per operand, either
/// rounding direction, plus the f32 accumulation); and their operands really are rounded: the
/// error reaches the size of f16 rounding, which f32 kernels stay far below.
#[test]
fn f16_families_stay_within_the_bounds_of_f16_operands() {
    if !f16_shaders("f16_families_stay_within_the_bounds_of_f16_operands") {
        return;
    }
    let families: Vec<_> = KernelFamily::of_precision(Precision::Mixed).collect();
    assert_eq!(
        families.len(),
        8,
        "the four register blocks and three GEMM tiles in f16, and the tensor-core tile"
    );
    // the tensor-core family with emulated cooperative matrices where the adapter has none
    for kernel_family in families {
        let gpu = gpu_with(Some(kernel_family));
        let mut largest = 0.0f64; // max |got - ref| / sum |products| over every output
        for (i, (name, sh, bias)) in shapes().into_iter().enumerate() {
            let d = data(&sh, 10 + i as u64);
            let got = run_gpu(&gpu, &sh, &d, bias);
            let g = cpu(&sh);
            let exact = |d: &Data| {
                let (x, w, b, dy) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.dy));
                let y = conv_forward(&g, &x, &w, bias.then_some(&b[..]));
                let (dx, dw, db) = conv_backward(&g, &x, &w, &dy);
                [y, dx, dw, db]
            };
            let want = exact(&d);
            let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<_>>();
            let magnitudes = exact(&Data {
                x: abs(&d.x),
                w: abs(&d.w),
                b: abs(&d.b),
                dy: abs(&d.dy),
            });
            let depth = sh.n * sh.p() * sh.q() + (sh.c + sh.k) * sh.r * sh.s;
            let outputs = [&got.0, &got.1, &got.2, &got.3];
            for (j, what) in ["forward", "dx", "dw", "db"].iter().enumerate() {
                if j == 3 && !bias {
                    continue;
                }
                let bound = resnet::selftest::f16_bounds(&magnitudes[j], depth);
                for (e, ((g, w), b)) in outputs[j].iter().zip(&want[j]).zip(&bound).enumerate() {
                    let err = (*g as f64 - w).abs();
                    assert!(
                        err <= *b,
                        "{kernel_family:?} {name} {what}[{e}]: {g} vs {w}, off by {err:e} > {b:e}"
                    );
                    if j < 3 {
                        largest = largest.max(err / magnitudes[j][e].max(1e-30));
                    }
                }
            }
        }
        // f16 rounding is 2^-11 of an operand; f32 kernels stay near 2^-24 of the magnitudes
        assert!(
            largest > 1.0 / 65536.0,
            "{kernel_family:?}: largest error {largest:e} of the magnitudes: operands not in f16?"
        );
    }
}

/// The GPU gradients equal finite differences of L = sum(dy * conv(x, w) + b) computed on the
/// f64 CPU forward (independent of the CPU backward).
#[test]
fn conv2d_backward_matches_finite_differences() {
    for kernel_family in kernel_families() {
        let gpu = gpu_with(Some(kernel_family));
        for sh in [
            Conv2dShape::new(2, 3, 5, 5, 4, 3, 1, 1),
            Conv2dShape::new(1, 4, 7, 7, 6, 3, 2, 1),
            Conv2dShape::new(2, 5, 6, 6, 3, 1, 2, 0),
            Conv2dShape::new(2, 5, 5, 5, 3, 1, 1, 0),
            // the ImageNet stem: 7x7 stride 2 pad 3 on 3 input channels, odd size
            Conv2dShape::new(1, 3, 9, 9, 2, 7, 2, 3),
        ] {
            let d = data(&sh, 77);
            let (_, dx, dw, db) = run_gpu(&gpu, &sh, &d, true);
            let g = cpu(&sh);
            let (x64, w64, b64, dy64) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.dy));
            let loss =
                |x: &[f64], w: &[f64], b: &[f64]| dot(&conv_forward(&g, x, w, Some(b)), &dy64);
            let fd_x = finite_diff(&x64, 1e-4, |x| loss(x, &w64, &b64));
            let fd_w = finite_diff(&w64, 1e-4, |w| loss(&x64, w, &b64));
            let fd_b = finite_diff(&b64, 1e-4, |b| loss(&x64, &w64, b));
            assert_close(
                &format!("{kernel_family:?} {sh:?} dx vs finite differences"),
                &dx,
                &fd_x,
                1e-4,
            );
            assert_close(
                &format!("{kernel_family:?} {sh:?} dw vs finite differences"),
                &dw,
                &fd_w,
                1e-4,
            );
            assert_close(
                &format!("{kernel_family:?} {sh:?} db vs finite differences"),
                &db,
                &fd_b,
                1e-4,
            );
        }
    }
}

/// Weight gradients reduce over N*P*Q = 131072 positions at ResNet-20's first stage (batch 128):
/// the split reduction must stay exact at full size (docs/ARCHITECTURE.md, "Determinism": drivers
/// have summed wrongly at such sizes).
#[test]
fn conv2d_weight_gradient_at_full_resnet20_size() {
    let sh = Conv2dShape::new(128, 16, 32, 32, 16, 3, 1, 1);
    let d = data(&sh, 5);
    let g = cpu(&sh);
    let (x64, dy64) = (f64s(&d.x), f64s(&d.dy));
    let mut dw_ref = vec![0.0; sh.k * sh.c * 9];
    // dw only (the full CPU backward would also build dx, which is not needed here)
    for n in 0..sh.n {
        for k in 0..sh.k {
            for p in 0..32 {
                for q in 0..32 {
                    let dv = dy64[((n * sh.k + k) * 32 + p) * 32 + q];
                    for c in 0..sh.c {
                        for r in 0..3 {
                            for s in 0..3 {
                                let (h, w) =
                                    (p as isize + r as isize - 1, q as isize + s as isize - 1);
                                if h >= 0 && w >= 0 && h < 32 && w < 32 {
                                    dw_ref[((k * sh.c + c) * 3 + r) * 3 + s] += dv
                                        * x64[((n * sh.c + c) * 32 + h as usize) * 32 + w as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let _ = g;
    for kernel_family in kernel_families() {
        let gpu = gpu_with(Some(kernel_family));
        let x = gpu.upload(&d.x, &sh.x_shape()).unwrap();
        let dy = gpu.upload(&d.dy, &sh.y_shape()).unwrap();
        let dw = gpu.zeros(&sh.w_shape()).unwrap();
        run(
            &gpu,
            &conv2d::backward_weight(&gpu, &sh, &x, &dy, &dw, None).unwrap(),
        );
        assert_close(
            &format!("{kernel_family:?} full-size dw"),
            &read(&gpu, &dw),
            &dw_ref,
            TOL,
        );
    }
}

/// With tuning on, every convolution op times both kernel families once per shape and keeps its
/// choice; the kernels it returns are of the chosen family and compute the right numbers; a
/// recorded choice is used as is (also where the device's own family differs).
#[test]
fn kernel_family_is_chosen_per_shape_and_kept() {
    let gpu = Gpu::new_blocking(&resnet::gpu::GpuOptions {
        tune: Some(true),
        ..Default::default()
    })
    .unwrap();
    assert!(gpu.tunes());
    let sh = Conv2dShape::new(2, 16, 8, 8, 16, 3, 1, 1);
    let d = data(&sh, 21);
    let (y, dx, dw, _) = run_gpu(&gpu, &sh, &d, false);
    let g = cpu(&sh);
    let (x64, w64, dy64) = (f64s(&d.x), f64s(&d.w), f64s(&d.dy));
    let (dx_ref, dw_ref, _) = conv_backward(&g, &x64, &w64, &dy64);
    assert_close(
        "tuned forward",
        &y,
        &conv_forward(&g, &x64, &w64, None),
        TOL,
    );
    assert_close("tuned backward input", &dx, &dx_ref, TOL);
    assert_close("tuned backward weight", &dw, &dw_ref, TOL);
    let chosen = gpu.choices();
    for op in [
        "conv2d forward",
        "conv2d backward (input)",
        "conv2d backward (weight)",
    ] {
        assert!(
            chosen.iter().any(|c| c.op == op && c.shape == sh.key()),
            "{op}: no choice recorded in {chosen:?}"
        );
    }
    let x = gpu.upload(&d.x, &sh.x_shape()).unwrap();
    let w = gpu.upload(&d.w, &sh.w_shape()).unwrap();
    let out = gpu.zeros(&sh.y_shape()).unwrap();
    let family = gpu.choice("conv2d forward", &sh.key()).unwrap();
    let family = resnet::ops::conv2d::KernelFamily::from_name(family).unwrap();
    let entry = match (family.register_block(), family.gemm_tile()) {
        (Some(_), _) => "conv_fwd_reg",
        (None, Some(_)) => "conv_fwd_gemm",
        (None, None) => "conv_fwd_tiled",
    };
    let ks = conv2d::forward(&gpu, &sh, &x, &w, None, &out).unwrap();
    assert!(ks.iter().any(|k| k.name == entry), "{family:?} not used");
    assert_eq!(
        gpu.choices().len(),
        chosen.len(),
        "a kept choice was timed again"
    );

    // a recorded choice wins over the device's family
    let reg = gpu_with(Some(resnet::ops::conv2d::KernelFamily::Register16x16));
    assert!(!reg.tunes());
    reg.set_choice(
        "conv2d forward",
        &sh.key(),
        resnet::ops::conv2d::KernelFamily::Tiled.name(),
    );
    let (x, w, out) = (
        reg.upload(&d.x, &sh.x_shape()).unwrap(),
        reg.upload(&d.w, &sh.w_shape()).unwrap(),
        reg.zeros(&sh.y_shape()).unwrap(),
    );
    let ks = conv2d::forward(&reg, &sh, &x, &w, None, &out).unwrap();
    assert!(ks.iter().any(|k| k.name == "conv_fwd_tiled"));
}

/// Grouped shapes (`groups` > 1, ResNeXt's 3x3s): a few channels a group, strides 1 and 2, odd
/// sizes, more output than input channels, one channel a group (depthwise), many, a bias.
fn grouped_shapes() -> Vec<(&'static str, Conv2dShape, bool)> {
    vec![
        (
            "3x3 s1 p1 16ch in 4 groups + bias",
            Conv2dShape::new(2, 16, 8, 8, 16, 3, 1, 1).grouped(4),
            true,
        ),
        (
            "3x3 s2 p1 8->12 in 2 groups, odd 9x9",
            Conv2dShape::new(2, 8, 9, 9, 12, 3, 2, 1).grouped(2),
            false,
        ),
        (
            "3x3 s1 p1 depthwise 6ch",
            Conv2dShape::new(1, 6, 7, 7, 6, 3, 1, 1).grouped(6),
            false,
        ),
        // 147,456 weights: the weights' gradient in one chunk of the pixels (the shapes above
        // split theirs in several)
        (
            "3x3 s1 p1 256ch in 4 groups 3x3",
            Conv2dShape::new(1, 256, 3, 3, 256, 3, 1, 1).grouped(4),
            false,
        ),
    ]
}

/// For each (k, c within k's group): the offsets of its R*S weights in the grouped [K, C/G, R,
/// S] and in the dense [K, C, R, S] layout.
fn group_blocks(sh: &Conv2dShape) -> Vec<(usize, usize)> {
    let (cg, kg, rs) = (sh.c / sh.groups, sh.k / sh.groups, sh.r * sh.s);
    let within =
        |k: usize| (0..cg).map(move |cl| ((k * cg + cl) * rs, (k * sh.c + k / kg * cg + cl) * rs));
    (0..sh.k).flat_map(within).collect()
}

/// w [K, C/G, R, S] as the dense [K, C, R, S] it stands for: zero outside each output channel's
/// group, so that the dense reference computes the grouped convolution by another route.
fn block_diagonal(sh: &Conv2dShape, w: &[f64]) -> Vec<f64> {
    let rs = sh.r * sh.s;
    let mut dense = vec![0.0; sh.k * sh.c * rs];
    for (grouped, at) in group_blocks(sh) {
        dense[at..at + rs].copy_from_slice(&w[grouped..grouped + rs]);
    }
    dense
}

/// The grouped layout's weights out of a dense [K, C, R, S] (the inverse of `block_diagonal`).
fn within_groups(sh: &Conv2dShape, dense: &[f64]) -> Vec<f64> {
    let rs = sh.r * sh.s;
    let mut w = vec![0.0; sh.w_shape().iter().product()];
    for (grouped, at) in group_blocks(sh) {
        w[grouped..grouped + rs].copy_from_slice(&dense[at..at + rs]);
    }
    w
}

/// The grouped kernels (one for every adapter, whatever the family) against the f64 reference,
/// and the reference's grouping against the dense reference with block-diagonal weights.
#[test]
fn grouped_convolutions_match_the_cpu_reference() {
    let gpu = gpu();
    for (i, (name, sh, bias)) in grouped_shapes().into_iter().enumerate() {
        let d = data(&sh, 40 + i as u64);
        let (y, dx, dw, db) = run_gpu(&gpu, &sh, &d, bias);
        let g = cpu(&sh);
        let (x64, w64, b64, dy64) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.dy));
        let y_ref = conv_forward(&g, &x64, &w64, bias.then_some(&b64[..]));
        let (dx_ref, dw_ref, db_ref) = conv_backward(&g, &x64, &w64, &dy64);
        assert_close(&format!("{name} forward"), &y, &y_ref, TOL);
        assert_close(&format!("{name} backward input"), &dx, &dx_ref, TOL);
        assert_close(&format!("{name} backward weight"), &dw, &dw_ref, TOL);
        if bias {
            assert_close(&format!("{name} backward bias"), &db, &db_ref, TOL);
        }

        let dense = Conv { groups: 1, ..g };
        let wd = block_diagonal(&sh, &w64);
        let y_dense = conv_forward(&dense, &x64, &wd, bias.then_some(&b64[..]));
        let (dx_dense, dw_dense, _) = conv_backward(&dense, &x64, &wd, &dy64);
        let as32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
        assert_close(&format!("{name} reference"), &as32(&y_ref), &y_dense, 1e-6);
        assert_close(
            &format!("{name} reference dx"),
            &as32(&dx_ref),
            &dx_dense,
            1e-6,
        );
        let dw_dense = within_groups(&sh, &dw_dense);
        assert_close(
            &format!("{name} reference dw"),
            &as32(&dw_ref),
            &dw_dense,
            1e-6,
        );
    }
}

/// What the plan asks of a grouped convolution besides the plain op: the forward's epilogue
/// (an inference BatchNorm folded into a bias, the residual, the ReLU), the backward to the
/// input adding the shortcut's gradient, and the BatchNorm below applied as the input is loaded
/// (forward and backward to the weights), each against the f64 reference of what it fuses.
#[test]
fn grouped_convolutions_fuse_what_the_plan_asks() {
    let gpu = gpu();
    let sh = Conv2dShape::new(2, 8, 7, 7, 8, 3, 1, 1).grouped(4);
    let g = cpu(&sh);
    let d = data(&sh, 60);
    let residual = rand_vec(d.dy.len(), 61);
    let bn: Vec<f32> = rand_vec(2 * sh.c, 62);
    let up = |v: &[f32], shape: &[usize]| gpu.upload(v, shape).unwrap();
    let (x, w, b) = (
        up(&d.x, &sh.x_shape()),
        up(&d.w, &sh.w_shape()),
        up(&d.b, &[sh.k]),
    );
    let (res, dy, bn_t) = (
        up(&residual, &sh.y_shape()),
        up(&d.dy, &sh.y_shape()),
        up(&bn, &[2 * sh.c]),
    );
    let (y, y_bn) = (
        gpu.zeros(&sh.y_shape()).unwrap(),
        gpu.zeros(&sh.y_shape()).unwrap(),
    );
    let (dx, dw) = (
        gpu.zeros(&sh.x_shape()).unwrap(),
        gpu.zeros(&sh.w_shape()).unwrap(),
    );
    let epi = conv2d::Epilogue {
        bias: Some(&b),
        residual: Some(&res),
        relu: true,
    };
    let mut ks = conv2d::forward_epilogue(&gpu, &sh, &x, &w, &epi, &y).unwrap();
    ks.extend(conv2d::backward_input_add(&gpu, &sh, &dy, &w, &res_x(&gpu, &sh, 63), &dx).unwrap());
    let (fwd, stats_written) =
        conv2d::forward_bn_in(&gpu, &sh, (&x, Some(&bn_t)), &w, &y_bn, None).unwrap();
    assert!(!stats_written, "no statistics asked for");
    ks.extend(fwd);
    ks.extend(conv2d::backward_weight_bn_in(&gpu, &sh, (&x, Some(&bn_t)), &dy, &dw, None).unwrap());
    run(&gpu, &ks);

    let (x64, w64, b64, dy64) = (f64s(&d.x), f64s(&d.w), f64s(&d.b), f64s(&d.dy));
    let mut want = conv_forward(&g, &x64, &w64, Some(&b64));
    for (v, r) in want.iter_mut().zip(&residual) {
        *v = (*v + *r as f64).max(0.0);
    }
    assert_close("bias + residual + ReLU", &read(&gpu, &y), &want, TOL);
    let added = f64s(&rand_vec(d.x.len(), 63));
    let (dx_ref, _, _) = conv_backward(&g, &x64, &w64, &dy64);
    let dx_want: Vec<f64> = dx_ref.iter().zip(&added).map(|(a, b)| a + b).collect();
    assert_close(
        "dx + the shortcut's gradient",
        &read(&gpu, &dx),
        &dx_want,
        TOL,
    );
    // relu(x * scale + shift) per input channel, as the BatchNorm below hands it on
    let hw = sh.h * sh.w;
    let x_bn: Vec<f64> = (x64.iter().enumerate())
        .map(|(i, &v)| {
            let c = i / hw % sh.c;
            (v * bn[c] as f64 + bn[sh.c + c] as f64).max(0.0)
        })
        .collect();
    let y_bn_want = conv_forward(&g, &x_bn, &w64, None);
    assert_close(
        "BatchNorm on load, forward",
        &read(&gpu, &y_bn),
        &y_bn_want,
        TOL,
    );
    let (_, dw_want, _) = conv_backward(&g, &x_bn, &w64, &dy64);
    assert_close("BatchNorm on load, dw", &read(&gpu, &dw), &dw_want, TOL);
}

/// A gradient shaped as the input of `sh`, on the GPU (the shortcut's, added to dx).
fn res_x(gpu: &Gpu, sh: &Conv2dShape, seed: u64) -> resnet::gpu::Tensor {
    let v = rand_vec(sh.x_shape().iter().product(), seed);
    gpu.upload(&v, &sh.x_shape()).unwrap()
}

/// A groups count that does not divide the channels is one error naming both.
#[test]
fn groups_that_do_not_divide_the_channels_are_an_error() {
    let gpu = gpu();
    let sh = Conv2dShape::new(1, 6, 5, 5, 8, 3, 1, 1).grouped(4);
    let x = gpu.zeros(&sh.x_shape()).unwrap();
    let w = gpu.zeros(&[8, 1, 3, 3]).unwrap();
    let y = gpu.zeros(&sh.y_shape()).unwrap();
    match conv2d::forward(&gpu, &sh, &x, &w, None, &y) {
        Ok(_) => panic!("6 channels in 4 groups accepted"),
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("groups 4") && e.contains("input channels 6"),
                "{e}"
            );
        }
    }
}

/// The grouped kernels on f16 activations (mixed precision): the products of the operands
/// rounded to f16 (x, dy as stored, the weights as loaded), summed in f32, against the f64
/// reference of those rounded operands; y and dx are stored in f16 (half an f16 ulp off, 2^-11
/// relative), dw in f32.
#[test]
fn grouped_convolutions_on_f16_activations_round_as_the_reference() {
    if !f16_shaders("grouped_convolutions_on_f16_activations_round_as_the_reference") {
        return;
    }
    // a device with f16 shaders: a mixed-precision family's (the grouped kernels take none)
    let gpu = gpu_with(Some(KernelFamily::Register16x16F16));
    for (i, (name, sh, _)) in grouped_shapes().into_iter().enumerate() {
        let d = data(&sh, 70 + i as u64);
        let half = |v: &[f32]| -> Vec<f32> {
            v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect()
        };
        let (x16, w16, dy16) = (half(&d.x), half(&d.w), half(&d.dy));
        let x = gpu.upload_f16(&d.x, &sh.x_shape()).unwrap();
        let dy = gpu.upload_f16(&d.dy, &sh.y_shape()).unwrap();
        let w = gpu.upload(&d.w, &sh.w_shape()).unwrap();
        let y = gpu
            .zeros_of(&sh.y_shape(), resnet::gpu::Dtype::F16)
            .unwrap();
        let dx = gpu
            .zeros_of(&sh.x_shape(), resnet::gpu::Dtype::F16)
            .unwrap();
        let dw = gpu.zeros(&sh.w_shape()).unwrap();
        let mut ks = conv2d::forward(&gpu, &sh, &x, &w, None, &y).unwrap();
        ks.extend(conv2d::backward_input(&gpu, &sh, &dy, &w, &dx).unwrap());
        ks.extend(conv2d::backward_weight(&gpu, &sh, &x, &dy, &dw, None).unwrap());
        run(&gpu, &ks);
        let g = cpu(&sh);
        let y_ref = conv_forward(&g, &f64s(&x16), &f64s(&w16), None);
        let (dx_ref, dw_ref, _) = conv_backward(&g, &f64s(&x16), &f64s(&w16), &f64s(&dy16));
        assert_close(
            &format!("{name} f16 forward"),
            &read(&gpu, &y),
            &y_ref,
            1e-3,
        );
        assert_close(&format!("{name} f16 dx"), &read(&gpu, &dx), &dx_ref, 1e-3);
        assert_close(&format!("{name} f16 dw"), &read(&gpu, &dw), &dw_ref, TOL);
    }
}

/// The grouped forward's BatchNorm statistics, as every family writes them: per channel and run
/// of 8 output pixels (N, P, Q order; the last run short), the count, the mean and the sum of
/// squared deviations of the output, against the f64 reference's output.
#[test]
fn grouped_forward_writes_batchnorms_partial_statistics() {
    let gpu = gpu();
    // 2 x 3x3 = 18 output pixels a channel: runs of 8, 8 and 2
    let sh = Conv2dShape::new(2, 8, 5, 5, 6, 3, 2, 1).grouped(2);
    let d = data(&sh, 80);
    let x = gpu.upload(&d.x, &sh.x_shape()).unwrap();
    let w = gpu.upload(&d.w, &sh.w_shape()).unwrap();
    let y = gpu.zeros(&sh.y_shape()).unwrap();
    let stats = gpu.zeros(&[conv2d::stats_len(&sh)]).unwrap();
    let (ks, written) = conv2d::forward_with_stats(&gpu, &sh, &x, &w, &y, &stats).unwrap();
    assert!(written, "a grouped forward asked for statistics wrote none");
    run(&gpu, &ks);
    let y_ref = conv_forward(&cpu(&sh), &f64s(&d.x), &f64s(&d.w), None);
    let (pq, npq) = (sh.p() * sh.q(), sh.n * sh.p() * sh.q());
    let mut want = Vec::new();
    for k in 0..sh.k {
        let value = |m: usize| y_ref[(m / pq * sh.k + k) * pq + m % pq];
        for run in (0..npq).step_by(8) {
            let v: Vec<f64> = (run..(run + 8).min(npq)).map(value).collect();
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            let m2 = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>();
            want.extend([v.len() as f64, mean, m2]);
        }
    }
    assert_close("partial statistics", &read(&gpu, &stats), &want, TOL);
}
