//! Activations stored in f16 (mixed precision's inference, `ops::activations`): every kernel of
//! the forward that reads or writes them, given f16 inputs, against the f64 reference on the same
//! (f16) values, within the bound of f16 arithmetic; and a whole inference plan: f16 buffers
//! (about half the activation memory of fp32) and logits close to the fp32 plan's.

mod common;
use common::*;
use resnet::cifar10;
use resnet::gpu::{Dtype, Gpu, Precision, Tensor};
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::augment::{self, AugmentConfig};
use resnet::ops::conv2d::{self, Conv2dShape, Epilogue, KernelFamily};
use resnet::ops::elementwise::{self, ShortcutShape};
use resnet::ops::{linear, pool};
use resnet::plan::{Plan, PlanConfig};
use resnet::preprocess::MixDraw;
use resnet::reference::{self as cpu, conv_backward, conv_forward, Conv};
use resnet::selftest::f16_bounds;

/// One f16 ulp, relative: 2^-10 (WGSL leaves the direction of an f32 -> f16 conversion to the
/// implementation, so a stored value may be off by a whole ulp, not half).
const ULP16: f64 = 1.0 / 1024.0;
/// The spacing of f16's subnormals, the absolute error of storing a value near 0.
const TINY16: f64 = 1.0 / 16_777_216.0;

/// `v` as f16 stores it (to nearest).
fn f16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect()
}

/// The bound on storing a value `want` (already off by `err` at most) in f16.
fn stored(want: f64, err: f64) -> f64 {
    err + ULP16 * (want.abs() + err) + TINY16
}

fn upload16(gpu: &Gpu, v: &[f32], shape: &[usize]) -> Tensor {
    gpu.upload_f16(v, shape).expect("upload")
}

/// Every f16 family: the four register blocks, the three GEMM tiles and the tensor-core tile
/// (`gpu_with` emulates its cooperative matrices where the adapter has none).
fn f16_families() -> Vec<KernelFamily> {
    let families: Vec<_> = KernelFamily::of_precision(Precision::Mixed).collect();
    assert_eq!(
        families.len(),
        8,
        "four register blocks, three GEMM tiles, tensor cores"
    );
    families
}

fn assert_within(what: &str, got: &[f32], want: &[f64], bound: impl Fn(usize) -> f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let err = (*g as f64 - w).abs();
        assert!(
            err <= bound(i),
            "{what}[{i}]: {g} vs {w}, off by {err:e} > {:e}",
            bound(i)
        );
    }
}

/// y = relu(conv(x, w) + bias + residual) with x, the residual and y in f16, on every f16 family
/// that runs here: the f64 convolution of the same f16 x, within the bound of f16 operands (the
/// families round the weights to f16 too) and f32 sums, plus the rounding of the stored y.
#[test]
fn f16_families_read_and_write_f16_activations() {
    if !f16_shaders("f16_families_read_and_write_f16_activations") {
        return;
    }
    let families = f16_families();
    let shapes = [
        Conv2dShape::new(2, 16, 8, 8, 16, 3, 1, 1),
        Conv2dShape::new(2, 3, 9, 9, 20, 3, 2, 1),
        Conv2dShape::new(1, 72, 5, 5, 8, 1, 1, 0),
        Conv2dShape::new(1, 3, 11, 11, 12, 7, 2, 3),
    ];
    for family in families {
        let gpu = gpu_with(Some(family));
        for (i, sh) in shapes.iter().enumerate() {
            let seed = 40 + i as u64;
            let x = f16(&rand_vec(sh.n * sh.c * sh.h * sh.w, seed));
            let w: Vec<f32> = rand_vec(sh.k * sh.c * sh.r * sh.s, seed + 1);
            let b = rand_vec(sh.k, seed + 2);
            let res = f16(&rand_vec(sh.n * sh.k * sh.p() * sh.q(), seed + 3));
            let (xt, rt) = (
                upload16(&gpu, &x, &sh.x_shape()),
                upload16(&gpu, &res, &sh.y_shape()),
            );
            let wt = gpu.upload(&w, &sh.w_shape()).unwrap();
            let bt = gpu.upload(&b, &[sh.k]).unwrap();
            let y = gpu.zeros_of(&sh.y_shape(), Dtype::F16).unwrap();
            assert_eq!(y.bytes(), (y.len() as u64 * 2).next_multiple_of(4));
            let epi = Epilogue {
                bias: Some(&bt),
                residual: Some(&rt),
                relu: true,
            };
            run(
                &gpu,
                &conv2d::forward_epilogue(&gpu, sh, &xt, &wt, &epi, &y).unwrap(),
            );
            let got = read(&gpu, &y);

            let g = Conv::from(sh);
            let abs = |v: &[f32]| v.iter().map(|a| a.abs() as f64).collect::<Vec<_>>();
            let plus = |a: Vec<f64>, r: &[f32]| -> Vec<f64> {
                a.iter().zip(r).map(|(a, r)| a + *r as f64).collect()
            };
            let pre = plus(
                conv_forward(&g, &f64s(&x), &f64s(&w), Some(&f64s(&b))),
                &res,
            );
            let want: Vec<f64> = pre.iter().map(|v| v.max(0.0)).collect();
            let conv_abs = conv_forward(&g, &abs(&x), &abs(&w), Some(&abs(&b)));
            let magnitudes: Vec<f64> = conv_abs
                .iter()
                .zip(&res)
                .map(|(a, r)| a + r.abs() as f64)
                .collect();
            let bounds = f16_bounds(&magnitudes, sh.c * sh.r * sh.s);
            let what = format!("{family:?} {sh:?}");
            assert_within(&what, &got, &want, |e| stored(want[e], bounds[e]));
        }
    }
}

/// The backward of every f16 family on f16 activations: dx (stored in f16) from f16 dy, and dw
/// (f32) from f16 x and dy, against the f64 backward of the same f16 values, within the bound of
/// f16 operands (the families round the weights to f16 too) and f32 sums.
#[test]
fn f16_families_take_f16_gradients_in_the_backward() {
    if !f16_shaders("f16_families_take_f16_gradients_in_the_backward") {
        return;
    }
    let families = f16_families();
    let shapes = [
        Conv2dShape::new(2, 16, 8, 8, 16, 3, 1, 1),
        Conv2dShape::new(2, 8, 9, 9, 20, 3, 2, 1),
        Conv2dShape::new(1, 72, 5, 5, 8, 1, 1, 0),
    ];
    for family in families {
        let gpu = gpu_with(Some(family));
        for (i, sh) in shapes.iter().enumerate() {
            let seed = 60 + i as u64;
            let x = f16(&rand_vec(sh.n * sh.c * sh.h * sh.w, seed));
            let w: Vec<f32> = rand_vec(sh.k * sh.c * sh.r * sh.s, seed + 1);
            let dy = f16(&rand_vec(sh.n * sh.k * sh.p() * sh.q(), seed + 2));
            let (xt, dyt) = (
                upload16(&gpu, &x, &sh.x_shape()),
                upload16(&gpu, &dy, &sh.y_shape()),
            );
            let wt = gpu.upload(&w, &sh.w_shape()).unwrap();
            let dx = gpu.zeros_of(&sh.x_shape(), Dtype::F16).unwrap();
            let dw = gpu.zeros(&sh.w_shape()).unwrap();
            run(
                &gpu,
                &conv2d::backward_input(&gpu, sh, &dyt, &wt, &dx).unwrap(),
            );
            run(
                &gpu,
                &conv2d::backward_weight(&gpu, sh, &xt, &dyt, &dw, None).unwrap(),
            );

            let g = Conv::from(sh);
            let abs = |v: &[f32]| v.iter().map(|a| a.abs() as f64).collect::<Vec<_>>();
            let (want_dx, want_dw, _) = conv_backward(&g, &f64s(&x), &f64s(&w), &f64s(&dy));
            let (mag_dx, mag_dw, _) = conv_backward(&g, &abs(&x), &abs(&w), &abs(&dy));
            let what = format!("{family:?} {sh:?}");
            let b = f16_bounds(&mag_dx, sh.k * sh.r * sh.s);
            assert_within(&format!("{what} dx"), &read(&gpu, &dx), &want_dx, |e| {
                stored(want_dx[e], b[e])
            });
            let b = f16_bounds(&mag_dw, sh.n * sh.p() * sh.q());
            assert_within(&format!("{what} dw"), &read(&gpu, &dw), &want_dw, |e| b[e]);
        }
    }
}

/// BatchNorm-apply and its ReLU in the loads of every f16 family (`conv2d::forward_bn_in`,
/// `conv2d::backward_weight_bn_in`): the input c in f16, relu(c * scale + shift) computed in f32
/// and rounded to f16 as an operand. Against the f64 forward (y stored in f16) and backward to
/// the weights of relu(c * scale + shift) from the same f16 c, within the bound of f16 operands
/// and f32 sums plus what the f32 arithmetic of the BN may add to each operand (two roundings of
/// its terms' magnitudes).
#[test]
fn f16_families_apply_batchnorm_on_load() {
    if !f16_shaders("f16_families_apply_batchnorm_on_load") {
        return;
    }
    const EPS32: f64 = 1.0 / 16_777_216.0;
    let shapes = [
        Conv2dShape::new(2, 16, 8, 8, 16, 3, 1, 1),
        Conv2dShape::new(2, 8, 9, 9, 20, 3, 2, 1),
    ];
    for family in f16_families() {
        let gpu = gpu_with(Some(family));
        for (i, sh) in shapes.iter().enumerate() {
            let seed = 90 + i as u64;
            let c = f16(&rand_vec(sh.n * sh.c * sh.h * sh.w, seed));
            let w = rand_vec(sh.k * sh.c * sh.r * sh.s, seed + 1);
            let dy = f16(&rand_vec(sh.n * sh.k * sh.p() * sh.q(), seed + 2));
            // scale, then shift; shift > 0 in even channels: BN(0) > 0 there
            let ch = sh.c;
            let bn: Vec<f32> = (0..2 * ch)
                .map(|e| match (e / ch, e % ch) {
                    (0, i) => 0.7 + 0.04 * i as f32,
                    (_, i) if i % 2 == 0 => 0.15,
                    (_, i) => -0.05 * i as f32,
                })
                .collect();
            let (ct, dyt) = (
                upload16(&gpu, &c, &sh.x_shape()),
                upload16(&gpu, &dy, &sh.y_shape()),
            );
            let (wt, bnt) = (
                gpu.upload(&w, &sh.w_shape()).unwrap(),
                gpu.upload(&bn, &[2 * ch]).unwrap(),
            );
            let y = gpu.zeros_of(&sh.y_shape(), Dtype::F16).unwrap();
            let dw = gpu.zeros(&sh.w_shape()).unwrap();
            let input = (&ct, Some(&bnt));
            let (mut ks, _) = conv2d::forward_bn_in(&gpu, sh, input, &wt, &y, None).unwrap();
            ks.extend(conv2d::backward_weight_bn_in(&gpu, sh, input, &dyt, &dw, None).unwrap());
            run(&gpu, &ks);

            let hw = sh.h * sh.w;
            let p = |k: usize, e: usize| bn[k * ch + (e / hw) % ch] as f64;
            let terms = |e: usize, v: f64| (v * p(0, e), p(1, e));
            let a: Vec<f64> = (c.iter().enumerate())
                .map(|(e, v)| {
                    let (t, b) = terms(e, *v as f64);
                    (t + b).max(0.0)
                })
                .collect();
            // the f32 BN's error per operand, and each operand's magnitude with it
            let a_err: Vec<f64> = (c.iter().enumerate())
                .map(|(e, v)| {
                    let (t, b) = terms(e, *v as f64);
                    2.0 * EPS32 * (t.abs() + b.abs())
                })
                .collect();
            let a_mag: Vec<f64> = a.iter().zip(&a_err).map(|(a, e)| a.abs() + e).collect();
            let g = Conv::from(sh);
            let abs = |v: &[f32]| v.iter().map(|a| a.abs() as f64).collect::<Vec<_>>();
            let want = conv_forward(&g, &a, &f64s(&w), None);
            let mag = conv_forward(&g, &a_mag, &abs(&w), None);
            let err_in = conv_forward(&g, &a_err, &abs(&w), None);
            let b = f16_bounds(&mag, sh.c * sh.r * sh.s);
            let what = format!("{family:?} {sh:?}");
            assert_within(&format!("{what} y"), &read(&gpu, &y), &want, |e| {
                stored(want[e], b[e] + err_in[e])
            });
            let (_, want_dw, _) = conv_backward(&g, &a, &f64s(&w), &f64s(&dy));
            let (_, mag_dw, _) = conv_backward(&g, &a_mag, &abs(&w), &abs(&dy));
            let (_, err_dw, _) = conv_backward(&g, &a_err, &abs(&w), &abs(&dy));
            let b = f16_bounds(&mag_dw, sh.n * sh.p() * sh.q());
            assert_within(&format!("{what} dw"), &read(&gpu, &dw), &want_dw, |e| {
                b[e] + err_dw[e]
            });
        }
    }
}

/// A training BatchNorm (+ residual, + ReLU) on f16 activations: y, dx and dres stored in f16,
/// the statistics and the parameters' gradients in f32, against the f64 forward and backward of
/// the same f16 inputs (the ReLU's mask from the y the GPU stored, as its backward reads it):
/// y, dx and dres within an f16 ulp of their largest value, dgamma and dbeta (f32 sums of f16
/// values) within 1e-4.
#[test]
fn batchnorm_trains_on_f16_activations() {
    if !f16_shaders("batchnorm_trains_on_f16_activations") {
        return;
    }
    use resnet::ops::batchnorm::{self, BnParams, Fuse, Stats};
    let gpu = gpu_with(Some(KernelFamily::Register16x16F16));
    for (shape, residual) in [
        ([2, 3, 5, 5], false),
        ([3, 4, 4, 4], true),
        ([2, 16, 8, 8], true),
    ] {
        let [n, c, h, w] = shape;
        let (len, hw) = (n * c * h * w, h * w);
        let x = f16(&rand_vec(len, 81)
            .iter()
            .map(|v| 3.0 * v + 1.0)
            .collect::<Vec<_>>());
        let res = f16(&rand_vec(len, 82));
        let dy = f16(&rand_vec(len, 83));
        let gamma: Vec<f32> = rand_vec(c, 84).iter().map(|v| v + 1.5).collect();
        let beta = rand_vec(c, 85);
        let affine = gpu
            .upload(&[&gamma[..], &beta[..]].concat(), &[2, c])
            .unwrap();
        let running = gpu
            .upload(&[vec![0.0f32; c], vec![1.0f32; c]].concat(), &[2, c])
            .unwrap();
        let saved = gpu.zeros(&[2, c]).unwrap();
        let (xt, rt, dyt) = (
            upload16(&gpu, &x, &shape),
            upload16(&gpu, &res, &shape),
            upload16(&gpu, &dy, &shape),
        );
        let act = || gpu.zeros_of(&shape, Dtype::F16).unwrap();
        let (y, dx, dres) = (act(), act(), act());
        let dparams = gpu.zeros(&[2, c]).unwrap();
        let p = BnParams {
            affine: &affine,
            running: &running,
        };
        let fuse = Fuse {
            residual: residual.then_some(&rt),
            relu: true,
        };
        let mut ks = batchnorm::forward_train(&gpu, &xt, &y, &p, &saved, fuse, 0.1).unwrap();
        let stats = Stats::Batch(&saved);
        let dres_t = residual.then_some(&dres);
        let (bk, _) = batchnorm::backward(
            &gpu, &dyt, &y, &xt, &affine, stats, &dx, &dparams, dres_t, true,
        )
        .unwrap();
        ks.extend(bk);
        run(&gpu, &ks);

        let (x64, g64, b64, r64) = (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&res));
        let rref = residual.then_some(&r64[..]);
        let (y_ref, mean, var) = cpu::bn_forward(n, c, hw, &x64, &g64, &b64, rref, true);
        let y_gpu = read(&gpu, &y);
        let tag = format!("bn {shape:?} residual={residual}");
        let err = max_norm_relative_error(&y_gpu, &y_ref);
        assert!(err <= ULP16, "{tag} y: {err:e}");
        let (dx_ref, dgamma, dbeta, dres_ref) = cpu::bn_backward(
            n,
            c,
            hw,
            &x64,
            &g64,
            &mean,
            &var,
            &f64s(&y_gpu),
            &f64s(&dy),
            true,
        );
        let err = max_norm_relative_error(&read(&gpu, &dx), &dx_ref);
        assert!(err <= ULP16, "{tag} dx: {err:e}");
        let dp = read(&gpu, &dparams);
        assert!(
            max_norm_relative_error(&dp[..c], &dgamma) < 1e-4,
            "{tag} dgamma"
        );
        assert!(
            max_norm_relative_error(&dp[c..], &dbeta) < 1e-4,
            "{tag} dbeta"
        );
        if residual {
            let err = max_norm_relative_error(&read(&gpu, &dres), &dres_ref);
            assert!(err == 0.0, "{tag} dres (the masked dy, moved): {err:e}");
        }
    }
}

/// Max pool, global average pool, the option-A shortcut and the classifier on f16 activations,
/// against the f64 reference of the same f16 inputs: the max and the shortcut move values, so
/// they are exact; the average is an f32 sum stored in f16; the classifier reads f16 and writes
/// f32 logits.
#[test]
fn pooling_shortcut_and_classifier_take_f16_activations() {
    if !f16_shaders("pooling_shortcut_and_classifier_take_f16_activations") {
        return;
    }
    let gpu = gpu_with(Some(KernelFamily::Register16x16F16));
    let (n, c, h, w) = (2, 6, 9, 7);
    let x = f16(&rand_vec(n * c * h * w, 5));
    let xt = upload16(&gpu, &x, &[n, c, h, w]);

    let sh = pool::PoolShape {
        n,
        c,
        h,
        w,
        window: 3,
        stride: 2,
        pad: 1,
    };
    let y = gpu.zeros_of(&sh.y_shape(), Dtype::F16).unwrap();
    let arg = gpu.zeros(&sh.y_shape()).unwrap();
    run(
        &gpu,
        &pool::maxpool_forward(&gpu, &sh, &xt, &y, &arg).unwrap(),
    );
    let want = cpu::maxpool(n, c, h, w, 3, 2, 1, &f64s(&x));
    assert_within("maxpool", &read(&gpu, &y), &want, |_| 0.0);

    let avg = gpu.zeros_of(&[n, c], Dtype::F16).unwrap();
    run(&gpu, &pool::avgpool_forward(&gpu, &xt, &avg).unwrap());
    let want = cpu::avgpool(n, c, h * w, &f64s(&x));
    let sum_err = (h * w) as f64 / 16_777_216.0 * 4.0; // |x| < 1: an f32 sum of 63 terms
    assert_within("avgpool", &read(&gpu, &avg), &want, |e| {
        stored(want[e], sum_err)
    });

    let ssh = ShortcutShape {
        n,
        cin: c,
        h,
        w,
        cout: 2 * c,
        stride: 2,
    };
    let s = gpu.zeros_of(&ssh.y_shape(), Dtype::F16).unwrap();
    run(
        &gpu,
        &elementwise::shortcut_a_forward(&gpu, &ssh, &xt, &s).unwrap(),
    );
    let want = cpu::shortcut_a(n, c, h, w, 2 * c, 2, &f64s(&x));
    assert_within("shortcut A", &read(&gpu, &s), &want, |_| 0.0);

    let (i, o) = (c * h * w, 10);
    let feats = xt.clone().reshaped(&[n, i]);
    let wl = rand_vec(o * i, 6);
    let bl = rand_vec(o, 7);
    let (wt, bt) = (
        gpu.upload(&wl, &[o, i]).unwrap(),
        gpu.upload(&bl, &[o]).unwrap(),
    );
    let logits = gpu.zeros(&[n, o]).unwrap();
    run(
        &gpu,
        &linear::forward(&gpu, &feats, &wt, &bt, &logits).unwrap(),
    );
    let want = cpu::linear(n, i, o, &f64s(&x), &f64s(&wl), &f64s(&bl));
    // exact f16 * f32 products, an f32 sum of i terms below 1 each
    let sum_err = (i + 1) as f64 / 16_777_216.0 * 2.0;
    assert_within("linear", &read(&gpu, &logits), &want, |_| sum_err);
}

/// The backward of pooling, the option-A shortcut, the add where a block's paths meet and the
/// classifier, on f16 gradients: each against the f64 backward of the same f16 values. The max
/// pool, the shortcut and the average pool move or scale values (the average by 1/16, exact in
/// binary), so they are exact, up to the store of a sum of overlapping windows; the add and the
/// classifier's dx are f32 sums stored in f16; its dW and db stay f32.
#[test]
fn backward_ops_take_f16_gradients() {
    if !f16_shaders("backward_ops_take_f16_gradients") {
        return;
    }
    let gpu = gpu_with(Some(KernelFamily::Register16x16F16));
    let (n, c, h, w) = (2, 6, 8, 8);
    let len = n * c * h * w;
    let x = f16(&rand_vec(len, 91));
    let xt = upload16(&gpu, &x, &[n, c, h, w]);
    let f16_zeros = |shape: &[usize]| gpu.zeros_of(shape, Dtype::F16).unwrap();

    let sh = pool::PoolShape {
        n,
        c,
        h,
        w,
        window: 3,
        stride: 2,
        pad: 1,
    };
    let (y, arg) = (f16_zeros(&sh.y_shape()), gpu.zeros(&sh.y_shape()).unwrap());
    let dy = f16(&rand_vec(sh.y_shape().iter().product(), 92));
    let (dyt, dx) = (upload16(&gpu, &dy, &sh.y_shape()), f16_zeros(&[n, c, h, w]));
    let mut ks = pool::maxpool_forward(&gpu, &sh, &xt, &y, &arg).unwrap();
    ks.extend(pool::maxpool_backward(&gpu, &sh, &dyt, &arg, &dx).unwrap());
    run(&gpu, &ks);
    let want = cpu::maxpool_backward(n, c, h, w, 3, 2, 1, &f64s(&x), &f64s(&dy));
    assert_within("maxpool backward", &read(&gpu, &dx), &want, |e| {
        stored(want[e], 4e-7)
    });

    let g = f16(&rand_vec(n * c, 93));
    let (gt, dx) = (upload16(&gpu, &g, &[n, c]), f16_zeros(&[n, c, h, w]));
    run(&gpu, &pool::avgpool_backward(&gpu, &gt, &dx).unwrap());
    let want = cpu::avgpool_backward(n, c, h * w, &f64s(&g));
    assert_within("avgpool backward", &read(&gpu, &dx), &want, |e| {
        stored(want[e], 0.0)
    });

    let ssh = ShortcutShape {
        n,
        cin: c,
        h,
        w,
        cout: 2 * c,
        stride: 2,
    };
    let dy = f16(&rand_vec(ssh.y_shape().iter().product(), 94));
    let (dyt, dx) = (
        upload16(&gpu, &dy, &ssh.y_shape()),
        f16_zeros(&[n, c, h, w]),
    );
    run(
        &gpu,
        &elementwise::shortcut_a_backward(&gpu, &ssh, &dyt, &dx).unwrap(),
    );
    let want = cpu::shortcut_a_backward(n, c, h, w, 2 * c, 2, &f64s(&dy));
    assert_within("shortcut A backward", &read(&gpu, &dx), &want, |_| 0.0);

    let b = f16(&rand_vec(len, 95));
    let (bt, sum) = (upload16(&gpu, &b, &[n, c, h, w]), f16_zeros(&[n, c, h, w]));
    run(
        &gpu,
        &elementwise::add_forward(&gpu, &xt, &bt, &sum).unwrap(),
    );
    let want: Vec<f64> = x
        .iter()
        .zip(&b)
        .map(|(a, b)| *a as f64 + *b as f64)
        .collect();
    assert_within("add", &read(&gpu, &sum), &want, |e| stored(want[e], 0.0));

    let (i, o) = (c * h * w, 10);
    let feats = xt.clone().reshaped(&[n, i]);
    let wl = rand_vec(o * i, 96);
    let dl = rand_vec(n * o, 97);
    let wt = gpu.upload(&wl, &[o, i]).unwrap();
    let dlt = gpu.upload(&dl, &[n, o]).unwrap();
    let (dxl, dw, db) = (
        f16_zeros(&[n, i]),
        gpu.zeros(&[o, i]).unwrap(),
        gpu.zeros(&[o]).unwrap(),
    );
    run(
        &gpu,
        &linear::backward(&gpu, &feats, &wt, &dlt, Some(&dxl), &dw, &db).unwrap(),
    );
    let (want_dx, want_dw, want_db) =
        cpu::linear_backward(n, i, o, &f64s(&x), &f64s(&wl), &f64s(&dl));
    let sum_err = |terms: usize| terms as f64 / 16_777_216.0 * 2.0; // f32 sums of terms below 1
    assert_within("linear dx", &read(&gpu, &dxl), &want_dx, |e| {
        stored(want_dx[e], sum_err(o))
    });
    assert_within("linear dw", &read(&gpu, &dw), &want_dw, |_| sum_err(n));
    assert_within("linear db", &read(&gpu, &db), &want_db, |_| sum_err(n));
}

/// The input stage writes f16 images: the f32 stage's values, each stored in f16, for an
/// evaluation batch and for training batches that crop, flip, erase and mix (MixUp, CutMix).
#[test]
fn the_input_stage_writes_f16_images() {
    if !f16_shaders("the_input_stage_writes_f16_images") {
        return;
    }
    let gpu = gpu_with(Some(KernelFamily::Register16x16F16));
    let eval = AugmentConfig {
        n: 2,
        src: (8, 8),
        out: (8, 8),
        pad: 0,
        train: false,
        seed: 3,
        first: 0,
        erase: false,
        mix: MixDraw::Nothing,
        normalize: cifar10::NORMALIZE,
    };
    let train = |mix| AugmentConfig {
        pad: 2,
        train: true,
        erase: true,
        mix,
        ..eval
    };
    let cutmix = MixDraw::CutMix {
        lambda: 0.75,
        rect: [2, 1, 6, 5],
    };
    let bytes: Vec<u8> = (0..2 * 3 * 64).map(|i| (i * 37 % 256) as u8).collect();
    let pixels = gpu
        .upload(&augment::pack_bytes(&bytes), &[bytes.len() / 4])
        .unwrap();
    // image 0 erased in a 3x2 rectangle, image 1 kept whole
    let rects = gpu.upload(&[1u32, 2, 3, 2, 0, 0, 0, 0], &[8]).unwrap();
    let shape = [2, 3, 8, 8];
    let (x32, x16) = (
        gpu.zeros(&shape).unwrap(),
        gpu.zeros_of(&shape, Dtype::F16).unwrap(),
    );
    for cfg in [eval, train(MixDraw::MixUp { lambda: 0.3 }), train(cutmix)] {
        let erase = cfg.erase.then_some(&rects);
        for out in [&x32, &x16] {
            run(
                &gpu,
                &augment::augment(&gpu, &cfg, &pixels, erase, out).unwrap(),
            );
        }
        let want = f64s(&read(&gpu, &x32));
        let what = format!("input {:?}", cfg.mix);
        assert_within(&what, &read(&gpu, &x16), &want, |e| stored(want[e], 0.0));
    }
}

/// A ResNet-20 inference plan in mixed precision stores its activations in f16: what a plan
/// holds per image (its memory at batch 16 less its memory at batch 8: the activations; the
/// re-laid and folded weights do not grow with the batch) is about half the fp32 plan's, and
/// its logits stay within f16's rounding of the fp32 plan's on the same weights (BatchNorms with
/// running statistics away from 0 and 1, so the folded scales and biases are not trivial).
#[test]
fn a_mixed_precision_inference_plan_keeps_f16_activations() {
    if !f16_shaders("a_mixed_precision_inference_plan_keeps_f16_activations") {
        return;
    }
    let n = 16;
    let px: Vec<u8> = rand_vec(n * 3 * 1024, 21)
        .iter()
        .map(|v| ((v + 1.0) * 127.0) as u8)
        .collect();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 10).collect();
    let run_plan = |family: KernelFamily, n: usize| {
        let gpu = gpu_with(Some(family));
        let spec = ModelSpec::from_name("resnet20", 10).unwrap();
        let m = ModelState::new(&gpu, &spec, 9).unwrap();
        let running: Vec<f32> = (0..m.running.len())
            .map(|i| 0.6 + 0.5 * ((i * 7919 % 101) as f32 / 101.0))
            .collect();
        gpu.write(&m.running, &running).unwrap();
        let cfg = PlanConfig::eval(n, (32, 32), cifar10::NORMALIZE);
        let plan = Plan::new(&gpu, &m, cfg).unwrap();
        plan.set_batch(&gpu, &px[..n * 3 * 1024], &labels[..n])
            .unwrap();
        plan.submit(&gpu);
        (read(&gpu, &plan.logits), plan.bytes)
    };
    let (fp32, fp32_bytes) = run_plan(KernelFamily::Register16x16, n);
    let (mixed, mixed_bytes) = run_plan(KernelFamily::Register16x16F16, n);
    let (_, fp32_half) = run_plan(KernelFamily::Register16x16, n / 2);
    let (_, mixed_half) = run_plan(KernelFamily::Register16x16F16, n / 2);
    let (per_fp32, per_mixed) = (fp32_bytes - fp32_half, mixed_bytes - mixed_half);
    let ratio = per_mixed as f64 / per_fp32 as f64;
    assert!(
        (0.45..0.6).contains(&ratio),
        "per 8 images the mixed plan holds {per_mixed} B, the fp32 plan {per_fp32} B: \
         activations not in f16?"
    );
    // 20 layers, each rounding its operands and its stored output to f16 (2^-11 to 2^-10 each)
    let err = max_norm_relative_error(&mixed, &f64s(&fp32));
    eprintln!("per 8 images: mixed {per_mixed} B, fp32 {per_fp32} B; logits {err:e} apart");
    assert!(err < 2e-2, "logits {err:e} apart (max-norm relative)");
    assert!(
        err > 1e-5,
        "logits {err:e} apart: the mixed plan did not round to f16"
    );
}

fn max_norm_relative_error(got: &[f32], want: &[f64]) -> f64 {
    resnet::selftest::max_norm_relative_error(got, want)
}
