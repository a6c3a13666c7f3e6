//! One full training step (augment, forward, backward, SGD) and one inference pass, in images/s
//! (criterion's "elem/s"), for ResNet-20 at batch 128 on 32x32 and ResNet-18 at batch 32 on
//! 224x224, on every adapter present (or those of `WGPU_BACKEND`).
//!
//! Ids: `train_step/<model>/b<batch>/<backend>/<adapter>` and `inference/...`. Each wall time is
//! followed by the GPU time of the step (the sum of its stages' timestamps) where the adapter has
//! timestamp queries. `TRAIN_STEP_MODELS=resnet20` narrows the set.

mod common;

use common::{devices, is_slow};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use resnet::cifar10;
use resnet::gpu::Gpu;
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Mode, Plan, PlanConfig};
use resnet::preprocess::Preprocess;
use std::time::Duration;

fn plan(gpu: &Gpu, m: &ModelState, batch: usize, size: usize, mode: Mode) -> Plan {
    let sgd = SgdConfig {
        lr: 0.01,
        ..SgdConfig::he2016()
    };
    let cfg = match mode {
        Mode::Train => PlanConfig::train(batch, (size, size), sgd, Preprocess::CIFAR10),
        Mode::Eval => PlanConfig::eval(batch, (size, size), cifar10::NORMALIZE),
    };
    let p = Plan::new(gpu, m, cfg).expect("plan");
    let px: Vec<u8> = (0..batch * 3 * size * size)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let labels: Vec<u32> = (0..batch as u32)
        .map(|i| i % m.spec.num_classes as u32)
        .collect();
    p.set_batch(gpu, &px, &labels).expect("batch");
    p
}

/// Median over a few steps of the summed stage GPU times, in milliseconds.
fn gpu_ms(gpu: &Gpu, p: &Plan) -> Option<f64> {
    let mut v: Vec<f64> = (0..3)
        .filter_map(|_| pollster::block_on(p.submit_timed(gpu)).ok().flatten())
        .map(|stages| stages.iter().map(|s| s.1).sum())
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied()
}

fn train_step(c: &mut Criterion) {
    let models = std::env::var("TRAIN_STEP_MODELS").unwrap_or_else(|_| "resnet20,resnet18".into());
    for (id, gpu) in devices() {
        for (name, batch, size, classes) in [("resnet20", 128, 32, 10), ("resnet18", 32, 224, 1000)]
        {
            if !models.split(',').any(|m| m == name) {
                continue;
            }
            let spec = ModelSpec::from_name(name, classes).expect("model");
            let m = ModelState::new(&gpu, &spec, 0).expect("model state");
            for (group, mode) in [("train_step", Mode::Train), ("inference", Mode::Eval)] {
                let p = plan(&gpu, &m, batch, size, mode);
                let t0 = std::time::Instant::now();
                p.set_step(&gpu, 1, 0.01).expect("step");
                p.submit(&gpu); // compile every pipeline before timing
                gpu.wait();
                let bench_id = format!("{name}/b{batch}/{id}");
                if is_slow(&gpu) && t0.elapsed() > Duration::from_secs(8) {
                    // criterion takes at least 10 samples: minutes per id for resnet18 on a CPU
                    // adapter. A median of 3 timed steps instead.
                    let mut t: Vec<f64> = (2..5u32)
                        .map(|step| {
                            let t0 = std::time::Instant::now();
                            p.set_step(&gpu, step, 0.01).expect("step");
                            p.submit(&gpu);
                            gpu.wait();
                            t0.elapsed().as_secs_f64()
                        })
                        .collect();
                    t.sort_by(|a, b| a.total_cmp(b));
                    eprintln!(
                        "{group}/{bench_id}: wall time {:.2} s per step (median of 3, waiting for the GPU; criterion skipped on this slow adapter), {:.2} images/s",
                        t[1],
                        batch as f64 / t[1]
                    );
                    continue;
                }
                let mut g = c.benchmark_group(group);
                g.throughput(Throughput::Elements(batch as u64));
                if is_slow(&gpu) {
                    g.sample_size(10)
                        .sampling_mode(SamplingMode::Flat)
                        .warm_up_time(Duration::from_millis(100))
                        .measurement_time(Duration::from_secs(5));
                }
                let mut step = 0u32;
                g.bench_function(&bench_id, |b| {
                    b.iter(|| {
                        step = step.wrapping_add(1);
                        p.set_step(&gpu, step, 0.01).expect("step");
                        p.submit(&gpu);
                        gpu.wait();
                    })
                });
                g.finish();
                match gpu_ms(&gpu, &p) {
                    Some(ms) => eprintln!(
                        "{group}/{bench_id}: GPU time {ms:.2} ms per step (sum of stage timestamps, median), {:.1} images/s",
                        batch as f64 / (ms / 1e3)
                    ),
                    None => eprintln!("{group}/{bench_id}: no timestamp queries on this adapter"),
                }
            }
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().without_plots();
    targets = train_step
}
criterion_main!(benches);
