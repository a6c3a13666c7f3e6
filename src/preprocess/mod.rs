//! The input stage, in one place: how the u8 pixels of a batch become the network's input. A
//! training batch is either transformed on the CPU as it is decoded (torchvision's
//! `RandomResizedCrop` + flip for photo folders, [`transforms`]) or padded, cropped and flipped on
//! the GPU from memory (He et al.'s CIFAR augmentation, [`GpuAugment::PadCropFlip`]); then every
//! batch, training or evaluation, is normalised per channel on the GPU ([`Normalize`], with the
//! data sets' statistics here). A data source says which it wants ([`Preprocess`]); the plan's
//! input stage (`shaders/augment.wgsl`) runs it.

#[cfg(not(target_arch = "wasm32"))]
pub mod transforms;

/// Per-channel input normalisation, as torchvision's `transforms.Normalize(mean, std)` after
/// `ToTensor` (pixels scaled to [0, 1]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    /// Per-channel mean (R, G, B).
    pub mean: [f32; 3],
    /// Per-channel standard deviation (R, G, B).
    pub std: [f32; 3],
}

impl Normalize {
    /// CIFAR-10's training set channel statistics: the normalisation of every CIFAR recipe.
    pub const CIFAR10: Normalize = Normalize {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2470, 0.2435, 0.2616],
    };

    /// ImageNet's, as torchvision's pretrained models expect (`transforms.Normalize` of its
    /// reference scripts).
    pub const IMAGENET: Normalize = Normalize {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };
}

/// What the GPU does to a training batch before normalising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GpuAugment {
    /// He et al.'s CIFAR augmentation: zero padding of `pad` pixels, a random crop back to the
    /// input size, a random horizontal flip (per image, seeded by the step and its index).
    PadCropFlip {
        /// Padding on every side (4 for CIFAR).
        pad: usize,
    },
    /// Nothing: the pixels arrive transformed (a CPU transform of the data source).
    Nothing,
}

/// How a data source's training batches are prepared on the GPU: augmentation, then
/// normalisation (evaluation batches are normalised only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// What the GPU does to training batches.
    pub augment: GpuAugment,
    /// The per-channel normalisation of every batch.
    pub normalize: Normalize,
}

impl Preprocess {
    /// He et al.'s CIFAR-10 recipe: pad 4, random crop, flip, CIFAR-10's statistics.
    pub const CIFAR10: Preprocess = Preprocess {
        augment: GpuAugment::PadCropFlip { pad: 4 },
        normalize: Normalize::CIFAR10,
    };

    /// Normalisation only (pixels transformed before upload, or a fixed batch).
    pub fn normalize_only(normalize: Normalize) -> Preprocess {
        Preprocess {
            augment: GpuAugment::Nothing,
            normalize,
        }
    }

    /// He et al.'s augmentation with the normalisation `normalize`.
    pub fn pad_crop_flip(normalize: Normalize) -> Preprocess {
        Preprocess {
            normalize,
            ..Preprocess::CIFAR10
        }
    }
}
