//! `resnet tune`: times every convolution kernel family at every shape of a model's training and
//! evaluation plans on this adapter, remembers the fastest in the tuning cache, prints the table.

use super::{model_defaults, GpuArgs};
use clap::Args;
use resnet::cifar10;
use resnet::gpu::{Choice, Gpu};
use resnet::model::{ModelSpec, ModelState};
use resnet::ops::conv2d::KernelFamily;
use resnet::ops::sgd::SgdConfig;
use resnet::plan::{Plan, PlanConfig};
use resnet::{train, Error, Result};

/// Arguments of `resnet tune`.
#[derive(Args, Debug)]
pub struct TuneArgs {
    /// Model name
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// Images per training step
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Images per evaluation step (its convolutions are tuned too)
    #[arg(long, default_value_t = train::EVAL_BATCH)]
    eval_batch_size: usize,
    /// Input size (default: 32 for CIFAR models, 224 for ImageNet models)
    #[arg(long)]
    image_size: Option<usize>,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Runs `resnet tune`.
pub fn run(a: TuneArgs) -> Result<()> {
    if a.batch_size == 0 || a.eval_batch_size == 0 {
        return Err(Error::Invalid(
            "--batch-size and --eval-batch-size must be at least 1".into(),
        ));
    }
    let mut opts = a.gpu.options()?;
    if opts.kernel_family.is_some() {
        return Err(Error::Invalid(
            "resnet tune times every kernel family; --kernels or RESNET_KERNELS forces one (use auto)".into(),
        ));
    }
    if a.gpu.use_deterministic_algorithms {
        return Err(Error::Invalid(
            "resnet tune times every kernel family; --use-deterministic-algorithms times none"
                .into(),
        ));
    }
    opts.tune = Some(true);
    let (default_size, classes) = model_defaults(&a.model)?;
    let size = a.image_size.unwrap_or(default_size);
    let spec = ModelSpec::from_name(&a.model, classes)?;
    let gpu = Gpu::new_blocking(&opts)?;
    let _warnings = super::GpuWarnings::new(&gpu);
    let m = ModelState::new(&gpu, &spec, 0)?;
    let t0 = std::time::Instant::now();
    let train = PlanConfig::train(
        a.batch_size,
        (size, size),
        SgdConfig::he2016(),
        resnet::preprocess::Preprocess::CIFAR10,
    );
    Plan::new(&gpu, &m, train)?;
    let eval = PlanConfig::eval(a.eval_batch_size, (size, size), cifar10::NORMALIZE);
    Plan::new(&gpu, &m, eval)?;
    let used = gpu.choices_used();
    print_table(&used, &KernelFamily::offered(gpu.precision, gpu.features));
    let cache = gpu
        .tuning_cache()
        .map_or("no tuning cache".into(), |c| c.path.display().to_string());
    println!(
        "{} on {} ({:?}): {} choices, {} timed now in {:.1} s, the rest from {cache}",
        spec.name,
        gpu.info.name,
        gpu.info.backend,
        used.len(),
        gpu.choices_measured(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One row per (op, shape): what each family measured when the choice was timed (now, or by the
/// run that filled the tuning cache), as `ops::conv2d::tune` records it: the median of three
/// timed runs; a single timed run for a family dropped there as over twice the best so far; its
/// untimed first run for a family dropped there as over four times the best. "-": the family
/// could not be built at that shape (over a limit of the device), or the choice carries no times.
/// Then the family chosen. One column per family the device runs in its precision.
fn print_table(choices: &[Choice], families: &[KernelFamily]) {
    let ms = |c: &Choice, f: KernelFamily| {
        c.ms.iter()
            .find(|m| m.0 == f.name())
            .map_or("-".to_string(), |m| format!("{:.2}", m.1))
    };
    let mut head = format!("{:<26} {:<30}", "op", "shape N,C,H,W,K,R,S,stride,pad");
    for &f in families {
        head += &format!(" {:>17}", f.name());
    }
    println!("{head}  chosen (ms)");
    for c in choices {
        // the 9 numbers of the shape (a mixed-precision key appends 16)
        let shape: Vec<String> = c.shape.iter().take(9).map(|d| d.to_string()).collect();
        let mut row = format!("{:<26} {:<30}", c.op, shape.join(","));
        for &f in families {
            row += &format!(" {:>17}", ms(c, f));
        }
        println!("{row}  {}", c.family);
    }
}
