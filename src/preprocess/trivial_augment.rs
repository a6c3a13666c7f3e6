//! torchvision's `TrivialAugmentWide` (Müller and Hutter 2021; `--auto-augment ta_wide` of its
//! reference scripts): after the crop and flip, each training image gets one operation drawn
//! uniformly from fourteen, at a strength drawn uniformly from 31 bins (and a sign, for the
//! signed ones). The operations are Pillow's ([`super::pil`]), bilinear as the reference recipe
//! interpolates; the strengths are torchvision's tables, in float32 as `torch.linspace` makes
//! them (translation bin 15 is 15.999999 pixels, so it moves the image 15).

use image::RgbImage;

use super::pil;
use crate::rng::SplitMix64;

/// One of TrivialAugmentWide's operations, in torchvision's order.
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
}

/// torchvision's `num_magnitude_bins`.
pub const BINS: usize = 31;

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
        }
    }

    /// Whether a strength is drawn (torchvision's operations without one have a 0-d table).
    pub fn has_magnitude(self) -> bool {
        !matches!(
            self,
            AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize
        )
    }

    /// Whether the strength's sign is drawn too.
    pub fn signed(self) -> bool {
        self.has_magnitude() && !matches!(self, AugmentOp::Posterize | AugmentOp::Solarize)
    }

    /// The strength of bin `bin` (0 to 30), as torchvision's table holds it.
    pub fn magnitude(self, bin: usize) -> f64 {
        let linspace = |start: f32, end: f32| torch_linspace(start, end, bin) as f64;
        match self {
            AugmentOp::Identity | AugmentOp::AutoContrast | AugmentOp::Equalize => 0.0,
            AugmentOp::TranslateX | AugmentOp::TranslateY => linspace(0.0, 32.0),
            AugmentOp::Rotate => linspace(0.0, 135.0),
            AugmentOp::Solarize => linspace(255.0, 0.0),
            // 8 - round(bin / 5): 8 bits down to 2
            AugmentOp::Posterize => 8.0 - (bin as f32 / 5.0).round_ties_even() as f64,
            _ => linspace(0.0, 0.99),
        }
    }
}

/// Element `i` of `torch.linspace(start, end, 31)` in float32: from `start` up to the middle,
/// from `end` back after it, each a fused multiply-add of the step (as PyTorch's CPU kernel
/// computes it on x86-64).
fn torch_linspace(start: f32, end: f32, i: usize) -> f32 {
    let step = (end - start) / (BINS - 1) as f32;
    match i < BINS / 2 {
        true => step.mul_add(i as f32, start),
        false => (-step).mul_add((BINS - 1 - i) as f32, end),
    }
}

/// One draw of TrivialAugmentWide: the operation, then its bin, then its sign, in torchvision's
/// order (operations without a strength draw nothing more).
pub fn draw(rng: &mut SplitMix64) -> (AugmentOp, f64) {
    let op = AugmentOp::ALL[rng.below(AugmentOp::ALL.len() as u64) as usize];
    if !op.has_magnitude() {
        return (op, 0.0);
    }
    let magnitude = op.magnitude(rng.below(BINS as u64) as usize);
    let negative = op.signed() && rng.below(2) == 1;
    (op, if negative { -magnitude } else { magnitude })
}

/// `img` after `op` at strength `magnitude`: torchvision's `_apply_op` on a PIL image, with
/// bilinear interpolation and black fill.
pub fn apply(img: RgbImage, op: AugmentOp, magnitude: f64) -> RgbImage {
    let shear = || pil::degrees(magnitude.atan());
    let (w, h) = (img.width() as f64, img.height() as f64);
    let centre = (w * 0.5, h * 0.5);
    match op {
        AugmentOp::Identity => img,
        AugmentOp::ShearX => {
            let m = pil::inverse_affine((0.0, 0.0), 0.0, (0.0, 0.0), (shear(), 0.0));
            pil::affine_bilinear(&img, &m)
        }
        AugmentOp::ShearY => {
            let m = pil::inverse_affine((0.0, 0.0), 0.0, (0.0, 0.0), (0.0, shear()));
            pil::affine_bilinear(&img, &m)
        }
        AugmentOp::TranslateX => {
            let m = pil::inverse_affine(centre, 0.0, (magnitude.trunc(), 0.0), (0.0, 0.0));
            pil::affine_bilinear(&img, &m)
        }
        AugmentOp::TranslateY => {
            let m = pil::inverse_affine(centre, 0.0, (0.0, magnitude.trunc()), (0.0, 0.0));
            pil::affine_bilinear(&img, &m)
        }
        AugmentOp::Rotate => pil::rotate(&img, magnitude),
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
    }
}

/// TrivialAugmentWide on `img`, drawing from `rng`.
pub fn trivial_augment_wide(img: RgbImage, rng: &mut SplitMix64) -> RgbImage {
    let (op, magnitude) = draw(rng);
    apply(img, op, magnitude)
}
