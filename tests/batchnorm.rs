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

/// One BatchNorm's random inputs for the backward tests, on the host and on the device: x, a
/// residual, dy, gamma (kept from 0), beta and running statistics; outputs zeroed.
struct Case {
    x: Vec<f32>,
    res: Vec<f32>,
    dy: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    rm: Vec<f32>,
    rv: Vec<f32>,
    bn: Bn,
    t: Tensors,
}

/// A case's device tensors.
struct Tensors {
    x: resnet::Tensor,
    res: resnet::Tensor,
    dy: resnet::Tensor,
    y: resnet::Tensor,
    dx: resnet::Tensor,
    dres: resnet::Tensor,
    /// dgamma, dbeta
    dp: resnet::Tensor,
}

impl Case {
    fn new(gpu: &Gpu, shape: [usize; 4], seed: u64) -> Case {
        let [n, c, h, w] = shape;
        let len = n * c * h * w;
        let gamma: Vec<f32> = rand_vec(c, seed + 3).iter().map(|v| v + 1.5).collect();
        let (beta, rm) = (rand_vec(c, seed + 4), rand_vec(c, seed + 5));
        let rv: Vec<f32> = rand_vec(c, seed + 6)
            .iter()
            .map(|v| v.abs() + 0.5)
            .collect();
        let (x, res, dy) = (
            rand_vec(len, seed),
            rand_vec(len, seed + 1),
            rand_vec(len, seed + 2),
        );
        let bn = bn_state(gpu, &gamma, &beta, &rm, &rv);
        let t = Tensors::new(gpu, shape, (&x, &res, &dy));
        Case {
            x,
            res,
            dy,
            gamma,
            beta,
            rm,
            rv,
            bn,
            t,
        }
    }

    /// x, gamma, beta, the residual and dy in f64, for the CPU references.
    #[allow(clippy::type_complexity)]
    fn in_f64(&self) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
        let (x, g, b) = (f64s(&self.x), f64s(&self.gamma), f64s(&self.beta));
        (x, g, b, f64s(&self.res), f64s(&self.dy))
    }

    fn fuse(&self, relu: bool, residual: bool) -> Fuse<'_> {
        Fuse {
            residual: residual.then_some(&self.t.res),
            relu,
        }
    }
}

impl Tensors {
    fn new(gpu: &Gpu, shape: [usize; 4], (x, res, dy): (&[f32], &[f32], &[f32])) -> Tensors {
        let zeros = || gpu.zeros(&shape).unwrap();
        Tensors {
            x: gpu.upload(x, &shape).unwrap(),
            res: gpu.upload(res, &shape).unwrap(),
            dy: gpu.upload(dy, &shape).unwrap(),
            y: zeros(),
            dx: zeros(),
            dres: zeros(),
            dp: gpu.zeros(&[2, shape[1]]).unwrap(),
        }
    }

    /// The backward's kernels (and its exchange with `Stats::Across`).
    fn backward(
        &self,
        gpu: &Gpu,
        affine: &resnet::Tensor,
        stats: batchnorm::Stats,
        (relu, residual): (bool, bool),
    ) -> (Vec<resnet::gpu::Kernel>, Option<batchnorm::Exchange>) {
        batchnorm::backward(
            gpu,
            &self.dy,
            &self.y,
            &self.x,
            affine,
            stats,
            &self.dx,
            &self.dp,
            residual.then_some(&self.dres),
            relu,
        )
        .unwrap()
    }
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
        let shape = [n, c, h, w];
        let k = Case::new(&gpu, shape, (n * 100 + c * 10 + h) as u64);
        let (bn, t) = (&k.bn, &k.t);
        let fuse = k.fuse(relu, residual);
        let mut ks =
            batchnorm::forward_train(&gpu, &t.x, &t.y, &bn.params(), &bn.saved, fuse, 0.1).unwrap();
        let stats = batchnorm::Stats::Batch(&bn.saved);
        ks.extend(t.backward(&gpu, &bn.affine, stats, (relu, residual)).0);
        run(&gpu, &ks);
        let dxg = read(&gpu, &t.dx);
        let dpg = read(&gpu, &t.dp);

        let (x64, g64, b64, r64, dy64) = k.in_f64();
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
        let fd_dp = [&fd_g[..], &fd_b[..]].concat();
        assert_close(
            &format!("{tag} dgamma, dbeta vs finite differences"),
            &dpg,
            &fd_dp,
            1e-3,
        );
        if residual {
            let fd_r = finite_diff(&r64, h_, |r| dot(&fwd(&x64, &g64, &b64, Some(r)), &dy64));
            let dres = read(&gpu, &t.dres);
            assert_close(
                &format!("{tag} dresidual vs finite differences"),
                &dres,
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
        let k = Case::new(&gpu, shape, 71);
        let (bn, t) = (&k.bn, &k.t);
        let fuse = k.fuse(relu, residual);
        let mut ks = batchnorm::forward_eval(&gpu, &t.x, &t.y, &bn.params(), fuse).unwrap();
        let stats = batchnorm::Stats::Running(&bn.running);
        ks.extend(t.backward(&gpu, &bn.affine, stats, (relu, residual)).0);
        run(&gpu, &ks);
        let (x64, g64, b64, r64, dy64) = k.in_f64();
        let (m64, v64) = (f64s(&k.rm), f64s(&k.rv));
        let rref = residual.then_some(&r64[..]);
        let fwd =
            |x: &[f64], g: &[f64], b: &[f64]| bn_apply(n, c, hw, x, g, b, &m64, &v64, rref, relu);
        let loss = |x: &[f64], g: &[f64], b: &[f64]| dot(&fwd(x, g, b), &dy64);
        let tag = format!("bn backward on running stats {shape:?}");
        let fd_x = finite_diff(&x64, 1e-6, |x| loss(x, &g64, &b64));
        let fd_g = finite_diff(&g64, 1e-6, |g| loss(&x64, g, &b64));
        let fd_b = finite_diff(&b64, 1e-6, |b| loss(&x64, &g64, b));
        let dpg = read(&gpu, &t.dp);
        assert_close(&format!("{tag} dx"), &read(&gpu, &t.dx), &fd_x, 1e-3);
        assert_close(&format!("{tag} dgamma"), &dpg[..c], &fd_g, 1e-3);
        assert_close(&format!("{tag} dbeta"), &dpg[c..], &fd_b, 1e-3);
        // the running statistics are inputs here, never updated
        assert_eq!(
            read(&gpu, &bn.running),
            [k.rm.clone(), k.rv.clone()].concat()
        );
    }
}

/// SyncBatchNorm's kernels: a batch split between two ranks in one process, their partial sums
/// exchanged between the kernels as the training plan does, normalises and back-propagates as
/// the whole batch in one (the CPU reference over the whole batch). Each rank's dgamma and dbeta
/// are its own images' sums, so the two add up to the whole batch's.
#[test]
fn batchnorm_across_two_ranks_matches_the_whole_batch() {
    let gpu = gpu();
    // 3 images a rank: 5289 values a channel, split into 2 chunks by the reductions
    let (n, c, h, w, relu, residual) = (6, 3, 41, 43, true, true);
    let hw = h * w;
    let whole = Case::new(&gpu, [n, c, h, w], 91);
    let ranks = split_in_two(&gpu, &whole);
    forward_backward_across(&gpu, &ranks, (relu, residual));

    let both = |f: &dyn Fn(&Tensors) -> &resnet::Tensor| {
        [read(&gpu, f(&ranks[0].1)), read(&gpu, f(&ranks[1].1))].concat()
    };
    let (x64, g64, b64, r64, dy64) = whole.in_f64();
    let (y_ref, mean, var) = bn_forward(n, c, hw, &x64, &g64, &b64, Some(&r64), relu);
    let (dx_ref, dgamma, dbeta, _) =
        bn_backward(n, c, hw, &x64, &g64, &mean, &var, &y_ref, &dy64, relu);
    assert_close("across ranks: y", &both(&|t| &t.y), &y_ref, 1e-4);
    assert_close("across ranks: dx", &both(&|t| &t.dx), &dx_ref, 1e-4);
    // the residual's gradient is dy through the ReLU
    let dres_ref: Vec<f64> = (0..n * c * hw)
        .map(|i| if y_ref[i] > 0.0 { dy64[i] } else { 0.0 })
        .collect();
    assert_close(
        "across ranks: dresidual",
        &both(&|t| &t.dres),
        &dres_ref,
        1e-6,
    );
    let dp: Vec<f32> = (0..2 * c)
        .map(|i| read(&gpu, &ranks[0].1.dp)[i] + read(&gpu, &ranks[1].1.dp)[i])
        .collect();
    assert_close(
        "across ranks: dgamma, dbeta",
        &dp,
        &[dgamma, dbeta].concat(),
        1e-4,
    );
    // the running statistics are the whole batch's (unbiased over its N*H*W), on both ranks
    let m = (n * hw) as f64;
    let running_ref: Vec<f64> = (0..c)
        .map(|ch| 0.9 * whole.rm[ch] as f64 + 0.1 * mean[ch])
        .chain((0..c).map(|ch| 0.9 * whole.rv[ch] as f64 + 0.1 * var[ch] * m / (m - 1.0)))
        .collect();
    for (bn, _) in &ranks {
        assert_close(
            "across ranks: running stats",
            &read(&gpu, &bn.running),
            &running_ref,
            1e-5,
        );
    }
}

/// The batch of `whole` split between two ranks (its first and second half of the images), each
/// with its own BatchNorm state.
fn split_in_two(gpu: &Gpu, whole: &Case) -> Vec<(Bn, Tensors)> {
    let [n, c, h, w] = whole.t.x.shape[..] else {
        panic!("a 4-d batch")
    };
    let half = n / 2 * c * h * w;
    (0..2)
        .map(|r| {
            let part = |v: &[f32]| v[r * half..(r + 1) * half].to_vec();
            let (x, res, dy) = (part(&whole.x), part(&whole.res), part(&whole.dy));
            let bn = bn_state(gpu, &whole.gamma, &whole.beta, &whole.rm, &whole.rv);
            (bn, Tensors::new(gpu, [n / 2, c, h, w], (&x, &res, &dy)))
        })
        .collect()
}

/// Both ranks' training forward and backward, with SyncBatchNorm's exchanges between kernels.
fn forward_backward_across(gpu: &Gpu, ranks: &[(Bn, Tensors)], (relu, residual): (bool, bool)) {
    let forward: Vec<_> = ranks
        .iter()
        .map(|(bn, t)| {
            let fuse = Fuse {
                residual: residual.then_some(&t.res),
                relu,
            };
            let (p, n) = (bn.params(), ranks.len());
            batchnorm::forward_train_across(gpu, &t.x, &t.y, &p, &bn.saved, fuse, 0.1, n).unwrap()
        })
        .collect();
    run_exchanging(gpu, forward);
    let backward: Vec<_> = ranks
        .iter()
        .map(|(bn, t)| {
            let stats = batchnorm::Stats::Across(&bn.saved, ranks.len());
            t.backward(gpu, &bn.affine, stats, (relu, residual))
        })
        .collect();
    run_exchanging(gpu, backward);
}

/// Runs each rank's kernels up to its exchange, exchanges every rank's partial sums as the
/// training plan does (gathered in rank order, combined, written back), then runs the rest.
fn run_exchanging(gpu: &Gpu, ranks: Vec<(Vec<resnet::gpu::Kernel>, Option<batchnorm::Exchange>)>) {
    let exchanges: Vec<_> = ranks.iter().map(|(_, e)| e.as_ref().unwrap()).collect();
    for ((ks, _), e) in ranks.iter().zip(&exchanges) {
        run(gpu, &ks[..e.before]);
    }
    let all: Vec<f64> = exchanges
        .iter()
        .flat_map(|e| read(gpu, &e.partial))
        .map(f64::from)
        .collect();
    for ((ks, _), e) in ranks.iter().zip(&exchanges) {
        gpu.write(&e.partial, &e.combine.apply(&all)).unwrap();
        run(gpu, &ks[e.before..]);
    }
}
