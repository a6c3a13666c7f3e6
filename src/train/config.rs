//! What a training run is told, as plain structs with defaults (burn's style): the recipe, the
//! fine-tuning settings and the rest of [`TrainConfig`]. The CLI's flags convert into them
//! (`src/cli/train_args.rs`); errors name a setting by its field in backticks (`batch_size`), which
//! the CLI shows as its flag (`--batch-size`).

use super::schedule::{LrSchedule, Steps, WarmupMethod};
use crate::error::{Error, Result};
use crate::gpu::GpuOptions;
use crate::model::{Family, ModelSpec};
use crate::ops::amp::LossScale;
use crate::ops::sgd::{Rule, SgdConfig};
use crate::preprocess::{AutoAugment, BatchMixing, Interpolation};

/// torchvision's ImageNet recipe: lr 0.1 for a batch of 256, scaled linearly with the batch.
pub const IMAGENET_LR: f64 = 0.1;
/// torchvision's ImageNet recipe: StepLR(step_size=30, gamma=0.1) over 90 epochs.
pub const IMAGENET_MILESTONE_EPOCHS: [u64; 2] = [30, 60];
/// torchvision's ImageNet recipe: 90 epochs.
pub const IMAGENET_EPOCHS: usize = 90;
/// The iterations of He et al.'s CIFAR-10 schedule, the CIFAR models' default length of a run.
pub const PAPER_ITERATIONS: usize = 64_000;
/// Images per evaluation step unless told otherwise (`train`, `eval`, `experiment`).
pub const EVAL_BATCH: usize = 500;
/// PyTorch DDP's default gradient bucket (`bucket_cap_mb`), MiB.
pub const BUCKET_MB: f64 = 25.0;

/// The f32 values in `mb` MiB (at least one): a gradient bucket's size; an error naming
/// `bucket_mb` unless `mb` is a positive number.
pub fn bucket_floats(mb: f64) -> Result<usize> {
    if !(mb.is_finite() && mb > 0.0) {
        return Err(Error::Invalid(format!(
            "`bucket_mb` must be a positive number of MiB, got {mb}"
        )));
    }
    Ok(((mb * (1 << 20) as f64 / 4.0) as usize).max(1))
}

/// The optimisation recipe; the default is He et al. 2016's for CIFAR-10.
#[derive(Debug, Clone, PartialEq)]
pub struct Recipe {
    /// Images per step (the global batch of a data-parallel run).
    pub batch_size: usize,
    /// Base learning rate.
    pub lr: f64,
    /// How the rate evolves from `lr`.
    pub lr_schedule: LrSchedule,
    /// Iterations at which the step schedule divides the rate by 10.
    pub lr_milestones: Vec<u64>,
    /// Epochs at which the step schedule divides the rate by 10, instead of `lr_milestones`.
    pub lr_milestone_epochs: Vec<u64>,
    /// The rate a cosine schedule ends at (torch's `eta_min`, torchvision's `--lr-min`).
    pub lr_min: f64,
    /// Linear warm-up over this many iterations.
    pub warmup_iters: u64,
    /// torchvision's warm-up over whole epochs instead (`--lr-warmup-epochs`): these first
    /// epochs run at `lr_warmup_method`'s factor of the rate, and the schedule starts after them
    /// (torch's SequentialLR: its milestones count from the warm-up's end, a cosine spans the
    /// epochs left).
    pub lr_warmup_epochs: u64,
    /// Constant or linear (torchvision's default: constant).
    pub lr_warmup_method: WarmupMethod,
    /// The warm-up's first factor of the rate (torchvision's default: 0.01).
    pub lr_warmup_decay: f64,
    /// The optimizer (torchvision's `--opt`): SGD, RMSprop or AdamW.
    pub opt: Rule,
    /// SGD's and RMSprop's momentum (AdamW takes none).
    pub momentum: f32,
    /// Weight decay (L2, added to the gradient as torch.optim.SGD and RMSprop; AdamW's is
    /// decoupled: the weights times 1 - lr x decay).
    pub weight_decay: f32,
    /// Weight decay of BatchNorm's weights and biases instead (torchvision's
    /// `--norm-weight-decay`; its ResNet-50 V2 recipe: 0).
    pub norm_weight_decay: Option<f32>,
    /// Weight decay of every bias instead, BatchNorm's included, winning over
    /// `norm_weight_decay` (torchvision's `--bias-weight-decay`).
    pub bias_weight_decay: Option<f32>,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// The factor of the step and exponential schedules (torchvision's `--lr-gamma`; He et
    /// al.'s 0.1).
    pub lr_gamma: f64,
    /// The step schedule multiplies the rate by `lr_gamma` every this many epochs instead of at
    /// milestones (torch's StepLR, torchvision's `--lr-step-size`).
    pub lr_step_size: Option<u64>,
    /// The gradients clipped to this global L2 norm before each step (torchvision's
    /// `--clip-grad-norm`); `None`: not clipped.
    pub clip_grad_norm: Option<f32>,
}

impl Default for Recipe {
    /// He et al. 2016: batch 128, lr 0.1 divided by 10 at iterations 32k and 48k, momentum 0.9,
    /// weight decay 1e-4.
    fn default() -> Self {
        let sgd = SgdConfig::he2016();
        Recipe {
            batch_size: 128,
            lr: 0.1,
            lr_schedule: LrSchedule::Step,
            lr_milestones: vec![32_000, 48_000],
            lr_milestone_epochs: Vec::new(),
            lr_min: 0.0,
            warmup_iters: 0,
            lr_warmup_epochs: 0,
            lr_warmup_method: WarmupMethod::Constant,
            lr_warmup_decay: 0.01,
            opt: Rule::Sgd,
            momentum: sgd.momentum,
            weight_decay: sgd.weight_decay,
            norm_weight_decay: None,
            bias_weight_decay: None,
            nesterov: false,
            lr_gamma: 0.1,
            lr_step_size: None,
            clip_grad_norm: None,
        }
    }
}

impl Recipe {
    /// torchvision's ImageNet recipe at `batch_size`: lr 0.1 x batch/256, divided by 10 at
    /// epochs 30 and 60; momentum 0.9 and weight decay 1e-4 as the default.
    pub fn imagenet(batch_size: usize) -> Recipe {
        Recipe {
            batch_size,
            lr: IMAGENET_LR * batch_size as f64 / 256.0,
            lr_milestone_epochs: IMAGENET_MILESTONE_EPOCHS.to_vec(),
            ..Recipe::default()
        }
    }

    /// The optimizer of a training plan (its learning rate is set per step).
    pub fn sgd(&self) -> SgdConfig {
        SgdConfig {
            rule: self.opt,
            lr: self.lr as f32,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            norm_weight_decay: self.norm_weight_decay,
            bias_weight_decay: self.bias_weight_decay,
            nesterov: self.nesterov,
        }
    }

    /// Rejects a weight decay torch.optim would refuse (negative, or not a number), and Nesterov
    /// momentum with an optimizer that has none.
    fn check_optimizer(&self) -> Result<()> {
        if self.nesterov && self.opt != Rule::Sgd {
            return Err(Error::Invalid(format!(
                "`nesterov` is SGD's momentum, and `opt` is {}",
                self.opt.name()
            )));
        }
        let decays = [
            ("weight_decay", Some(self.weight_decay)),
            ("norm_weight_decay", self.norm_weight_decay),
            ("bias_weight_decay", self.bias_weight_decay),
        ];
        for (name, decay) in decays {
            if let Some(d) = decay.filter(|d| !(d.is_finite() && *d >= 0.0)) {
                return Err(Error::Invalid(format!(
                    "`{name}` must be 0 or more, got {d}"
                )));
            }
        }
        if let Some(n) = self.clip_grad_norm.filter(|n| !(n.is_finite() && *n > 0.0)) {
            return Err(Error::Invalid(format!(
                "`clip_grad_norm` is the largest gradient norm, above 0, got {n}"
            )));
        }
        Ok(())
    }

    /// The recipe with `lr_milestone_epochs` turned into iterations of `steps_per_epoch`.
    pub fn with_epochs_as_iterations(&self, steps_per_epoch: usize) -> Recipe {
        let mut r = self.clone();
        if !r.lr_milestone_epochs.is_empty() {
            r.lr_milestones = r
                .lr_milestone_epochs
                .iter()
                .map(|e| e * steps_per_epoch as u64)
                .collect();
        }
        r
    }

    /// The learning rate at `iteration` of `total`, epochs of `steps_per_epoch`: during the
    /// warm-up epochs their factor of the rate, after them the schedule from its start.
    pub fn lr_at(&self, iteration: u64, total: u64, steps_per_epoch: u64) -> f64 {
        let warm = self.lr_warmup_epochs * steps_per_epoch;
        if iteration < warm {
            let epoch = iteration / steps_per_epoch;
            let factor =
                self.lr_warmup_method
                    .factor(self.lr_warmup_decay, epoch, self.lr_warmup_epochs);
            return self.lr * factor;
        }
        self.lr_schedule.lr_at(
            (self.lr, self.lr_min),
            iteration - warm,
            total.saturating_sub(warm),
            self.warmup_iters,
            self.steps(steps_per_epoch),
        )
    }

    /// When the step and exponential schedules multiply the rate, epochs of `steps_per_epoch`:
    /// the exponential one every epoch, the step one every `lr_step_size` epochs or at
    /// `lr_milestones`.
    fn steps(&self, steps_per_epoch: u64) -> Steps<'_> {
        let every = match (self.lr_schedule, self.lr_step_size) {
            (LrSchedule::Exponential, _) => Some(steps_per_epoch),
            (LrSchedule::Step, Some(epochs)) => Some(epochs * steps_per_epoch),
            _ => None,
        };
        Steps {
            milestones: &self.lr_milestones,
            every,
            gamma: self.lr_gamma,
        }
    }

    /// Whether step `step` (0-based) is in a warm-up (where torchvision restarts the weights'
    /// moving average).
    pub fn warming_up(&self, step: u64, steps_per_epoch: u64) -> bool {
        step < self.warmup_iters || step / steps_per_epoch.max(1) < self.lr_warmup_epochs
    }

    /// The schedule in words: "warm-up 5 epochs linear from 0.01 x, then cosine to 1e-5".
    pub fn describe_schedule(&self) -> String {
        // with one step an epoch, a period of iterations is one of epochs
        let mut main = self.lr_schedule.describe(self.steps(1));
        if self.lr_schedule == LrSchedule::Step && self.lr_step_size.is_some() {
            main = main.replace("iterations", "epochs");
        }
        if self.lr_schedule == LrSchedule::Cosine && self.lr_min > 0.0 {
            main = format!("{main} to {}", self.lr_min);
        }
        if self.lr_warmup_epochs == 0 {
            return main;
        }
        let (n, decay) = (self.lr_warmup_epochs, self.lr_warmup_decay);
        let epochs = if n == 1 { "epoch" } else { "epochs" };
        let warm = match self.lr_warmup_method {
            WarmupMethod::Constant => format!("at {decay} x"),
            WarmupMethod::Linear => format!("linear from {decay} x"),
        };
        format!("warm-up {n} {epochs} {warm}, then {main}")
    }

    /// Rejects a warm-up or an end of the rate torch's schedulers would refuse or this
    /// schedule would ignore; `epochs`, the run's length, must outlast the warm-up.
    pub fn check_schedule(&self, epochs: usize) -> Result<()> {
        if !(self.lr_min.is_finite() && self.lr_min >= 0.0) {
            return Err(Error::Invalid(format!(
                "`lr_min` must be 0 or more, got {}",
                self.lr_min
            )));
        }
        if !(self.lr_gamma.is_finite() && self.lr_gamma > 0.0) {
            return Err(Error::Invalid(format!(
                "`lr_gamma` is the rate's factor, above 0, got {}",
                self.lr_gamma
            )));
        }
        let multiplies = matches!(self.lr_schedule, LrSchedule::Step | LrSchedule::Exponential);
        if self.lr_gamma != 0.1 && !multiplies {
            return Err(Error::Invalid(format!(
                "`lr_gamma` is the step and exponential schedules' factor; the {} schedule does \
                 not use it",
                self.lr_schedule.name()
            )));
        }
        if self.lr_step_size == Some(0) {
            return Err(Error::Invalid("`lr_step_size` is at least 1 epoch".into()));
        }
        if self.lr_step_size.is_some() && self.lr_schedule != LrSchedule::Step {
            return Err(Error::Invalid(format!(
                "`lr_step_size` sets the step schedule's period; the {} schedule does not use it",
                self.lr_schedule.name()
            )));
        }
        if self.lr_min > 0.0 && self.lr_schedule != LrSchedule::Cosine {
            return Err(Error::Invalid(format!(
                "`lr_min` is where a cosine schedule ends; the {} schedule does not use it",
                self.lr_schedule.name()
            )));
        }
        if self.lr_warmup_epochs == 0 {
            return Ok(());
        }
        let d = self.lr_warmup_decay;
        let problem = if !(d > 0.0 && d <= 1.0) {
            Some(format!("`lr_warmup_decay` must be in (0, 1], got {d}"))
        } else if self.warmup_iters > 0 {
            Some("`lr_warmup_epochs` and `warmup_iters` are two warm-ups: give one".into())
        } else if self.lr_schedule == LrSchedule::OneCycle {
            Some("`lr_warmup_epochs`: the onecycle schedule warms up by itself".into())
        } else if self.lr_warmup_epochs >= epochs as u64 {
            Some(format!(
                "`lr_warmup_epochs` {} leaves nothing of the run's {epochs} epochs to the schedule",
                self.lr_warmup_epochs
            ))
        } else {
            None
        };
        problem.map_or(Ok(()), |p| Err(Error::Invalid(p)))
    }
}

/// Fine-tuning: where the weights start, what trains, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct FineTuning {
    /// Start from these weights: a safetensors file with torchvision/timm names, or an http(s)
    /// URL downloaded once into the cache.
    pub pretrained: Option<String>,
    /// The SHA-256 the `pretrained` file must have.
    pub pretrained_sha256: Option<String>,
    /// The number of classes, which must agree with the data's.
    pub num_classes: Option<usize>,
    /// Layers whose weights and BatchNorm statistics stay fixed (stem, layer1.., fc, or a
    /// state_dict prefix).
    pub freeze: Vec<String>,
    /// Layers that train, the others frozen (instead of `freeze`).
    pub train_only: Vec<String>,
    /// BatchNorm normalises with its running statistics and keeps them fixed.
    pub bn_eval: bool,
    /// Learning rate of every layer but fc, as a multiple of the recipe's.
    pub lr_backbone: f32,
    /// Label smoothing of the training loss (CrossEntropyLoss(label_smoothing=)).
    pub label_smoothing: f32,
}

impl Default for FineTuning {
    /// Nothing frozen, every layer at the recipe's rate, no smoothing, random weights.
    fn default() -> Self {
        FineTuning {
            pretrained: None,
            pretrained_sha256: None,
            num_classes: None,
            freeze: Vec::new(),
            train_only: Vec::new(),
            bn_eval: false,
            lr_backbone: 1.0,
            label_smoothing: 0.0,
        }
    }
}

impl FineTuning {
    /// The plan's fine-tuning settings for `spec`: names checked against its layers, `stem`
    /// read as conv1 and bn1, `train_only` turned into the frozen rest.
    pub fn plan_settings(&self, spec: &ModelSpec) -> Result<crate::plan::FineTune> {
        self.check()?;
        let layers = crate::model::layer_names(spec);
        let mut frozen = expand_layers(spec, &layers, "freeze", &self.freeze)?;
        if !self.train_only.is_empty() {
            let train = expand_layers(spec, &layers, "train_only", &self.train_only)?;
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
                "`freeze`: every layer is frozen, nothing would train".into(),
            ));
        }
        Ok(tune)
    }

    fn check(&self) -> Result<()> {
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(Error::Invalid(format!(
                "`label_smoothing` must be in [0, 1), got {}",
                self.label_smoothing
            )));
        }
        if !(self.lr_backbone.is_finite() && self.lr_backbone >= 0.0) {
            return Err(Error::Invalid(format!(
                "`lr_backbone` must be a multiplier of 0 or more, got {}",
                self.lr_backbone
            )));
        }
        Ok(())
    }
}

/// `names` of `field` as state_dict prefixes of `spec`'s `layers` (`stem`: conv1 and bn1).
fn expand_layers(
    spec: &ModelSpec,
    layers: &[String],
    field: &str,
    names: &[String],
) -> Result<Vec<String>> {
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
                    "`{field}` {n}: {} has no such layer (stem, layer1 ... fc, or a state_dict prefix such as layer1.0)",
                    spec.name
                )));
            }
            out.push(p);
        }
    }
    Ok(out)
}

/// torchvision's model EMA (`--model-ema`): an average of the weights and BatchNorm statistics,
/// updated after every `steps`-th step of an epoch (the first included) as
/// `ema = d * ema + (1 - d) * weights`, its first update a copy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelEma {
    /// Steps between updates (torchvision's `--model-ema-steps`).
    pub steps: usize,
    /// The decay per step before the adjustment of [`ModelEma::update_decay`] (torchvision's
    /// `--model-ema-decay`).
    pub decay: f64,
}

impl Default for ModelEma {
    /// torchvision's defaults: an update every 32 steps, decay 0.99998.
    fn default() -> Self {
        ModelEma {
            steps: 32,
            decay: 0.99998,
        }
    }
}

impl ModelEma {
    /// The decay `d` of one update, as torchvision's training script adjusts the given decay
    /// for the global batch, the steps between updates and the epochs:
    /// `1 - min(1, (1 - decay) x batch x steps / epochs)`.
    pub fn update_decay(&self, batch: usize, epochs: usize) -> f64 {
        let adjust = (batch * self.steps) as f64 / epochs.max(1) as f64;
        1.0 - ((1.0 - self.decay) * adjust).min(1.0)
    }

    fn check(&self) -> Result<()> {
        if self.steps == 0 {
            return Err(Error::Invalid(
                "`model_ema_steps` must be at least 1".into(),
            ));
        }
        if !(0.0..=1.0).contains(&self.decay) {
            return Err(Error::Invalid(format!(
                "`model_ema_decay` must be in [0, 1], got {}",
                self.decay
            )));
        }
        Ok(())
    }
}

/// Everything a training run is told but its data, its run directory and its ranks.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// resnet20/32/44/56/110/1202, plain20/32/44/56/110, resnet18/34/50/101/152, wide_resnet50_2,
    /// wide_resnet101_2, resnext50_32x4d, resnext101_32x8d, resnext101_64x4d.
    pub model: String,
    /// Keep an exponential moving average of the weights too (torchvision's `--model-ema`),
    /// evaluated each epoch and saved as ema.safetensors.
    pub model_ema: Option<ModelEma>,
    /// Every residual block's last BatchNorm starts with weight 0, so each block starts as its
    /// shortcut (torchvision's `resnet50(zero_init_residual=True)`; Goyal et al. 2017).
    pub zero_init_residual: bool,
    /// The probability of torchvision's RandomErasing for each training image, after its
    /// normalisation (`--random-erase`; 0: none).
    pub random_erase: f32,
    /// The automatic augmentation of each training image after its crop and flip, on the CPU
    /// (torchvision's `--auto-augment`; images in memory are then cropped on the CPU too).
    pub auto_augment: Option<AutoAugment>,
    /// How `auto_augment`'s shears, translations and rotations resample (torchvision passes its
    /// `--interpolation` to the policy as to the crop; a photo folder's own resizes take the
    /// one its source was opened with).
    pub interpolation: Interpolation,
    /// MixUp and CutMix of the training batches (torchvision's `--mixup-alpha`,
    /// `--cutmix-alpha`; alphas 0: none).
    pub mixing: BatchMixing,
    /// torchvision's repeated-augmentation sampler (`--ra-sampler`, `--ra-reps`): each epoch
    /// takes its images this many times in a row, each time augmented apart (`None`: each once).
    pub ra_reps: Option<usize>,
    /// Epochs; `None`: the paper's 64k iterations for the CIFAR models, torchvision's 90 epochs
    /// for the ImageNet ones.
    pub epochs: Option<usize>,
    /// The optimisation recipe.
    pub recipe: Recipe,
    /// Training images held out as the set evaluated each epoch (instead of the test split).
    pub val_split: usize,
    /// Train on a fixed random subset of this many training images.
    pub subset: Option<usize>,
    /// Seed of initialisation, data order and augmentation.
    pub seed: u64,
    /// Images per evaluation step.
    pub eval_batch_size: usize,
    /// Threads decoding and transforming photos ahead of the GPU.
    pub workers: usize,
    /// With several ranks, BatchNorm statistics over the global batch (SyncBatchNorm).
    pub sync_bn: bool,
    /// With several ranks, the gradients are exchanged in buckets of about this many MiB, each
    /// while the GPU computes the layers below it (PyTorch DDP's `bucket_cap_mb`, 25).
    pub bucket_mb: f64,
    /// Pretrained weights, frozen layers and the like.
    pub fine_tuning: FineTuning,
    /// Read loss and accuracy back every this many steps.
    pub log_every: usize,
    /// Adapter, kernel choice and precision.
    pub gpu: GpuOptions,
    /// Mixed precision's dynamic loss scaling: torch.amp.GradScaler's arguments, its defaults
    /// (unused in fp32).
    pub loss_scale: LossScale,
}

impl Default for TrainConfig {
    /// ResNet-20 with He et al.'s recipe, seed 0.
    fn default() -> Self {
        TrainConfig {
            model: "resnet20".into(),
            model_ema: None,
            zero_init_residual: false,
            random_erase: 0.0,
            auto_augment: None,
            interpolation: Interpolation::Bilinear,
            mixing: BatchMixing {
                mixup_alpha: 0.0,
                cutmix_alpha: 0.0,
            },
            ra_reps: None,
            epochs: None,
            recipe: Recipe::default(),
            val_split: 0,
            subset: None,
            seed: 0,
            eval_batch_size: EVAL_BATCH,
            workers: crate::data::default_workers(),
            sync_bn: false,
            bucket_mb: BUCKET_MB,
            fine_tuning: FineTuning::default(),
            log_every: 10,
            gpu: GpuOptions::default(),
            loss_scale: LossScale::default(),
        }
    }
}

impl TrainConfig {
    /// `model` with its own recipe: He et al.'s for the CIFAR models, torchvision's ImageNet
    /// recipe at the default batch for the ImageNet ones.
    pub fn for_model(model: &str) -> Result<TrainConfig> {
        let mut c = TrainConfig {
            model: model.into(),
            ..TrainConfig::default()
        };
        if ModelSpec::from_name(model, 10)?.family == Family::ImageNet {
            c.recipe = Recipe::imagenet(c.recipe.batch_size);
        }
        Ok(c)
    }

    /// Rejects settings no run can use, naming the setting.
    pub fn check(&self) -> Result<()> {
        let spec = ModelSpec::from_name(&self.model, 10)?;
        if self.zero_init_residual && !spec.residual {
            return Err(Error::Invalid(format!(
                "`zero_init_residual` needs residual blocks, and {} has no shortcuts",
                self.model
            )));
        }
        if let Some(ema) = &self.model_ema {
            ema.check()?;
        }
        if !(0.0..=1.0).contains(&self.random_erase) {
            return Err(Error::Invalid(format!(
                "`random_erase` is a probability, in [0, 1], got {}",
                self.random_erase
            )));
        }
        if let Some(why) = self
            .auto_augment
            .and_then(|policy| self.interpolation.unsupported_by(policy))
        {
            return Err(Error::Invalid(why));
        }
        if let Some(AutoAugment::RandAugment { magnitude }) = self.auto_augment {
            if magnitude >= AutoAugment::BINS {
                return Err(Error::Invalid(format!(
                    "`ra_magnitude` {magnitude}: must be a bin of RandAugment's strengths, 0 to {}",
                    AutoAugment::BINS - 1
                )));
            }
        }
        if let Some(AutoAugment::AugMix { severity }) = self.auto_augment {
            if !(1..=AutoAugment::AUGMIX_MAX_SEVERITY).contains(&severity) {
                return Err(Error::Invalid(format!(
                    "`augmix_severity` {severity}: must be 1 to {}",
                    AutoAugment::AUGMIX_MAX_SEVERITY
                )));
            }
        }
        let alphas = [
            ("mixup_alpha", self.mixing.mixup_alpha),
            ("cutmix_alpha", self.mixing.cutmix_alpha),
        ];
        if let Some((name, a)) = alphas.iter().find(|(_, a)| !(a.is_finite() && *a >= 0.0)) {
            return Err(Error::Invalid(format!(
                "`{name}` must be 0 (off) or a positive Beta parameter, got {a}"
            )));
        }
        let at_least_one = [
            ("batch_size", self.recipe.batch_size),
            ("eval_batch_size", self.eval_batch_size),
            ("log_every", self.log_every),
            ("epochs", self.epochs.unwrap_or(1)),
            ("ra_reps", self.ra_reps.unwrap_or(1)),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(Error::Invalid(format!("`{name}` must be at least 1")));
        }
        let lr = self.recipe.lr;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::Invalid(format!(
                "`lr` must be a positive number, got {lr}"
            )));
        }
        self.recipe.check_optimizer()?;
        // the default length is known once the data is: fit checks the warm-up against it
        self.recipe
            .check_schedule(self.epochs.unwrap_or(usize::MAX))?;
        bucket_floats(self.bucket_mb)?;
        self.loss_scale.check()?;
        if self.sync_bn && self.fine_tuning.bn_eval {
            return Err(Error::Invalid(
                "`sync_bn` and `bn_eval` contradict each other: with `bn_eval` no BatchNorm uses batch statistics to share".into(),
            ));
        }
        self.fine_tuning.check()
    }

    /// The floats a gradient bucket holds at least (`bucket_mb` MiB of f32).
    pub fn bucket_floats(&self) -> Result<usize> {
        bucket_floats(self.bucket_mb)
    }

    /// The run's length in epochs when `epochs` is not given, at `steps_per_epoch`.
    pub fn epochs_or_default(&self, family: Family, steps_per_epoch: usize) -> usize {
        self.epochs.unwrap_or(match family {
            Family::Cifar => PAPER_ITERATIONS.div_ceil(steps_per_epoch),
            Family::ImageNet => IMAGENET_EPOCHS,
        })
    }
}
