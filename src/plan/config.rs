//! What a plan is built for: batch, image sizes, augmentation, normalisation, mode and optimizer.

use crate::ops::augment::AugmentConfig;
pub use crate::ops::augment::Normalize;
use crate::ops::sgd::SgdConfig;

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
    /// Zero padding before the random crop (training); 0 disables it.
    pub pad: usize,
    /// Random crop and flip in training mode.
    pub augment: bool,
    /// Per-channel normalisation of the input.
    pub normalize: Normalize,
    /// Train or eval.
    pub mode: Mode,
    /// Optimizer settings of a training plan (unused in evaluation); the learning rate is set per
    /// step with `Plan::set_step`.
    pub sgd: SgdConfig,
}

/// The padding of He et al.'s CIFAR augmentation: pad 4, random 32x32 crop, horizontal flip.
const CIFAR_PAD: usize = 4;

impl PlanConfig {
    /// A training plan for `batch` images of `size` (height, width) with He et al.'s
    /// augmentation (pad 4, random crop, horizontal flip) and the optimizer `sgd`.
    pub fn train(batch: usize, size: (usize, usize), sgd: SgdConfig, normalize: Normalize) -> Self {
        PlanConfig {
            batch,
            src: size,
            input: size,
            pad: CIFAR_PAD,
            augment: true,
            normalize,
            mode: Mode::Train,
            sgd,
        }
    }

    /// An evaluation plan for `batch` images of `size`: normalisation only, BN running statistics.
    pub fn eval(batch: usize, size: (usize, usize), normalize: Normalize) -> Self {
        PlanConfig {
            batch,
            src: size,
            input: size,
            pad: 0,
            augment: false,
            normalize,
            mode: Mode::Eval,
            sgd: SgdConfig::he2016(),
        }
    }

    /// The same plan without random crops and flips (inputs only normalised).
    pub fn without_augmentation(mut self) -> Self {
        self.augment = false;
        self
    }

    /// The input kernel's settings for a step seeded by `seed`: a random crop and flip in
    /// training, else a centre crop where the source is larger than the input.
    pub(super) fn augment_config(&self, seed: u32) -> AugmentConfig {
        let train = self.mode == Mode::Train && self.augment;
        let centre = self.src.0.saturating_sub(self.input.0) / 2;
        AugmentConfig {
            n: self.batch,
            src: self.src,
            out: self.input,
            pad: if train { self.pad } else { centre },
            train,
            seed,
            normalize: self.normalize,
        }
    }
}
