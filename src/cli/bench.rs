//! `resnet bench`: training and inference images/s (medians) and per-block GPU times.

use super::GpuArgs;
use clap::Args;
use resnet::gpu::Gpu;
use resnet::model::{Family, ModelSpec};
use resnet::ops::augment::{CIFAR10_MEAN, CIFAR10_STD};
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Mode, ModelState, Plan, PlanConfig};
use resnet::{Error, Result};
use std::time::Instant;

/// Arguments of `resnet bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Model name
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// Images per step
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Input size (default: 32 for CIFAR models, 224 for ImageNet models)
    #[arg(long)]
    image_size: Option<usize>,
    /// Output classes (default: 10 for CIFAR models, 1000 for ImageNet models)
    #[arg(long)]
    num_classes: Option<usize>,
    /// Timed steps (the median is reported)
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first (shader compilation, caches)
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

fn time_steps(gpu: &Gpu, plan: &Plan, warmup: usize, steps: usize) -> f64 {
    let mut t = Vec::new();
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        plan.set_step(gpu, i as u32, 0.01);
        plan.submit(gpu);
        gpu.wait();
        if i >= warmup {
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    median(t)
}

/// Runs `resnet bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    if a.batch_size == 0 || a.steps == 0 {
        return Err(Error::Invalid(
            "--batch-size and --steps must be at least 1".into(),
        ));
    }
    let probe = ModelSpec::from_name(&a.model, 10)?;
    let imagenet = probe.family == Family::ImageNet;
    let size = a.image_size.unwrap_or(if imagenet { 224 } else { 32 });
    let classes = a.num_classes.unwrap_or(if imagenet { 1000 } else { 10 });
    let spec = ModelSpec::from_name(&a.model, classes)?;
    let gpu = Gpu::new_blocking(&a.gpu.options()?)?;
    let m = ModelState::new(&gpu, &spec, 0)?;
    let cfg = |mode| PlanConfig {
        batch: a.batch_size,
        src: (size, size),
        input: (size, size),
        pad: 4,
        augment: true,
        mean: CIFAR10_MEAN,
        std: CIFAR10_STD,
        mode,
        sgd: SgdConfig {
            lr: 0.01,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
        },
    };
    let train = Plan::new(&gpu, &m, cfg(Mode::Train))?;
    let eval = Plan::new(&gpu, &m, cfg(Mode::Eval))?;
    let px: Vec<u8> = (0..a.batch_size * 3 * size * size)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let labels: Vec<u32> = (0..a.batch_size as u32)
        .map(|i| i % spec.num_classes as u32)
        .collect();
    train.set_batch(&gpu, &px, &labels)?;
    eval.set_batch(&gpu, &px, &labels)?;
    let t_train = time_steps(&gpu, &train, a.warmup, a.steps);
    let t_eval = time_steps(&gpu, &eval, a.warmup, a.steps);
    let blocks = pollster::block_on(train.submit_timed(&gpu))?;
    let (train_ips, eval_ips) = (a.batch_size as f64 / t_train, a.batch_size as f64 / t_eval);
    if a.json {
        let b = blocks
            .as_ref()
            .map(|v| {
                v.iter()
                    .map(|(n, ms)| format!("{{\"stage\": {n:?}, \"ms\": {ms:.3}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        println!(
            "{{\"model\": {:?}, \"batch_size\": {}, \"image_size\": {size}, \"adapter\": {:?}, \"backend\": \"{:?}\", \"train_images_per_sec\": {train_ips:.2}, \"inference_images_per_sec\": {eval_ips:.2}, \"train_step_ms\": {:.2}, \"dispatches_per_train_step\": {}, \"plan_bytes\": {}, \"model_bytes\": {}, \"stages\": [{b}]}}",
            spec.name, a.batch_size, gpu.info.name, gpu.info.backend, t_train * 1e3, train.dispatches(), train.bytes, m.bytes()
        );
        return Ok(());
    }
    println!(
        "{} batch {} at {size}x{size} on {} ({:?})",
        spec.name, a.batch_size, gpu.info.name, gpu.info.backend
    );
    println!("  training:  {train_ips:.1} images/s (median step {:.1} ms over {} steps, {} dispatches/step)", t_train * 1e3, a.steps, train.dispatches());
    println!(
        "  inference: {eval_ips:.1} images/s (median batch {:.1} ms)",
        t_eval * 1e3
    );
    let chosen = gpu.choices();
    if chosen.is_empty() {
        println!("  convolution kernels: {:?}", gpu.flavor);
    } else {
        let tiled = chosen
            .iter()
            .filter(|c| c.2 == resnet::gpu::KernelFlavor::Tiled)
            .count();
        println!(
            "  convolution kernels: timed per shape, tiled for {tiled} and register for {} of {} (op, shape) pairs",
            chosen.len() - tiled,
            chosen.len()
        );
    }
    println!(
        "  GPU memory: model {} MiB (weights, gradients, momentum) + plan {} MiB (training), {} MiB (inference)",
        m.bytes() >> 20,
        train.bytes >> 20,
        eval.bytes >> 20
    );
    match blocks {
        Some(v) => {
            let total: f64 = v.iter().map(|x| x.1).sum();
            println!("  GPU time per stage of one training step (timestamp queries), total {total:.1} ms:");
            for (n, ms) in v {
                println!("    {n:<22} {ms:>9.2} ms {:>5.1}%", 100.0 * ms / total);
            }
        }
        None => println!("  (no timestamp queries on this adapter: no per-stage GPU times)"),
    }
    Ok(())
}
