//! What a plan is built for: batch, image sizes, augmentation, normalisation, mode and optimizer.

use crate::ops::amp::LossScale;
use crate::ops::augment::AugmentConfig;
use crate::ops::sgd::SgdConfig;
pub use crate::preprocess::Normalize;
use crate::preprocess::{BatchMixing, GpuAugment, MixDraw, Preprocess};

/// Training (batch statistics, backward, SGD) or evaluation (running statistics, forward only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward, backward and optimizer step.
    Train,
    /// Forward with BN running statistics; loss and accuracy only.
    Eval,
}

/// What a plan is built for.
#[derive(Debug, Clone)]
pub struct PlanConfig {
    /// Images per step.
    pub batch: usize,
    /// Source image size (height, width) of the u8 pixels uploaded per step.
    pub src: (usize, usize),
    /// Network input size (height, width) after the crop.
    pub input: (usize, usize),
    /// What the input stage does: in training, the GPU's augmentation; always, the per-channel
    /// normalisation.
    pub preprocess: Preprocess,
    /// Train or eval.
    pub mode: Mode,
    /// Optimizer settings of a training plan (unused in evaluation); the learning rate is set per
    /// step with `Plan::set_step`.
    pub sgd: SgdConfig,
    /// Frozen layers, BatchNorm on running statistics, per-group learning rates, label smoothing.
    pub fine_tune: FineTune,
    /// Where this plan's batch sits in a data-parallel step (one rank's shard of the global
    /// batch); the whole batch in one process.
    pub shard: Shard,
    /// Dynamic loss scaling (torch.amp.GradScaler) in training; `None`: none (fp32's default).
    pub loss_scale: Option<LossScale>,
    /// The gradients clipped to this global L2 norm before each step
    /// (torch.nn.utils.clip_grad_norm_, torchvision's `--clip-grad-norm`); `None`: not clipped.
    pub clip_grad_norm: Option<f32>,
}

/// One rank's part of a data-parallel step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// The index of this batch's first image in the global batch: the random crops are drawn
    /// per image of the global batch, as one process would draw them.
    pub first: usize,
    /// How many ranks the training BatchNorms compute their batch statistics across (PyTorch's
    /// SyncBatchNorm); 1: over this batch alone (DDP's default, and one process).
    pub bn_ranks: usize,
}

impl Shard {
    /// One process: the whole batch.
    pub const WHOLE: Shard = Shard {
        first: 0,
        bn_ranks: 1,
    };
}

/// How a training plan fine-tunes: which layers stay fixed, which BatchNorms run on their
/// running statistics, how fast the body learns against the head, and the loss's label smoothing.
#[derive(Debug, Clone, PartialEq)]
pub struct FineTune {
    /// state_dict prefixes (`conv1`, `bn1`, `layer1`, `layer4.1`, `fc`) whose parameters and
    /// BatchNorm statistics stay fixed: no update, and their BatchNorms normalise with the
    /// running statistics.
    pub frozen: Vec<String>,
    /// Every BatchNorm normalises with its running statistics, which stay fixed (PyTorch's
    /// `module.eval()` on the BN layers: small-batch fine-tuning).
    pub bn_eval: bool,
    /// Learning-rate multiplier of every parameter outside `fc`.
    pub backbone_lr: f32,
    /// `label_smoothing` of the training loss (PyTorch's CrossEntropyLoss).
    pub label_smoothing: f32,
}

impl Default for FineTune {
    /// Plain training: nothing frozen, batch statistics, one learning rate, no smoothing.
    fn default() -> Self {
        FineTune {
            frozen: Vec::new(),
            bn_eval: false,
            backbone_lr: 1.0,
            label_smoothing: 0.0,
        }
    }
}

impl FineTune {
    /// Whether the layer named `name` (a state_dict prefix) is frozen.
    pub fn is_frozen(&self, name: &str) -> bool {
        self.frozen.iter().any(|p| {
            name == p
                || (name.starts_with(p.as_str()) && name.as_bytes().get(p.len()) == Some(&b'.'))
        })
    }

    /// Whether the BatchNorm `name` normalises with its (fixed) running statistics in training.
    pub fn bn_fixed(&self, name: &str) -> bool {
        self.bn_eval || self.is_frozen(name)
    }

    /// The learning-rate multiplier of layer `name`'s parameters; None when frozen.
    pub fn lr_scale(&self, name: &str) -> Option<f32> {
        match (self.is_frozen(name), name == "fc") {
            (true, _) => None,
            (false, true) => Some(1.0),
            (false, false) => Some(self.backbone_lr),
        }
    }
}

impl PlanConfig {
    /// A training plan for `batch` images of `size` (height, width), prepared as `preprocess`
    /// says (e.g. [`Preprocess::CIFAR10`]: He et al.'s pad 4, random crop and flip), with the
    /// optimizer `sgd`.
    pub fn train(
        batch: usize,
        size: (usize, usize),
        sgd: SgdConfig,
        preprocess: Preprocess,
    ) -> Self {
        PlanConfig {
            batch,
            src: size,
            input: size,
            preprocess,
            mode: Mode::Train,
            sgd,
            fine_tune: FineTune::default(),
            shard: Shard::WHOLE,
            loss_scale: None,
            clip_grad_norm: None,
        }
    }

    /// An evaluation plan for `batch` images of `size`: normalisation only, BN running statistics.
    pub fn eval(batch: usize, size: (usize, usize), normalize: Normalize) -> Self {
        PlanConfig {
            batch,
            src: size,
            input: size,
            preprocess: Preprocess::normalize_only(normalize),
            mode: Mode::Eval,
            sgd: SgdConfig::he2016(),
            fine_tune: FineTune::default(),
            shard: Shard::WHOLE,
            loss_scale: None,
            clip_grad_norm: None,
        }
    }

    /// The input kernel's settings for a step seeded by `seed`: a random crop and flip in
    /// training, else a centre crop where the source is larger than the input.
    pub(super) fn augment_config(&self, seed: u32) -> AugmentConfig {
        let centre = self.src.0.saturating_sub(self.input.0) / 2;
        let (train, pad) = match (self.mode, self.preprocess.augment) {
            (Mode::Train, GpuAugment::PadCropFlip { pad }) => (true, pad),
            _ => (false, centre),
        };
        AugmentConfig {
            n: self.batch,
            src: self.src,
            out: self.input,
            pad,
            train,
            seed,
            first: self.shard.first,
            normalize: self.preprocess.normalize,
            erase: self.erases(),
            mix: MixDraw::Nothing,
        }
    }

    /// Whether the input stage erases random rectangles (training with `preprocess.erase`).
    pub(super) fn erases(&self) -> bool {
        self.mode == Mode::Train && self.preprocess.erase.is_some()
    }

    /// The MixUp/CutMix of a training plan's batches (`preprocess.mix`); evaluation: none.
    pub(super) fn mixing(&self) -> Option<BatchMixing> {
        self.preprocess.mix.filter(|_| self.mode == Mode::Train)
    }
}
