//! ReLU, residual add, option-A shortcut, max pool, global average pool, linear, softmax
//! cross-entropy and SGD against f64 CPU references; every backward against its analytic CPU
//! reference at every shape and against finite differences of its CPU forward where that is
//! affordable (each coordinate costs a full forward). Error norm: max |gpu - ref| / max |ref|.

mod common;
use common::*;
use resnet::ops::elementwise::{self, ShortcutShape};
use resnet::ops::linear;
use resnet::ops::loss::{self, LossBuffers};
use resnet::ops::pool::{self, PoolShape};
use resnet::ops::sgd::{self, SgdConfig};
use resnet::reference::*;

#[test]
fn relu_and_add_forward_backward() {
    let gpu = gpu();
    // batch 1, 3 channels, odd 7x7, a 56x56 map, and a length that is no multiple of the workgroup
    for shape in [[2, 3, 7, 7], [1, 64, 56, 56], [3, 5, 9, 11]] {
        relu_add_case(&gpu, shape);
    }
}

fn relu_add_case(gpu: &resnet::Gpu, shape: [usize; 4]) {
    let len: usize = shape.iter().product();
    let (a, b, dyv) = (rand_vec(len, 1), rand_vec(len, 2), rand_vec(len, 3));
    let at = gpu.upload(&a, &shape).unwrap();
    let bt = gpu.upload(&b, &shape).unwrap();
    let dy = gpu.upload(&dyv, &shape).unwrap();
    let y = gpu.zeros(&shape).unwrap();
    let s = gpu.zeros(&shape).unwrap();
    let dx = gpu.zeros(&shape).unwrap();
    let mut ks = elementwise::relu_forward(gpu, &at, &y).unwrap();
    ks.extend(elementwise::relu_backward(gpu, &dy, &y, &dx).unwrap());
    ks.extend(elementwise::add_forward(gpu, &at, &bt, &s).unwrap());
    run(gpu, &ks);
    let a64 = f64s(&a);
    let tag = format!("{shape:?}");
    assert_close(
        &format!("relu forward {tag}"),
        &read(gpu, &y),
        &relu(&a64),
        0.0,
    );
    let sum: Vec<f64> = a.iter().zip(&b).map(|(x, y)| (*x + *y) as f64).collect();
    assert_close(&format!("add forward {tag}"), &read(gpu, &s), &sum, 0.0);
    if len > 4096 {
        // finite differences over every coordinate would be slow; the small shapes cover them
        let want: Vec<f64> = a64
            .iter()
            .zip(&dyv)
            .map(|(x, d)| if *x > 0.0 { *d as f64 } else { 0.0 })
            .collect();
        assert_close(&format!("relu backward {tag}"), &read(gpu, &dx), &want, 0.0);
        return;
    }
    let fd = finite_diff(&a64, 1e-6, |x| dot(&relu(x), &f64s(&dyv)));
    assert_close(
        &format!("relu backward vs finite differences {tag}"),
        &read(gpu, &dx),
        &fd,
        1e-6,
    );
}

#[test]
fn shortcut_option_a_forward_backward() {
    let gpu = gpu();
    for sh in [
        ShortcutShape {
            n: 2,
            cin: 16,
            h: 32,
            w: 32,
            cout: 32,
            stride: 2,
        },
        ShortcutShape {
            n: 1,
            cin: 4,
            h: 7,
            w: 7,
            cout: 8,
            stride: 2,
        },
    ] {
        let x = rand_vec(sh.x_shape().iter().product(), 4);
        let dyv = rand_vec(sh.y_shape().iter().product(), 5);
        let xt = gpu.upload(&x, &sh.x_shape()).unwrap();
        let dy = gpu.upload(&dyv, &sh.y_shape()).unwrap();
        let y = gpu.zeros(&sh.y_shape()).unwrap();
        let dx = gpu.zeros(&sh.x_shape()).unwrap();
        let mut ks = elementwise::shortcut_a_forward(&gpu, &sh, &xt, &y).unwrap();
        ks.extend(elementwise::shortcut_a_backward(&gpu, &sh, &dy, &dx).unwrap());
        run(&gpu, &ks);
        let f = |x: &[f64]| shortcut_a(sh.n, sh.cin, sh.h, sh.w, sh.cout, sh.stride, x);
        assert_close("shortcut A forward", &read(&gpu, &y), &f(&f64s(&x)), 0.0);
        let dx_ref = shortcut_a_backward(sh.n, sh.cin, sh.h, sh.w, sh.cout, sh.stride, &f64s(&dyv));
        assert_close("shortcut A backward", &read(&gpu, &dx), &dx_ref, 0.0);
        let fd = finite_diff(&f64s(&x), 1e-3, |x| dot(&f(x), &f64s(&dyv)));
        assert_close(
            "shortcut A backward vs finite differences",
            &read(&gpu, &dx),
            &fd,
            1e-6,
        );
    }
}

#[test]
fn maxpool_forward_backward() {
    let gpu = gpu();
    for sh in [
        PoolShape {
            n: 2,
            c: 4,
            h: 112,
            w: 112,
            window: 3,
            stride: 2,
            pad: 1,
        },
        PoolShape {
            n: 1,
            c: 3,
            h: 7,
            w: 7,
            window: 3,
            stride: 2,
            pad: 1,
        },
        PoolShape {
            n: 2,
            c: 2,
            h: 8,
            w: 6,
            window: 2,
            stride: 2,
            pad: 0,
        },
    ] {
        let x = rand_vec(sh.x_shape().iter().product(), 6);
        let dyv = rand_vec(sh.y_shape().iter().product(), 7);
        let xt = gpu.upload(&x, &sh.x_shape()).unwrap();
        let dy = gpu.upload(&dyv, &sh.y_shape()).unwrap();
        let y = gpu.zeros(&sh.y_shape()).unwrap();
        let arg = gpu.zeros(&sh.y_shape()).unwrap();
        let dx = gpu.zeros(&sh.x_shape()).unwrap();
        let mut ks = pool::maxpool_forward(&gpu, &sh, &xt, &y, &arg).unwrap();
        ks.extend(pool::maxpool_backward(&gpu, &sh, &dy, &arg, &dx).unwrap());
        run(&gpu, &ks);
        let f = |x: &[f64]| maxpool(sh.n, sh.c, sh.h, sh.w, sh.window, sh.stride, sh.pad, x);
        assert_close("maxpool forward", &read(&gpu, &y), &f(&f64s(&x)), 0.0);
        let dx_ref = maxpool_backward(
            sh.n,
            sh.c,
            sh.h,
            sh.w,
            sh.window,
            sh.stride,
            sh.pad,
            &f64s(&x),
            &f64s(&dyv),
        );
        assert_close("maxpool backward", &read(&gpu, &dx), &dx_ref, 1e-6);
        if x.len() > 2000 {
            continue; // finite differences on the small shapes only: each coordinate is a full forward
        }
        let fd = finite_diff(&f64s(&x), 1e-7, |x| dot(&f(x), &f64s(&dyv)));
        assert_close(
            "maxpool backward vs finite differences",
            &read(&gpu, &dx),
            &fd,
            1e-5,
        );
    }
}

#[test]
fn avgpool_forward_backward() {
    let gpu = gpu();
    for (n, c, h, w) in [(128, 64, 8, 8), (1, 5, 7, 7)] {
        let x = rand_vec(n * c * h * w, 8);
        let dyv = rand_vec(n * c, 9);
        let xt = gpu.upload(&x, &[n, c, h, w]).unwrap();
        let dy = gpu.upload(&dyv, &[n, c]).unwrap();
        let y = gpu.zeros(&[n, c]).unwrap();
        let dx = gpu.zeros(&[n, c, h, w]).unwrap();
        let mut ks = pool::avgpool_forward(&gpu, &xt, &y).unwrap();
        ks.extend(pool::avgpool_backward(&gpu, &dy, &dx).unwrap());
        run(&gpu, &ks);
        let f = |x: &[f64]| avgpool(n, c, h * w, x);
        assert_close("avgpool forward", &read(&gpu, &y), &f(&f64s(&x)), 1e-5);
        let dx_ref = avgpool_backward(n, c, h * w, &f64s(&dyv));
        assert_close("avgpool backward", &read(&gpu, &dx), &dx_ref, 1e-6);
        if n == 1 {
            let fd = finite_diff(&f64s(&x), 1e-4, |x| dot(&f(x), &f64s(&dyv)));
            assert_close(
                "avgpool backward vs finite differences",
                &read(&gpu, &dx),
                &fd,
                1e-5,
            );
        }
    }
}

#[test]
fn linear_forward_backward() {
    let gpu = gpu();
    for (n, i, o) in [(128, 64, 10), (1, 7, 3), (4, 2048, 20)] {
        let (x, w, b, dyv) = (
            rand_vec(n * i, 10),
            rand_vec(o * i, 11),
            rand_vec(o, 12),
            rand_vec(n * o, 13),
        );
        let xt = gpu.upload(&x, &[n, i]).unwrap();
        let wt = gpu.upload(&w, &[o, i]).unwrap();
        let bt = gpu.upload(&b, &[o]).unwrap();
        let dy = gpu.upload(&dyv, &[n, o]).unwrap();
        let y = gpu.zeros(&[n, o]).unwrap();
        let dx = gpu.zeros(&[n, i]).unwrap();
        let dw = gpu.zeros(&[o, i]).unwrap();
        let db = gpu.zeros(&[o]).unwrap();
        let mut ks = linear::forward(&gpu, &xt, &wt, &bt, &y).unwrap();
        ks.extend(linear::backward(&gpu, &xt, &wt, &dy, Some(&dx), &dw, &db).unwrap());
        run(&gpu, &ks);
        let (x64, w64, b64, dy64) = (f64s(&x), f64s(&w), f64s(&b), f64s(&dyv));
        assert_close(
            "linear forward",
            &read(&gpu, &y),
            &linear(n, i, o, &x64, &w64, &b64),
            1e-5,
        );
        let (dx_ref, dw_ref, db_ref) = linear_backward(n, i, o, &x64, &w64, &dy64);
        assert_close("linear dx", &read(&gpu, &dx), &dx_ref, 1e-5);
        assert_close("linear dw", &read(&gpu, &dw), &dw_ref, 1e-5);
        assert_close("linear db", &read(&gpu, &db), &db_ref, 1e-5);
        if n * i * o < 100_000 {
            let fd_x = finite_diff(&x64, 1e-4, |x| dot(&linear(n, i, o, x, &w64, &b64), &dy64));
            let fd_w = finite_diff(&w64, 1e-4, |w| dot(&linear(n, i, o, &x64, w, &b64), &dy64));
            let fd_b = finite_diff(&b64, 1e-4, |b| dot(&linear(n, i, o, &x64, &w64, b), &dy64));
            assert_close(
                "linear dx vs finite differences",
                &read(&gpu, &dx),
                &fd_x,
                1e-5,
            );
            assert_close(
                "linear dw vs finite differences",
                &read(&gpu, &dw),
                &fd_w,
                1e-5,
            );
            assert_close(
                "linear db vs finite differences",
                &read(&gpu, &db),
                &fd_b,
                1e-5,
            );
        }
    }
}

/// Whether `label` is among the five classes of `row` ranked first: torch.topk's order, ties
/// (which topk leaves unordered) to the smaller index, as argmax breaks them.
fn in_top5(row: &[f32], label: usize) -> bool {
    let before = (0..row.len())
        .filter(|&j| row[j] > row[label] || (row[j] == row[label] && j < label))
        .count();
    before < 5
}

#[test]
fn cross_entropy_loss_gradient_and_accuracy() {
    let gpu = gpu();
    for (n, o) in [(128, 10), (1, 1000), (300, 7), (64, 12)] {
        let mut z: Vec<f32> = rand_vec(n * o, 14).iter().map(|v| v * 4.0).collect();
        if o == 12 {
            // ties at the top-5 boundary: whole numbers, many of them level
            z.iter_mut().for_each(|v| *v = v.round());
        }
        let labels: Vec<u32> = (0..n).map(|i| ((i * 7 + 3) % o) as u32).collect();
        let zt = gpu.upload(&z, &[n, o]).unwrap();
        let lt = gpu.upload(&labels, &[n]).unwrap();
        let dz = gpu.zeros(&[n, o]).unwrap();
        let out = LossBuffers::new(&gpu, n).unwrap();
        let ks = loss::cross_entropy(&gpu, &zt, &lt, &dz, &out, 0.0, None).unwrap();
        run(&gpu, &ks);
        run(&gpu, &ks); // twice: the accumulator must hold two batches
        let z64 = f64s(&z);
        let l_ref = cross_entropy(n, o, &z64, &labels);
        let correct = (0..n)
            .filter(|&a| {
                let row = &z[a * o..(a + 1) * o];
                let am = (0..o).fold(0, |b, j| if row[j] > row[b] { j } else { b });
                am == labels[a] as usize
            })
            .count() as f64;
        let top5 = (0..n)
            .filter(|&a| in_top5(&z[a * o..(a + 1) * o], labels[a] as usize))
            .count() as f64;
        assert!(top5 > correct || n == 1, "top-5 {top5}, top-1 {correct}");
        if o == 12 {
            // the ties decide some rows: counting every level class as before gives fewer
            let strict = (0..n)
                .filter(|&a| {
                    let (row, l) = (&z[a * o..(a + 1) * o], labels[a] as usize);
                    row.iter().filter(|&&v| v >= row[l]).count() <= 5
                })
                .count() as f64;
            assert!(strict < top5, "no row's top-5 turns on a tie");
        }
        let stats = read(&gpu, &out.stats);
        assert_close("cross entropy loss", &stats[..1], &[l_ref], 1e-5);
        assert_eq!(stats[1] as f64, correct, "correct count");
        assert_eq!(stats[2] as f64, top5, "top-5 count");
        let acc = read(&gpu, &out.accum);
        assert_eq!(acc[4] as f64, 2.0 * top5, "accumulated top-5 count");
        assert_close(
            "accumulated loss sum",
            &acc[..1],
            &[2.0 * l_ref * n as f64],
            1e-5,
        );
        assert_eq!(
            (acc[1] as f64, acc[2] as usize),
            (2.0 * correct, 2 * n),
            "accumulated correct/count"
        );
        let dz_ref = cross_entropy_backward(n, o, &z64, &labels);
        assert_close("cross entropy gradient", &read(&gpu, &dz), &dz_ref, 1e-5);
        let fd = finite_diff(&z64, 1e-5, |z| cross_entropy(n, o, z, &labels));
        assert_close(
            "cross entropy gradient vs finite differences",
            &read(&gpu, &dz),
            &fd,
            1e-4,
        );
    }
}

/// MixUp's and CutMix's loss: each image's target is lambda x its label + (1 - lambda) x the
/// label of the image before it in the batch (the first's: the last's), smoothed as PyTorch
/// smooths a probability target; the loss against that target by its definition, the gradient
/// against finite differences of it, and an image counts as correct when the argmax is the
/// label of the larger weight.
#[test]
fn a_mixed_batchs_loss_is_the_cross_entropy_against_its_mixed_targets() {
    let gpu = gpu();
    for (n, o, e, lambda) in [
        (64, 10, 0.0, 0.7f32),
        (5, 7, 0.1, 0.25),
        (3, 1000, 0.3, 0.5),
    ] {
        let z: Vec<f32> = rand_vec(n * o, 21).iter().map(|v| v * 4.0).collect();
        let labels: Vec<u32> = (0..n).map(|i| ((i * 5 + 1) % o) as u32).collect();
        let zt = gpu.upload(&z, &[n, o]).unwrap();
        let lt = gpu.upload(&labels, &[n]).unwrap();
        let dz = gpu.zeros(&[n, o]).unwrap();
        let out = LossBuffers::new(&gpu, n).unwrap();
        let kernels = loss::cross_entropy(&gpu, &zt, &lt, &dz, &out, e as f32, None).unwrap();
        let params = loss::LossParams {
            n,
            o,
            smoothing: e as f32,
            scaled: false,
            lambda,
        };
        kernels[0].set_params(&gpu, &params.uniform());
        run(&gpu, &kernels);
        let mut q = vec![e / o as f64; n * o];
        let (mut correct, mut top5) = (0.0, 0.0);
        for i in 0..n {
            let (own, before) = (labels[i] as usize, labels[(i + n - 1) % n] as usize);
            q[i * o + own] += (1.0 - e) * lambda as f64;
            q[i * o + before] += (1.0 - e) * (1.0 - lambda as f64);
            let row = &z[i * o..(i + 1) * o];
            let arg = (0..o).fold(0, |a, j| if row[j] > row[a] { j } else { a });
            let target = match lambda {
                l if l > 0.5 => own,
                l if l < 0.5 => before,
                _ => own.min(before),
            };
            correct += (arg == target) as u8 as f32;
            top5 += in_top5(row, target) as u8 as f32;
        }
        let z64 = f64s(&z);
        let want = cross_entropy_soft(n, o, &z64, &q);
        let unmixed = cross_entropy_smoothed(n, o, &z64, &labels, e);
        assert!((want - unmixed).abs() > 1e-3, "mixing must change the loss");
        let stats = read(&gpu, &out.stats);
        assert_close("mixed loss", &stats[..1], &[want], 1e-5);
        assert_eq!(stats[1], correct, "correct count at lambda {lambda}");
        // torchvision's accuracy against the soft target's argmax, as the top-1
        assert_eq!(stats[2], top5, "top-5 count at lambda {lambda}");
        let fd = finite_diff(&z64, 1e-5, |z| cross_entropy_soft(n, o, z, &q));
        assert_close(
            "mixed gradient vs finite differences",
            &read(&gpu, &dz),
            &fd,
            1e-4,
        );
    }
}

#[test]
fn label_smoothing_matches_the_smoothed_targets_definition() {
    let gpu = gpu();
    for (n, o, e) in [(64, 10, 0.1), (3, 1000, 0.3), (5, 5, 1.0)] {
        let z: Vec<f32> = rand_vec(n * o, 15).iter().map(|v| v * 4.0).collect();
        let labels: Vec<u32> = (0..n).map(|i| ((i * 5 + 1) % o) as u32).collect();
        let zt = gpu.upload(&z, &[n, o]).unwrap();
        let lt = gpu.upload(&labels, &[n]).unwrap();
        let dz = gpu.zeros(&[n, o]).unwrap();
        let out = LossBuffers::new(&gpu, n).unwrap();
        run(
            &gpu,
            &loss::cross_entropy(&gpu, &zt, &lt, &dz, &out, e as f32, None).unwrap(),
        );
        let z64 = f64s(&z);
        let want = cross_entropy_smoothed(n, o, &z64, &labels, e);
        let plain = cross_entropy(n, o, &z64, &labels);
        assert!(
            (want - plain).abs() > 1e-3,
            "smoothing must change the loss"
        );
        assert_close("smoothed loss", &read(&gpu, &out.stats)[..1], &[want], 1e-5);
        let fd = finite_diff(&z64, 1e-5, |z| cross_entropy_smoothed(n, o, z, &labels, e));
        assert_close(
            "smoothed gradient vs finite differences",
            &read(&gpu, &dz),
            &fd,
            1e-4,
        );
    }
    let (zt, lt) = (
        gpu.zeros(&[2, 3]).unwrap(),
        gpu.upload(&[0u32, 1], &[2]).unwrap(),
    );
    let out = LossBuffers::new(&gpu, 2).unwrap();
    let err = loss::cross_entropy(
        &gpu,
        &zt,
        &lt,
        &gpu.zeros(&[2, 3]).unwrap(),
        &out,
        1.5,
        None,
    );
    assert!(err.is_err(), "smoothing 1.5 must be refused");
}

#[test]
fn sgd_matches_torch_optim_sgd() {
    let gpu = gpu();
    for nesterov in [false, true] {
        let len = 1000;
        let cfg = SgdConfig {
            nesterov,
            ..SgdConfig::he2016()
        };
        let p0 = rand_vec(len, 15);
        let grads = [rand_vec(len, 16), rand_vec(len, 17), rand_vec(len, 18)];
        let p = gpu.upload(&p0, &[len]).unwrap();
        let g = gpu.zeros(&[len]).unwrap();
        let v = gpu.zeros(&[len]).unwrap();
        let ks = sgd::step(&gpu, &cfg, &p, &g, &v, None, Default::default()).unwrap();
        // reference: torch.optim.SGD's update, written out
        let mut pr = f64s(&p0);
        let mut vr = vec![0.0f64; len];
        for (step, gr) in grads.iter().enumerate() {
            let lr = if step == 2 { 0.01 } else { 0.1 };
            ks[0].set_params(&gpu, &SgdConfig { lr, ..cfg }.uniform(len, 0));
            gpu.write(&g, gr).unwrap();
            run(&gpu, &ks);
            for i in 0..len {
                let d = gr[i] as f64 + 1e-4 * pr[i];
                vr[i] = if step == 0 { d } else { 0.9 * vr[i] + d };
                let upd = if nesterov { d + 0.9 * vr[i] } else { vr[i] };
                pr[i] -= lr as f64 * upd;
            }
        }
        assert_close(
            &format!("sgd nesterov={nesterov} params"),
            &read(&gpu, &p),
            &pr,
            1e-5,
        );
        assert_close(
            &format!("sgd nesterov={nesterov} momentum"),
            &read(&gpu, &v),
            &vr,
            1e-5,
        );
    }
}

/// The moving average's update, written out in f64: the first copies, each later one is
/// `decay * ema + (1 - decay) * x` (torchvision's ExponentialMovingAverage).
#[test]
fn ema_update_copies_then_averages() {
    use resnet::ops::ema;
    let gpu = gpu();
    let len = 300;
    let avg = gpu.zeros(&[len]).unwrap();
    let x = gpu.zeros(&[len]).unwrap();
    let k = ema::update(&gpu, &avg, &x, true, 0.75).unwrap();
    let mut want = vec![0.0f64; len];
    for (i, seed) in [31, 32, 33].into_iter().enumerate() {
        let xs = rand_vec(len, seed);
        gpu.write(&x, &xs).unwrap();
        k.set_params(&gpu, &ema::uniform(len, i == 0, 0.75));
        run(&gpu, std::slice::from_ref(&k));
        for (w, &v) in want.iter_mut().zip(&xs) {
            *w = if i == 0 {
                v as f64
            } else {
                0.75 * *w + 0.25 * v as f64
            };
        }
        assert_close(
            &format!("ema after update {}", i + 1),
            &read(&gpu, &avg),
            &want,
            1e-6,
        );
    }
}

/// Parameter groups as torchvision's set_weight_decay makes them: each element of a step at an
/// offset into the flat buffer decays by its kind's penalty (written out in f64, one SGD step).
#[test]
fn sgd_decays_each_element_by_its_kind() {
    use resnet::ops::sgd::{pack_decay_kinds, DecayKind, DecayKinds};
    let gpu = gpu();
    let (whole, offset, len) = (200, 37, 150);
    let cfg = SgdConfig {
        weight_decay: 0.01,
        norm_weight_decay: Some(0.0),
        bias_weight_decay: Some(0.2),
        ..SgdConfig::he2016()
    };
    // runs crossing word boundaries, one before the step's elements and one past them
    let runs = [
        (10, 40, DecayKind::Norm),
        (60, 3, DecayKind::Bias),
        (63, 20, DecayKind::Norm),
        (120, 50, DecayKind::Bias),
        (190, 10, DecayKind::Norm),
    ];
    let words = pack_decay_kinds(whole, runs);
    let words = gpu.upload(&words, &[words.len()]).unwrap();
    let (p0, g0) = (rand_vec(len, 21), rand_vec(len, 22));
    let p = gpu.upload(&p0, &[len]).unwrap();
    let g = gpu.upload(&g0, &[len]).unwrap();
    let v = gpu.zeros(&[len]).unwrap();
    let kinds = Some(DecayKinds {
        words: &words,
        offset,
    });
    run(
        &gpu,
        &sgd::step(&gpu, &cfg, &p, &g, &v, kinds, Default::default()).unwrap(),
    );
    let want: Vec<f64> = (0..len)
        .map(|i| {
            let at = offset + i;
            let kind = runs.iter().find(|r| (r.0..r.0 + r.1).contains(&at));
            let decay = match kind.map(|r| r.2) {
                Some(DecayKind::Norm) => 0.0,
                Some(DecayKind::Bias) => 0.2,
                _ => 0.01,
            };
            p0[i] as f64 - 0.1 * (g0[i] as f64 + decay * p0[i] as f64)
        })
        .collect();
    assert_close("sgd by decay kind", &read(&gpu, &p), &want, 1e-6);
    // a group decay without the kinds is refused, not run with one penalty for all
    match sgd::step(&gpu, &cfg, &p, &g, &v, None, Default::default()) {
        Err(e) => assert!(e.to_string().contains("decay kinds"), "{e}"),
        Ok(_) => panic!("a group decay without the kinds ran"),
    }
}

/// `--clip-grad-norm`'s kernels against the f64 norm: the gradients in two chunks of several
/// blocks each (ragged ends), the factor `min(max_norm / (norm + 1e-6), 1)`, also of
/// gradients scaled by a loss scale of 1024 (the norm of the unscaled ones), and 1 where the
/// norm is below `max_norm`.
#[test]
fn clipping_factor_is_torchs_clip_grad_norm() {
    use resnet::ops::clip;
    let gpu = gpu();
    // a view starts at a multiple of the device's binding alignment; the last block ragged
    let lens = [
        (3 * clip::BLOCK + 120).next_multiple_of(gpu.view_align()),
        clip::BLOCK - 5,
    ];
    let grads: Vec<Vec<f32>> = lens
        .iter()
        .enumerate()
        .map(|(k, &n)| rand_vec(n, 40 + k as u64))
        .collect();
    let norm = grads
        .iter()
        .flatten()
        .map(|&g| (g as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let blocks: usize = lens.iter().map(|&n| clip::blocks(n)).sum();
    let sums = gpu.zeros(&[blocks]).unwrap();
    let factor = gpu.zeros(&[1]).unwrap();
    let flat: Vec<f32> = grads.concat();
    let g = gpu.upload(&flat, &[flat.len()]).unwrap();
    let scale_state = |scale: f32| {
        let words = [scale.to_bits(), 0, 0, 0, 0, 0];
        gpu.upload(&words, &[resnet::ops::amp::WORDS]).unwrap()
    };
    for (max_norm, scale) in [
        (0.5 * norm, None),
        (0.5 * norm, Some(1024.0)),
        (2.0 * norm, None),
    ] {
        let state = scale.map(scale_state);
        let scaled: Vec<f32> = flat.iter().map(|g| g * scale.unwrap_or(1.0)).collect();
        gpu.write(&g, &scaled).unwrap();
        let (mut ks, mut first) = (Vec::new(), 0);
        let mut offset = 0;
        for &n in &lens {
            let chunk = g.view(offset, &[n]).unwrap();
            ks.push(clip::block_sums(&gpu, &chunk, &sums, first).unwrap());
            first += clip::blocks(n);
            offset += n;
        }
        let f = clip::factor(&gpu, &sums, max_norm as f32, state.as_ref(), &factor).unwrap();
        ks.push(f);
        run(&gpu, &ks);
        let want = (max_norm / (norm + 1e-6)).min(1.0);
        let got = read(&gpu, &factor)[0] as f64;
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "max_norm {max_norm}, scale {scale:?}: {got} against {want}"
        );
    }
}

/// The clipped SGD steps, with and without a loss scale: the gradients times the clipping factor
/// (after unscaling), then torch.optim.SGD's update.
#[test]
fn clipped_sgd_steps_scale_the_gradients_first() {
    use resnet::ops::sgd::GradFactors;
    let gpu = gpu();
    let len = 700;
    let cfg = SgdConfig::he2016();
    let (p0, g0) = (rand_vec(len, 50), rand_vec(len, 51));
    let clip = gpu.upload(&[0.25f32], &[1]).unwrap();
    for scale in [None, Some(1024.0f32)] {
        let p = gpu.upload(&p0, &[len]).unwrap();
        let scaled: Vec<f32> = g0.iter().map(|g| g * scale.unwrap_or(1.0)).collect();
        let g = gpu.upload(&scaled, &[len]).unwrap();
        let v = gpu.zeros(&[len]).unwrap();
        let state = scale.map(|s| {
            let words = [s.to_bits(), 0, 0, 0, 0, 0];
            gpu.upload(&words, &[resnet::ops::amp::WORDS]).unwrap()
        });
        let factors = GradFactors {
            scaler: state.as_ref(),
            clip: Some(&clip),
        };
        run(
            &gpu,
            &sgd::step(&gpu, &cfg, &p, &g, &v, None, factors).unwrap(),
        );
        // the first step's momentum is its gradient: grad * 0.25 + decay * p (clipped before
        // the decay, as torch: clipping after it would be 7.5e-5 p away, 3e-4 of it)
        let want: Vec<f64> = (0..len)
            .map(|i| g0[i] as f64 * 0.25 + 1e-4 * p0[i] as f64)
            .collect();
        let tag = format!("clipped step, scale {scale:?}");
        assert_close(&tag, &read(&gpu, &v), &want, 1e-5);
        let stepped: Vec<f64> = (0..len).map(|i| p0[i] as f64 - 0.1 * want[i]).collect();
        assert_close(&tag, &read(&gpu, &p), &stepped, 1e-5);
    }
}
