//! The input stage, in one place: how the u8 pixels of a batch become the network's input. A
//! training batch is either transformed on the CPU as it is decoded (torchvision's
//! `RandomResizedCrop` + flip for photo folders, [`transforms`]) or padded, cropped and flipped on
//! the GPU from memory (He et al.'s CIFAR augmentation, [`GpuAugment::PadCropFlip`]); then every
//! batch, training or evaluation, is normalised per channel on the GPU ([`Normalize`], with the
//! data sets' statistics here), and in training optionally erased in random rectangles
//! ([`RandomErasing`]). A data source says which it wants ([`Preprocess`]); the plan's input
//! stage (`shaders/augment.wgsl`) runs it. An automatic augmentation ([`AutoAugment`]) is a CPU
//! step after the crop and flip: with one, images in memory are cropped and flipped on the CPU
//! too (`data::auto_augmented`), and the GPU only normalises them.

#[cfg(not(target_arch = "wasm32"))]
pub mod auto_augment;
pub mod mix;
#[cfg(not(target_arch = "wasm32"))]
pub mod pil;
#[cfg(not(target_arch = "wasm32"))]
pub mod resample;
#[cfg(not(target_arch = "wasm32"))]
pub mod transforms;

pub use mix::{BatchMixing, MixDraw};

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

/// An automatic augmentation policy of torchvision's reference scripts (`--auto-augment`), run
/// on the CPU on each training image after its crop and flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoAugment {
    /// `TrivialAugmentWide` (`ta_wide`): one of fourteen operations at a random strength
    /// (`auto_augment`), the policy of torchvision's ResNet-50 V2 recipe.
    TrivialAugmentWide,
    /// `RandAugment` (`ra`): two of the fourteen operations in turn, each at bin `magnitude`
    /// (0 to 30) of its strengths (torchvision's `--ra-magnitude`, 9).
    RandAugment {
        /// The bin of every operation's strength.
        magnitude: usize,
    },
    /// `AutoAugment` with one of its learned policies (`imagenet`, `cifar10`, `svhn`): one of
    /// 25 pairs of operations, each applied with its own probability at its own strength.
    Learned(AutoAugmentPolicy),
    /// `AugMix` (`augmix`): three chains of one to three of thirteen operations, at one of the
    /// `severity` weakest of ten strengths (torchvision's `--augmix-severity`, 3), mixed with
    /// random weights and blended with the image.
    AugMix {
        /// How many of the weakest strengths the operations draw from, 1 to 10.
        severity: usize,
    },
}

/// The policies Cubuk et al. (2019) learned on three data sets (torchvision's
/// `AutoAugmentPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoAugmentPolicy {
    Imagenet,
    Cifar10,
    Svhn,
}

impl AutoAugment {
    /// torchvision's `--ra-magnitude` default.
    pub const RA_MAGNITUDE: usize = 9;
    /// torchvision's `--augmix-severity` default.
    pub const AUGMIX_SEVERITY: usize = 3;
    /// The strongest severity (the bins of AugMix's strength tables, AutoAugment's 10).
    pub const AUGMIX_MAX_SEVERITY: usize = 10;
    /// The bins of TrivialAugment's and RandAugment's strength tables (torchvision's
    /// `num_magnitude_bins`; AutoAugment's have 10).
    pub const BINS: usize = 31;

    /// The policy's name in torchvision's `--auto-augment`.
    pub fn name(self) -> &'static str {
        match self {
            AutoAugment::TrivialAugmentWide => "ta_wide",
            AutoAugment::RandAugment { .. } => "ra",
            AutoAugment::Learned(AutoAugmentPolicy::Imagenet) => "imagenet",
            AutoAugment::Learned(AutoAugmentPolicy::Cifar10) => "cifar10",
            AutoAugment::Learned(AutoAugmentPolicy::Svhn) => "svhn",
            AutoAugment::AugMix { .. } => "augmix",
        }
    }
}

impl std::str::FromStr for AutoAugment {
    type Err = String;
    /// torchvision's names; `ra` at its default magnitude.
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ta_wide" => Ok(AutoAugment::TrivialAugmentWide),
            "ra" => Ok(AutoAugment::RandAugment {
                magnitude: AutoAugment::RA_MAGNITUDE,
            }),
            "imagenet" => Ok(AutoAugment::Learned(AutoAugmentPolicy::Imagenet)),
            "cifar10" => Ok(AutoAugment::Learned(AutoAugmentPolicy::Cifar10)),
            "svhn" => Ok(AutoAugment::Learned(AutoAugmentPolicy::Svhn)),
            "augmix" => Ok(AutoAugment::AugMix {
                severity: AutoAugment::AUGMIX_SEVERITY,
            }),
            _ => Err(format!(
                "unknown policy '{s}': the choices are ta_wide (TrivialAugmentWide), ra \
                 (RandAugment), imagenet, cifar10 or svhn (AutoAugment's policies) and augmix \
                 (AugMix)"
            )),
        }
    }
}

/// How photos are resampled (torchvision's `--interpolation`, its `InterpolationMode` for PIL
/// images): by the resizes of `RandomResizedCrop` and `Resize`, and by the shears, translations
/// and rotations of the automatic augmentations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Interpolation {
    /// The nearest pixel (Pillow's `NEAREST`).
    Nearest,
    /// Linear (Pillow's `BILINEAR`, antialiased when shrinking): torchvision's default.
    #[default]
    Bilinear,
    /// Cubic (Pillow's `BICUBIC`: Keys' a = -0.5 when resizing, -1 in the warps).
    Bicubic,
    /// Pillow's `BOX` (resizing only).
    Box,
    /// Pillow's `HAMMING` (resizing only).
    Hamming,
    /// Pillow's `LANCZOS`, 3 lobes (resizing only).
    Lanczos,
}

impl Interpolation {
    /// Every mode, in torchvision's order of `InterpolationMode`'s PIL members.
    pub const ALL: [Interpolation; 6] = [
        Interpolation::Nearest,
        Interpolation::Bilinear,
        Interpolation::Bicubic,
        Interpolation::Box,
        Interpolation::Hamming,
        Interpolation::Lanczos,
    ];

    /// torchvision's name (`InterpolationMode(name)`).
    pub fn name(self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
            Interpolation::Box => "box",
            Interpolation::Hamming => "hamming",
            Interpolation::Lanczos => "lanczos",
        }
    }

    /// Why `policy` cannot warp with this mode, as torchvision refuses it: Pillow's
    /// `Image.transform` takes nearest, bilinear and bicubic only, and AugMix's tensor
    /// operations nearest and bilinear only.
    pub fn unsupported_by(self, policy: AutoAugment) -> Option<String> {
        let warps = match policy {
            AutoAugment::AugMix { .. } => &[Interpolation::Nearest, Interpolation::Bilinear][..],
            _ => &[
                Interpolation::Nearest,
                Interpolation::Bilinear,
                Interpolation::Bicubic,
            ][..],
        };
        let names: Vec<&str> = warps.iter().map(|m| m.name()).collect();
        let (last, others) = names.split_last().expect("every policy warps");
        (!warps.contains(&self)).then(|| {
            format!(
                "`interpolation` {} cannot warp the images of `auto_augment` {}: it takes {} or {last}",
                self.name(),
                policy.name(),
                others.join(", ")
            )
        })
    }
}

impl std::str::FromStr for Interpolation {
    type Err = String;
    /// torchvision's names, lower case (as `InterpolationMode(name)` takes them).
    fn from_str(s: &str) -> Result<Self, String> {
        Interpolation::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Interpolation::ALL.iter().map(|m| m.name()).collect();
                format!(
                    "unknown interpolation '{s}': the choices are {}",
                    names.join(", ")
                )
            })
    }
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

/// torchvision's `transforms.RandomErasing(p, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0)`,
/// the last transform of its training recipe (`--random-erase`): with probability `p` a
/// rectangle of the normalised image is set to 0. The rectangles are drawn on the CPU per image
/// of the global batch ([`RandomErasing::rect`], seeded like the crops) and erased on the GPU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomErasing {
    /// The probability that an image is erased.
    pub p: f32,
}

impl RandomErasing {
    /// The range of the erased share of the image's area (torchvision's `scale`).
    pub const SCALE: (f64, f64) = (0.02, 0.33);
    /// The range of the rectangle's height over its width (torchvision's `ratio`), drawn
    /// uniformly in its logarithm.
    pub const RATIO: (f64, f64) = (0.3, 3.3);
    /// How many rectangles are drawn before giving up on one that fits (torchvision's 10).
    const ATTEMPTS: usize = 10;
    /// The stream of [`crate::rng::item_seed`] the rectangles are drawn from.
    const STREAM: u64 = 0x45_52_41_53_45;

    /// The rectangle `[top, left, height, width]` erased in image `index` of a step seeded by
    /// `seed`, in an image of `size` (height, width); `None`: the image is kept whole (drawn
    /// with probability 1 - p, or no rectangle fitted in 10 attempts). torchvision's
    /// `RandomErasing.get_params`, with Python's rounding of halves to even.
    pub fn rect(&self, seed: u64, index: u64, (h, w): (usize, usize)) -> Option<[u32; 4]> {
        let mut rng = crate::rng::SplitMix64(crate::rng::item_seed(seed, Self::STREAM, index));
        if rng.uniform() >= self.p as f64 {
            return None;
        }
        let area = (h * w) as f64;
        let (lo, hi) = (Self::RATIO.0.ln(), Self::RATIO.1.ln());
        for _ in 0..Self::ATTEMPTS {
            let erased = area * rng.uniform_in(Self::SCALE.0, Self::SCALE.1);
            let aspect = rng.uniform_in(lo, hi).exp();
            let eh = (erased * aspect).sqrt().round_ties_even() as usize;
            let ew = (erased / aspect).sqrt().round_ties_even() as usize;
            if eh >= h || ew >= w {
                continue;
            }
            let top = rng.below((h - eh + 1) as u64) as u32;
            let left = rng.below((w - ew + 1) as u64) as u32;
            return Some([top, left, eh as u32, ew as u32]);
        }
        None
    }
}

/// How a data source's training batches are prepared on the GPU: augmentation, then
/// normalisation (evaluation batches are normalised only), then in training random erasing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// What the GPU does to training batches.
    pub augment: GpuAugment,
    /// The per-channel normalisation of every batch.
    pub normalize: Normalize,
    /// Random erasing of training batches after the normalisation (`None`: none).
    pub erase: Option<RandomErasing>,
    /// MixUp or CutMix of training batches after the erasing (`None`: none).
    pub mix: Option<BatchMixing>,
}

impl Preprocess {
    /// He et al.'s CIFAR-10 recipe: pad 4, random crop, flip, CIFAR-10's statistics.
    pub const CIFAR10: Preprocess = Preprocess {
        augment: GpuAugment::PadCropFlip { pad: 4 },
        normalize: Normalize::CIFAR10,
        erase: None,
        mix: None,
    };

    /// Normalisation only (pixels transformed before upload, or a fixed batch).
    pub fn normalize_only(normalize: Normalize) -> Preprocess {
        Preprocess {
            augment: GpuAugment::Nothing,
            normalize,
            erase: None,
            mix: None,
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
