//! AutoAugment's learned policies (Cubuk et al. 2019, "AutoAugment: Learning Augmentation
//! Strategies from Data"), as torchvision's `AutoAugment._get_policies` lists them: 25 pairs of
//! steps each, a step being an operation, the probability it is applied with and its bin of
//! the 10-bin strength tables (none for the operations without a strength).
//! `tests/auto_augment_policies.rs` compares them with torchvision's lists.

use super::AugmentOp::{self, *};
use crate::preprocess::AutoAugmentPolicy;

/// One step of a sub-policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    pub op: AugmentOp,
    /// The chance that the step is applied.
    pub probability: f64,
    /// The bin of the operation's strength table (`None` for the operations without one).
    pub bin: Option<usize>,
}

/// Two steps, applied in turn.
pub type SubPolicy = [Step; 2];

const fn step(op: AugmentOp, probability: f64, bin: Option<usize>) -> Step {
    Step {
        op,
        probability,
        bin,
    }
}

const fn pair(first: Step, second: Step) -> SubPolicy {
    [first, second]
}

/// A step with a strength at `bin`.
const fn at(op: AugmentOp, probability: f64, bin: usize) -> Step {
    step(op, probability, Some(bin))
}

/// A step without a strength.
const fn plain(op: AugmentOp, probability: f64) -> Step {
    step(op, probability, None)
}

/// The sub-policies of `policy`, in torchvision's order.
pub fn sub_policies(policy: AutoAugmentPolicy) -> &'static [SubPolicy; 25] {
    match policy {
        AutoAugmentPolicy::Imagenet => &IMAGENET,
        AutoAugmentPolicy::Cifar10 => &CIFAR10,
        AutoAugmentPolicy::Svhn => &SVHN,
    }
}

const IMAGENET: [SubPolicy; 25] = [
    pair(at(Posterize, 0.4, 8), at(Rotate, 0.6, 9)),
    pair(at(Solarize, 0.6, 5), plain(AutoContrast, 0.6)),
    pair(plain(Equalize, 0.8), plain(Equalize, 0.6)),
    pair(at(Posterize, 0.6, 7), at(Posterize, 0.6, 6)),
    pair(plain(Equalize, 0.4), at(Solarize, 0.2, 4)),
    pair(plain(Equalize, 0.4), at(Rotate, 0.8, 8)),
    pair(at(Solarize, 0.6, 3), plain(Equalize, 0.6)),
    pair(at(Posterize, 0.8, 5), plain(Equalize, 1.0)),
    pair(at(Rotate, 0.2, 3), at(Solarize, 0.6, 8)),
    pair(plain(Equalize, 0.6), at(Posterize, 0.4, 6)),
    pair(at(Rotate, 0.8, 8), at(Color, 0.4, 0)),
    pair(at(Rotate, 0.4, 9), plain(Equalize, 0.6)),
    pair(plain(Equalize, 0.0), plain(Equalize, 0.8)),
    pair(plain(Invert, 0.6), plain(Equalize, 1.0)),
    pair(at(Color, 0.6, 4), at(Contrast, 1.0, 8)),
    pair(at(Rotate, 0.8, 8), at(Color, 1.0, 2)),
    pair(at(Color, 0.8, 8), at(Solarize, 0.8, 7)),
    pair(at(Sharpness, 0.4, 7), plain(Invert, 0.6)),
    pair(at(ShearX, 0.6, 5), plain(Equalize, 1.0)),
    pair(at(Color, 0.4, 0), plain(Equalize, 0.6)),
    pair(plain(Equalize, 0.4), at(Solarize, 0.2, 4)),
    pair(at(Solarize, 0.6, 5), plain(AutoContrast, 0.6)),
    pair(plain(Invert, 0.6), plain(Equalize, 1.0)),
    pair(at(Color, 0.6, 4), at(Contrast, 1.0, 8)),
    pair(plain(Equalize, 0.8), plain(Equalize, 0.6)),
];

const CIFAR10: [SubPolicy; 25] = [
    pair(plain(Invert, 0.1), at(Contrast, 0.2, 6)),
    pair(at(Rotate, 0.7, 2), at(TranslateX, 0.3, 9)),
    pair(at(Sharpness, 0.8, 1), at(Sharpness, 0.9, 3)),
    pair(at(ShearY, 0.5, 8), at(TranslateY, 0.7, 9)),
    pair(plain(AutoContrast, 0.5), plain(Equalize, 0.9)),
    pair(at(ShearY, 0.2, 7), at(Posterize, 0.3, 7)),
    pair(at(Color, 0.4, 3), at(Brightness, 0.6, 7)),
    pair(at(Sharpness, 0.3, 9), at(Brightness, 0.7, 9)),
    pair(plain(Equalize, 0.6), plain(Equalize, 0.5)),
    pair(at(Contrast, 0.6, 7), at(Sharpness, 0.6, 5)),
    pair(at(Color, 0.7, 7), at(TranslateX, 0.5, 8)),
    pair(plain(Equalize, 0.3), plain(AutoContrast, 0.4)),
    pair(at(TranslateY, 0.4, 3), at(Sharpness, 0.2, 6)),
    pair(at(Brightness, 0.9, 6), at(Color, 0.2, 8)),
    pair(at(Solarize, 0.5, 2), plain(Invert, 0.0)),
    pair(plain(Equalize, 0.2), plain(AutoContrast, 0.6)),
    pair(plain(Equalize, 0.2), plain(Equalize, 0.6)),
    pair(at(Color, 0.9, 9), plain(Equalize, 0.6)),
    pair(plain(AutoContrast, 0.8), at(Solarize, 0.2, 8)),
    pair(at(Brightness, 0.1, 3), at(Color, 0.7, 0)),
    pair(at(Solarize, 0.4, 5), plain(AutoContrast, 0.9)),
    pair(at(TranslateY, 0.9, 9), at(TranslateY, 0.7, 9)),
    pair(plain(AutoContrast, 0.9), at(Solarize, 0.8, 3)),
    pair(plain(Equalize, 0.8), plain(Invert, 0.1)),
    pair(at(TranslateY, 0.7, 9), plain(AutoContrast, 0.9)),
];

const SVHN: [SubPolicy; 25] = [
    pair(at(ShearX, 0.9, 4), plain(Invert, 0.2)),
    pair(at(ShearY, 0.9, 8), plain(Invert, 0.7)),
    pair(plain(Equalize, 0.6), at(Solarize, 0.6, 6)),
    pair(plain(Invert, 0.9), plain(Equalize, 0.6)),
    pair(plain(Equalize, 0.6), at(Rotate, 0.9, 3)),
    pair(at(ShearX, 0.9, 4), plain(AutoContrast, 0.8)),
    pair(at(ShearY, 0.9, 8), plain(Invert, 0.4)),
    pair(at(ShearY, 0.9, 5), at(Solarize, 0.2, 6)),
    pair(plain(Invert, 0.9), plain(AutoContrast, 0.8)),
    pair(plain(Equalize, 0.6), at(Rotate, 0.9, 3)),
    pair(at(ShearX, 0.9, 4), at(Solarize, 0.3, 3)),
    pair(at(ShearY, 0.8, 8), plain(Invert, 0.7)),
    pair(plain(Equalize, 0.9), at(TranslateY, 0.6, 6)),
    pair(plain(Invert, 0.9), plain(Equalize, 0.6)),
    pair(at(Contrast, 0.3, 3), at(Rotate, 0.8, 4)),
    pair(plain(Invert, 0.8), at(TranslateY, 0.0, 2)),
    pair(at(ShearY, 0.7, 6), at(Solarize, 0.4, 8)),
    pair(plain(Invert, 0.6), at(Rotate, 0.8, 4)),
    pair(at(ShearY, 0.3, 7), at(TranslateX, 0.9, 3)),
    pair(at(ShearX, 0.1, 6), plain(Invert, 0.6)),
    pair(at(Solarize, 0.7, 2), at(TranslateY, 0.6, 7)),
    pair(at(ShearY, 0.8, 4), plain(Invert, 0.8)),
    pair(at(ShearX, 0.7, 9), at(TranslateY, 0.8, 3)),
    pair(at(ShearY, 0.8, 5), plain(AutoContrast, 0.7)),
    pair(at(ShearX, 0.7, 2), plain(Invert, 0.1)),
];
