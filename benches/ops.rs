//! Conv2d forward and backward throughput at the ResNet-20 shapes (batch 128), in GFLOP/s
//! (criterion's "elem/s" are FLOP/s here), and the fixed cost of a dispatch.
//! `CONV_SHAPES=16x32x32,...` picks shapes; `RESNET_KERNELS=register|tiled` picks the kernels.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use resnet::gpu::{Gpu, GpuOptions};
use resnet::ops::conv2d::{self, Conv2dShape};

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

fn conv(c: &mut Criterion) {
    let gpu = Gpu::new_blocking(&GpuOptions::from_env().expect("RESNET_KERNELS")).expect("GPU");
    let id = format!("{:?}/{}", gpu.info.backend, gpu.info.name)
        .to_lowercase()
        .replace(' ', "_");
    let shapes = [
        ("16x32x32", Conv2dShape::new(128, 16, 32, 32, 16, 3, 1, 1)),
        ("16to32_s2", Conv2dShape::new(128, 16, 32, 32, 32, 3, 2, 1)),
        ("32x16x16", Conv2dShape::new(128, 32, 16, 16, 32, 3, 1, 1)),
        ("32to64_s2", Conv2dShape::new(128, 32, 16, 16, 64, 3, 2, 1)),
        ("64x8x8", Conv2dShape::new(128, 64, 8, 8, 64, 3, 1, 1)),
    ];
    let filter = std::env::var("CONV_SHAPES").unwrap_or_default();
    let mut g = c.benchmark_group("conv2d");
    g.sample_size(10);
    for (name, sh) in shapes {
        if !filter.is_empty() && !filter.split(',').any(|f| f == name) {
            continue;
        }
        let x = gpu
            .upload(&rand(sh.x_shape().iter().product(), 1), &sh.x_shape())
            .unwrap();
        let w = gpu
            .upload(&rand(sh.w_shape().iter().product(), 2), &sh.w_shape())
            .unwrap();
        let y = gpu
            .upload(&rand(sh.y_shape().iter().product(), 3), &sh.y_shape())
            .unwrap();
        let dx = gpu.zeros(&sh.x_shape()).unwrap();
        let dw = gpu.zeros(&sh.w_shape()).unwrap();
        g.throughput(Throughput::Elements(sh.flops() as u64));
        let runs = [
            (
                "forward",
                conv2d::forward(&gpu, &sh, &x, &w, None, &y).unwrap(),
            ),
            (
                "backward_input",
                conv2d::backward_input(&gpu, &sh, &y, &w, &dx).unwrap(),
            ),
            (
                "backward_weight",
                conv2d::backward_weight(&gpu, &sh, &x, &y, &dw, None).unwrap(),
            ),
        ];
        for (what, kernels) in runs {
            gpu.run(&kernels);
            gpu.wait();
            g.bench_function(format!("{what}/{name}/b128/{id}"), |b| {
                b.iter(|| {
                    gpu.run(&kernels);
                    gpu.wait();
                })
            });
        }
    }
    g.finish();
}

/// Fixed cost of a dispatch: 200 tiny ReLU dispatches in one pass, and an empty submit + wait.
fn dispatch(c: &mut Criterion) {
    let gpu = Gpu::new_blocking(&GpuOptions::from_env().expect("RESNET_KERNELS")).expect("GPU");
    let id = format!("{:?}/{}", gpu.info.backend, gpu.info.name)
        .to_lowercase()
        .replace(' ', "_");
    let x = gpu.upload(&rand(256, 4), &[256]).unwrap();
    let y = gpu.zeros(&[256]).unwrap();
    let kernels: Vec<_> = (0..200)
        .flat_map(|_| resnet::ops::elementwise::relu_forward(&gpu, &x, &y).unwrap())
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

criterion_group! {
    name = benches;
    // no HTML plots: criterion's plotters text rendering needs fonts a CI machine may not have
    config = Criterion::default().without_plots();
    targets = conv, dispatch
}
criterion_main!(benches);
