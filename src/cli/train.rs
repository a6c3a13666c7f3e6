//! `resnet train` and `resnet experiment`.

use super::{DataArgs, GpuArgs, Offline};
use clap::Args;
use resnet::dist::Dist;
use resnet::model::ModelSpec;
use resnet::train::{self, Experiment, Recipe, TrainOptions};
use resnet::{Error, Result};
use std::path::PathBuf;

/// Arguments of `resnet train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    options: TrainOptions,
    /// Continue the run in this directory from its last checkpoint (weights, momentum, step, schedule, data order)
    #[arg(long, value_name = "OUT")]
    resume: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Runs `resnet train`.
pub fn train_cmd(a: TrainArgs, given: &dyn Fn(&str) -> bool) -> Result<()> {
    let mut opts = a.options;
    opts.recipe.fill_in_for(&opts.model, given)?;
    if let Some(dir) = a.resume {
        opts.out = dir;
        opts.resume = true;
    }
    opts.gpu = a.gpu.options()?;
    // everything that can be checked is, before any data is loaded or downloaded
    opts.check()?;
    ModelSpec::from_name(&opts.model, 10)?;
    if opts.resume {
        train::check_resumable(&opts.out)?;
    }
    let dist = Dist::from_env()?;
    // under mpirun, rank 0 downloads CIFAR-10 (when it is missing) before the others look for it
    let sources = dist.root_first(|| a.data.open(Offline::UseBundled, &opts.model))?;
    let s = train::train_as(&opts, sources, dist)?;
    if !s.root {
        return Ok(());
    }
    println!(
        "best accuracy {:.2}%; checkpoints in {}",
        100.0 * s.best_acc,
        opts.out.display()
    );
    Ok(())
}

/// Arguments of `resnet experiment`.
#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// degradation (plainN and resnetN per depth) or depth (resnetN per depth)
    kind: String,
    /// Depths (6n+2); default 20,56 for degradation and 20,32,44,56,110 for depth
    #[arg(long, value_delimiter = ',')]
    depths: Vec<usize>,
    /// Output directory (one sub-directory per model, plus the figure, CSV and table)
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs per model (default: the paper's 64k iterations)
    #[arg(long)]
    epochs: Option<usize>,
    /// Train on a fixed random subset of N training images, the same for every model (short runs)
    #[arg(long)]
    subset: Option<usize>,
    #[command(flatten)]
    recipe: Recipe,
    /// Seed, the same for every model
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per evaluation step
    #[arg(long, default_value_t = train::EVAL_BATCH)]
    eval_batch_size: usize,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Runs `resnet experiment`.
pub fn experiment_cmd(a: ExperimentArgs) -> Result<()> {
    let kind = match a.kind.as_str() {
        "degradation" => Experiment::Degradation,
        "depth" => Experiment::Depth,
        k => {
            return Err(Error::Invalid(format!(
                "experiment: unknown kind '{k}' (expected degradation or depth)"
            )))
        }
    };
    let depths = match (a.depths.is_empty(), kind) {
        (false, _) => a.depths.clone(),
        (true, Experiment::Degradation) => vec![20, 56],
        (true, Experiment::Depth) => vec![20, 32, 44, 56, 110],
    };
    let base = TrainOptions {
        epochs: a.epochs,
        recipe: a.recipe.clone(),
        subset: a.subset,
        seed: a.seed,
        out: a
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("runs/{}", a.kind))),
        eval_batch: a.eval_batch_size,
        gpu: a.gpu.options()?,
        ..TrainOptions::default()
    };
    base.check()?;
    let t0 = std::time::Instant::now();
    let split = a.data.load(Offline::UseBundled)?;
    let table = train::run_experiment(kind, &depths, &base, &split)?;
    println!("{table}");
    println!(
        "figure, CSV and table in {} ({:.0} s)",
        base.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
