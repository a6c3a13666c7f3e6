//! `resnet bench`: training and inference images/s (medians) and per-block GPU times.

use super::profile::{check_peak, Peaks};
use super::{at_least_one, GpuArgs};
use clap::Args;
use resnet::cifar10;
use resnet::gpu::Gpu;
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::amp::LossScale;
use resnet::ops::conv2d::KernelFamily;
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Plan, PlanConfig, Profile};
use resnet::Result;
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
    /// Time the gradient exchange alone among the ranks mpirun started, no GPU: the model's
    /// gradient averaged as training does (in buckets of --bucket-mb, and in one piece) against
    /// gathering every rank's whole gradient; milliseconds and bytes received per rank and step
    #[arg(long, conflicts_with = "json")]
    exchange: bool,
    /// Time every kernel of one training step alone (timestamp queries) and show where the time
    /// goes per kind of op (convolution forward, backward to the input and to the weights,
    /// BatchNorm, elementwise, pooling, linear, loss, optimizer): milliseconds, share of the
    /// step, TFLOP/s and GB/s achieved, each against the adapter's peak
    #[arg(long, conflicts_with = "exchange")]
    profile: bool,
    /// With --profile: the adapter's fp32 peak without tensor cores, TFLOP/s (default: the
    /// published figure of known GPUs, e.g. 66.9 for an H200)
    #[arg(long, value_name = "TFLOPS", allow_negative_numbers = true)]
    peak_tflops: Option<f64>,
    /// With --profile: the adapter's memory bandwidth, GB/s (default: the published figure of
    /// known GPUs, e.g. 4800 for an H200)
    #[arg(long, value_name = "GBS", allow_negative_numbers = true)]
    peak_gbs: Option<f64>,
    /// With --exchange: the bucket size, MiB
    #[arg(long, default_value_t = resnet::train::BUCKET_MB)]
    bucket_mb: f64,
    #[command(flatten)]
    gpu: GpuArgs,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    v[v.len() / 2]
}

fn time_steps(gpu: &Gpu, plan: &Plan, warmup: usize, steps: usize) -> Result<f64> {
    let mut t = Vec::new();
    for i in 0..warmup + steps {
        let t0 = Instant::now();
        plan.set_step(gpu, i as u32, 0.01)?;
        plan.submit(gpu);
        gpu.wait();
        if i >= warmup {
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    Ok(median(t))
}

/// What `resnet bench` measured.
struct Measured {
    m: ModelState,
    gpu: Gpu,
    size: usize,
    train: Plan,
    eval: Plan,
    /// Median seconds of a training step and of an inference batch.
    t_train: f64,
    t_eval: f64,
    /// GPU milliseconds per stage of one training step, where the adapter has timestamps.
    stages: Option<Vec<(String, f64)>>,
    /// With --profile, where the adapter has timestamps: every kernel of a step timed alone.
    profile: Option<Profile>,
}

/// Runs `resnet bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    if a.batch_size == 0 {
        return Err(at_least_one("--batch-size"));
    }
    if a.steps == 0 {
        return Err(at_least_one("--steps"));
    }
    check_peak("--peak-tflops", a.peak_tflops, a.profile)?;
    check_peak("--peak-gbs", a.peak_gbs, a.profile)?;
    if a.exchange {
        let bucket = resnet::train::bucket_floats(a.bucket_mb)?;
        let (_, classes) = super::model_defaults(&a.model)?;
        let classes = a.num_classes.unwrap_or(classes);
        return super::exchange_bench::run(
            &a.model,
            classes,
            (a.bucket_mb, bucket),
            (a.warmup, a.steps),
        );
    }
    let r = measure(&a)?;
    let peaks = Peaks::resolve(&r.gpu.info.name, a.peak_tflops, a.peak_gbs);
    if a.profile && r.profile.is_none() {
        eprintln!(
            "note: no timestamp queries on {} (not offered, or RESNET_TIMESTAMPS=0), so --profile cannot time kernels; the figures are wall-clock",
            r.gpu.info.name
        );
    }
    if a.json {
        print_json(&r, &peaks);
    } else {
        print_text(&r, a.steps, &peaks);
    }
    Ok(())
}

/// Builds the plans of the model at the batch size and times their steps.
fn measure(a: &BenchArgs) -> Result<Measured> {
    let (default_size, default_classes) = super::model_defaults(&a.model)?;
    let size = a.image_size.unwrap_or(default_size);
    let classes = a.num_classes.unwrap_or(default_classes);
    let spec = ModelSpec::from_name(&a.model, classes)?;
    let gpu = Gpu::new_blocking(&a.gpu.options()?)?;
    super::print_gpu_warnings(&gpu);
    let m = ModelState::new(&gpu, &spec, 0)?;
    let (batch, hw) = (a.batch_size, (size, size));
    let sgd = SgdConfig {
        lr: 0.01,
        ..SgdConfig::he2016()
    };
    let train = Plan::new(
        &gpu,
        &m,
        PlanConfig {
            // mixed precision trains with the loss scaled, as `resnet train` does
            loss_scale: LossScale::default().for_precision(gpu.precision),
            ..PlanConfig::train(batch, hw, sgd, resnet::preprocess::Preprocess::CIFAR10)
        },
    )?;
    let eval = Plan::new(&gpu, &m, PlanConfig::eval(batch, hw, cifar10::NORMALIZE))?;
    let px: Vec<u8> = (0..batch * 3 * size * size)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % classes as u32).collect();
    train.set_batch(&gpu, &px, &labels)?;
    eval.set_batch(&gpu, &px, &labels)?;
    let t_train = time_steps(&gpu, &train, a.warmup, a.steps)?;
    let t_eval = time_steps(&gpu, &eval, a.warmup, a.steps)?;
    let stages = pollster::block_on(train.submit_timed(&gpu))?;
    let profile = match a.profile {
        true => pollster::block_on(train.profile(&gpu))?,
        false => None,
    };
    super::print_gpu_warnings(&gpu);
    Ok(Measured {
        m,
        gpu,
        size,
        train,
        eval,
        t_train,
        t_eval,
        stages,
        profile,
    })
}

fn print_json(r: &Measured, peaks: &Peaks) {
    let (batch, size) = (r.train.config.batch, r.size);
    let stages = r
        .stages
        .iter()
        .flatten()
        .map(|(n, ms)| format!("{{\"stage\": {n:?}, \"ms\": {ms:.3}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (train_ips, eval_ips) = (batch as f64 / r.t_train, batch as f64 / r.t_eval);
    let profile = r
        .profile
        .as_ref()
        .map_or("null".into(), |p| super::profile::json(p, peaks));
    println!(
        "{{\"model\": {:?}, \"batch_size\": {batch}, \"image_size\": {size}, \"precision\": \"{}\", \"adapter\": {:?}, \"backend\": \"{:?}\", \"train_images_per_sec\": {train_ips:.2}, \"inference_images_per_sec\": {eval_ips:.2}, \"train_step_ms\": {:.2}, \"dispatches_per_train_step\": {}, \"plan_bytes\": {}, \"model_bytes\": {}, \"stages\": [{stages}], \"profile\": {profile}}}",
        r.m.spec.name, r.gpu.precision.name(), r.gpu.info.name, r.gpu.info.backend, r.t_train * 1e3, r.train.dispatches(), r.train.bytes, r.m.bytes()
    );
}

fn print_text(r: &Measured, steps: usize, peaks: &Peaks) {
    let (gpu, m, batch, size) = (&r.gpu, &r.m, r.train.config.batch, r.size);
    println!(
        "{} batch {batch} at {size}x{size} in {} on {} ({:?})",
        m.spec.name,
        gpu.precision.name(),
        gpu.info.name,
        gpu.info.backend
    );
    println!(
        "  training:  {:.1} images/s (median step {:.1} ms over {steps} steps, {} dispatches/step)",
        batch as f64 / r.t_train,
        r.t_train * 1e3,
        r.train.dispatches()
    );
    println!(
        "  inference: {:.1} images/s (median batch {:.1} ms)",
        batch as f64 / r.t_eval,
        r.t_eval * 1e3
    );
    println!("  convolution kernels: {}", kernel_choice(gpu));
    println!(
        "  GPU memory: model {} MiB (weights, gradients, optimizer state) + plan {} MiB (training), {} MiB (inference)",
        m.bytes() >> 20,
        r.train.bytes >> 20,
        r.eval.bytes >> 20
    );
    if let Some(p) = &r.profile {
        return super::profile::print_text(p, peaks);
    }
    match &r.stages {
        Some(v) => {
            let total: f64 = v.iter().map(|x| x.1).sum();
            println!("  GPU time per stage of one training step (timestamp queries), total {total:.1} ms:");
            for (n, ms) in v {
                println!("    {n:<22} {ms:>9.2} ms {:>5.1}%", 100.0 * ms / total);
            }
        }
        None => println!("  (no timestamp queries on this adapter: no per-stage GPU times)"),
    }
}

/// The kernel family used, or how the per-shape timing chose for this plan's convolutions.
pub(crate) fn kernel_choice(gpu: &Gpu) -> String {
    let used = gpu.choices_used();
    if used.is_empty() {
        return KernelFamily::of(gpu).name().to_string();
    }
    let counts: Vec<String> = KernelFamily::ALL
        .iter()
        .map(|f| (f, used.iter().filter(|c| c.family == f.name()).count()))
        .filter(|(_, n)| *n > 0)
        .map(|(f, n)| format!("{} for {n}", f.name()))
        .collect();
    let measured = gpu.choices_measured();
    format!(
        "timed per shape: {} of {} (op, shape) pairs ({})",
        counts.join(", "),
        used.len(),
        if measured == 0 {
            "all from the tuning cache".to_string()
        } else {
            format!("{measured} timed now")
        }
    )
}
