//! Fused kernels against the f64 references of the ops they fuse: BatchNorm's training
//! statistics written by the convolution's epilogue (`conv2d::forward_with_stats`, merged by
//! `batchnorm::forward_train_from`), the ReLU's and BatchNorm's backward in the epilogue of the
//! convolution after (`conv2d::backward_input_bn`, finished by `batchnorm::backward_from`), and
//! inference's BatchNorm folded into the convolution, for every family that does each and shapes
//! whose pixel count is not a multiple of the runs of 8.

mod common;
use common::*;
use resnet::gpu::{Gpu, Precision};
use resnet::ops::batchnorm::{self, BnParams, Fuse, MOMENTUM};
use resnet::ops::conv2d::{self, Conv2dShape, KernelFamily};
use resnet::reference;

/// Conv then training BatchNorm (+ ReLU) through the fused path on `gpu`: (y, saved mean and
/// invstd, running statistics, the convolution's output); `None` where the shape's family writes
/// no statistics.
fn fused(gpu: &Gpu, sh: &Conv2dShape, x: &[f32], w: &[f32]) -> Option<[Vec<f32>; 4]> {
    let (xt, wt) = (
        gpu.upload(x, &sh.x_shape()).unwrap(),
        gpu.upload(w, &sh.w_shape()).unwrap(),
    );
    let c = gpu.zeros(&sh.y_shape()).unwrap();
    let partial = gpu.zeros(&[conv2d::stats_len(sh)]).unwrap();
    let (mut ks, written) = conv2d::forward_with_stats(gpu, sh, &xt, &wt, &c, &partial).unwrap();
    if !written {
        return None;
    }
    let (y, saved) = (
        gpu.zeros(&sh.y_shape()).unwrap(),
        gpu.zeros(&[2, sh.k]).unwrap(),
    );
    let affine = gpu.upload(&affine(sh.k), &[2, sh.k]).unwrap();
    let running = gpu
        .upload(
            &[vec![0.0f32; sh.k], vec![1.0f32; sh.k]].concat(),
            &[2, sh.k],
        )
        .unwrap();
    let p = BnParams {
        affine: &affine,
        running: &running,
    };
    let relu = Fuse {
        residual: None,
        relu: true,
    };
    ks.extend(
        batchnorm::forward_train_from(gpu, &c, &y, &p, &saved, relu, MOMENTUM, &partial).unwrap(),
    );
    run(gpu, &ks);
    Some([
        read(gpu, &y),
        read(gpu, &saved),
        read(gpu, &running),
        read(gpu, &c),
    ])
}

/// gamma then beta, away from 1 and 0.
fn affine(k: usize) -> Vec<f32> {
    (0..2 * k)
        .map(|i| {
            if i < k {
                0.5 + 0.1 * i as f32
            } else {
                0.2 - 0.05 * (i - k) as f32
            }
        })
        .collect()
}

/// The f64 reference of the same: (y, mean, invstd, running mean, running var).
fn reference(sh: &Conv2dShape, x: &[f32], w: &[f32]) -> [Vec<f64>; 5] {
    let g = reference::Conv::from(sh);
    let c = reference::conv_forward(&g, &f64s(x), &f64s(w), None);
    let a = f64s(&affine(sh.k));
    let hw = sh.p() * sh.q();
    let (y, mean, var) =
        reference::bn_forward(sh.n, sh.k, hw, &c, &a[..sh.k], &a[sh.k..], None, true);
    let m = (sh.n * hw) as f64;
    let invstd = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
    let momentum = MOMENTUM as f64;
    let run_mean = mean.iter().map(|mu| momentum * mu).collect();
    let run_var = var
        .iter()
        .map(|v| (1.0 - momentum) + momentum * v * m / (m - 1.0))
        .collect();
    [y, mean, invstd, run_mean, run_var]
}

/// Shapes whose pixel counts end mid-run of 8, mid-block of 16 and mid-tile of 64 (N*P*Q = 98,
/// 75, 256, 162, 50), one with more output channels than a GEMM tile has rows (72: the
/// forward's rows) and one with more input channels (72: the backward to the input's rows).
fn ragged_shapes() -> [Conv2dShape; 5] {
    [
        Conv2dShape::new(2, 8, 7, 7, 12, 3, 1, 1),
        Conv2dShape::new(3, 5, 10, 10, 20, 3, 2, 1),
        Conv2dShape::new(4, 16, 8, 8, 16, 1, 1, 0),
        Conv2dShape::new(2, 4, 9, 9, 72, 3, 1, 1),
        Conv2dShape::new(2, 72, 5, 5, 8, 3, 1, 1),
    ]
}

/// Input and weights of shape i of [`ragged_shapes`] (the input off zero, so the mean is not).
fn data(sh: &Conv2dShape, i: usize) -> (Vec<f32>, Vec<f32>) {
    let x: Vec<f32> = rand_vec(sh.n * sh.c * sh.h * sh.w, 10 + i as u64)
        .iter()
        .map(|v| v + 0.3)
        .collect();
    (x, rand_vec(sh.k * sh.c * sh.r * sh.s, 20 + i as u64))
}

#[test]
fn statistics_from_the_convolution_match_the_f64_reference() {
    let shapes = ragged_shapes();
    let mut checked = 0;
    for family in KernelFamily::of_precision(Precision::Fp32) {
        let gpu = gpu_with(Some(family));
        for (i, sh) in shapes.iter().enumerate() {
            let (x, w) = data(sh, i);
            let Some([y, saved, running, _]) = fused(&gpu, sh, &x, &w) else {
                assert!(!family.writes_stats(), "{family:?} writes the statistics");
                continue;
            };
            let [y_ref, mean, invstd, run_mean, run_var] = reference(sh, &x, &w);
            let what = format!("{} {sh:?}", family.name());
            assert_close(&format!("{what} mean"), &saved[..sh.k], &mean, 1e-5);
            assert_close(&format!("{what} invstd"), &saved[sh.k..], &invstd, 1e-5);
            assert_close(
                &format!("{what} running mean"),
                &running[..sh.k],
                &run_mean,
                1e-5,
            );
            assert_close(
                &format!("{what} running var"),
                &running[sh.k..],
                &run_var,
                1e-5,
            );
            assert_close(&format!("{what} y"), &y, &y_ref, 1e-4);
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        7 * shapes.len(),
        "the four register families and the three GEMM tiles write the statistics"
    );
}

/// The f16 families (mixed precision) write the statistics of the output they computed: the
/// saved mean and invstd against the f64 statistics of that output, read back (the operands'
/// f16 rounding moves the output itself away from the f32 reference; tests/conv2d.rs bounds
/// that). The GEMM tiles exchange in an f32 array of their own there; the tensor-core tile (its
/// cooperative matrices emulated where the adapter has none) sums its staged blocks.
#[test]
fn f16_families_write_the_statistics_of_their_output() {
    if !f16_shaders("f16_families_write_the_statistics_of_their_output") {
        return;
    }
    let shapes = ragged_shapes();
    let mut checked = 0;
    for family in KernelFamily::of_precision(Precision::Mixed) {
        if !family.writes_stats() {
            continue;
        }
        let gpu = gpu_with(Some(family));
        for (i, sh) in shapes.iter().enumerate() {
            let (x, w) = data(sh, i);
            let [_, saved, _, c] = fused(&gpu, sh, &x, &w).expect("the family writes them");
            let hw = sh.p() * sh.q();
            let a = vec![1.0; sh.k];
            let b = vec![0.0; sh.k];
            let (_, mean, var) =
                reference::bn_forward(sh.n, sh.k, hw, &f64s(&c), &a, &b, None, false);
            let invstd: Vec<f64> = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
            let what = format!("{} {sh:?}", family.name());
            assert_close(&format!("{what} mean"), &saved[..sh.k], &mean, 1e-5);
            assert_close(&format!("{what} invstd"), &saved[sh.k..], &invstd, 1e-5);
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        8 * shapes.len(),
        "register, GEMM and tensor-core families in f16"
    );
}

/// Three training steps of ResNet-20 on real images with the fused path and without it (the same
/// seed, weights and batches): after the first step every weight, momentum (the first gradient)
/// and running statistic within 1e-5 of the other (max-norm relative, tensor by tensor), after
/// the third every weight and running statistic; and the fused plan does fuse (it records fewer
/// dispatches).
#[test]
fn three_steps_fused_and_unfused_agree() {
    const STEPS: usize = 3;
    // The two paths add up BatchNorm's statistics and backward sums in different orders, so
    // their values differ by rounding (about 1e-7). Where a pre-activation lies within that of
    // zero, the two paths' ReLUs decide it differently, and that channel's gradient differs
    // by the pixel's share: measured, at lr 0 (the weights fixed) the second batch here gave one
    // such flip in layer2.2.bn1, which put channel 14 of layer2.2.conv1's gradient 5.0e-4 apart
    // (of 2.1e-2; every other channel within 7e-8, the other steps within 1.5e-6). At batch 16
    // a ResNet-20 step has about 3 million ReLUs: about one flip every other step, whatever the
    // fusion (the statistics' fusion alone, before the backward's, flipped too), so after the
    // first step the momenta, which keep each gradient, can be 5e-3 apart and are not compared.
    // The weights move by lr times a flip: at lr 0.01 three steps put them 2.4e-5 apart
    // (layer1.0.conv2), at 0.001 1.6e-6. This checks the fusion, not the ReLU's kink.
    const LR: f32 = 0.001;
    use resnet::cifar10;
    use resnet::model::{ModelSpec, ModelState};
    use resnet::ops::sgd::SgdConfig;
    use resnet::plan::{Plan, PlanConfig};
    use resnet::preprocess::Preprocess;

    let dir = cifar::subset(5, 1);
    let split = resnet::data::load(dir.path(), (32, 32)).unwrap();
    let spec = ModelSpec::from_name("resnet20", 10).unwrap();
    let steps = |fusion: bool| {
        let gpu = Gpu::new_blocking(&resnet::gpu::GpuOptions {
            no_fusion: !fusion,
            ..untuned()
        })
        .unwrap();
        let m = ModelState::new(&gpu, &spec, 7).unwrap();
        let cfg = PlanConfig::train(
            16,
            (32, 32),
            SgdConfig::he2016(),
            Preprocess::normalize_only(cifar10::NORMALIZE),
        );
        let plan = Plan::new(&gpu, &m, cfg).unwrap();
        let mut after = Vec::new();
        for step in 0..STEPS {
            let idx: Vec<usize> = (16 * step..16 * step + 16).collect();
            let px: Vec<u8> = idx
                .iter()
                .flat_map(|&i| split.train.image(i).to_vec())
                .collect();
            let labels: Vec<u32> = idx.iter().map(|&i| split.train.labels[i] as u32).collect();
            plan.set_batch(&gpu, &px, &labels).unwrap();
            plan.set_step(&gpu, step as u32, LR).unwrap();
            plan.submit(&gpu);
            if step == 0 || step + 1 == STEPS {
                after.push([&m.params, &m.momentum, &m.running].map(|t| read(&gpu, t)));
            }
        }
        (after, plan.dispatches(), m.layout.clone())
    };
    let (fused, fused_dispatches, layout) = steps(true);
    let (unfused, unfused_dispatches, _) = steps(false);
    assert!(
        fused_dispatches < unfused_dispatches,
        "{fused_dispatches} vs {unfused_dispatches}"
    );
    // each tensor on its own: every weight (and its momentum) and every running statistic
    let tensors = [
        (&layout.params, 0, "weights"),
        (&layout.params, 1, "momentum"),
        (&layout.running, 2, "running statistics"),
    ];
    let mut compared = 0;
    for (when, (f, u)) in ["after step 1", "after step 3"]
        .iter()
        .zip(fused.iter().zip(&unfused))
    {
        for (regions, i, what) in tensors {
            if i == 1 && *when != "after step 1" {
                continue;
            }
            for r in regions.iter() {
                let span = r.offset..r.offset + r.shape.iter().product::<usize>();
                let (a, b) = (&f[i][span.clone()], &u[i][span]);
                assert_close(&format!("{when}: {what} {}", r.name), a, &f64s(b), 1e-5);
                compared += 1;
            }
        }
    }
    // ResNet-20: 19 convolutions, 19 BatchNorms (their weight and bias one region) and fc's
    // weight and bias, each with its momentum; and 19 BatchNorms' running statistics
    assert_eq!(compared, (2 * (19 + 19 + 2) + 19) + (19 + 19 + 2 + 19));
}

/// At ResNet-20's first stage at batch 128 (131,072 positions a channel: 16,384 runs of 8, each
/// of 256 invocations merging 64 of them), where reductions go wrong on drivers, not only at
/// small sizes; with the adapter's family and with the 64x64 GEMM tile.
#[test]
fn statistics_from_the_convolution_at_resnet20_size() {
    for family in [None, Some(KernelFamily::Gemm64x64)] {
        statistics_at_resnet20_size(&gpu_with(family));
    }
}

fn statistics_at_resnet20_size(gpu: &Gpu) {
    let sh = Conv2dShape::new(128, 16, 32, 32, 16, 3, 1, 1);
    let x: Vec<f32> = rand_vec(sh.n * sh.c * sh.h * sh.w, 3)
        .iter()
        .map(|v| v + 0.3)
        .collect();
    let w = rand_vec(sh.k * sh.c * sh.r * sh.s, 4);
    let [_, saved, running, _] = fused(gpu, &sh, &x, &w).expect("the family writes them");
    let [_, mean, invstd, run_mean, run_var] = reference(&sh, &x, &w);
    assert_close("mean", &saved[..sh.k], &mean, 1e-5);
    assert_close("invstd", &saved[sh.k..], &invstd, 1e-5);
    assert_close("running mean", &running[..sh.k], &run_mean, 1e-5);
    assert_close("running var", &running[sh.k..], &run_var, 1e-5);
}

/// Inference's BatchNorm folded into the convolution before it (`batchnorm::fold`, then
/// `conv2d::forward_epilogue` with the folded bias, a residual and the ReLU) against the f64
/// convolution, eval-mode BatchNorm, add and ReLU, for every family that runs here on the ragged
/// shapes: the f32 ones within 1e-5; the f16 ones within 1e-2, their operands (the folded
/// weights among them) rounded to f16's 11 bits (the convolution tests bound them element by
/// element; here the folding's wiring is checked: a lost scale, bias, residual or ReLU is off by
/// the order of the values).
#[test]
fn folded_batchnorm_matches_the_f64_reference() {
    // every family (the tensor-core one emulated where the adapter has none), the f16 ones
    // where the adapter has f16 shaders
    let f16 = f16_shaders("folded_batchnorm_matches_the_f64_reference");
    let mut checked = 0;
    for family in KernelFamily::ALL {
        if family.precision() == Precision::Mixed && !f16 {
            continue;
        }
        let gpu = gpu_with(Some(family));
        for (i, sh) in ragged_shapes().iter().enumerate() {
            let (x, w) = data(sh, i);
            let k = sh.k;
            let y_len = sh.n * k * sh.p() * sh.q();
            let res = rand_vec(y_len, 30 + i as u64);
            let noise = rand_vec(2 * k, 40 + i as u64);
            // running mean around 0, running var in [0.5, 1.5)
            let running: Vec<f32> = (0..2 * k)
                .map(|j| {
                    if j < k {
                        0.2 * noise[j]
                    } else {
                        1.0 + 0.5 * noise[j]
                    }
                })
                .collect();
            let up = |v: &[f32], shape: &[usize]| gpu.upload(v, shape).unwrap();
            let (xt, wt, rt) = (
                up(&x, &sh.x_shape()),
                up(&w, &sh.w_shape()),
                up(&res, &sh.y_shape()),
            );
            let (affine_t, running_t) = (up(&affine(k), &[2, k]), up(&running, &[2, k]));
            let (fw, fb, y) = (
                gpu.zeros(&sh.w_shape()).unwrap(),
                gpu.zeros(&[k]).unwrap(),
                gpu.zeros(&sh.y_shape()).unwrap(),
            );
            let p = BnParams {
                affine: &affine_t,
                running: &running_t,
            };
            let mut ks = batchnorm::fold(&gpu, &wt, &p, &fw, &fb).unwrap();
            let epi = conv2d::Epilogue {
                bias: Some(&fb),
                residual: Some(&rt),
                relu: true,
            };
            ks.extend(conv2d::forward_epilogue(&gpu, sh, &xt, &fw, &epi, &y).unwrap());
            run(&gpu, &ks);
            let g = reference::Conv::from(sh);
            let c = reference::conv_forward(&g, &f64s(&x), &f64s(&w), None);
            let (a, r) = (f64s(&affine(k)), f64s(&running));
            let hw = sh.p() * sh.q();
            let (mean, var) = (&r[..k], &r[k..]);
            let want = reference::bn_apply(
                sh.n,
                k,
                hw,
                &c,
                &a[..k],
                &a[k..],
                mean,
                var,
                Some(&f64s(&res)),
                true,
            );
            let tol = match family.precision() {
                Precision::Fp32 => 1e-5,
                Precision::Mixed => 1e-2,
            };
            assert_close(
                &format!("{} {sh:?}", family.name()),
                &read(&gpu, &y),
                &want,
                tol,
            );
            checked += 1;
        }
    }
    // the 8 f32 families, and where f16 shaders run the 8 f16 ones
    let families = if f16 { 16 } else { 8 };
    assert_eq!(checked, families * ragged_shapes().len());
}

/// The backward of conv(relu(BN(x))) to x through the fused path on `gpu`, shape i of
/// [`ragged_shapes`] (the BN's channels are the conv's input channels): (the gradient the
/// convolution stored, dgamma then dbeta, the BN's dx); `None` where the family does not fuse.
fn fused_backward(gpu: &Gpu, sh: &Conv2dShape, bn: &BelowData) -> Option<[Vec<f32>; 3]> {
    let up = |v: &[f32], shape: &[usize]| gpu.upload(v, shape).unwrap();
    let c = sh.c;
    let bn_x = up(&bn.x, &sh.x_shape());
    let (affine, saved) = (up(&affine(c), &[2, c]), up(&bn.saved, &[2, c]));
    let (dy, w) = (up(&bn.dy, &sh.y_shape()), up(&bn.w, &sh.w_shape()));
    let g = gpu.zeros(&sh.x_shape()).unwrap();
    let sums = gpu.zeros(&[conv2d::bn_sums_len(sh)]).unwrap();
    // a block's last BN: its output masks, the next block's shortcut's gradient is added
    let out_side =
        (bn.side.as_ref()).map(|side| (up(&bn.a, &sh.x_shape()), up(side, &sh.x_shape())));
    let below = conv2d::BnBelow {
        x: &bn_x,
        affine: &affine,
        saved: &saved,
        sums: &sums,
        out: out_side.as_ref().map(|t| &t.0),
        side: out_side.as_ref().map(|t| &t.1),
    };
    let (mut ks, written) = conv2d::backward_input_bn(gpu, sh, &dy, &w, &g, &below).unwrap();
    if !written {
        return None;
    }
    let (dparams, dx) = (
        gpu.zeros(&[2, c]).unwrap(),
        gpu.zeros(&sh.x_shape()).unwrap(),
    );
    let from = batchnorm::backward_from;
    ks.extend(from(gpu, &g, &bn_x, &affine, &saved, &dx, &dparams, &sums).unwrap());
    run(gpu, &ks);
    Some([read(gpu, &g), read(gpu, &dparams), read(gpu, &dx)])
}

/// A training BN + ReLU below a convolution, and the convolution's weights and dy, in f32 as
/// the GPU gets them and in f64 for the reference; for a block's last BN (which added a
/// residual before its ReLU), the gradient the next block's shortcut brings.
struct BelowData {
    side: Option<Vec<f32>>,
    x: Vec<f32>,
    a: Vec<f32>,
    /// Batch mean then invstd.
    saved: Vec<f32>,
    dy: Vec<f32>,
    w: Vec<f32>,
    mean: Vec<f64>,
    var: Vec<f64>,
}

fn below_data(sh: &Conv2dShape, i: usize, block_output: bool) -> BelowData {
    let (n, c, hw) = (sh.n, sh.c, sh.h * sh.w);
    let x: Vec<f32> = rand_vec(n * c * hw, 30 + i as u64)
        .iter()
        .map(|v| v + 0.3)
        .collect();
    let gb = f64s(&affine(c));
    let residual = block_output.then(|| f64s(&rand_vec(n * c * hw, 70 + i as u64)));
    let res = residual.as_deref();
    let (a, mean, var) = reference::bn_forward(n, c, hw, &f64s(&x), &gb[..c], &gb[c..], res, true);
    let invstd = var.iter().map(|v| 1.0 / (v + 1e-5).sqrt());
    let saved = mean.iter().copied().chain(invstd).map(|v| v as f32);
    BelowData {
        a: a.iter().map(|&v| v as f32).collect(),
        saved: saved.collect(),
        dy: rand_vec(n * sh.k * sh.p() * sh.q(), 40 + i as u64),
        w: rand_vec(sh.k * c * sh.r * sh.s, 20 + i as u64),
        side: block_output.then(|| rand_vec(n * c * hw, 80 + i as u64)),
        x,
        mean,
        var,
    }
}

/// The f64 reference: the conv's dx (plus the shortcut's gradient), the ReLU's mask (by the
/// GPU's a, rounded to f32), then BN's backward: (masked gradient, dgamma then dbeta, the BN's
/// dx).
fn backward_reference(sh: &Conv2dShape, bn: &BelowData) -> [Vec<f64>; 3] {
    let (n, c, hw) = (sh.n, sh.c, sh.h * sh.w);
    let a = f64s(&bn.a);
    let (mut dx_conv, _, _) =
        reference::conv_backward(&reference::Conv::from(sh), &a, &f64s(&bn.w), &f64s(&bn.dy));
    if let Some(side) = &bn.side {
        dx_conv
            .iter_mut()
            .zip(side)
            .for_each(|(d, s)| *d += *s as f64);
    }
    let masked = (dx_conv.iter().zip(&a))
        .map(|(g, a)| if *a > 0.0 { *g } else { 0.0 })
        .collect();
    let gamma = &f64s(&affine(c))[..c];
    let (x, (mean, var)) = (f64s(&bn.x), (&bn.mean, &bn.var));
    let (dx, dgamma, dbeta, _) =
        reference::bn_backward(n, c, hw, &x, gamma, mean, var, &a, &dx_conv, true);
    [masked, [dgamma, dbeta].concat(), dx]
}

/// The ReLU's mask and BatchNorm's backward sums in the epilogue of the convolution after (the
/// register families and the register-tile GEMMs), against the f64 conv backward, mask and BN
/// backward.
#[test]
fn batchnorm_backward_from_the_convolution_matches_the_f64_reference() {
    let shapes = ragged_shapes();
    let mut checked = 0;
    for family in KernelFamily::of_precision(Precision::Fp32) {
        let gpu = gpu_with(Some(family));
        for (i, sh, block_output) in cases(&shapes) {
            let bn = below_data(sh, i, block_output);
            let Some([g, dparams, dx]) = fused_backward(&gpu, sh, &bn) else {
                assert!(!family.writes_stats(), "{family:?} fuses");
                continue;
            };
            let [g_ref, dparams_ref, dx_ref] = backward_reference(sh, &bn);
            let what = format!("{} {sh:?} block output {block_output}", family.name());
            assert_close(&format!("{what} masked gradient"), &g, &g_ref, 1e-5);
            assert_close(
                &format!("{what} dgamma"),
                &dparams[..sh.c],
                &dparams_ref[..sh.c],
                1e-5,
            );
            assert_close(
                &format!("{what} dbeta"),
                &dparams[sh.c..],
                &dparams_ref[sh.c..],
                1e-5,
            );
            assert_close(&format!("{what} BN dx"), &dx, &dx_ref, 1e-4);
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        2 * 7 * shapes.len(),
        "the four register families and the three GEMM tiles fuse, inside a block and below one"
    );
}

/// The f16 families (mixed precision) mask and sum the gradient they computed: dgamma
/// and dbeta against the f64 sums of the masked gradient they stored, read back (their f16
/// operands move the gradient itself away from the f32 one; tests/conv2d.rs bounds that), no
/// gradient where the ReLU's output is zero, and the gradient within 1e-2 of the f64 one.
#[test]
fn f16_families_sum_the_gradient_they_stored() {
    if !f16_shaders("f16_families_sum_the_gradient_they_stored") {
        return;
    }
    let shapes = ragged_shapes();
    let mut checked = 0;
    for family in KernelFamily::of_precision(Precision::Mixed) {
        if !family.writes_stats() {
            continue;
        }
        let gpu = gpu_with(Some(family));
        for (i, sh, block_output) in cases(&shapes) {
            let bn = below_data(sh, i, block_output);
            let [g, dparams, _] = fused_backward(&gpu, sh, &bn).expect("the family fuses");
            let (c, hw) = (sh.c, sh.h * sh.w);
            let (mut dgamma, mut dbeta) = (vec![0.0f64; c], vec![0.0f64; c]);
            for (j, (&gv, &av)) in g.iter().zip(&bn.a).enumerate() {
                assert!(
                    av > 0.0 || gv == 0.0,
                    "{}: gradient {gv} where a = {av}",
                    family.name()
                );
                let ch = (j / hw) % c;
                let xhat = (bn.x[j] as f64 - bn.mean[ch]) / (bn.var[ch] + 1e-5).sqrt();
                dgamma[ch] += gv as f64 * xhat;
                dbeta[ch] += gv as f64;
            }
            let what = format!("{} {sh:?} block output {block_output}", family.name());
            // and the gradient is the right one: within f16 operands' rounding (1e-2, as the
            // added gradient's test) of the f64 reference, where a lost or misplaced value is
            // off by the order of the values
            let [g_ref, _, _] = backward_reference(sh, &bn);
            assert_close(&format!("{what} masked gradient"), &g, &g_ref, 1e-2);
            assert_close(&format!("{what} dgamma"), &dparams[..c], &dgamma, 1e-5);
            assert_close(&format!("{what} dbeta"), &dparams[c..], &dbeta, 1e-5);
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        2 * 8 * shapes.len(),
        "register, GEMM and tensor-core families in f16"
    );
}

/// The backward to the input with the gradient of a block's shortcut added in its epilogue
/// (`conv2d::backward_input_add`), for every family that runs here, against the f64 backward to
/// the input plus that gradient: f32 within 1e-5, f16 within 1e-2 (its dy and weights rounded
/// to f16, as tests/conv2d.rs bounds the backward alone).
#[test]
fn added_gradient_in_the_backward_to_the_input_matches_the_f64_reference() {
    let f16 = f16_shaders("added_gradient_in_the_backward_to_the_input_matches_the_f64_reference");
    let mut checked = 0;
    for family in KernelFamily::ALL {
        if family.precision() == Precision::Mixed && !f16 {
            continue;
        }
        let gpu = gpu_with(Some(family));
        for (i, sh) in ragged_shapes().iter().enumerate() {
            let (_, w) = data(sh, i);
            let x_len = sh.n * sh.c * sh.h * sh.w;
            let (dy, other) = (
                rand_vec(sh.n * sh.k * sh.p() * sh.q(), 50 + i as u64),
                rand_vec(x_len, 60 + i as u64),
            );
            let up = |v: &[f32], shape: &[usize]| gpu.upload(v, shape).unwrap();
            let (dyt, wt) = (up(&dy, &sh.y_shape()), up(&w, &sh.w_shape()));
            let (other_t, dx) = (up(&other, &sh.x_shape()), gpu.zeros(&sh.x_shape()).unwrap());
            let ks = conv2d::backward_input_add(&gpu, sh, &dyt, &wt, &other_t, &dx).unwrap();
            run(&gpu, &ks);
            let g = reference::Conv::from(sh);
            let zeros = vec![0.0; x_len];
            let (dx_ref, _, _) = reference::conv_backward(&g, &zeros, &f64s(&w), &f64s(&dy));
            let want: Vec<f64> = dx_ref
                .iter()
                .zip(&other)
                .map(|(a, b)| a + *b as f64)
                .collect();
            let tol = match family.precision() {
                Precision::Fp32 => 1e-5,
                Precision::Mixed => 1e-2,
            };
            let what = format!("{} {sh:?}", family.name());
            assert_close(&what, &read(&gpu, &dx), &want, tol);
            checked += 1;
        }
    }
    // the 8 f32 families, and where f16 shaders run the 8 f16 ones
    let families = if f16 { 16 } else { 8 };
    assert_eq!(checked, families * ragged_shapes().len());
}

/// Each shape with a BN inside a block (recomputed mask) and with a block's last BN below
/// (stored output's mask, the shortcut's gradient added).
fn cases(shapes: &[Conv2dShape]) -> impl Iterator<Item = (usize, &Conv2dShape, bool)> {
    (shapes.iter().enumerate()).flat_map(|(i, sh)| [(i, sh, false), (i, sh, true)])
}

/// The parameters a convolution applies BatchNorm with on load, y = x * scale + shift: scale,
/// then shift, of `c` channels. Half the shifts are positive, so that BN(0) > 0 there: a kernel
/// that padded with BN(0) instead of zero (the padding pads the BN's output) would be caught at
/// the borders.
fn on_load_params(c: usize) -> Vec<f32> {
    let scale = (0..c).map(|i| 0.8 + 0.05 * i as f32);
    let shift = (0..c).map(|i| {
        if i % 2 == 0 {
            0.25
        } else {
            -0.3 - 0.01 * i as f32
        }
    });
    scale.chain(shift).collect()
}

/// relu(c * scale + shift) in f64 with the parameters of [`on_load_params`]'s layout.
fn bn_relu_reference(sh: &Conv2dShape, c: &[f32], bn: &[f32]) -> Vec<f64> {
    let (ch, hw) = (sh.c, sh.h * sh.w);
    (c.iter().enumerate())
        .map(|(e, v)| {
            let i = (e / hw) % ch;
            (*v as f64 * bn[i] as f64 + bn[ch + i] as f64).max(0.0)
        })
        .collect()
}

/// BatchNorm-apply and its ReLU in the convolution's loads (`conv2d::forward_bn_in`,
/// `conv2d::backward_weight_bn_in`): every fp32 family's forward and backward to the weights of
/// relu(BN(c)) against the f64 forward and backward of that input computed apart.
#[test]
fn batchnorm_applied_on_load_matches_the_f64_reference() {
    let shapes = ragged_shapes();
    let mut checked = 0;
    for family in KernelFamily::of_precision(Precision::Fp32) {
        let gpu = gpu_with(Some(family));
        for (i, sh) in shapes.iter().enumerate() {
            let (c, w) = data(sh, i);
            let bn = on_load_params(sh.c);
            let dy = rand_vec(sh.n * sh.k * sh.p() * sh.q(), 30 + i as u64);
            let up = |v: &[f32], shape: &[usize]| gpu.upload(v, shape).unwrap();
            let (ct, wt, dyt) = (
                up(&c, &sh.x_shape()),
                up(&w, &sh.w_shape()),
                up(&dy, &sh.y_shape()),
            );
            let bnt = up(&bn, &[2 * sh.c]);
            let (y, dw) = (
                gpu.zeros(&sh.y_shape()).unwrap(),
                gpu.zeros(&sh.w_shape()).unwrap(),
            );
            let input = (&ct, Some(&bnt));
            let (mut ks, _) = conv2d::forward_bn_in(&gpu, sh, input, &wt, &y, None).unwrap();
            ks.extend(conv2d::backward_weight_bn_in(&gpu, sh, input, &dyt, &dw, None).unwrap());
            run(&gpu, &ks);

            let g = reference::Conv::from(sh);
            let a = bn_relu_reference(sh, &c, &bn);
            let y_ref = reference::conv_forward(&g, &a, &f64s(&w), None);
            let (_, dw_ref, _) = reference::conv_backward(&g, &a, &f64s(&w), &f64s(&dy));
            let what = format!("{} {sh:?}", family.name());
            assert_close(&format!("{what} y"), &read(&gpu, &y), &y_ref, 1e-5);
            assert_close(&format!("{what} dw"), &read(&gpu, &dw), &dw_ref, 1e-5);
            checked += 1;
        }
    }
    assert_eq!(checked, 8 * shapes.len(), "every fp32 family");
}

/// The merge of the convolution's partial statistics for a BN applied on load
/// (`batchnorm::forward_train_on_load`) writes the batch's mean and invstd (against the f64
/// statistics of the convolution's output), the BN as scale = gamma * invstd and shift = beta -
/// mean * scale from them, and updates the running ones.
#[test]
fn batchnorm_on_load_parameters_are_the_batch_statistics() {
    let gpu = gpu_with(Some(KernelFamily::Register16x16));
    for (i, sh) in ragged_shapes().iter().enumerate() {
        let (x, w) = data(sh, i);
        let up = |v: &[f32], shape: &[usize]| gpu.upload(v, shape).unwrap();
        let (xt, wt) = (up(&x, &sh.x_shape()), up(&w, &sh.w_shape()));
        let (c, partial) = (
            gpu.zeros(&sh.y_shape()).unwrap(),
            gpu.zeros(&[conv2d::stats_len(sh)]).unwrap(),
        );
        let (mut ks, written) =
            conv2d::forward_with_stats(&gpu, sh, &xt, &wt, &c, &partial).unwrap();
        assert!(written, "the register family writes the statistics");
        let affine_t = up(&affine(sh.k), &[2, sh.k]);
        let running = up(&[vec![0.0; sh.k], vec![1.0; sh.k]].concat(), &[2, sh.k]);
        let p = BnParams {
            affine: &affine_t,
            running: &running,
        };
        let (saved, params) = (
            gpu.zeros(&[2, sh.k]).unwrap(),
            gpu.zeros(&[batchnorm::on_load_len(sh.k)]).unwrap(),
        );
        let merge = batchnorm::forward_train_on_load;
        ks.push(merge(&gpu, &c, &p, &saved, MOMENTUM, &partial, &params).unwrap());
        run(&gpu, &ks);
        let [_, mean, invstd, run_mean, run_var] = reference(sh, &x, &w);
        let (got, saved) = (read(&gpu, &params), read(&gpu, &saved));
        let k = sh.k;
        let what = format!("{sh:?}");
        assert_close(&format!("{what} mean"), &saved[..k], &mean, 1e-5);
        assert_close(&format!("{what} invstd"), &saved[k..], &invstd, 1e-5);
        let a = f64s(&affine(k));
        let scale: Vec<f64> = (0..k).map(|i| a[i] * invstd[i]).collect();
        let shift: Vec<f64> = (0..k).map(|i| a[k + i] - mean[i] * scale[i]).collect();
        assert_close(&format!("{what} scale"), &got[..k], &scale, 1e-5);
        assert_close(&format!("{what} shift"), &got[k..], &shift, 1e-5);
        let running = read(&gpu, &running);
        assert_close(
            &format!("{what} running mean"),
            &running[..k],
            &run_mean,
            1e-5,
        );
        assert_close(
            &format!("{what} running var"),
            &running[k..],
            &run_var,
            1e-5,
        );
    }
}
