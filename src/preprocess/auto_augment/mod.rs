//! torchvision's automatic augmentation policies (`--auto-augment` of its reference scripts),
//! run on each training image after its crop and flip:
//!
//! - `ta_wide`, `TrivialAugmentWide` (Müller and Hutter 2021): one operation drawn uniformly
//!   from fourteen, at a strength drawn uniformly from 31 bins (and a sign, for the signed
//!   ones);
//! - `ra`, `RandAugment` (Cubuk et al. 2020): two operations drawn in turn from the same
//!   fourteen, each at the fixed bin `--ra-magnitude` (9) of its own tables and a random sign;
//! - `imagenet`, `cifar10`, `svhn`, `AutoAugment` (Cubuk et al. 2019) with the policy it learned
//!   on that data set ([`policies`]): one of 25 pairs of operations, each applied with its own
//!   probability at its own bin of 10, with a random sign.
//! - `augmix`, `AugMix` (Hendrycks et al. 2020, [`augmix`]): three chains of one to three
//!   operations of thirteen, each at one of the `--augmix-severity` (3) weakest of 10 bins,
//!   mixed with random weights and blended with the image. torchvision applies it to a uint8
//!   tensor, so its operations are the tensor ones of [`tensor_ops`].
//!
//! The other policies' operations are Pillow's ([`super::pil`]), warped with `--interpolation`
//! (bilinear, as the reference recipe's default); the strengths are torchvision's tables, in float32 as `torch.linspace`
//! makes them (TrivialAugment's translation bin 15 is 15.999999 pixels, so it moves the image
//! 15).

use image::RgbImage;

pub mod augmix;
pub mod policies;
pub mod tensor_ops;

use super::{pil, AutoAugment, AutoAugmentPolicy, Interpolation};
use crate::rng::SplitMix64;

/// One of torchvision's augmentation operations: TrivialAugmentWide's fourteen in its order, and
/// `Invert`, which only AutoAugment's policies use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AugmentOp {
    Identity,
    ShearX,
    ShearY,
    TranslateX,
    TranslateY,
    Rotate,
    Brightness,
    Color,
    Contrast,
    Sharpness,
    Posterize,
    Solarize,
    AutoContrast,
    Equalize,
    Invert,
}

/// torchvision's `num_magnitude_bins` of TrivialAugmentWide and RandAugment.
pub const BINS: usize = AutoAugment::BINS;

/// The bins of AutoAugment's and AugMix's strength tables.
pub const LEARNED_BINS: usize = 10;

// AugMix's severity picks how many of these bins its operations draw from
const _: () = assert!(LEARNED_BINS == AutoAugment::AUGMIX_MAX_SEVERITY);

impl AugmentOp {
    /// The operations in torchvision's `_augmentation_space` order (the draw's index).
    pub const ALL: [AugmentOp; 14] = [
        AugmentOp::Identity,
        AugmentOp::ShearX,
        AugmentOp::ShearY,
        AugmentOp::TranslateX,
        AugmentOp::TranslateY,
        AugmentOp::Rotate,
        AugmentOp::Brightness,
        AugmentOp::Color,
        AugmentOp::Contrast,
        AugmentOp::Sharpness,
        AugmentOp::Posterize,
        AugmentOp::Solarize,
        AugmentOp::AutoContrast,
        AugmentOp::Equalize,
    ];

    /// torchvision's name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            AugmentOp::Identity => "Identity",
            AugmentOp::ShearX => "ShearX",
            AugmentOp::ShearY => "ShearY",
            AugmentOp::TranslateX => "TranslateX",
            AugmentOp::TranslateY => "TranslateY",
            AugmentOp::Rotate => "Rotate",
            AugmentOp::Brightness => "Brightness",
            AugmentOp::Color => "Color",
            AugmentOp::Contrast => "Contrast",
            AugmentOp::Sharpness => "Sharpness",
            AugmentOp::Posterize => "Posterize",
            AugmentOp::Solarize => "Solarize",
            AugmentOp::AutoContrast => "AutoContrast",
            AugmentOp::Equalize => "Equalize",
            AugmentOp::Invert => "Invert",
        }
    }

    /// Whether a strength is drawn (torchvision's operations without one have a 0-d table).
    pub fn has_magnitude(self) -> bool {
        !matches!(
            self,
            AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize | AugmentOp::Invert
        )
    }

    /// Whether the strength's sign is drawn too.
    pub fn signed(self) -> bool {
        self.has_magnitude() && !matches!(self, AugmentOp::Posterize | AugmentOp::Solarize)
    }

    /// The strength of bin `bin` in `space`'s tables, as torchvision holds it.
    pub fn magnitude(self, space: Space, bin: usize) -> f64 {
        let bins = space.bins();
        let linspace = |start: f32, end: f32| torch_linspace(start, end, bins, bin) as f64;
        // TrivialAugmentWide's widest strengths, and those of RandAugment and AutoAugment (their
        // translations a share of the image, 150/331 as in the AutoAugment paper's 331-pixel
        // images); posterize's bits go from 8 down to 2, or to 4
        let (shear, enhance, rotate, posterize_bits) = match space {
            Space::TrivialAugmentWide => (0.99, 0.99, 135.0, 6.0),
            _ => (0.3, 0.9, 30.0, 4.0),
        };
        let (height, width) = match space {
            Space::TrivialAugmentWide => (0, 0),
            Space::RandAugment { height, width }
            | Space::AutoAugment { height, width }
            | Space::AugMix { height, width } => (height, width),
        };
        // AugMix's translations go to a third of the image
        let translate = |side: usize| match space {
            Space::TrivialAugmentWide => 32.0,
            Space::AugMix { .. } => (side as f64 / 3.0) as f32,
            _ => (150.0 / 331.0 * side as f64) as f32,
        };
        match self {
            AugmentOp::Identity
            | AugmentOp::AutoContrast
            | AugmentOp::Equalize
            | AugmentOp::Invert => 0.0,
            AugmentOp::TranslateX => linspace(0.0, translate(width)),
            AugmentOp::TranslateY => linspace(0.0, translate(height)),
            AugmentOp::ShearX | AugmentOp::ShearY => linspace(0.0, shear),
            AugmentOp::Rotate => linspace(0.0, rotate),
            AugmentOp::Solarize => linspace(255.0, 0.0),
            // 8 - round(bin / ((bins - 1) / posterize_bits)), the step in float64 as Python
            // divides, the quotient in float32 as torch divides an integer tensor
            // (AugMix's: 4 - round(bin / ((bins - 1) / 4)), from 4 bits down to 0)
            AugmentOp::Posterize => {
                let step = (bins - 1) as f64 / posterize_bits;
                let top = match space {
                    Space::AugMix { .. } => 4.0,
                    _ => 8.0,
                };
                top - (bin as f32 / step as f32).round_ties_even() as f64
            }
            AugmentOp::Brightness
            | AugmentOp::Color
            | AugmentOp::Contrast
            | AugmentOp::Sharpness => linspace(0.0, enhance),
        }
    }
}

/// Whose strength tables: torchvision's `_augmentation_space` of each policy (RandAugment's
/// translations depend on the image's size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    TrivialAugmentWide,
    RandAugment { height: usize, width: usize },
    AutoAugment { height: usize, width: usize },
    AugMix { height: usize, width: usize },
}

impl Space {
    /// The bins of the space's tables.
    pub fn bins(self) -> usize {
        match self {
            Space::AutoAugment { .. } | Space::AugMix { .. } => LEARNED_BINS,
            _ => BINS,
        }
    }
}

/// Element `i` of `torch.linspace(start, end, steps)` in float32: from `start` up to the
/// middle, from `end` back after it, each a fused multiply-add of the step (as PyTorch's CPU
/// kernel computes it on x86-64).
pub(crate) fn torch_linspace(start: f32, end: f32, steps: usize, i: usize) -> f32 {
    let step = (end - start) / (steps - 1) as f32;
    match i < steps / 2 {
        true => step.mul_add(i as f32, start),
        false => (-step).mul_add((steps - 1 - i) as f32, end),
    }
}

/// One draw of TrivialAugmentWide: the operation, then its bin, then its sign, in torchvision's
/// order (operations without a strength draw nothing more).
pub fn trivial_augment_draw(rng: &mut SplitMix64) -> (AugmentOp, f64) {
    let op = AugmentOp::ALL[rng.below(AugmentOp::ALL.len() as u64) as usize];
    if !op.has_magnitude() {
        return (op, 0.0);
    }
    let bin = rng.below(BINS as u64) as usize;
    signed(op, op.magnitude(Space::TrivialAugmentWide, bin), rng)
}

/// One of RandAugment's operations on an image of `size` (height, width): the operation, then
/// its sign, the strength of bin `bin`.
pub fn rand_augment_draw(
    rng: &mut SplitMix64,
    bin: usize,
    (height, width): (usize, usize),
) -> (AugmentOp, f64) {
    let op = AugmentOp::ALL[rng.below(AugmentOp::ALL.len() as u64) as usize];
    if !op.has_magnitude() {
        return (op, 0.0);
    }
    signed(
        op,
        op.magnitude(Space::RandAugment { height, width }, bin),
        rng,
    )
}

/// `magnitude`, negated on a coin's draw for the signed operations (`magnitude *= -1.0`:
/// bin 0 becomes -0.0, as in torchvision).
fn signed(op: AugmentOp, magnitude: f64, rng: &mut SplitMix64) -> (AugmentOp, f64) {
    let negative = op.signed() && rng.below(2) == 1;
    (op, if negative { -magnitude } else { magnitude })
}

/// `img` after `op` at strength `magnitude`: torchvision's `_apply_op` on a PIL image, its warps
/// resampled with `interpolation` (nearest, bilinear or bicubic), black fill.
pub fn apply(
    img: RgbImage,
    op: AugmentOp,
    magnitude: f64,
    interpolation: Interpolation,
) -> RgbImage {
    let shear = || pil::degrees(magnitude.atan());
    let (w, h) = (img.width() as f64, img.height() as f64);
    let centre = (w * 0.5, h * 0.5);
    match op {
        AugmentOp::Identity => img,
        AugmentOp::ShearX => {
            let m = pil::inverse_affine((0.0, 0.0), 0.0, (0.0, 0.0), (shear(), 0.0));
            pil::affine(&img, &m, interpolation)
        }
        AugmentOp::ShearY => {
            let m = pil::inverse_affine((0.0, 0.0), 0.0, (0.0, 0.0), (0.0, shear()));
            pil::affine(&img, &m, interpolation)
        }
        AugmentOp::TranslateX => {
            let m = pil::inverse_affine(centre, 0.0, (magnitude.trunc(), 0.0), (0.0, 0.0));
            pil::affine(&img, &m, interpolation)
        }
        AugmentOp::TranslateY => {
            let m = pil::inverse_affine(centre, 0.0, (0.0, magnitude.trunc()), (0.0, 0.0));
            pil::affine(&img, &m, interpolation)
        }
        AugmentOp::Rotate => pil::rotate(&img, magnitude, interpolation),
        AugmentOp::Brightness => {
            let black = RgbImage::new(img.width(), img.height());
            pil::blend(&black, &img, 1.0 + magnitude)
        }
        AugmentOp::Color => pil::blend(&pil::grayscale(&img), &img, 1.0 + magnitude),
        AugmentOp::Contrast => pil::blend(&pil::mean_gray(&img), &img, 1.0 + magnitude),
        AugmentOp::Sharpness => pil::blend(&pil::smooth(&img), &img, 1.0 + magnitude),
        AugmentOp::Posterize => {
            let mask = !((1u16 << (8 - magnitude as u32)) - 1) as u8;
            pil::point_all(&img, |v| v & mask)
        }
        AugmentOp::Solarize => {
            pil::point_all(&img, |v| if (v as f64) < magnitude { v } else { 255 - v })
        }
        AugmentOp::AutoContrast => pil::autocontrast(&img),
        AugmentOp::Equalize => pil::equalize(&img),
        AugmentOp::Invert => pil::point_all(&img, |v| 255 - v),
    }
}

/// `policy` on `img`, its warps resampled with `interpolation`, drawing from `rng`.
///
/// # Panics
/// Where `interpolation.unsupported_by(policy)` says the policy cannot warp with it.
pub fn auto_augment(
    policy: AutoAugment,
    img: RgbImage,
    interpolation: Interpolation,
    rng: &mut SplitMix64,
) -> RgbImage {
    let apply = |img, (op, magnitude)| apply(img, op, magnitude, interpolation);
    match policy {
        AutoAugment::TrivialAugmentWide => apply(img, trivial_augment_draw(rng)),
        AutoAugment::RandAugment { magnitude: bin } => {
            let size = (img.height() as usize, img.width() as usize);
            (0..RAND_AUGMENT_OPS).fold(img, |img, _| apply(img, rand_augment_draw(rng, bin, size)))
        }
        AutoAugment::Learned(policy) => {
            let size = (img.height() as usize, img.width() as usize);
            learned_draw(rng, policy, size)
                .into_iter()
                .flatten()
                .fold(img, apply)
        }
        AutoAugment::AugMix { severity } => augmix::augmix(&img, severity, interpolation, rng),
    }
}

/// One draw of AutoAugment's `policy` for an image of `size` (height, width): its two steps
/// ([`learned_steps`]). torchvision's order: the pair, then both coins, then both signs, all
/// drawn every time.
pub fn learned_draw(
    rng: &mut SplitMix64,
    policy: AutoAugmentPolicy,
    size: (usize, usize),
) -> [Option<(AugmentOp, f64)>; 2] {
    let pair = rng.below(policies::sub_policies(policy).len() as u64) as usize;
    let coins = [rng.uniform(), rng.uniform()];
    let negative = [rng.below(2) == 1, rng.below(2) == 1];
    learned_steps(policy, pair, coins, negative, size)
}

/// The steps of `policy`'s sub-policy `pair` on an image of (`height`, `width`): each the
/// operation and its strength where its coin (uniform in [0, 1)) is at most its probability,
/// `None` where not; the strength negated where `negative` says so and the operation is signed
/// (torchvision's `forward` with `get_params`' draws).
pub fn learned_steps(
    policy: AutoAugmentPolicy,
    pair: usize,
    coins: [f64; 2],
    negative: [bool; 2],
    (height, width): (usize, usize),
) -> [Option<(AugmentOp, f64)>; 2] {
    let steps = policies::sub_policies(policy)[pair];
    std::array::from_fn(|i| {
        let step = steps[i];
        (coins[i] <= step.probability).then(|| {
            let space = Space::AutoAugment { height, width };
            let magnitude = step.bin.map_or(0.0, |bin| step.op.magnitude(space, bin));
            let flip = step.op.signed() && negative[i];
            (step.op, if flip { -magnitude } else { magnitude })
        })
    })
}

/// RandAugment's operations per image (torchvision's `num_ops`, which its script keeps at 2).
pub const RAND_AUGMENT_OPS: usize = 2;
