//! torchvision's `AugMix` (Hendrycks et al. 2020), `--auto-augment augmix` of its reference
//! scripts: three chains of one to three operations each, drawn from thirteen at one of the
//! `severity` weakest of ten strengths, mixed with Dirichlet(1, 1, 1) weights, and the mixture
//! blended with the original image by a Beta(1, 1) weight:
//!
//! `out = trunc(m0 * img + sum_i (w_i * m1) * chain_i(img))`, in float32.
//!
//! torchvision runs AugMix on the uint8 tensor it makes of a PIL image, so the operations are
//! its tensor ones ([`super::tensor_ops`]), not Pillow's as in the other policies.

use image::RgbImage;

use super::{tensor_ops, AugmentOp, Space, LEARNED_BINS};
use crate::preprocess::Interpolation;
use crate::rng::SplitMix64;

/// AugMix's operations in the order of its `_augmentation_space` (the draw's index): the
/// geometric and histogram ones, then the four enhancements of `all_ops=True`.
pub const OPS: [AugmentOp; 13] = [
    AugmentOp::ShearX,
    AugmentOp::ShearY,
    AugmentOp::TranslateX,
    AugmentOp::TranslateY,
    AugmentOp::Rotate,
    AugmentOp::Posterize,
    AugmentOp::Solarize,
    AugmentOp::AutoContrast,
    AugmentOp::Equalize,
    AugmentOp::Brightness,
    AugmentOp::Color,
    AugmentOp::Contrast,
    AugmentOp::Sharpness,
];

/// The chains mixed (torchvision's `mixture_width`).
pub const WIDTH: usize = 3;

/// The most operations in a chain (`chain_depth=-1`: a depth drawn from 1 to 3).
pub const MAX_DEPTH: usize = 3;

/// One draw of AugMix for an image: the weights and the chains' operations with their
/// strengths.
#[derive(Debug, Clone, PartialEq)]
pub struct AugMixDraw {
    /// The Beta(1, 1) pair: the original image's weight, then the chains' share.
    pub beta: [f32; 2],
    /// The chains' Dirichlet(1, 1, 1) weights (each times `beta[1]` in the mix).
    pub mixing: [f32; WIDTH],
    /// Each chain's operations and strengths, applied in turn.
    pub chains: [Vec<(AugmentOp, f64)>; WIDTH],
}

/// One draw for an image of `size` (height, width) at `severity`, in torchvision's order: the
/// two Dirichlet samples, then per chain its depth and per operation the operation, its bin
/// (operations with a strength) and its sign (signed ones).
///
/// # Panics
///
/// If `severity` is not 1 to 10 (the training configuration's check says so first).
pub fn draw(rng: &mut SplitMix64, severity: usize, (height, width): (usize, usize)) -> AugMixDraw {
    assert!(
        (1..=LEARNED_BINS).contains(&severity),
        "AugMix's severity {severity} is not 1 to {LEARNED_BINS}"
    );
    let [b0, b1] = dirichlet_ones::<2>(rng);
    let mixing = dirichlet_ones::<WIDTH>(rng);
    let space = Space::AugMix { height, width };
    let chains = std::array::from_fn(|_| {
        let depth = 1 + rng.below(MAX_DEPTH as u64) as usize;
        (0..depth)
            .map(|_| {
                let op = OPS[rng.below(OPS.len() as u64) as usize];
                if !op.has_magnitude() {
                    return (op, 0.0);
                }
                let magnitude = op.magnitude(space, rng.below(severity as u64) as usize);
                let negative = op.signed() && rng.below(2) == 1;
                (op, if negative { -magnitude } else { magnitude })
            })
            .collect()
    });
    AugMixDraw {
        beta: [b0, b1],
        mixing,
        chains,
    }
}

/// A Dirichlet sample with every concentration 1 (AugMix's `alpha`): exponential draws,
/// normalised (in float64, then rounded to float32 as torch's sample is).
fn dirichlet_ones<const N: usize>(rng: &mut SplitMix64) -> [f32; N] {
    let gammas: [f64; N] = std::array::from_fn(|_| -(1.0 - rng.uniform()).ln());
    let total: f64 = gammas.iter().sum();
    gammas.map(|g| (g / total) as f32)
}

/// `img` augmented by `draw`: each chain's operations in turn from the original image (warps
/// resampled with `interpolation`, nearest or bilinear), the results mixed as AugMix's
/// `forward` does, in float32, and truncated to bytes.
pub fn mix(img: &RgbImage, draw: &AugMixDraw, interpolation: Interpolation) -> RgbImage {
    let mut sum: Vec<f32> = img.iter().map(|&v| draw.beta[0] * v as f32).collect();
    for (chain, weight) in draw.chains.iter().zip(draw.mixing) {
        let aug = chain.iter().fold(img.clone(), |aug, &(op, magnitude)| {
            tensor_ops::apply(&aug, op, magnitude, interpolation)
        });
        let weight = weight * draw.beta[1];
        sum.iter_mut()
            .zip(aug.iter())
            .for_each(|(s, &v)| *s += weight * v as f32);
    }
    let bytes = sum.iter().map(|&v| v as u8).collect();
    RgbImage::from_raw(img.width(), img.height(), bytes).expect("the image's own size")
}

/// AugMix on `img` at `severity` with `interpolation`, drawing from `rng`.
pub fn augmix(
    img: &RgbImage,
    severity: usize,
    interpolation: Interpolation,
    rng: &mut SplitMix64,
) -> RgbImage {
    let size = (img.height() as usize, img.width() as usize);
    mix(img, &draw(rng, severity, size), interpolation)
}
