//! CIFAR-10 as torchvision knows it: the class names in label order and the training set's
//! per-channel statistics, the normalisation of every CIFAR recipe (and of this engine's runs).

use crate::ops::augment::Normalize;

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
pub const NORMALIZE: Normalize = Normalize {
    mean: [0.4914, 0.4822, 0.4465],
    std: [0.2470, 0.2435, 0.2616],
};
