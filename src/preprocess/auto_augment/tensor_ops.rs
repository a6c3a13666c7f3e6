//! torchvision's augmentation operations on a uint8 image tensor (`_functional_tensor`), the
//! path AugMix takes: it turns a PIL image into a tensor before its operations, so they are not
//! Pillow's ([`super::super::pil`]) but these:
//!
//! - the geometric ones sample a grid made by `_gen_affine_grid` with `grid_sample` (bilinear,
//!   `align_corners=False`, zeros outside the image) in float32, rounded half to even;
//! - the blends (`_blend`: brightness, colour, contrast, sharpness) compute
//!   `ratio * img + (1 - ratio) * other` in float32 and truncate;
//! - grayscale is `0.2989 r + 0.587 g + 0.114 b` truncated; contrast blends with its mean;
//!   sharpness with the 3x3 smoothing `[1 1 1; 1 5 1; 1 1 1] / 13` rounded, the border kept;
//! - autocontrast stretches each channel's range in float32 and truncates; equalize is the
//!   integer histogram equalisation of `_scale_channel`.
//!
//! `tests/augmix.rs` checks each against torchvision's output byte for byte.

use image::RgbImage;

use super::{torch_linspace, AugmentOp};
use crate::preprocess::pil;

/// `img` after `op` at strength `magnitude`: torchvision's `_apply_op` on a uint8 tensor, with
/// bilinear interpolation and no fill (zeros outside the image).
pub fn apply(img: &RgbImage, op: AugmentOp, magnitude: f64) -> RgbImage {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let shear = || pil::degrees(magnitude.atan());
    // the tensor path's centre is relative to the image's middle: the shears' [0, 0] (the top
    // left corner) is (-w / 2, -h / 2), no centre is (0, 0)
    let corner = (-w * 0.5, -h * 0.5);
    match op {
        AugmentOp::Identity => img.clone(),
        AugmentOp::ShearX => affine(
            img,
            pil::inverse_affine(corner, 0.0, (0.0, 0.0), (shear(), 0.0)),
        ),
        AugmentOp::ShearY => affine(
            img,
            pil::inverse_affine(corner, 0.0, (0.0, 0.0), (0.0, shear())),
        ),
        AugmentOp::TranslateX => {
            let m = pil::inverse_affine((0.0, 0.0), 0.0, (magnitude.trunc(), 0.0), (0.0, 0.0));
            affine(img, m)
        }
        AugmentOp::TranslateY => {
            let m = pil::inverse_affine((0.0, 0.0), 0.0, (0.0, magnitude.trunc()), (0.0, 0.0));
            affine(img, m)
        }
        // F.rotate turns the other way from F.affine: it passes -angle
        AugmentOp::Rotate => {
            let m = pil::inverse_affine((0.0, 0.0), -magnitude, (0.0, 0.0), (0.0, 0.0));
            affine(img, m)
        }
        AugmentOp::Brightness => blend(img, |_, _, _| 0.0, 1.0 + magnitude),
        AugmentOp::Color => {
            let gray = grayscale(img);
            blend(
                img,
                |x, y, _| gray[(y * img.width() + x) as usize] as f32,
                1.0 + magnitude,
            )
        }
        AugmentOp::Contrast => {
            let mean = gray_mean(img);
            blend(img, |_, _, _| mean, 1.0 + magnitude)
        }
        AugmentOp::Sharpness => sharpness(img, 1.0 + magnitude),
        AugmentOp::Posterize => {
            // -2^(8 - bits) as a byte: 0 at 0 bits
            let mask = (256 - (1u32 << (8 - magnitude as u32))) as u8;
            map(img, |v| v & mask)
        }
        AugmentOp::Solarize => {
            let threshold = magnitude as f32;
            map(img, |v| if v as f32 >= threshold { 255 - v } else { v })
        }
        AugmentOp::AutoContrast => autocontrast(img),
        AugmentOp::Equalize => equalize(img),
        AugmentOp::Invert => map(img, |v| 255 - v),
    }
}

/// `img` with `f` applied to every byte.
fn map(img: &RgbImage, f: impl Fn(u8) -> u8) -> RgbImage {
    let mut out = img.clone();
    out.iter_mut().for_each(|v| *v = f(*v));
    out
}

/// `F_t.affine` with the inverse map `matrix` (float64, from `_get_inverse_affine_matrix`):
/// each output pixel's centre, relative to the image's middle, mapped by the matrix in float32
/// and normalised to [-1, 1] by half the size (`_gen_affine_grid`), then sampled bilinearly.
fn affine(img: &RgbImage, matrix: [f64; 6]) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let theta = matrix.map(|v| v as f32);
    let half = [(0.5 * w as f64) as f32, (0.5 * h as f64) as f32];
    // rescaled_theta = theta^T / half: the column of output coordinate j divided by half[j]
    let rescaled: [[f32; 2]; 3] =
        std::array::from_fn(|k| [0, 1].map(|j| theta[j * 3 + k] / half[j]));
    let r = |k: usize, j: usize| rescaled[k][j];
    let axis = |n: usize, i: usize| {
        let (start, end) = (-(n as f64) * 0.5 + 0.5, n as f64 * 0.5 + 0.5 - 1.0);
        match n {
            1 => start as f32,
            _ => torch_linspace(start as f32, end as f32, n, i),
        }
    };
    let mut out = RgbImage::new(w as u32, h as u32);
    for oy in 0..h {
        let y = axis(h, oy);
        for ox in 0..w {
            let x = axis(w, ox);
            let gx = x * r(0, 0) + y * r(1, 0) + r(2, 0);
            let gy = x * r(0, 1) + y * r(1, 1) + r(2, 1);
            let rgb = sample_bilinear(img, gx, gy);
            out.put_pixel(
                ox as u32,
                oy as u32,
                image::Rgb(rgb.map(|v| v.round_ties_even() as u8)),
            );
        }
    }
    out
}

/// `grid_sample` at the normalised point (`gx`, `gy`), bilinear with `align_corners=False` and
/// zeros outside the image, as PyTorch's CPU kernel computes it in float32 on x86-64 (its AVX2
/// and AVX-512 builds fuse the unnormalisation's multiply and subtract, and the four corners'
/// sum, into fused multiply-adds; written out here, as plain arithmetic differs in a few bytes
/// per image).
fn sample_bilinear(img: &RgbImage, gx: f32, gy: f32) -> [f32; 3] {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let x = (gx + 1.0).mul_add(w as f32 / 2.0, -0.5);
    let y = (gy + 1.0).mul_add(h as f32 / 2.0, -0.5);
    let (x_w, y_n) = (x.floor(), y.floor());
    let (wd, nd) = (x - x_w, y - y_n);
    let (ed, sd) = (1.0 - wd, 1.0 - nd);
    let weights = [sd * ed, sd * wd, nd * ed, nd * wd];
    let (ix, iy) = (x_w as i64, y_n as i64);
    let corners = [(ix, iy), (ix + 1, iy), (ix, iy + 1), (ix + 1, iy + 1)];
    std::array::from_fn(|c| {
        let value = |(px, py): (i64, i64)| match (0..w).contains(&px) && (0..h).contains(&py) {
            true => img.get_pixel(px as u32, py as u32)[c] as f32,
            false => 0.0,
        };
        // nw's product, then ne, sw and se each added by a fused multiply-add
        let first = value(corners[0]) * weights[0];
        (1..4).fold(first, |sum, k| value(corners[k]).mul_add(weights[k], sum))
    })
}

/// `_blend(img, other, ratio)`: `ratio * img + (1 - ratio) * other` in float32 (the second
/// factor from float64), clamped to [0, 255] and truncated; `other` gives the float value at
/// (x, y, channel).
fn blend(img: &RgbImage, other: impl Fn(u32, u32, usize) -> f32, ratio: f64) -> RgbImage {
    let (r, q) = (ratio as f32, (1.0 - ratio) as f32);
    let mut out = img.clone();
    for (x, y, px) in out.enumerate_pixels_mut() {
        for c in 0..3 {
            px[c] = (r * px[c] as f32 + q * other(x, y, c)).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// `rgb_to_grayscale`: `0.2989 r + 0.587 g + 0.114 b` in float32, truncated, per pixel in
/// row order.
fn grayscale(img: &RgbImage) -> Vec<u8> {
    img.pixels()
        .map(|p| {
            let [r, g, b] = p.0.map(|v| v as f32);
            (0.2989f32 * r + 0.587f32 * g + 0.114f32 * b) as u8
        })
        .collect()
}

/// `adjust_contrast`'s mean: of the grayscale image, in float32. The sum is exact here; torch's
/// float32 sum is exact too up to 65,793 pixels (a 256x257 image: every partial sum of bytes
/// below 2^24), so larger crops than torchvision's 224 may see its mean an ulp away.
fn gray_mean(img: &RgbImage) -> f32 {
    let gray = grayscale(img);
    let sum: u64 = gray.iter().map(|&v| v as u64).sum();
    sum as f32 / gray.len() as f32
}

/// `adjust_sharpness`: a blend with the image smoothed by `[1 1 1; 1 5 1; 1 1 1] / 13` and
/// rounded, its border rows and columns kept; images 2 pixels thin or thinner unchanged.
fn sharpness(img: &RgbImage, factor: f64) -> RgbImage {
    let (w, h) = (img.width(), img.height());
    if w <= 2 || h <= 2 {
        return img.clone();
    }
    let mut smooth = img.clone();
    for y in 1..h - 1 {
        for x in 1..w - 1 {
            for c in 0..3 {
                let mut sum = 4 * img.get_pixel(x, y)[c] as u32;
                for (dx, dy) in (0..3).flat_map(|dy| (0..3).map(move |dx| (dx, dy))) {
                    sum += img.get_pixel(x + dx - 1, y + dy - 1)[c] as u32;
                }
                // sum / 13 is never within 1/26 of a half, so float32's order of the nine
                // products cannot change the rounding: the exact quotient rounds the same
                smooth.get_pixel_mut(x, y)[c] = (sum as f64 / 13.0).round_ties_even() as u8;
            }
        }
    }
    blend(img, |x, y, c| smooth.get_pixel(x, y)[c] as f32, factor)
}

/// `autocontrast`: each channel's range stretched to [0, 255] in float32 and truncated; a
/// channel of one value kept.
fn autocontrast(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for c in 0..3 {
        let values = || img.pixels().map(|p| p[c] as f32);
        let lo = values().fold(f32::INFINITY, f32::min);
        let hi = values().fold(f32::NEG_INFINITY, f32::max);
        // `bound / (max - min)` on a tensor is its reciprocal times the bound
        let scale = (1.0 / (hi - lo)) * 255.0;
        let (lo, scale) = if scale.is_finite() {
            (lo, scale)
        } else {
            (0.0, 1.0)
        };
        for p in out.pixels_mut() {
            p[c] = ((p[c] as f32 - lo) * scale).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// `equalize`: per channel, `_scale_channel`'s lookup table from the histogram (the step is
/// the count of all but the brightest value present over 255; a step of 0 keeps the channel).
fn equalize(img: &RgbImage) -> RgbImage {
    let mut out = img.clone();
    for c in 0..3 {
        let mut hist = [0u64; 256];
        img.pixels().for_each(|p| hist[p[c] as usize] += 1);
        let nonzero: Vec<u64> = hist.iter().copied().filter(|&n| n != 0).collect();
        let step = nonzero[..nonzero.len().saturating_sub(1)]
            .iter()
            .sum::<u64>()
            / 255;
        if step == 0 {
            continue;
        }
        // lut[v] = (cumulative count below v + step / 2) / step, clamped to 255
        let mut lut = [0u8; 256];
        let mut below = 0;
        for (v, &n) in hist.iter().enumerate() {
            lut[v] = ((below + step / 2) / step).min(255) as u8;
            below += n;
        }
        out.pixels_mut().for_each(|p| p[c] = lut[p[c] as usize]);
    }
    out
}
