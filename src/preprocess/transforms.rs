//! torchvision's image transforms on the CPU, as the streaming loader applies them to each decoded
//! photo: `RandomResizedCrop` + `RandomHorizontalFlip` for training, `Resize` (shorter side) +
//! `CenterCrop` for evaluation, and a plain resize to one size (the small-folder path).
//!
//! The crop box of `RandomResizedCrop` is sampled as torchvision's `get_params`: the area fraction
//! uniform in `scale`, the log aspect ratio uniform in `log(ratio)`, ten tries, then a central
//! crop clamped to the ratio range. Python's `round` (ties to even) is kept, so the boxes are the
//! ones torchvision's formula gives for the same two uniforms. Every resize is Pillow's, with
//! the transform's interpolation ([`super::resample`]).

use image::imageops;
use image::RgbImage;

use crate::preprocess::Interpolation;
use crate::rng::SplitMix64;

/// torchvision's `RandomResizedCrop` defaults.
pub const DEFAULT_SCALE: (f64, f64) = (0.08, 1.0);
/// torchvision's `RandomResizedCrop` defaults: 3/4 to 4/3.
pub const DEFAULT_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// A crop box in pixels: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

/// What is done to each image between decoding and the network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Resize to exactly (height, width), aspect ratio not kept (images of one size are kept as
    /// they are): the CIFAR-style small-folder path, whose augmentation runs on the GPU.
    Resize {
        size: (usize, usize),
        interpolation: Interpolation,
    },
    /// `RandomResizedCrop(size, scale, ratio, interpolation)` then `RandomHorizontalFlip()`.
    RandomResizedCrop {
        size: usize,
        scale: (f64, f64),
        ratio: (f64, f64),
        interpolation: Interpolation,
    },
    /// `Resize(resize, interpolation)` (the shorter side) then `CenterCrop(crop)`.
    ResizeCenterCrop {
        resize: usize,
        crop: usize,
        interpolation: Interpolation,
    },
}

impl Transform {
    /// How the transform resamples.
    pub fn interpolation(&self) -> Interpolation {
        match *self {
            Transform::Resize { interpolation, .. }
            | Transform::RandomResizedCrop { interpolation, .. }
            | Transform::ResizeCenterCrop { interpolation, .. } => interpolation,
        }
    }

    /// (height, width) of the images this transform produces.
    pub fn out_size(&self) -> (usize, usize) {
        match *self {
            Transform::Resize { size, .. } => size,
            Transform::RandomResizedCrop { size, .. } => (size, size),
            Transform::ResizeCenterCrop { crop, .. } => (crop, crop),
        }
    }

    /// Whether the transform draws random numbers (a training transform).
    pub fn is_random(&self) -> bool {
        matches!(self, Transform::RandomResizedCrop { .. })
    }

    /// `img` transformed; `rng` draws the crop and the flip of a random transform.
    pub fn apply(&self, img: RgbImage, rng: &mut SplitMix64) -> RgbImage {
        match *self {
            Transform::Resize {
                size: (h, w),
                interpolation,
            } => resize_exact(img, (h, w), interpolation),
            Transform::RandomResizedCrop {
                size,
                scale,
                ratio,
                interpolation,
            } => {
                let b = random_resized_crop_box(
                    img.height() as usize,
                    img.width() as usize,
                    scale,
                    ratio,
                    rng,
                );
                let mut out = resize_exact(crop(&img, b), (size, size), interpolation);
                if rng.uniform() < 0.5 {
                    imageops::flip_horizontal_in_place(&mut out);
                }
                out
            }
            Transform::ResizeCenterCrop {
                resize,
                crop: c,
                interpolation,
            } => {
                let (h, w) =
                    resized_shorter_side(img.height() as usize, img.width() as usize, resize);
                // only the centre is resampled: the same bytes as resizing, then cropping
                let b = center_crop_box(h, w, c);
                let region = (b.top..b.top + b.height, b.left..b.left + b.width);
                super::resample::resize_region(&img, (h, w), interpolation, region)
            }
        }
    }
}

/// torchvision's CIFAR training transform on the CPU: `RandomCrop(size, padding=pad)` (zero
/// padding, the top then the left offset drawn uniformly in 0..=2 pad) then
/// `RandomHorizontalFlip()`, keeping the image's size. The GPU's `PadCropFlip` does the same
/// where nothing follows it on the CPU.
pub fn pad_crop_flip(img: &RgbImage, pad: usize, rng: &mut SplitMix64) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let top = rng.below(2 * pad as u64 + 1) as usize;
    let left = rng.below(2 * pad as u64 + 1) as usize;
    let flip = rng.uniform() < 0.5;
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let x = if flip { w - 1 - x as usize } else { x as usize };
        // the padded image's pixel (y + top, x + left) is the source's, shifted by pad
        let (sy, sx) = (
            (y as usize + top).wrapping_sub(pad),
            (x + left).wrapping_sub(pad),
        );
        match sy < h && sx < w {
            true => *img.get_pixel(sx as u32, sy as u32),
            false => image::Rgb([0, 0, 0]),
        }
    })
}

/// The RGB image of `3 * height * width` CHW bytes (the inverse of [`write_chw`]).
pub fn from_chw(chw: &[u8], (h, w): (usize, usize)) -> RgbImage {
    let plane = h * w;
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let p = y as usize * w + x as usize;
        image::Rgb([chw[p], chw[plane + p], chw[2 * plane + p]])
    })
}

/// Python's `round`: halves go to the even neighbour.
fn round_py(x: f64) -> usize {
    x.round_ties_even().max(0.0) as usize
}

/// The crop box of torchvision's `RandomResizedCrop.get_params` for an image of `height` x
/// `width`.
pub fn random_resized_crop_box(
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut SplitMix64,
) -> CropBox {
    let area = (height * width) as f64;
    let log_ratio = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.uniform_in(scale.0, scale.1);
        let aspect = rng.uniform_in(log_ratio.0, log_ratio.1).exp();
        let w = round_py((target * aspect).sqrt());
        let h = round_py((target / aspect).sqrt());
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.below((height - h + 1) as u64) as usize;
            let left = rng.below((width - w + 1) as u64) as usize;
            return CropBox {
                top,
                left,
                height: h,
                width: w,
            };
        }
    }
    // the fallback: the whole image, cut to the nearest allowed aspect ratio, centred
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio.0.min(ratio.1) {
        (round_py(width as f64 / ratio.0.min(ratio.1)), width)
    } else if in_ratio > ratio.0.max(ratio.1) {
        (height, round_py(height as f64 * ratio.0.max(ratio.1)))
    } else {
        (height, width)
    };
    CropBox {
        top: (height - h) / 2,
        left: (width - w) / 2,
        height: h,
        width: w,
    }
}

/// The size after torchvision's `Resize(size)` with one int: the shorter side becomes `size`,
/// the longer one `int(size * long / short)`.
pub fn resized_shorter_side(height: usize, width: usize, size: usize) -> (usize, usize) {
    if height <= width {
        (size, size * width / height)
    } else {
        (size * height / width, size)
    }
}

/// torchvision's `CenterCrop(crop)` box in an image of `height` x `width` (at least `crop` on
/// each side).
pub fn center_crop_box(height: usize, width: usize, crop: usize) -> CropBox {
    CropBox {
        top: round_py((height - crop) as f64 / 2.0),
        left: round_py((width - crop) as f64 / 2.0),
        height: crop,
        width: crop,
    }
}

fn crop(img: &RgbImage, b: CropBox) -> RgbImage {
    imageops::crop_imm(
        img,
        b.left as u32,
        b.top as u32,
        b.width as u32,
        b.height as u32,
    )
    .to_image()
}

/// `img` resized to (`h`, `w`) as Pillow's `Image.resize` with `interpolation` (images already
/// that size kept as they are).
fn resize_exact(img: RgbImage, (h, w): (usize, usize), interpolation: Interpolation) -> RgbImage {
    if (img.height() as usize, img.width() as usize) == (h, w) {
        return img;
    }
    super::resample::resize(&img, (h, w), interpolation)
}

/// Writes `img` into `out` as CHW planes (all R bytes, then G, then B).
pub fn write_chw(img: &RgbImage, out: &mut [u8]) {
    let plane = (img.width() * img.height()) as usize;
    for (p, px) in img.as_raw().chunks_exact(3).enumerate() {
        out[p] = px[0];
        out[plane + p] = px[1];
        out[2 * plane + p] = px[2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxes(h: usize, w: usize, scale: (f64, f64), n: usize) -> Vec<CropBox> {
        let mut rng = SplitMix64(7);
        (0..n)
            .map(|_| random_resized_crop_box(h, w, scale, DEFAULT_RATIO, &mut rng))
            .collect()
    }

    #[test]
    fn crop_boxes_lie_inside_the_image_within_the_scale_and_ratio_ranges() {
        for (h, w) in [(375, 500), (500, 375), (32, 32), (224, 224)] {
            for b in boxes(h, w, DEFAULT_SCALE, 2000) {
                assert!(
                    b.top + b.height <= h && b.left + b.width <= w,
                    "{b:?} in {h}x{w}"
                );
                assert!(b.height > 0 && b.width > 0);
                // the sides are rounded: the unrounded box was at most half a pixel off each way
                let (bh, bw) = (b.height as f64, b.width as f64);
                let (area, frac) = ((h * w) as f64, (bh * bw) / (h * w) as f64);
                assert!(
                    (bh + 0.5) * (bw + 0.5) >= 0.08 * area && frac <= 1.0,
                    "area {frac}"
                );
                assert!((bw + 0.5) / (bh - 0.5) >= 0.75, "{b:?}");
                assert!((bw - 0.5) / (bh + 0.5) <= 4.0 / 3.0, "{b:?}");
            }
        }
    }

    #[test]
    fn crop_boxes_follow_torchvisions_distribution() {
        // with scale (0.08, 0.5) no try on a square image is rejected, so the area fraction is
        // uniform on the range, the log ratio uniform on (log 3/4, log 4/3) and the position
        // uniform over the places the box fits
        let (side, n) = (1000usize, 20_000);
        let b = boxes(side, side, (0.08, 0.5), n);
        let mean = |f: &dyn Fn(&CropBox) -> f64| b.iter().map(f).sum::<f64>() / n as f64;
        let area = mean(&|b| (b.height * b.width) as f64 / (side * side) as f64);
        assert!((area - 0.29).abs() < 0.005, "mean area fraction {area}");
        let below = mean(&|b| ((b.height * b.width) as f64 / 1e6 < 0.185) as u8 as f64);
        assert!((below - 0.25).abs() < 0.015, "quartile {below}");
        let log_r = mean(&|b| (b.width as f64 / b.height as f64).ln());
        assert!(log_r.abs() < 0.005, "mean log ratio {log_r}");
        let top = mean(&|b| b.top as f64 / (side - b.height) as f64);
        let left = mean(&|b| b.left as f64 / (side - b.width) as f64);
        assert!(
            (top - 0.5).abs() < 0.01 && (left - 0.5).abs() < 0.01,
            "{top} {left}"
        );
    }

    #[test]
    fn impossible_tries_fall_back_to_a_central_crop_at_the_ratio_limit() {
        // 10 x 1000: every sampled box is taller than 10 pixels, so all ten tries fail
        let mut rng = SplitMix64(1);
        let wide = random_resized_crop_box(10, 1000, DEFAULT_SCALE, DEFAULT_RATIO, &mut rng);
        assert_eq!(
            wide,
            CropBox {
                top: 0,
                left: 493,
                height: 10,
                width: 13
            }
        );
        let tall = random_resized_crop_box(1000, 10, DEFAULT_SCALE, DEFAULT_RATIO, &mut rng);
        assert_eq!(
            tall,
            CropBox {
                top: 493,
                left: 0,
                height: 13,
                width: 10
            }
        );
    }

    #[test]
    fn resize_and_center_crop_follow_torchvision() {
        // Resize(256): the shorter side to 256, the longer truncated
        assert_eq!(resized_shorter_side(375, 500, 256), (256, 341));
        assert_eq!(resized_shorter_side(500, 333, 256), (384, 256));
        // CenterCrop(224) of 256x341: top round(16.0), left round(58.5) = 58 (ties to even)
        assert_eq!(
            center_crop_box(256, 341, 224),
            CropBox {
                top: 16,
                left: 58,
                height: 224,
                width: 224
            }
        );
        let img = RgbImage::from_fn(500, 375, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let out = Transform::ResizeCenterCrop {
            resize: 256,
            crop: 224,
            interpolation: Interpolation::Bilinear,
        }
        .apply(img, &mut SplitMix64(0));
        assert_eq!(out.dimensions(), (224, 224));
    }

    #[test]
    fn the_flip_mirrors_half_the_images() {
        // a 2x2 image whose columns differ: a crop of the whole image (scale 1, ratio 1) keeps
        // it, so a flipped output has its columns swapped
        let img = RgbImage::from_fn(2, 2, |x, _| image::Rgb([x as u8 * 200, 0, 0]));
        let t = Transform::RandomResizedCrop {
            size: 2,
            scale: (1.0, 1.0),
            ratio: (1.0, 1.0),
            interpolation: Interpolation::Bilinear,
        };
        let mut rng = SplitMix64(3);
        let flipped = (0..1000)
            .filter(|_| {
                let out = t.apply(img.clone(), &mut rng);
                assert_eq!(out.dimensions(), (2, 2));
                out.get_pixel(0, 0)[0] == 200
            })
            .count();
        assert!((400..600).contains(&flipped), "{flipped} of 1000 flipped");
    }
}
