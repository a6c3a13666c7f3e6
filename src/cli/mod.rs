//! clap commands (native only).

mod bench;
mod predict;

use clap::{Args, Parser, Subcommand};
use resnet::checkpoint;
use resnet::data;
use resnet::gpu::{list_adapters, parse_backend, Gpu, GpuOptions};
use resnet::model::{summary, ModelSpec};
use resnet::plan::ModelState;
use resnet::train::{self, LrSchedule, TrainOptions};
use resnet::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "resnet",
    version,
    about = "ResNets in hand-written WGSL compute shaders on any GPU (wgpu): train, evaluate, predict",
    after_help = "Examples:\n  resnet train --model resnet20 --epochs 1 --data ./cifar10\n  resnet eval --checkpoint runs/resnet20/best.safetensors --data ./cifar10\n  resnet predict --checkpoint runs/resnet20/best.safetensors cat.png\n  resnet summary --model resnet18 --input 32,3,224,224"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every GPU command shares.
#[derive(Args, Clone, Debug)]
struct GpuArgs {
    /// GPU backend: vulkan, metal, dx12 or gl (default: WGPU_BACKEND, else the best adapter of any)
    #[arg(long, global = true)]
    backend: Option<String>,
    /// Convolution kernels: register (fast on CPU drivers such as lavapipe), tiled (workgroup
    /// memory, for GPUs) or auto (time both once per convolution shape, keep the faster);
    /// default: auto on GPUs, register on CPU adapters (also RESNET_KERNELS)
    #[arg(long, global = true)]
    kernels: Option<String>,
}

impl GpuArgs {
    fn options(&self) -> Result<GpuOptions> {
        let mut o = GpuOptions::from_env()?;
        if let Some(b) = &self.backend {
            o.backends = Some(parse_backend(b)?);
        }
        if let Some(k) = &self.kernels {
            o.set_kernels(k)?;
        }
        Ok(o)
    }
}

/// Where the data comes from.
#[derive(Args, Clone, Debug)]
struct DataArgs {
    /// CIFAR-10 binary layout (cifar-10-batches-bin/) or an image folder (train/<class>/*, test/<class>/*);
    /// default: download the official CIFAR-10 binary archive into the cache directory
    #[arg(long)]
    data: Option<PathBuf>,
    /// Where to download CIFAR-10 from when --data is not given
    #[arg(long, default_value = data::CIFAR10_URL)]
    data_url: String,
    /// Expected MD5 of the downloaded archive
    #[arg(long, default_value = data::CIFAR10_MD5)]
    data_md5: String,
    /// Image size (height = width) for image folders; CIFAR binary data is always 32
    #[arg(long, default_value_t = 32)]
    image_size: usize,
}

impl DataArgs {
    fn load(&self) -> Result<data::Split> {
        let dir = match &self.data {
            Some(d) => d.clone(),
            None => {
                data::download_cifar10(&self.data_url, &self.data_md5, &data::default_cache_dir())?
            }
        };
        data::load(&dir, (self.image_size, self.image_size))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train a ResNet (default: the recipe of He et al. 2016 for ResNet-20 on CIFAR-10)
    Train(TrainArgs),
    /// Loss and top-1 accuracy of a checkpoint on the test split
    Eval {
        /// safetensors checkpoint (from `resnet train` or PyTorch)
        #[arg(long)]
        checkpoint: PathBuf,
        /// Model name when the checkpoint has no metadata (e.g. saved from PyTorch)
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        data: DataArgs,
        /// Images per evaluation step
        #[arg(long, default_value_t = 500)]
        batch_size: usize,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        gpu: GpuArgs,
    },
    /// Top-5 classes of image files (any size and format the `image` crate reads)
    Predict(predict::PredictArgs),
    /// Training and inference throughput (medians), with per-block GPU times where supported
    Bench(bench::BenchArgs),
    /// Reproduce the paper's CIFAR-10 experiments: `degradation` (plain vs ResNet, Fig. 6) or
    /// `depth` (ResNet depth vs test error, Table 6); each run resumes where it stopped
    Experiment(ExperimentArgs),
    /// A torchinfo-style table of a model: layers, output shapes, parameters, mult-adds
    Summary {
        /// Model name
        #[arg(long, default_value = "resnet20")]
        model: String,
        /// Input shape N,C,H,W
        #[arg(long, default_value = "1,3,32,32")]
        input: String,
        /// Classifier outputs (default: 10 for CIFAR models, 1000 for ImageNet models)
        #[arg(long)]
        num_classes: Option<usize>,
    },
    /// List every GPU adapter found and show the chosen one's limits and features
    Info {
        #[command(flatten)]
        gpu: GpuArgs,
    },
}

#[derive(Args, Debug)]
struct ExperimentArgs {
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
    /// Images per step
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Base learning rate
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// Iterations at which the learning rate is divided by 10
    #[arg(long, value_delimiter = ',', default_value = "32000,48000")]
    lr_milestones: Vec<u64>,
    /// Seed, the same for every model
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Images per evaluation step
    #[arg(long, default_value_t = 500)]
    eval_batch_size: usize,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Model: resnet20/32/44/56/110/1202, plain20/32/44/56/110, resnet18/34/50/101/152
    #[arg(long, default_value = "resnet20")]
    model: String,
    #[command(flatten)]
    data: DataArgs,
    /// Epochs (default: the paper's 64k iterations, 164 epochs at batch 128)
    #[arg(long)]
    epochs: Option<usize>,
    /// Images per step
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Base learning rate
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    /// step (divide by 10 at each of --lr-milestones), cosine or onecycle
    #[arg(long, default_value = "step")]
    lr_schedule: String,
    /// Iterations at which the step schedule divides the learning rate by 10
    #[arg(long, value_delimiter = ',', default_value = "32000,48000")]
    lr_milestones: Vec<u64>,
    /// Linear learning-rate warm-up over this many iterations
    #[arg(long, default_value_t = 0)]
    warmup_iters: u64,
    /// SGD momentum
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// Weight decay (L2, added to the gradient as torch.optim.SGD)
    #[arg(long, default_value_t = 1e-4)]
    weight_decay: f64,
    /// Nesterov momentum
    #[arg(long)]
    nesterov: bool,
    /// Hold out this many training images as a validation set (evaluated each epoch instead of test)
    #[arg(long, default_value_t = 0)]
    val_split: usize,
    /// Train on a fixed random subset of N training images (the same for every run)
    #[arg(long)]
    subset: Option<usize>,
    /// Seed for initialisation, data order and augmentation (same seed + adapter = same bits)
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory: metrics.csv, curves.png, last.safetensors, best.safetensors
    #[arg(long, default_value = "runs/resnet20")]
    out: PathBuf,
    /// Continue the run in this directory from its last checkpoint (weights, momentum, step, schedule, data order)
    #[arg(long, value_name = "OUT")]
    resume: Option<PathBuf>,
    /// Images per evaluation step
    #[arg(long, default_value_t = 500)]
    eval_batch_size: usize,
    /// Read loss and accuracy back every this many steps
    #[arg(long, default_value_t = 10)]
    log_every: usize,
    #[command(flatten)]
    gpu: GpuArgs,
}

/// Runs the command line.
pub fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Info { gpu } => info(&gpu.options()?),
        Command::Train(a) => train_cmd(a),
        Command::Eval {
            checkpoint,
            model,
            data,
            batch_size,
            json,
            gpu,
        } => eval_cmd(
            &checkpoint,
            model.as_deref(),
            &data,
            batch_size,
            json,
            &gpu.options()?,
        ),
        Command::Predict(a) => predict::run(a),
        Command::Experiment(a) => experiment_cmd(a),
        Command::Bench(a) => bench::run(a),
        Command::Summary {
            model,
            input,
            num_classes,
        } => {
            let dims: Vec<usize> = input
                .split(',')
                .map(|v| v.trim().parse().map_err(|_| bad_input(&input)))
                .collect::<Result<_>>()?;
            let [n, c, h, w] = dims[..] else {
                return Err(bad_input(&input));
            };
            if c != 3 || n == 0 || h == 0 || w == 0 {
                return Err(bad_input(&input));
            }
            let imagenet =
                ModelSpec::from_name(&model, 1)?.family == resnet::model::Family::ImageNet;
            let classes = num_classes.unwrap_or(if imagenet { 1000 } else { 10 });
            let spec = ModelSpec::from_name(&model, classes)?;
            print!("{}", summary(&spec, [n, c, h, w]));
            Ok(())
        }
    }
}

fn experiment_cmd(a: ExperimentArgs) -> Result<()> {
    let kind = match a.kind.as_str() {
        "degradation" => train::Experiment::Degradation,
        "depth" => train::Experiment::Depth,
        k => {
            return Err(Error::Invalid(format!(
                "experiment: unknown kind '{k}' (expected degradation or depth)"
            )))
        }
    };
    let depths = if !a.depths.is_empty() {
        a.depths.clone()
    } else if kind == train::Experiment::Degradation {
        vec![20, 56]
    } else {
        vec![20, 32, 44, 56, 110]
    };
    if a.batch_size == 0 || a.eval_batch_size == 0 {
        return Err(Error::Invalid(
            "--batch-size and --eval-batch-size must be at least 1".into(),
        ));
    }
    let base = TrainOptions {
        model: String::new(),
        epochs: a.epochs,
        batch: a.batch_size,
        lr: a.lr,
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        schedule: LrSchedule::Step,
        warmup_iters: 0,
        milestones: a.lr_milestones.clone(),
        val_split: 0,
        subset: a.subset,
        seed: a.seed,
        out: a
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("runs/{}", a.kind))),
        resume: false,
        eval_batch: a.eval_batch_size,
        log_every: 10,
        gpu: a.gpu.options()?,
    };
    let t0 = std::time::Instant::now();
    let split = a.data.load()?;
    let table = train::run_experiment(kind, &depths, &base, &split)?;
    println!("{table}");
    println!(
        "figure, CSV and table in {} ({:.0} s)",
        base.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn bad_input(s: &str) -> Error {
    Error::Invalid(format!("--input: '{s}' is not N,3,H,W with positive sizes"))
}

fn train_cmd(a: TrainArgs) -> Result<()> {
    if a.batch_size == 0 || a.log_every == 0 || a.eval_batch_size == 0 {
        return Err(Error::Invalid(
            "--batch-size, --eval-batch-size and --log-every must be at least 1".into(),
        ));
    }
    if !(a.lr.is_finite() && a.lr > 0.0) {
        return Err(Error::Invalid(format!(
            "--lr must be a positive number, got {}",
            a.lr
        )));
    }
    let opts = TrainOptions {
        model: a.model.clone(),
        epochs: a.epochs,
        batch: a.batch_size,
        lr: a.lr,
        momentum: a.momentum,
        weight_decay: a.weight_decay,
        nesterov: a.nesterov,
        schedule: LrSchedule::parse(&a.lr_schedule)?,
        warmup_iters: a.warmup_iters,
        milestones: a.lr_milestones.clone(),
        val_split: a.val_split,
        subset: a.subset,
        seed: a.seed,
        resume: a.resume.is_some(),
        out: a.resume.clone().unwrap_or(a.out.clone()),
        eval_batch: a.eval_batch_size,
        log_every: a.log_every,
        gpu: a.gpu.options()?,
    };
    ModelSpec::from_name(&opts.model, 10)?; // reject a bad name before loading data
    let split = a.data.load()?;
    let s = train::train(&opts, split)?;
    println!(
        "best accuracy {:.2}%; checkpoints in {}",
        100.0 * s.best_acc,
        opts.out.display()
    );
    Ok(())
}

/// Loads a checkpoint into a fresh model: the model name from its metadata or `--model`.
pub(crate) fn load_model(
    gpu: &Gpu,
    path: &Path,
    model: Option<&str>,
    classes: usize,
) -> Result<(ModelState, checkpoint::Checkpoint)> {
    let ck = checkpoint::load(path)?;
    let name = match (ck.metadata.get("model"), model) {
        (_, Some(m)) => m.to_string(),
        (Some(m), None) => m.clone(),
        (None, None) => {
            return Err(Error::Invalid(format!(
                "{}: no 'model' in its metadata; say which with --model NAME",
                path.display()
            )))
        }
    };
    let classes = ck
        .get("fc.bias")
        .map(|t| t.shape.first().copied().unwrap_or(classes))
        .unwrap_or(classes);
    let spec = ModelSpec::from_name(&name, classes)?;
    let m = ModelState::new(gpu, &spec, 0)?;
    m.load_state_dict(gpu, &ck, &path.display().to_string())?;
    Ok((m, ck))
}

fn eval_cmd(
    path: &Path,
    model: Option<&str>,
    data: &DataArgs,
    batch: usize,
    json: bool,
    opts: &GpuOptions,
) -> Result<()> {
    let split = data.load()?;
    let gpu = Gpu::new_blocking(opts)?;
    let (m, ck) = load_model(&gpu, path, model, split.test.classes.len())?;
    if m.spec.num_classes != split.test.classes.len() {
        return Err(Error::Invalid(format!(
            "{}: the model has {} classes but the data has {}",
            path.display(),
            m.spec.num_classes,
            split.test.classes.len()
        )));
    }
    let (loss, acc) = train::evaluate(&gpu, &m, &split.test, batch.max(1), ck.normalisation()?)?;
    if json {
        println!(
            "{{\"checkpoint\": {:?}, \"model\": {:?}, \"images\": {}, \"loss\": {loss:.6}, \"accuracy\": {acc:.6}}}",
            path.display().to_string(),
            m.spec.name,
            split.test.len()
        );
    } else {
        println!(
            "{}: {} test images, loss {loss:.4}, top-1 accuracy {:.2}%",
            m.spec.name,
            split.test.len(),
            100.0 * acc
        );
    }
    Ok(())
}

fn info(opts: &GpuOptions) -> Result<()> {
    let adapters = pollster::block_on(list_adapters(opts));
    println!("adapters found: {}", adapters.len());
    for a in &adapters {
        println!(
            "  {} | {:?} | {:?} | driver: {}",
            a.name, a.backend, a.device_type, a.driver
        );
    }
    let gpu = Gpu::new_blocking(opts)?;
    let l = &gpu.limits;
    println!(
        "chosen: {} ({:?}, {:?})",
        gpu.info.name, gpu.info.backend, gpu.info.device_type
    );
    println!(
        "  kernels: {:?}{}",
        gpu.flavor,
        if gpu.tunes() {
            " (default; every convolution shape timed once with each family, the faster kept)"
        } else {
            ""
        }
    );
    println!(
        "  max_storage_buffer_binding_size: {} MiB",
        l.max_storage_buffer_binding_size / (1 << 20)
    );
    println!("  max_buffer_size: {} MiB", l.max_buffer_size / (1 << 20));
    println!(
        "  max_storage_buffers_per_shader_stage: {}",
        l.max_storage_buffers_per_shader_stage
    );
    println!(
        "  max_compute_workgroup_storage_size: {} bytes",
        l.max_compute_workgroup_storage_size
    );
    println!(
        "  max_compute_invocations_per_workgroup: {}",
        l.max_compute_invocations_per_workgroup
    );
    println!(
        "  max_compute_workgroups_per_dimension: {}",
        l.max_compute_workgroups_per_dimension
    );
    let f = gpu.adapter_features;
    let has = |x: wgpu::Features| if f.contains(x) { "yes" } else { "no" };
    println!(
        "  features: timestamp queries {}, shader f16 {}, subgroups {}",
        has(wgpu::Features::TIMESTAMP_QUERY),
        has(wgpu::Features::SHADER_F16),
        has(wgpu::Features::SUBGROUP)
    );
    Ok(())
}
