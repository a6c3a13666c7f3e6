//! CIFAR-10 as torchvision knows it: the class names in label order and the training set's
//! per-channel statistics, the normalisation of every CIFAR recipe (and of this engine's runs).

use crate::preprocess::Normalize;

/// The ten classes in label order (`torchvision.datasets.CIFAR10.classes`).
pub const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// The training set's channel means and standard deviations.
pub const NORMALIZE: Normalize = Normalize::CIFAR10;
