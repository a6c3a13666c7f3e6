//! What `resnet train` can be told, as clap arguments the CLI flattens into its commands: one
//! definition of every option, its help text and its default.

use super::schedule::LrSchedule;
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::ops::sgd::SgdConfig;
use std::path::PathBuf;

/// torchvision's ImageNet recipe: lr 0.1 for a batch of 256, scaled linearly with the batch.
pub const IMAGENET_LR: f64 = 0.1;
/// torchvision's ImageNet recipe: StepLR(step_size=30, gamma=0.1) over 90 epochs.
pub const IMAGENET_MILESTONE_EPOCHS: [u64; 2] = [30, 60];
/// torchvision's ImageNet recipe: 90 epochs.
pub const IMAGENET_EPOCHS: usize = 90;

/// Images per evaluation step unless told otherwise (`train`, `eval`, `experiment`).
pub const EVAL_BATCH: usize = 500;

/// The optimisation recipe; the defaults are He et al. 2016's for CIFAR-10 (as
/// `SgdConfig::he2016`, with the rate following the schedule from `--lr`).
#[derive(clap::Args, Debug, Clone)]
pub struct Recipe {
    /// Images per step
    #[arg(long = "batch-size", default_value_t = 128)]
    pub batch: usize,
    /// Base learning rate (the ImageNet models: 0.1 x batch size / 256, torchvision's recipe)
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// step (divide by 10 at each of --lr-milestones), cosine or onecycle
    #[arg(long = "lr-schedule", default_value = "step", value_parser = parse_schedule)]
    pub schedule: LrSchedule,
    /// Iterations at which the step schedule divides the learning rate by 10
    #[arg(
        long = "lr-milestones",
        value_delimiter = ',',
        default_value = "32000,48000"
    )]
    pub milestones: Vec<u64>,
    /// Epochs at which the step schedule divides the learning rate by 10, instead of
    /// --lr-milestones (torchvision's ImageNet recipe: 30,60)
    #[arg(long = "lr-milestone-epochs", value_delimiter = ',')]
    pub milestone_epochs: Vec<u64>,
    /// Linear learning-rate warm-up over this many iterations
    #[arg(long, default_value_t = 0)]
    pub warmup_iters: u64,
    /// SGD momentum
    #[arg(long, default_value_t = SgdConfig::he2016().momentum)]
    pub momentum: f32,
    /// Weight decay (L2, added to the gradient as torch.optim.SGD)
    #[arg(long, default_value_t = SgdConfig::he2016().weight_decay)]
    pub weight_decay: f32,
    /// Nesterov momentum
    #[arg(long)]
    pub nesterov: bool,
}

fn parse_schedule(s: &str) -> std::result::Result<LrSchedule, String> {
    LrSchedule::parse(s).map_err(|e| e.to_string())
}

impl Recipe {
    /// The optimizer of a training plan (its learning rate is set per step).
    pub fn sgd(&self) -> SgdConfig {
        SgdConfig {
            lr: self.lr as f32,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
        }
    }

    /// torchvision's ImageNet recipe for the ImageNet models (resnet18..152) where the user did
    /// not say otherwise (`given(id)`: the option was on the command line): lr 0.1 x batch/256,
    /// divided by 10 at epochs 30 and 60. Momentum 0.9 and weight decay 1e-4 are the defaults.
    pub fn fill_in_for(&mut self, model: &str, given: &dyn Fn(&str) -> bool) -> Result<()> {
        let family = crate::model::ModelSpec::from_name(model, 10)?.family;
        if family != crate::model::Family::ImageNet {
            return Ok(());
        }
        if !given("lr") {
            self.lr = IMAGENET_LR * self.batch as f64 / 256.0;
        }
        if !given("milestones") && !given("milestone_epochs") {
            self.milestone_epochs = IMAGENET_MILESTONE_EPOCHS.to_vec();
        }
        Ok(())
    }

    /// The recipe with `--lr-milestone-epochs` turned into iterations of `steps_per_epoch`.
    pub fn with_epochs_as_iterations(&self, steps_per_epoch: usize) -> Recipe {
        let mut r = self.clone();
        if !r.milestone_epochs.is_empty() {
            r.milestones = r
                .milestone_epochs
                .iter()
                .map(|e| e * steps_per_epoch as u64)
                .collect();
        }
        r
    }

    /// The learning rate at `iteration` of `total`.
    pub fn lr_at(&self, iteration: u64, total: u64) -> f64 {
        self.schedule.lr_at(
            self.lr,
            iteration,
            total,
            self.warmup_iters,
            &self.milestones,
        )
    }
}

/// Everything `resnet train` can be told but the data and the adapter.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainOptions {
    /// Model: resnet20/32/44/56/110/1202, plain20/32/44/56/110, resnet18/34/50/101/152
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// Epochs (default: the paper's 64k iterations for the CIFAR models, 164 epochs at batch 128;
    /// torchvision's 90 for the ImageNet models)
    #[arg(long)]
    pub epochs: Option<usize>,
    #[command(flatten)]
    pub recipe: Recipe,
    /// Hold out this many training images as a validation set (evaluated each epoch instead of test)
    #[arg(long, default_value_t = 0)]
    pub val_split: usize,
    /// Train on a fixed random subset of N training images (the same for every run)
    #[arg(long)]
    pub subset: Option<usize>,
    /// Seed for initialisation, data order and augmentation (same seed + adapter = same bits)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output directory: metrics.csv, curves.png, last.safetensors, best.safetensors
    #[arg(long, default_value = "runs/resnet20")]
    pub out: PathBuf,
    /// Continue the run in `out` from its last checkpoint (the CLI's `--resume OUT`).
    #[arg(skip)]
    pub resume: bool,
    /// Images per evaluation step
    #[arg(long = "eval-batch-size", default_value_t = EVAL_BATCH)]
    pub eval_batch: usize,
    /// Threads decoding and transforming photos ahead of the GPU (photo folders of the ImageNet
    /// models; default: the cores less one)
    #[arg(long, default_value_t = crate::data::default_workers())]
    pub workers: usize,
    /// Under mpirun: BatchNorm takes its batch statistics over the whole global batch, across
    /// the ranks (PyTorch's SyncBatchNorm), at the cost of two exchanges per BatchNorm and step
    /// (forward and backward); by default each rank normalises with its own shard's (DDP's
    /// default). One process: no effect
    #[arg(long)]
    pub sync_bn: bool,
    #[command(flatten)]
    pub tune: TuneOptions,
    /// Read loss and accuracy back every this many steps
    #[arg(long, default_value_t = 10)]
    pub log_every: usize,
    /// Adapter and kernel choice (the CLI's --backend and --kernels).
    #[arg(skip)]
    pub gpu: GpuOptions,
}

/// Fine-tuning: where the weights start, what trains, and how.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TuneOptions {
    /// Start from these weights: a safetensors file with torchvision/timm state_dict names, or
    /// an http(s) URL downloaded once into the cache directory
    #[arg(long, value_name = "FILE|URL")]
    pub pretrained: Option<String>,
    /// SHA-256 the --pretrained file must have (checked after the download)
    #[arg(long, value_name = "HEX")]
    pub pretrained_sha256: Option<String>,
    /// Number of classes (default: the data's class folders); a --pretrained head with another
    /// number is replaced by a fresh layer
    #[arg(long)]
    pub num_classes: Option<usize>,
    /// Keep these layers' weights and BatchNorm statistics fixed: stem (conv1, bn1), layer1 ..
    /// layer4, fc, or any state_dict prefix such as layer4.1
    #[arg(long, value_delimiter = ',', value_name = "LAYERS")]
    pub freeze: Vec<String>,
    /// Train only these layers (the others are frozen), e.g. fc or layer4,fc
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "LAYERS",
        conflicts_with = "freeze"
    )]
    pub train_only: Vec<String>,
    /// BatchNorm normalises with its running statistics and keeps them fixed (small batches)
    #[arg(long)]
    pub bn_eval: bool,
    /// Learning rate of every layer but fc, as a multiple of --lr (0.1: the head learns ten
    /// times faster than the body)
    #[arg(long, default_value_t = 1.0, value_name = "MULTIPLIER")]
    pub lr_backbone: f32,
    /// Label smoothing of the training loss, as torch.nn.CrossEntropyLoss(label_smoothing=)
    #[arg(long, default_value_t = 0.0)]
    pub label_smoothing: f32,
}

impl TuneOptions {
    /// The plan's fine-tuning settings for `spec`: names checked against its layers, `stem`
    /// read as conv1 and bn1, --train-only turned into the frozen rest.
    pub fn fine_tune(&self, spec: &crate::model::ModelSpec) -> Result<crate::plan::FineTune> {
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::Invalid(format!(
                "--label-smoothing must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        if !(self.lr_backbone.is_finite() && self.lr_backbone >= 0.0) {
            return Err(Error::Invalid(format!(
                "--lr-backbone must be a multiplier of 0 or more, got {}",
                self.lr_backbone
            )));
        }
        let layers = crate::model::layer_names(spec);
        let expand = |opt: &str, names: &[String]| -> Result<Vec<String>> {
            let mut out = Vec::new();
            for n in names {
                let parts: Vec<String> = match n.as_str() {
                    "stem" => vec!["conv1".into(), "bn1".into()],
                    _ => vec![n.clone()],
                };
                for p in parts {
                    let dotted = format!("{p}.");
                    if !layers.iter().any(|l| *l == p || l.starts_with(&dotted)) {
                        return Err(Error::Invalid(format!(
                            "{opt} {n}: {} has no such layer (stem, layer1 ... fc, or a state_dict prefix such as layer1.0)",
                            spec.name
                        )));
                    }
                    out.push(p);
                }
            }
            Ok(out)
        };
        let mut frozen = expand("--freeze", &self.freeze)?;
        if !self.train_only.is_empty() {
            let train = expand("--train-only", &self.train_only)?;
            let kept = |l: &str| {
                train
                    .iter()
                    .any(|k| l == k || l.starts_with(&format!("{k}.")))
            };
            frozen = layers.iter().filter(|l| !kept(l)).cloned().collect();
        }
        let tune = crate::plan::FineTune {
            frozen,
            bn_eval: self.bn_eval,
            backbone_lr: self.lr_backbone,
            label_smoothing: self.label_smoothing,
        };
        if layers.iter().all(|l| tune.is_frozen(l)) {
            return Err(Error::Invalid(
                "--freeze: every layer is frozen, nothing would train".into(),
            ));
        }
        Ok(tune)
    }
}

impl Default for TrainOptions {
    /// `resnet train`'s defaults: ResNet-20 with He et al.'s recipe.
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            options: TrainOptions,
        }
        <Defaults as clap::Parser>::try_parse_from(["train"])
            .expect("the defaults of every option parse")
            .options
    }
}

impl TrainOptions {
    /// Rejects settings no run can use, naming the option.
    pub fn check(&self) -> Result<()> {
        let at_least_one = [
            ("--batch-size", self.recipe.batch),
            ("--eval-batch-size", self.eval_batch),
            ("--log-every", self.log_every),
            ("--epochs", self.epochs.unwrap_or(1)),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Invalid(format!("{name} must be at least 1")));
        }
        let lr = self.recipe.lr;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::Invalid(format!(
                "--lr must be a positive number, got {lr}"
            )));
        }
        if self.sync_bn && self.tune.bn_eval {
            return Err(Error::Invalid(
                "--sync-bn and --bn-eval contradict each other: with --bn-eval no BatchNorm uses batch statistics to share".into(),
            ));
        }
        Ok(())
    }
}
