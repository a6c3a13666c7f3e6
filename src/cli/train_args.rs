//! The flags of `resnet train` and `resnet experiment`: one definition of every option, its help
//! text and its default, converted into the library's plain [`TrainConfig`]. Each flag is its
//! field's name with `-` for `_` (`--batch-size` sets `batch_size`), which is how
//! `flags::with_flags` names them in errors.

use clap::Args;
use resnet::model::{Family, ModelSpec};
use resnet::ops::sgd::{Rule, SgdConfig};
use resnet::preprocess::{AutoAugment, Interpolation};
use resnet::train::{
    FineTuning, LrSchedule, ModelEma, Recipe, TrainConfig, WarmupMethod, BUCKET_MB, EVAL_BATCH,
};
use resnet::Result;

/// The optimisation recipe; the defaults are He et al. 2016's for CIFAR-10.
#[derive(Args, Debug, Clone)]
pub struct RecipeArgs {
    /// Images per step (under mpirun: the global batch, divided among the ranks)
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// Base learning rate (the ImageNet models: 0.1 x batch size / 256, torchvision's recipe)
    #[arg(long, default_value_t = 0.1)]
    pub lr: f64,
    /// step (times --lr-gamma, 0.1, at each of --lr-milestones, or every --lr-step-size
    /// epochs), cosine, onecycle or exponential (times --lr-gamma every epoch); torchvision's
    /// --lr-scheduler names too: steplr (every --lr-step-size epochs, its default 30),
    /// cosineannealinglr, exponentiallr
    #[arg(long, visible_alias = "lr-scheduler", default_value = "step", value_parser = parse_schedule)]
    pub lr_schedule: ScheduleName,
    /// The step schedule multiplies the rate by --lr-gamma every this many epochs, instead of
    /// at milestones (torchvision's --lr-step-size, torch's StepLR)
    #[arg(long, value_name = "EPOCHS")]
    pub lr_step_size: Option<u64>,
    /// The factor of the step and exponential schedules (torchvision's --lr-gamma)
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub lr_gamma: f64,
    /// Iterations at which the step schedule multiplies the learning rate by --lr-gamma (0.1)
    #[arg(long, value_delimiter = ',', default_value = "32000,48000")]
    pub lr_milestones: Vec<u64>,
    /// Epochs at which the step schedule multiplies the learning rate by --lr-gamma (0.1),
    /// instead of --lr-milestones (torchvision's ImageNet recipe: 30,60)
    #[arg(long, value_delimiter = ',')]
    pub lr_milestone_epochs: Vec<u64>,
    /// The learning rate a cosine schedule ends at (torchvision's --lr-min, torch's eta_min)
    #[arg(long, default_value_t = 0.0)]
    pub lr_min: f64,
    /// Linear learning-rate warm-up over this many iterations
    #[arg(long, default_value_t = 0)]
    pub warmup_iters: u64,
    /// torchvision's warm-up instead: the first N epochs at a factor of the learning rate set
    /// per epoch (--lr-warmup-method, --lr-warmup-decay); the schedule starts when it ends, its
    /// milestones counted from there and a cosine spanning the epochs left (torch's
    /// SequentialLR). torchvision's ResNet-50 V2 recipe: 5, linear
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub lr_warmup_epochs: u64,
    /// constant (every warm-up epoch at --lr-warmup-decay x the rate, torch's ConstantLR) or
    /// linear (from --lr-warmup-decay x up towards the rate in equal steps, torch's LinearLR)
    #[arg(long, default_value = "constant", value_parser = parse_warmup_method)]
    pub lr_warmup_method: WarmupMethod,
    /// The warm-up's first factor of the learning rate, in (0, 1]
    #[arg(long, default_value_t = 0.01)]
    pub lr_warmup_decay: f64,
    /// The optimizer, as torchvision's --opt: sgd; sgd_nesterov (as --nesterov); rmsprop
    /// (torch.optim.RMSprop with torchvision's alpha 0.9 and eps 0.0316, and --momentum); adamw
    /// (torch.optim.AdamW: betas 0.9 and 0.999, eps 1e-8, --weight-decay decoupled from the
    /// gradient, no --momentum). --lr stays the rate for all: AdamW wants a far smaller one
    /// than SGD's 0.1, such as 1e-3
    #[arg(long, default_value = "sgd", value_parser = parse_opt)]
    pub opt: (Rule, bool),
    /// SGD's and RMSprop's momentum
    #[arg(long, default_value_t = SgdConfig::he2016().momentum)]
    pub momentum: f32,
    /// Weight decay (L2, added to the gradient as torch.optim.SGD; AdamW's decoupled decay)
    #[arg(long, visible_alias = "wd", default_value_t = SgdConfig::he2016().weight_decay)]
    pub weight_decay: f32,
    /// Weight decay of the BatchNorm layers' weights and biases (default: --weight-decay; 0 as
    /// in torchvision's recipe for ResNet-50's V2 weights)
    #[arg(long, value_name = "DECAY")]
    pub norm_weight_decay: Option<f32>,
    /// Weight decay of every bias, fc's and BatchNorm's, winning over --norm-weight-decay as in
    /// torchvision's training script (default: fc's bias --weight-decay, BatchNorm's biases
    /// --norm-weight-decay)
    #[arg(long, value_name = "DECAY")]
    pub bias_weight_decay: Option<f32>,
    /// Nesterov momentum
    #[arg(long)]
    pub nesterov: bool,
    /// Clip the gradients to a global L2 norm of at most this before each step (torchvision's
    /// --clip-grad-norm, torch.nn.utils.clip_grad_norm_; after unscaling under --amp; frozen
    /// layers do not count). Default: not clipped
    #[arg(long, value_name = "NORM")]
    pub clip_grad_norm: Option<f32>,
}

/// A schedule as named on the command line: torchvision's `steplr` is the step schedule with
/// its period of `--lr-step-size` epochs, 30 unless given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleName {
    pub schedule: LrSchedule,
    /// Named `steplr`.
    pub steplr: bool,
}

/// torchvision's `--lr-step-size` default.
const TORCHVISION_STEP_SIZE: u64 = 30;

fn parse_schedule(s: &str) -> std::result::Result<ScheduleName, String> {
    let schedule = LrSchedule::parse(s).map_err(|e| super::flags::with_flags(&e.to_string()))?;
    let steplr = s.eq_ignore_ascii_case("steplr");
    Ok(ScheduleName { schedule, steplr })
}

fn parse_opt(s: &str) -> std::result::Result<(Rule, bool), String> {
    Rule::parse(s).map_err(|e| super::flags::with_flags(&e.to_string()))
}

fn parse_warmup_method(s: &str) -> std::result::Result<WarmupMethod, String> {
    WarmupMethod::parse(s).map_err(|e| super::flags::with_flags(&e.to_string()))
}

impl RecipeArgs {
    /// The recipe for `model`: torchvision's ImageNet recipe for the ImageNet models where the
    /// user did not say otherwise (`given(id)`: the option was on the command line).
    pub fn recipe_for(&self, model: &str, given: &dyn Fn(&str) -> bool) -> Result<Recipe> {
        let mut r = self.recipe();
        if ModelSpec::from_name(model, 10)?.family != Family::ImageNet {
            return Ok(r);
        }
        let imagenet = Recipe::imagenet(self.batch_size);
        if !given("lr") {
            r.lr = imagenet.lr;
        }
        if !given("lr_milestones") && !given("lr_milestone_epochs") {
            r.lr_milestone_epochs = imagenet.lr_milestone_epochs;
        }
        Ok(r)
    }

    /// Rejects options that contradict each other as given (`given(id)`: the option was on
    /// the command line): a StepLR period beside the milestones.
    pub fn check_given(&self, given: &dyn Fn(&str) -> bool) -> Result<()> {
        let period = given("lr_step_size") || self.lr_schedule.steplr;
        if period && (given("lr_milestones") || given("lr_milestone_epochs")) {
            return Err(resnet::Error::Invalid(
                "`lr_step_size` (or `lr_schedule` steplr, its period 30 epochs by default) and \
                 the milestones are two step schedules: give one"
                    .into(),
            ));
        }
        Ok(())
    }

    /// The recipe as given.
    pub fn recipe(&self) -> Recipe {
        Recipe {
            batch_size: self.batch_size,
            lr: self.lr,
            lr_schedule: self.lr_schedule.schedule,
            lr_milestones: self.lr_milestones.clone(),
            lr_milestone_epochs: self.lr_milestone_epochs.clone(),
            lr_min: self.lr_min,
            warmup_iters: self.warmup_iters,
            lr_warmup_epochs: self.lr_warmup_epochs,
            lr_warmup_method: self.lr_warmup_method,
            lr_warmup_decay: self.lr_warmup_decay,
            opt: self.opt.0,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            norm_weight_decay: self.norm_weight_decay,
            bias_weight_decay: self.bias_weight_decay,
            nesterov: self.nesterov || self.opt.1,
            lr_gamma: self.lr_gamma,
            lr_step_size: self
                .lr_step_size
                .or(self.lr_schedule.steplr.then_some(TORCHVISION_STEP_SIZE)),
            clip_grad_norm: self.clip_grad_norm,
        }
    }
}

/// Fine-tuning: where the weights start, what trains, and how.
#[derive(Args, Debug, Clone)]
pub struct FineTuningArgs {
    /// Start from these weights: a file with torchvision/timm state_dict names (safetensors, or
    /// torch.save's .pth/.pt), an http(s) URL downloaded once into the cache directory, or
    /// torchvision's weights by name for resnet18-152 and the wide ResNets (IMAGENET1K_V1,
    /// IMAGENET1K_V2, DEFAULT; from torch.hub's cache where torchvision left them, else
    /// downloaded and checked as torchvision does; in full as torchvision's --weights,
    /// ResNet50_Weights.IMAGENET1K_V2)
    #[arg(long, visible_alias = "weights", value_name = "FILE|URL|NAME")]
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

impl From<&FineTuningArgs> for FineTuning {
    fn from(a: &FineTuningArgs) -> FineTuning {
        FineTuning {
            pretrained: a.pretrained.clone(),
            pretrained_sha256: a.pretrained_sha256.clone(),
            num_classes: a.num_classes,
            freeze: a.freeze.clone(),
            train_only: a.train_only.clone(),
            bn_eval: a.bn_eval,
            lr_backbone: a.lr_backbone,
            label_smoothing: a.label_smoothing,
        }
    }
}

/// Everything `resnet train` can be told but the data, the adapter and the run directory.
#[derive(Args, Debug, Clone)]
pub struct TrainConfigArgs {
    /// Model: resnet20/32/44/56/110/1202, plain20/32/44/56/110, resnet18/34/50/101/152,
    /// wide_resnet50_2, wide_resnet101_2, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d
    #[arg(long, default_value = "resnet20")]
    pub model: String,
    /// Keep an exponential moving average of the weights and BatchNorm statistics (torchvision's
    /// --model-ema), evaluated each epoch beside the model and saved as ema.safetensors
    #[arg(long)]
    pub model_ema: bool,
    /// Steps between two updates of the average (it is updated after the first step of each
    /// epoch and every this many after)
    #[arg(long, default_value_t = ModelEma::default().steps)]
    pub model_ema_steps: usize,
    /// The average's decay per step, adjusted as torchvision's script does for the batch size,
    /// the steps between updates and the epochs: 1 - min(1, (1 - decay) x batch x steps / epochs)
    #[arg(long, default_value_t = ModelEma::default().decay)]
    pub model_ema_decay: f64,
    /// Start every residual block's last BatchNorm at weight 0, so each block starts as its
    /// shortcut (torchvision's zero_init_residual=True)
    #[arg(long)]
    pub zero_init_residual: bool,
    /// The probability that a training image has a random rectangle set to 0 after its
    /// normalisation: torchvision's RandomErasing(p) (2% to 33% of the area, height/width 0.3 to
    /// 3.3), the last transform of its recipe (ResNet-50 V2: 0.1)
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub random_erase: f32,
    /// An automatic augmentation of each training image after its crop and flip, as
    /// torchvision's --auto-augment: ta_wide is its TrivialAugmentWide (one of 14 Pillow
    /// operations at a random strength, warped with --interpolation; the ResNet-50 V2 recipe's), ra its RandAugment
    /// (two of them in turn at --ra-magnitude), imagenet, cifar10 and svhn its AutoAugment with
    /// the policy learned on that data set, augmix its AugMix (three chains of 1 to 3
    /// operations at --augmix-severity, mixed with random weights). On CIFAR the crop and flip
    /// then run on the CPU before it too
    #[arg(long, value_name = "POLICY")]
    pub auto_augment: Option<AutoAugment>,
    /// RandAugment's strength: the bin, 0 to 30, of every operation's table (torchvision's
    /// --ra-magnitude)
    #[arg(long, default_value_t = AutoAugment::RA_MAGNITUDE)]
    pub ra_magnitude: usize,
    /// AugMix's strength: its operations draw from the weakest this many of ten bins, 1 to 10
    /// (torchvision's --augmix-severity)
    #[arg(long, default_value_t = AutoAugment::AUGMIX_SEVERITY)]
    pub augmix_severity: usize,
    /// MixUp: each training batch blended with itself rolled by one image, pictures and labels
    /// weighted lambda ~ Beta(alpha, alpha) (torchvision's --mixup-alpha; its ResNet-50 V2
    /// recipe: 0.2). With --cutmix-alpha too, each batch takes one of the two, evenly
    #[arg(long, default_value_t = 0.0, value_name = "ALPHA")]
    pub mixup_alpha: f64,
    /// CutMix: a box of each training image replaced by the image before it in the batch, the
    /// labels weighted by the areas (torchvision's --cutmix-alpha; that recipe: 1.0)
    #[arg(long, default_value_t = 0.0, value_name = "ALPHA")]
    pub cutmix_alpha: f64,
    /// torchvision's repeated-augmentation sampler: each epoch takes its shuffled images
    /// --ra-reps times in a row, each time augmented apart, dealt to the ranks in turn; an epoch
    /// keeps its steps and sees about 1/reps of the images (its ResNet-50 V2 recipe: --ra-reps 4)
    #[arg(long)]
    pub ra_sampler: bool,
    /// The repeats of each image under --ra-sampler
    #[arg(long, default_value_t = 3)]
    pub ra_reps: usize,
    /// Epochs (default: the paper's 64k iterations for the CIFAR models, 164 epochs at batch 128;
    /// torchvision's 90 for the ImageNet models)
    #[arg(long)]
    pub epochs: Option<usize>,
    #[command(flatten)]
    pub recipe: RecipeArgs,
    /// Hold out this many training images as a validation set (evaluated each epoch instead of test)
    #[arg(long, default_value_t = 0)]
    pub val_split: usize,
    /// Train on a fixed random subset of N training images (the same for every run)
    #[arg(long)]
    pub subset: Option<usize>,
    /// Seed for initialisation, data order and augmentation (same seed + adapter = same bits)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Images per evaluation step
    #[arg(long, default_value_t = EVAL_BATCH)]
    pub eval_batch_size: usize,
    /// Threads decoding and transforming photos ahead of the GPU (photo folders of the ImageNet
    /// models; default: the cores less one)
    #[arg(long, short = 'j', default_value_t = resnet::data::default_workers())]
    pub workers: usize,
    /// Under mpirun: BatchNorm takes its batch statistics over the whole global batch, across
    /// the ranks (PyTorch's SyncBatchNorm), at the cost of two exchanges per BatchNorm and step
    /// (forward and backward); by default each rank normalises with its own shard's (DDP's
    /// default). One process: no effect
    #[arg(long)]
    pub sync_bn: bool,
    /// Under mpirun: the gradients are exchanged in buckets of about this many MiB, in the order
    /// the backward pass finishes them (the last layers first), each while the GPU computes the
    /// layers below it (PyTorch DDP's bucket_cap_mb). The same bits whatever the size; a size
    /// above the model's gradients exchanges once after the backward pass. With --sync-bn: one
    /// exchange after the backward pass
    #[arg(long, default_value_t = BUCKET_MB, allow_negative_numbers = true)]
    pub bucket_mb: f64,
    #[command(flatten)]
    pub fine_tuning: FineTuningArgs,
    /// Read loss and accuracy back every this many steps (torchvision's --print-freq)
    #[arg(long, visible_alias = "print-freq", default_value_t = 10)]
    pub log_every: usize,
}

impl TrainConfigArgs {
    /// The library's configuration (the adapter options are the caller's).
    /// The run's configuration; `interpolation` is a data option (`DataArgs`), for the
    /// automatic augmentations' warps.
    pub fn config(
        &self,
        given: &dyn Fn(&str) -> bool,
        interpolation: Interpolation,
    ) -> Result<TrainConfig> {
        if let Some(alone) = ["model_ema_steps", "model_ema_decay"]
            .into_iter()
            .find(|f| given(f) && !self.model_ema)
        {
            return Err(resnet::Error::Invalid(format!(
                "`{alone}` sets the moving average of `model_ema`, which is not on"
            )));
        }
        if given("ra_magnitude") && self.auto_augment.map(|a| a.name()) != Some("ra") {
            return Err(resnet::Error::Invalid(
                "`ra_magnitude` sets the strength of `auto_augment` ra, which is not on".into(),
            ));
        }
        if given("augmix_severity") && self.auto_augment.map(|a| a.name()) != Some("augmix") {
            return Err(resnet::Error::Invalid(
                "`augmix_severity` sets the strength of `auto_augment` augmix, which is not on"
                    .into(),
            ));
        }
        self.recipe.check_given(given)?;
        if given("ra_reps") && !self.ra_sampler {
            return Err(resnet::Error::Invalid(
                "`ra_reps` sets the repeats of `ra_sampler`, which is not on".into(),
            ));
        }
        if let Some(alone) = ["lr_warmup_method", "lr_warmup_decay"]
            .into_iter()
            .find(|f| given(f) && self.recipe.lr_warmup_epochs == 0)
        {
            return Err(resnet::Error::Invalid(format!(
                "`{alone}` sets the warm-up of `lr_warmup_epochs`, which is 0"
            )));
        }
        Ok(TrainConfig {
            model: self.model.clone(),
            zero_init_residual: self.zero_init_residual,
            random_erase: self.random_erase,
            auto_augment: self.auto_augment.map(|policy| match policy {
                AutoAugment::RandAugment { .. } => AutoAugment::RandAugment {
                    magnitude: self.ra_magnitude,
                },
                AutoAugment::AugMix { .. } => AutoAugment::AugMix {
                    severity: self.augmix_severity,
                },
                other => other,
            }),
            interpolation,
            ra_reps: self.ra_sampler.then_some(self.ra_reps),
            mixing: resnet::preprocess::BatchMixing {
                mixup_alpha: self.mixup_alpha,
                cutmix_alpha: self.cutmix_alpha,
            },
            model_ema: self.model_ema.then_some(ModelEma {
                steps: self.model_ema_steps,
                decay: self.model_ema_decay,
            }),
            epochs: self.epochs,
            recipe: self.recipe.recipe_for(&self.model, given)?,
            val_split: self.val_split,
            subset: self.subset,
            seed: self.seed,
            eval_batch_size: self.eval_batch_size,
            workers: self.workers,
            sync_bn: self.sync_bn,
            bucket_mb: self.bucket_mb,
            fine_tuning: (&self.fine_tuning).into(),
            log_every: self.log_every,
            gpu: Default::default(),
            loss_scale: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use resnet::preprocess::AutoAugmentPolicy;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        config: TrainConfigArgs,
    }

    fn recipe(args: &[&str], given: &dyn Fn(&str) -> bool) -> Recipe {
        let cmd = Cmd::try_parse_from(args).unwrap();
        cmd.config
            .config(given, Interpolation::default())
            .unwrap()
            .recipe
    }

    /// `--opt` reaches the recipe: `sgd_nesterov` is SGD with Nesterov momentum, the others
    /// their rules, in any case.
    #[test]
    fn opt_names_reach_the_recipe() {
        use resnet::ops::sgd::Rule;
        let recipe = |args: &[&str]| {
            let cmd = Cmd::try_parse_from([&["train"], args].concat()).unwrap();
            cmd.config.recipe.recipe()
        };
        let nesterov = recipe(&["--opt", "sgd_nesterov"]);
        assert_eq!((nesterov.opt, nesterov.nesterov), (Rule::Sgd, true));
        let sgd = recipe(&[]);
        assert_eq!((sgd.opt, sgd.nesterov), (Rule::Sgd, false));
        assert_eq!(recipe(&["--opt", "AdamW"]).opt, Rule::AdamW);
        assert_eq!(recipe(&["--opt", "rmsprop"]).opt, Rule::RmsProp);
    }

    /// torchvision's reference script's spellings reach the same fields: --lr-scheduler with
    /// its scheduler names, --lr-step-size, --lr-gamma, --wd, -j.
    #[test]
    fn torchvisions_flag_names_are_accepted() {
        let cmd = |args: &[&str]| Cmd::try_parse_from([&["train"], args].concat()).unwrap();
        let steplr = cmd(&[
            "--lr-scheduler",
            "steplr",
            "--lr-step-size",
            "30",
            "--lr-gamma",
            "0.5",
            "--wd",
            "2e-5",
            "-j",
            "3",
        ]);
        let r = steplr.config.recipe.recipe();
        assert_eq!(r.lr_schedule, LrSchedule::Step);
        // steplr alone: torchvision's period of 30 epochs; step alone: the milestones
        let default = cmd(&["--lr-scheduler", "StepLR"]).config.recipe.recipe();
        assert_eq!(default.lr_step_size, Some(30));
        assert_eq!(
            cmd(&["--lr-schedule", "step"])
                .config
                .recipe
                .recipe()
                .lr_step_size,
            None
        );
        assert_eq!((r.lr_step_size, r.lr_gamma), (Some(30), 0.5));
        assert_eq!(r.weight_decay, 2e-5);
        assert_eq!(steplr.config.workers, 3);
        for (name, schedule) in [
            ("cosineannealinglr", LrSchedule::Cosine),
            ("exponentiallr", LrSchedule::Exponential),
        ] {
            let c = cmd(&["--lr-scheduler", name]);
            assert_eq!(c.config.recipe.recipe().lr_schedule, schedule);
        }
        assert!(Cmd::try_parse_from(["train", "--lr-scheduler", "polylr"]).is_err());
    }

    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let cmd = Cmd::try_parse_from(["train"]).unwrap();
        let config = cmd
            .config
            .config(&|_| false, Interpolation::default())
            .unwrap();
        let lib = TrainConfig::default();
        assert_eq!(config.recipe, lib.recipe);
        assert_eq!(config.fine_tuning, lib.fine_tuning);
        assert_eq!(
            (config.model, config.epochs, config.seed, config.log_every),
            (lib.model, lib.epochs, lib.seed, lib.log_every)
        );
        assert_eq!(config.eval_batch_size, lib.eval_batch_size);
        assert_eq!(
            (
                config.random_erase,
                config.auto_augment,
                config.mixing,
                config.zero_init_residual
            ),
            (
                lib.random_erase,
                lib.auto_augment,
                lib.mixing,
                lib.zero_init_residual
            )
        );
    }

    #[test]
    fn auto_augment_reaches_the_config() {
        let config = |args: &[&str]| {
            let cmd = Cmd::try_parse_from([&["train"], args].concat()).unwrap();
            cmd.config
                .config(&|id| args.contains(&id), Interpolation::default())
                .unwrap()
                .auto_augment
        };
        let ta = config(&["--auto-augment", "ta_wide"]);
        assert_eq!(ta, Some(AutoAugment::TrivialAugmentWide));
        let ra = config(&["--auto-augment", "ra"]);
        assert_eq!(ra, Some(AutoAugment::RandAugment { magnitude: 9 }));
        let ra = config(&["--auto-augment", "ra", "--ra-magnitude", "14"]);
        assert_eq!(ra, Some(AutoAugment::RandAugment { magnitude: 14 }));
        for (name, policy) in [
            ("imagenet", AutoAugmentPolicy::Imagenet),
            ("cifar10", AutoAugmentPolicy::Cifar10),
            ("svhn", AutoAugmentPolicy::Svhn),
        ] {
            let learned = config(&["--auto-augment", name]);
            assert_eq!(learned, Some(AutoAugment::Learned(policy)));
        }
        let augmix = config(&["--auto-augment", "augmix"]);
        assert_eq!(augmix, Some(AutoAugment::AugMix { severity: 3 }));
        let augmix = config(&["--auto-augment", "augmix", "--augmix-severity", "7"]);
        assert_eq!(augmix, Some(AutoAugment::AugMix { severity: 7 }));
    }

    #[test]
    fn imagenet_models_take_torchvisions_recipe_where_not_given() {
        let r = recipe(
            &["train", "--model", "resnet50", "--batch-size", "64"],
            &|_| false,
        );
        assert_eq!(r, Recipe::imagenet(64));
        // what the user gave stays
        let given = recipe(&["train", "--model", "resnet18", "--lr", "0.3"], &|id| {
            id == "lr"
        });
        assert_eq!(given.lr, 0.3);
        assert_eq!(given.lr_milestone_epochs, [30, 60]);
        let cifar = recipe(&["train", "--model", "resnet20"], &|_| false);
        assert_eq!(cifar, Recipe::default());
    }
}
