//! batchnorm2d: training and eval forward, running statistics, fused ReLU / residual add, and the
//! backward, against f64 CPU references and finite differences. Error norm: max-norm relative.

mod common;
use common::*;
use resnet::gpu::Gpu;
use resnet::ops::batchnorm::{self, BnParams, Fuse};
use resnet::reference::{bn_apply, bn_backward, bn_forward};

struct Bn {
    affine: resnet::Tensor,
    running: resnet::Tensor,
    saved: resnet::Tensor,
}

fn bn_state(gpu: &Gpu, gamma: &[f32], beta: &[f32], rm: &[f32], rv: &[f32]) -> Bn {
    let c = gamma.len();
    Bn {
        affine: gpu.upload(&[gamma, beta].concat(), &[2, c]).unwrap(),
        running: gpu.upload(&[rm, rv].concat(), &[2, c]).unwrap(),
        saved: gpu.zeros(&[2, c]).unwrap(),
    }
}

impl Bn {
    fn params(&self) -> BnParams<'_> {
        BnParams {
            affine: &self.affine,
            running: &self.running,
        }
    }
    fn mean(&self, gpu: &Gpu) -> Vec<f32> {
        let v = read(gpu, &self.saved);
        v[..v.len() / 2].to_vec()
    }
    fn invstd(&self, gpu: &Gpu) -> Vec<f32> {
        let v = read(gpu, &self.saved);
        v[v.len() / 2..].to_vec()
    }
    fn running_mean(&self, gpu: &Gpu) -> Vec<f32> {
        let v = read(gpu, &self.running);
        v[..v.len() / 2].to_vec()
    }
    fn running_var(&self, gpu: &Gpu) -> Vec<f32> {
        let v = read(gpu, &self.running);
        v[v.len() / 2..].to_vec()
    }
}

/// Statistics reduce over N*H*W = 131072 values per channel at ResNet-20's first stage.
#[test]
fn batchnorm_train_forward_full_size_and_running_stats() {
    let gpu = gpu();
    let (n, c, hw) = (128, 16, 32 * 32);
    // an offset mean makes a one-pass variance lose precision; the reference checks we don't
    let x: Vec<f32> = rand_vec(n * c * hw, 1)
        .iter()
        .enumerate()
        .map(|(i, v)| v * 2.0 + ((i / hw) % c) as f32)
        .collect();
    let gamma = rand_vec(c, 2);
    let beta = rand_vec(c, 3);
    let rm = rand_vec(c, 4);
    let rv: Vec<f32> = rand_vec(c, 5).iter().map(|v| v.abs() + 0.5).collect();
    let bn = bn_state(&gpu, &gamma, &beta, &rm, &rv);
    let xt = gpu.upload(&x, &[n, c, 32, 32]).unwrap();
    let y = gpu.zeros(&[n, c, 32, 32]).unwrap();
    run(
        &gpu,
        &batchnorm::forward_train(
            &gpu,
            &xt,
            &y,
            &bn.params(),
            &bn.saved,
            Fuse::default(),
            batchnorm::MOMENTUM,
        )
        .unwrap(),
    );

    let (y_ref, mean_ref, var_ref) = bn_forward(
        n,
        c,
        hw,
        &f64s(&x),
        &f64s(&gamma),
        &f64s(&beta),
        None,
        false,
    );
    assert_close("bn forward y", &read(&gpu, &y), &y_ref, 1e-4);
    assert_close("bn batch mean", &bn.mean(&gpu), &mean_ref, 1e-5);
    let invstd_ref: Vec<f64> = var_ref.iter().map(|v| 1.0 / (v + 1e-5).sqrt()).collect();
    assert_close("bn invstd", &bn.invstd(&gpu), &invstd_ref, 1e-4);
    let m = (n * hw) as f64;
    let rm_ref: Vec<f64> = rm
        .iter()
        .zip(&mean_ref)
        .map(|(r, mu)| 0.9 * *r as f64 + 0.1 * mu)
        .collect();
    let rv_ref: Vec<f64> = rv
        .iter()
        .zip(&var_ref)
        .map(|(r, v)| 0.9 * *r as f64 + 0.1 * v * m / (m - 1.0))
        .collect();
    assert_close("bn running_mean", &bn.running_mean(&gpu), &rm_ref, 1e-5);
    assert_close(
        "bn running_var (unbiased)",
        &bn.running_var(&gpu),
        &rv_ref,
        1e-5,
    );
}

#[test]
fn batchnorm_fused_residual_relu_and_eval_mode() {
    let gpu = gpu();
    // odd 7x7, batch 1 at 56x56 (the ImageNet layer1 size), and a channel count not a multiple of 8
    // the last is split into 3 unequal chunks by the reductions (8815 values a channel)
    for (n, c, h, w) in [(3, 8, 7, 7), (1, 64, 56, 56), (2, 3, 9, 5), (5, 3, 41, 43)] {
        fused_case(&gpu, n, c, h, w);
    }
}

fn fused_case(gpu: &Gpu, n: usize, c: usize, h: usize, w: usize) {
    let hw = h * w;
    let x = rand_vec(n * c * hw, 11);
    let res = rand_vec(n * c * hw, 12);
    let gamma = rand_vec(c, 13);
    let beta = rand_vec(c, 14);
    let rm = rand_vec(c, 15);
    let rv: Vec<f32> = rand_vec(c, 16).iter().map(|v| v.abs() + 0.5).collect();
    let bn = bn_state(gpu, &gamma, &beta, &rm, &rv);
    let xt = gpu.upload(&x, &[n, c, h, w]).unwrap();
    let rt = gpu.upload(&res, &[n, c, h, w]).unwrap();
    let y = gpu.zeros(&[n, c, h, w]).unwrap();
    let ye = gpu.zeros(&[n, c, h, w]).unwrap();
    let fuse = Fuse {
        residual: Some(&rt),
        relu: true,
    };
    // eval first (running stats as uploaded), then training
    let mut ks = batchnorm::forward_eval(gpu, &xt, &ye, &bn.params(), fuse).unwrap();
    ks.extend(batchnorm::forward_train(gpu, &xt, &y, &bn.params(), &bn.saved, fuse, 0.1).unwrap());
    run(gpu, &ks);
    let (x64, g64, b64, r64) = (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&res));
    let (y_ref, _, _) = bn_forward(n, c, hw, &x64, &g64, &b64, Some(&r64), true);
    assert_close(
        &format!("bn+add+relu train {n}x{c}x{h}x{w}"),
        &read(gpu, &y),
        &y_ref,
        1e-4,
    );
    let ye_ref = bn_apply(
        n,
        c,
        hw,
        &x64,
        &g64,
        &b64,
        &f64s(&rm),
        &f64s(&rv),
        Some(&r64),
        true,
    );
    assert_close(
        &format!("bn+add+relu eval {n}x{c}x{h}x{w}"),
        &read(gpu, &ye),
        &ye_ref,
        1e-4,
    );
}

/// Backward of every fusion variant against the analytic CPU formula and against finite
/// differences of L = sum(dy * forward(x, gamma, beta, residual)) on the f64 CPU forward.
#[test]
fn batchnorm_backward_matches_reference_and_finite_differences() {
    let gpu = gpu();
    for (n, c, h, w, relu, residual) in [
        (2, 3, 5, 5, false, false),
        (2, 4, 3, 3, true, false),
        (3, 2, 4, 4, true, true),
        (1, 5, 7, 7, false, true),
    ] {
        let hw = h * w;
        let len = n * c * hw;
        let seed = (n * 100 + c * 10 + h) as u64;
        let x = rand_vec(len, seed);
        let res = rand_vec(len, seed + 1);
        let dyv = rand_vec(len, seed + 2);
        let gamma: Vec<f32> = rand_vec(c, seed + 3).iter().map(|v| v + 1.5).collect();
        let beta = rand_vec(c, seed + 4);
        let bn = bn_state(&gpu, &gamma, &beta, &vec![0.0; c], &vec![1.0; c]);
        let shape = [n, c, h, w];
        let xt = gpu.upload(&x, &shape).unwrap();
        let rt = gpu.upload(&res, &shape).unwrap();
        let dy = gpu.upload(&dyv, &shape).unwrap();
        let y = gpu.zeros(&shape).unwrap();
        let dx = gpu.zeros(&shape).unwrap();
        let dres = gpu.zeros(&shape).unwrap();
        let dp = gpu.zeros(&[2, c]).unwrap();
        let fuse = Fuse {
            residual: residual.then_some(&rt),
            relu,
        };
        let mut ks =
            batchnorm::forward_train(&gpu, &xt, &y, &bn.params(), &bn.saved, fuse, 0.1).unwrap();
        ks.extend(
            batchnorm::backward(
                &gpu,
                &dy,
                &y,
                &xt,
                &bn.affine,
                batchnorm::Stats::Batch(&bn.saved),
                &dx,
                &dp,
                residual.then_some(&dres),
                relu,
            )
            .unwrap(),
        );
        run(&gpu, &ks);
        let dxg = read(&gpu, &dx);
        let dpg = read(&gpu, &dp);

        let (x64, g64, b64, r64, dy64) =
            (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&res), f64s(&dyv));
        let rref = residual.then_some(&r64[..]);
        let fwd = |x: &[f64], g: &[f64], b: &[f64], r: Option<&[f64]>| {
            bn_forward(n, c, hw, x, g, b, r, relu).0
        };
        // analytic reference
        let (y_ref, mean, var) = bn_forward(n, c, hw, &x64, &g64, &b64, rref, relu);
        let (dx_ref, dgamma, dbeta, _) =
            bn_backward(n, c, hw, &x64, &g64, &mean, &var, &y_ref, &dy64, relu);
        let tag = format!("bn backward {shape:?} relu={relu} residual={residual}");
        assert_close(&format!("{tag} dx"), &dxg, &dx_ref, 1e-4);
        assert_close(&format!("{tag} dgamma"), &dpg[..c], &dgamma, 1e-4);
        assert_close(&format!("{tag} dbeta"), &dpg[c..], &dbeta, 1e-4);
        // finite differences
        let h_ = 1e-6;
        let fd_x = finite_diff(&x64, h_, |x| dot(&fwd(x, &g64, &b64, rref), &dy64));
        let fd_g = finite_diff(&g64, h_, |g| dot(&fwd(&x64, g, &b64, rref), &dy64));
        let fd_b = finite_diff(&b64, h_, |b| dot(&fwd(&x64, &g64, b, rref), &dy64));
        assert_close(
            &format!("{tag} dx vs finite differences"),
            &dxg,
            &fd_x,
            1e-3,
        );
        assert_close(
            &format!("{tag} dgamma vs finite differences"),
            &dpg[..c],
            &fd_g,
            1e-3,
        );
        assert_close(
            &format!("{tag} dbeta vs finite differences"),
            &dpg[c..],
            &fd_b,
            1e-3,
        );
        if residual {
            let fd_r = finite_diff(&r64, h_, |r| dot(&fwd(&x64, &g64, &b64, Some(r)), &dy64));
            assert_close(
                &format!("{tag} dresidual vs finite differences"),
                &read(&gpu, &dres),
                &fd_r,
                1e-3,
            );
        }
    }
}

/// Backward of the eval-mode forward inside a training step (frozen layers, --bn-eval): the
/// running statistics are constants, checked against finite differences of the f64 eval forward.
#[test]
fn batchnorm_backward_on_running_statistics_matches_finite_differences() {
    let gpu = gpu();
    for (n, c, h, w, relu, residual) in [(2, 3, 4, 4, true, true), (3, 2, 3, 3, false, false)] {
        let (hw, shape) = (h * w, [n, c, h, w]);
        let len = n * c * hw;
        let x = rand_vec(len, 71);
        let res = rand_vec(len, 72);
        let dyv = rand_vec(len, 73);
        let gamma: Vec<f32> = rand_vec(c, 74).iter().map(|v| v + 1.5).collect();
        let beta = rand_vec(c, 75);
        let rm = rand_vec(c, 76);
        let rv: Vec<f32> = rand_vec(c, 77).iter().map(|v| v.abs() + 0.5).collect();
        let bn = bn_state(&gpu, &gamma, &beta, &rm, &rv);
        let xt = gpu.upload(&x, &shape).unwrap();
        let rt = gpu.upload(&res, &shape).unwrap();
        let dy = gpu.upload(&dyv, &shape).unwrap();
        let (y, dx, dres) = (
            gpu.zeros(&shape).unwrap(),
            gpu.zeros(&shape).unwrap(),
            gpu.zeros(&shape).unwrap(),
        );
        let dp = gpu.zeros(&[2, c]).unwrap();
        let fuse = Fuse {
            residual: residual.then_some(&rt),
            relu,
        };
        let mut ks = batchnorm::forward_eval(&gpu, &xt, &y, &bn.params(), fuse).unwrap();
        ks.extend(
            batchnorm::backward(
                &gpu,
                &dy,
                &y,
                &xt,
                &bn.affine,
                batchnorm::Stats::Running(&bn.running),
                &dx,
                &dp,
                residual.then_some(&dres),
                relu,
            )
            .unwrap(),
        );
        run(&gpu, &ks);
        let (x64, g64, b64, r64, dy64) =
            (f64s(&x), f64s(&gamma), f64s(&beta), f64s(&res), f64s(&dyv));
        let (m64, v64) = (f64s(&rm), f64s(&rv));
        let rref = residual.then_some(&r64[..]);
        let fwd =
            |x: &[f64], g: &[f64], b: &[f64]| bn_apply(n, c, hw, x, g, b, &m64, &v64, rref, relu);
        let loss = |x: &[f64], g: &[f64], b: &[f64]| dot(&fwd(x, g, b), &dy64);
        let tag = format!("bn backward on running stats {shape:?}");
        let fd_x = finite_diff(&x64, 1e-6, |x| loss(x, &g64, &b64));
        let fd_g = finite_diff(&g64, 1e-6, |g| loss(&x64, g, &b64));
        let fd_b = finite_diff(&b64, 1e-6, |b| loss(&x64, &g64, b));
        let dpg = read(&gpu, &dp);
        assert_close(&format!("{tag} dx"), &read(&gpu, &dx), &fd_x, 1e-3);
        assert_close(&format!("{tag} dgamma"), &dpg[..c], &fd_g, 1e-3);
        assert_close(&format!("{tag} dbeta"), &dpg[c..], &fd_b, 1e-3);
        // the running statistics are inputs here, never updated
        assert_eq!(read(&gpu, &bn.running), [rm.clone(), rv.clone()].concat());
    }
}
