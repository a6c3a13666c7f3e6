//! Every op's forward and backward at the shapes of ResNet-20 (CIFAR, batch 128) and ResNet-18
//! (ImageNet, batch 32 at 224x224), on every adapter present (or those of `WGPU_BACKEND`).
//!
//! Ids: `ops/<model>/<op>/<shape>/<backend>/<adapter>`. Convolutions and linear layers report
//! FLOP/s (criterion's "elem/s" are FLOP/s there); memory-bound ops report bytes/s, counting each
//! input and output tensor once (the least traffic the op can have). Each wall time is followed by
//! the median GPU time from timestamp queries where the adapter has them.
//! `OPS_MODELS=resnet20,resnet18` and `OPS_FILTER=conv` narrow the set; `RESNET_KERNELS` picks the
//! convolution kernels.

mod common;

use common::{devices, gpu_time, is_slow, rand, report_gpu};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use resnet::cifar10::NORMALIZE;
use resnet::gpu::{Gpu, Kernel, Tensor};
use resnet::ops::augment::{self, AugmentConfig};
use resnet::ops::batchnorm::{self, BnParams, Fuse, MOMENTUM};
use resnet::ops::conv2d::{self, Conv2dShape};
use resnet::ops::elementwise::{self, ShortcutShape};
use resnet::ops::linear;
use resnet::ops::loss::{self, LossBuffers};
use resnet::ops::pool::{self, PoolShape};
use resnet::ops::sgd::{self, SgdConfig};
use std::time::Duration;

/// The shapes one model's training step runs.
struct ModelShapes {
    name: &'static str,
    batch: usize,
    convs: Vec<(&'static str, Conv2dShape)>,
    /// [N, C, H, W] of the BN / ReLU / add benchmarks.
    maps: Vec<(&'static str, [usize; 4])>,
    shortcut: Option<ShortcutShape>,
    maxpool: Option<PoolShape>,
    /// [N, C, H, W] before global average pooling.
    avgpool: [usize; 4],
    /// (in, out) features of the classifier.
    fc: (usize, usize),
    params: usize,
    image: usize,
}

fn resnet20() -> ModelShapes {
    let n = 128;
    ModelShapes {
        name: "resnet20",
        batch: n,
        convs: vec![
            ("stem_3to16", Conv2dShape::new(n, 3, 32, 32, 16, 3, 1, 1)),
            ("16x32x32", Conv2dShape::new(n, 16, 32, 32, 16, 3, 1, 1)),
            ("16to32_s2", Conv2dShape::new(n, 16, 32, 32, 32, 3, 2, 1)),
            ("32x16x16", Conv2dShape::new(n, 32, 16, 16, 32, 3, 1, 1)),
            ("32to64_s2", Conv2dShape::new(n, 32, 16, 16, 64, 3, 2, 1)),
            ("64x8x8", Conv2dShape::new(n, 64, 8, 8, 64, 3, 1, 1)),
        ],
        maps: vec![
            ("16x32x32", [n, 16, 32, 32]),
            ("32x16x16", [n, 32, 16, 16]),
            ("64x8x8", [n, 64, 8, 8]),
        ],
        shortcut: Some(ShortcutShape {
            n,
            cin: 16,
            h: 32,
            w: 32,
            cout: 32,
            stride: 2,
        }),
        maxpool: None,
        avgpool: [n, 64, 8, 8],
        fc: (64, 10),
        params: 269_722,
        image: 32,
    }
}

fn resnet18() -> ModelShapes {
    let n = 32;
    ModelShapes {
        name: "resnet18",
        batch: n,
        convs: vec![
            ("stem_7x7_s2", Conv2dShape::new(n, 3, 224, 224, 64, 7, 2, 3)),
            ("64x56x56", Conv2dShape::new(n, 64, 56, 56, 64, 3, 1, 1)),
            ("64to128_s2", Conv2dShape::new(n, 64, 56, 56, 128, 3, 2, 1)),
            (
                "proj_64to128_1x1_s2",
                Conv2dShape::new(n, 64, 56, 56, 128, 1, 2, 0),
            ),
            ("128x28x28", Conv2dShape::new(n, 128, 28, 28, 128, 3, 1, 1)),
            ("256x14x14", Conv2dShape::new(n, 256, 14, 14, 256, 3, 1, 1)),
            ("512x7x7", Conv2dShape::new(n, 512, 7, 7, 512, 3, 1, 1)),
        ],
        maps: vec![
            ("64x112x112", [n, 64, 112, 112]),
            ("64x56x56", [n, 64, 56, 56]),
            ("512x7x7", [n, 512, 7, 7]),
        ],
        shortcut: None,
        maxpool: Some(PoolShape {
            n,
            c: 64,
            h: 112,
            w: 112,
            window: 3,
            stride: 2,
            pad: 1,
        }),
        avgpool: [n, 512, 7, 7],
        fc: (512, 1000),
        params: 11_689_512,
        image: 224,
    }
}

/// One benchmark: its name within the model, the kernels, and the work they do.
struct Case {
    name: String,
    kernels: Vec<Kernel>,
    work: Throughput,
}

fn bytes(ts: &[&Tensor]) -> Throughput {
    Throughput::Bytes(ts.iter().map(|t| t.bytes()).sum())
}

fn up(gpu: &Gpu, shape: &[usize], seed: u64) -> Tensor {
    gpu.upload(&rand(shape.iter().product(), seed), shape)
        .expect("upload")
}

fn zeros(gpu: &Gpu, shape: &[usize]) -> Tensor {
    gpu.zeros(shape).expect("alloc")
}

fn conv_cases(gpu: &Gpu, m: &ModelShapes, out: &mut Vec<Case>) {
    for (name, sh) in &m.convs {
        let x = up(gpu, &sh.x_shape(), 1);
        let w = up(gpu, &sh.w_shape(), 2);
        let y = up(gpu, &sh.y_shape(), 3);
        let (dx, dw) = (zeros(gpu, &sh.x_shape()), zeros(gpu, &sh.w_shape()));
        let flops = Throughput::Elements(sh.flops() as u64);
        let runs = [
            ("forward", conv2d::forward(gpu, sh, &x, &w, None, &y)),
            (
                "backward_input",
                conv2d::backward_input(gpu, sh, &y, &w, &dx),
            ),
            (
                "backward_weight",
                conv2d::backward_weight(gpu, sh, &x, &y, &dw, None),
            ),
        ];
        for (what, ks) in runs {
            out.push(Case {
                name: format!("conv2d_{what}/{name}"),
                kernels: ks.expect("conv kernels"),
                work: flops.clone(),
            });
        }
    }
}

fn map_cases(gpu: &Gpu, m: &ModelShapes, out: &mut Vec<Case>) {
    for (name, shape) in &m.maps {
        let c = shape[1];
        let (x, r, dy) = (up(gpu, shape, 4), up(gpu, shape, 5), up(gpu, shape, 6));
        let (y, dx, dres) = (zeros(gpu, shape), zeros(gpu, shape), zeros(gpu, shape));
        let affine = up(gpu, &[2, c], 7);
        let running = gpu
            .upload(&[vec![0.0f32; c], vec![1.0f32; c]].concat(), &[2, c])
            .expect("upload");
        let (saved, dparams) = (zeros(gpu, &[2, c]), zeros(gpu, &[2, c]));
        let p = BnParams {
            affine: &affine,
            running: &running,
        };
        let fused = Fuse {
            residual: Some(&r),
            relu: true,
        };
        let cases = [
            (
                "batchnorm_forward",
                batchnorm::forward_train(gpu, &x, &y, &p, &saved, Fuse::default(), MOMENTUM),
                bytes(&[&x, &y]),
            ),
            (
                "batchnorm_add_relu_forward",
                batchnorm::forward_train(gpu, &x, &y, &p, &saved, fused, MOMENTUM),
                bytes(&[&x, &r, &y]),
            ),
            (
                "batchnorm_forward_eval",
                batchnorm::forward_eval(gpu, &x, &y, &p, Fuse::default()),
                bytes(&[&x, &y]),
            ),
            (
                "batchnorm_add_relu_backward",
                batchnorm::backward(
                    gpu,
                    &dy,
                    &y,
                    &x,
                    &affine,
                    batchnorm::Stats::Batch(&saved),
                    &dx,
                    &dparams,
                    Some(&dres),
                    true,
                )
                .map(|(kernels, _)| kernels),
                bytes(&[&dy, &y, &x, &dx, &dres]),
            ),
            (
                "relu_forward",
                elementwise::relu_forward(gpu, &x, &y),
                bytes(&[&x, &y]),
            ),
            (
                "relu_backward",
                elementwise::relu_backward(gpu, &dy, &y, &dx),
                bytes(&[&dy, &y, &dx]),
            ),
            (
                "add_forward_and_backward",
                elementwise::add_forward(gpu, &x, &r, &y),
                bytes(&[&x, &r, &y]),
            ),
        ];
        for (what, ks, work) in cases {
            out.push(Case {
                name: format!("{what}/{name}"),
                kernels: ks.expect("kernels"),
                work,
            });
        }
    }
}

fn other_cases(gpu: &Gpu, m: &ModelShapes, out: &mut Vec<Case>) {
    let n = m.batch;
    if let Some(sh) = &m.shortcut {
        let (x, y) = (up(gpu, &sh.x_shape(), 8), zeros(gpu, &sh.y_shape()));
        let dx = zeros(gpu, &sh.x_shape());
        let tag = format!("{}to{}_s{}", sh.cin, sh.cout, sh.stride);
        out.push(Case {
            name: format!("shortcut_a_forward/{tag}"),
            kernels: elementwise::shortcut_a_forward(gpu, sh, &x, &y).expect("kernels"),
            work: bytes(&[&x, &y]),
        });
        out.push(Case {
            name: format!("shortcut_a_backward/{tag}"),
            kernels: elementwise::shortcut_a_backward(gpu, sh, &y, &dx).expect("kernels"),
            work: bytes(&[&y, &dx]),
        });
    }
    if let Some(sh) = &m.maxpool {
        let (x, y) = (up(gpu, &sh.x_shape(), 9), zeros(gpu, &sh.y_shape()));
        let (arg, dx) = (zeros(gpu, &sh.y_shape()), zeros(gpu, &sh.x_shape()));
        let tag = format!("{}x{}x{}", sh.c, sh.h, sh.w);
        out.push(Case {
            name: format!("maxpool_forward/{tag}"),
            kernels: pool::maxpool_forward(gpu, sh, &x, &y, &arg).expect("kernels"),
            work: bytes(&[&x, &y, &arg]),
        });
        out.push(Case {
            name: format!("maxpool_backward/{tag}"),
            kernels: pool::maxpool_backward(gpu, sh, &y, &arg, &dx).expect("kernels"),
            work: bytes(&[&y, &arg, &dx]),
        });
    }
    let a = m.avgpool;
    let (x, dx) = (up(gpu, &a, 10), zeros(gpu, &a));
    let feat = up(gpu, &[n, a[1]], 11);
    let tag = format!("{}x{}x{}", a[1], a[2], a[3]);
    out.push(Case {
        name: format!("avgpool_forward/{tag}"),
        kernels: pool::avgpool_forward(gpu, &x, &feat).expect("kernels"),
        work: bytes(&[&x, &feat]),
    });
    out.push(Case {
        name: format!("avgpool_backward/{tag}"),
        kernels: pool::avgpool_backward(gpu, &feat, &dx).expect("kernels"),
        work: bytes(&[&feat, &dx]),
    });

    let (i, o) = m.fc;
    let (w, b) = (up(gpu, &[o, i], 12), up(gpu, &[o], 13));
    let (logits, dlogits) = (up(gpu, &[n, o], 14), zeros(gpu, &[n, o]));
    let (dfeat, dw, db) = (zeros(gpu, &[n, i]), zeros(gpu, &[o, i]), zeros(gpu, &[o]));
    let fc_flops = Throughput::Elements(2 * (n * i * o) as u64);
    out.push(Case {
        name: format!("linear_forward/{i}to{o}"),
        kernels: linear::forward(gpu, &feat, &w, &b, &logits).expect("kernels"),
        work: fc_flops.clone(),
    });
    out.push(Case {
        name: format!("linear_backward/{i}to{o}"),
        kernels: linear::backward(gpu, &feat, &w, &logits, Some(&dfeat), &dw, &db)
            .expect("kernels"),
        // dx = dy w and dw = dy^T x: twice the forward's multiply-adds
        work: Throughput::Elements(4 * (n * i * o) as u64),
    });
    let labels = gpu
        .upload(
            &(0..n as u32).map(|v| v % o as u32).collect::<Vec<_>>(),
            &[n],
        )
        .expect("upload");
    let lb = LossBuffers::new(gpu, n).expect("alloc");
    out.push(Case {
        name: format!("cross_entropy_forward_backward/{n}x{o}"),
        kernels: loss::cross_entropy(gpu, &logits, &labels, &dlogits, &lb, 0.0, None)
            .expect("kernels"),
        work: bytes(&[&logits, &labels, &dlogits]),
    });

    let len = m.params;
    let (p, g, v) = (up(gpu, &[len], 15), up(gpu, &[len], 16), zeros(gpu, &[len]));
    let cfg = SgdConfig::he2016();
    out.push(Case {
        name: format!("sgd_step/{len}_params"),
        kernels: sgd::step(gpu, &cfg, &p, &g, &v, None, Default::default()).expect("kernels"),
        // reads p, g, v and writes p, v
        work: Throughput::Bytes(5 * 4 * len as u64),
    });

    let s = m.image;
    let pixels = gpu
        .upload(
            &vec![0x7f7f_7f7fu32; (n * 3 * s * s).div_ceil(4)],
            &[(n * 3 * s * s).div_ceil(4)],
        )
        .expect("upload");
    let x0 = zeros(gpu, &[n, 3, s, s]);
    let acfg = AugmentConfig {
        n,
        src: (s, s),
        out: (s, s),
        pad: 4,
        train: true,
        seed: 1,
        first: 0,
        erase: false,
        mix: resnet::preprocess::MixDraw::Nothing,
        normalize: NORMALIZE,
    };
    out.push(Case {
        name: format!("augment_crop_flip_normalise/{s}x{s}"),
        kernels: augment::augment(gpu, &acfg, &pixels, None, &x0).expect("kernels"),
        work: bytes(&[&pixels, &x0]),
    });
}

fn ops(c: &mut Criterion) {
    let models = std::env::var("OPS_MODELS").unwrap_or_else(|_| "resnet20,resnet18".into());
    let filter = std::env::var("OPS_FILTER").unwrap_or_default();
    for (id, gpu) in devices() {
        for m in [resnet20(), resnet18()] {
            if !models.split(',').any(|x| x == m.name) {
                continue;
            }
            let mut cases = Vec::new();
            conv_cases(&gpu, &m, &mut cases);
            map_cases(&gpu, &m, &mut cases);
            other_cases(&gpu, &m, &mut cases);
            let mut g = c.benchmark_group(format!("ops/{}", m.name));
            if is_slow(&gpu) {
                g.sample_size(10)
                    .sampling_mode(SamplingMode::Flat)
                    .warm_up_time(Duration::from_millis(300))
                    .measurement_time(Duration::from_secs(1));
            }
            for case in cases {
                if !filter.is_empty() && !case.name.contains(&filter) {
                    continue;
                }
                gpu.run(&case.kernels); // compile and touch everything once
                gpu.wait();
                let bench_id = format!("{}/b{}/{id}", case.name, m.batch);
                g.throughput(case.work.clone());
                g.bench_function(&bench_id, |b| {
                    b.iter(|| {
                        gpu.run(&case.kernels);
                        gpu.wait();
                    })
                });
                let work = match case.work {
                    Throughput::Bytes(b) => (b as f64 / 1e9, "GB/s"),
                    Throughput::Elements(e) => (e as f64 / 1e9, "GFLOP/s"),
                    _ => (0.0, ""),
                };
                let t = gpu_time(&gpu, &case.kernels, 3);
                report_gpu(&format!("ops/{}/{bench_id}", m.name), t, work.0, work.1);
            }
            g.finish();
        }
    }
}

/// Fixed cost of a dispatch: 200 tiny ReLU dispatches in one pass, and an empty submit + wait.
fn dispatch(c: &mut Criterion) {
    for (id, gpu) in devices() {
        let x = gpu.upload(&rand(256, 4), &[256]).unwrap();
        let y = gpu.zeros(&[256]).unwrap();
        let kernels: Vec<_> = (0..200)
            .flat_map(|_| elementwise::relu_forward(&gpu, &x, &y).unwrap())
            .collect();
        let mut g = c.benchmark_group("dispatch");
        g.sample_size(20);
        g.throughput(Throughput::Elements(200));
        g.bench_function(format!("200_dispatches/{id}"), |b| {
            b.iter(|| {
                gpu.run(&kernels);
                gpu.wait();
            })
        });
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("empty_submit_wait/{id}"), |b| {
            b.iter(|| {
                gpu.run(&[]);
                gpu.wait();
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // no HTML plots: criterion's plotters text rendering needs fonts a CI machine may not have
    config = Criterion::default().without_plots();
    targets = ops, dispatch
}
criterion_main!(benches);
