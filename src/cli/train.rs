//! `resnet train` and `resnet experiment`.

use super::console::Console;
use super::mpi::Dist;
use super::resume;
use super::train_args::{RecipeArgs, TrainConfigArgs};
use super::{DataArgs, GpuArgs, Offline};
use clap::Args;
use resnet::ops::sgd::Rule;
use resnet::train::{self, Experiment, Ranks, RunDir, TrainConfig};
use resnet::{Error, Result};
use std::path::PathBuf;

/// Arguments of `resnet train`.
#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    config: TrainConfigArgs,
    /// Output directory: metrics.csv, curves.png, last.safetensors, best.safetensors
    #[arg(long, visible_alias = "output-dir", default_value = "runs/resnet20")]
    out: PathBuf,
    /// Continue the run in this directory from its last checkpoint (weights, optimizer state, step, schedule, data order)
    #[arg(long, value_name = "OUT")]
    resume: Option<PathBuf>,
    /// Only evaluate, as torchvision's --test-only: --resume DIR's last checkpoint (its moving
    /// average with --model-ema), or the --pretrained weights, on the test split (test/ or val/
    /// of a folder; not --val-split's images); nothing is trained or written
    #[arg(long)]
    test_only: bool,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Runs `resnet train` as `m` (its subcommand's matches) says; `--resume DIR` takes the
/// options the run in DIR was started with.
pub fn train_cmd(m: &clap::ArgMatches) -> Result<()> {
    let mut m = m.clone();
    if let Some(dir) = m.get_one::<PathBuf>("resume") {
        if let Some(recorded) = resume::resumed(&dir.clone(), &m)? {
            m = recorded;
        }
    }
    let a = <TrainArgs as clap::FromArgMatches>::from_arg_matches(&m)
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let given = |id: &str| m.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let mut config = a.config.config(&given, a.data.interpolation)?;
    if a.test_only {
        return test_only(a, &config, &given);
    }
    config.gpu = a.gpu.options()?;
    let dir = match &a.resume {
        Some(d) => RunDir::resume(d),
        None => RunDir::new(&a.out),
    };
    // everything that can be checked is, before any data is loaded or downloaded
    config.check()?;
    a.data.check()?;
    dir.check()?;
    let dist = Dist::from_env()?;
    let ranks: &dyn Ranks = &dist;
    if ranks.is_root() && config.recipe.opt == Rule::AdamW && !given("lr") {
        // torchvision's script leaves --lr at SGD's default too; few AdamW runs survive it
        eprintln!(
            "warning: --opt adamw at the recipe's --lr {}; AdamW usually takes about 1e-3",
            config.recipe.lr
        );
    }
    // under mpirun, one rank of each machine and cache directory downloads CIFAR-10 (when it is
    // missing) before the others look for it
    let cache = resnet::data::default_cache_dir();
    let sources =
        ranks.first_per_cache(&cache, || a.data.open(Offline::UseBundled, &config.model))?;
    // rank 0 records the run's options once the data is there (a run that cannot start leaves
    // no directory behind); a failure there stops every rank
    let recorded = match a.resume.is_none() && ranks.is_root() {
        true => resume::record(&a.out, &m),
        false => Ok(()),
    };
    ranks.together(recorded)?;
    let out = dir.path().to_path_buf();
    let summary = train::fit(
        &config,
        sources,
        ranks,
        dir,
        &mut Console::new(ranks.is_root()),
    )?;
    if ranks.is_root() {
        println!(
            "best accuracy {:.2}%; checkpoints in {}",
            100.0 * summary.best_acc,
            out.display()
        );
    }
    Ok(())
}

/// `train --test-only`: evaluates what the run would start from or ended with, as torchvision's
/// script does (the moving average where the run keeps one).
fn test_only(mut a: TrainArgs, config: &TrainConfig, given: &dyn Fn(&str) -> bool) -> Result<()> {
    if Dist::from_env()?.size() > 1 {
        return Err(Error::Invalid(
            "--test-only evaluates in one process: start it without mpirun".into(),
        ));
    }
    let tune = &config.fine_tuning;
    // the pretrained file's hash is not the run's checkpoint's
    let (checkpoint, sha256) =
        match (&a.resume, &tune.pretrained) {
            (Some(dir), _) => {
                let file = match config.model_ema.is_some() {
                    true => "ema.safetensors",
                    false => "last.safetensors",
                };
                (dir.join(file).display().to_string(), None)
            }
            (None, Some(weights)) => (weights.clone(), tune.pretrained_sha256.as_deref()),
            (None, None) => return Err(Error::Invalid(
                "--test-only evaluates a trained model: give --resume DIR or --pretrained WEIGHTS"
                    .into(),
            )),
        };
    let what = super::eval::Evaluation {
        offline: Offline::UseBundled,
        checkpoint: &checkpoint,
        sha256,
        // else the checkpoint's metadata names it, as for `eval`
        model: given("model").then_some(config.model.as_str()),
        batch_size: config.eval_batch_size,
        json: false,
    };
    super::eval::evaluate_checkpoint(what, (&mut a.data, &a.gpu), given)
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
    #[arg(long, visible_alias = "output-dir")]
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
    recipe: RecipeArgs,
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
pub fn experiment_cmd(a: ExperimentArgs, given: &dyn Fn(&str) -> bool) -> Result<()> {
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
    let base = TrainConfig {
        epochs: a.epochs,
        recipe: a.recipe.recipe(),
        subset: a.subset,
        seed: a.seed,
        eval_batch_size: a.eval_batch_size,
        gpu: a.gpu.options()?,
        interpolation: a.data.interpolation,
        ..TrainConfig::default()
    };
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}", a.kind)));
    a.recipe.check_given(given)?;
    base.check()?;
    // the experiment trains its runs one after the other in one process
    if Dist::from_env()?.size() > 1 {
        return Err(Error::Invalid(
            "experiment: runs in one process; start it without mpirun (`mpirun -np N resnet train` trains one run data-parallel)".into(),
        ));
    }
    let t0 = std::time::Instant::now();
    let split = a.data.load(Offline::UseBundled)?;
    let mut console = Console::new(true);
    let table = train::run_experiment((kind, &depths), &base, (&split, &out), &mut console)?;
    println!("{table}");
    println!(
        "figure, CSV and table in {} ({:.0} s)",
        out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
