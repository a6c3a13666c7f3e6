//! torchvision's augmentation operations on a uint8 image tensor (`_functional_tensor`), the
//! path AugMix takes: it turns a PIL image into a tensor before its operations, so they are not
//! Pillow's ([`super::super::pil`]) but these:
//!
//! - the geometric ones sample a grid made by `_gen_affine_grid` with `grid_sample` (bilinear or
//!   nearest, `align_corners=False`, zeros outside the image) in float32, rounded half to even;
//! - the blends (`_blend`: brightness, colour, contrast, sharpness) compute
//!   `ratio * img + (1 - ratio) * other` in float32 and truncate;
//! - grayscale is `0.2989 r + 0.587 g + 0.114 b` truncated; contrast blends with its mean;
//!   sharpness with the 3x3 smoothing `[1 1 1; 1 5 1; 1 1 1] / 13` rounded, the border kept;
//! - autocontrast stretches each channel's range in float32 and truncates; posterize, solarize,
//!   invert and equalize are byte lookups, the same as Pillow's.
//!
//! `tests/augmix.rs` checks each against torchvision's output byte for byte.

use image::RgbImage;

use super::{torch_linspace, AugmentOp};
use crate::preprocess::pil;
use crate::preprocess::Interpolation;

/// `img` after `op` at strength `magnitude`: torchvision's `_apply_op` on a uint8 tensor, its
/// warps resampled with `interpolation` (nearest or bilinear: the tensor path takes no other),
/// no fill (zeros outside the image).
///
/// # Panics
/// With another interpolation (`Interpolation::unsupported_by` says so before a run starts).
pub fn apply(
    img: &RgbImage,
    op: AugmentOp,
    magnitude: f64,
    interpolation: Interpolation,
) -> RgbImage {
    let nearest = match interpolation {
        Interpolation::Nearest => true,
        Interpolation::Bilinear => false,
        other => panic!(
            "torchvision's tensor warps take no {} resampling",
            other.name()
        ),
    };
    let affine = |img, matrix| affine(img, matrix, nearest);
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
        AugmentOp::Brightness => blend(img, |_| 0.0, 1.0 + magnitude),
        AugmentOp::Color => {
            let gray = grayscale(img);
            blend(img, |i| gray[i / 3] as f32, 1.0 + magnitude)
        }
        AugmentOp::Contrast => {
            let mean = gray_mean(img);
            blend(img, |_| mean, 1.0 + magnitude)
        }
        AugmentOp::Sharpness => sharpness(img, 1.0 + magnitude),
        AugmentOp::AutoContrast => autocontrast(img),
        // byte lookups, the same on a tensor as Pillow's (equalize: `_scale_channel`'s integer
        // steps are ImageOps.equalize's)
        AugmentOp::Posterize | AugmentOp::Solarize | AugmentOp::Invert | AugmentOp::Equalize => {
            super::apply(img.clone(), op, magnitude, interpolation)
        }
    }
}

/// `F_t.affine` with the inverse map `matrix` (float64, from `_get_inverse_affine_matrix`):
/// each output pixel's centre, relative to the image's middle, mapped by the matrix in float32
/// and normalised to [-1, 1] by half the size (`_gen_affine_grid`), then sampled at the
/// `nearest` pixel or bilinearly.
fn affine(img: &RgbImage, matrix: [f64; 6], nearest: bool) -> RgbImage {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the instructions the function is compiled with (checked above)
        return unsafe { affine_with_fma(img, matrix, nearest) };
    }
    affine_in(img, matrix, nearest)
}

/// [`affine_in`] compiled with x86-64's fused multiply-add: `mul_add` is then one instruction
/// rather than a call to the C library's `fmaf` (the same results, several times faster).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn affine_with_fma(img: &RgbImage, matrix: [f64; 6], nearest: bool) -> RgbImage {
    affine_in(img, matrix, nearest)
}

#[inline(always)]
fn affine_in(img: &RgbImage, matrix: [f64; 6], nearest: bool) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let theta = matrix.map(|v| v as f32);
    let half = [(0.5 * w as f64) as f32, (0.5 * h as f64) as f32];
    // rescaled_theta = theta^T / half: the column of output coordinate j divided by half[j]
    let r: [[f32; 2]; 3] = std::array::from_fn(|k| [0, 1].map(|j| theta[j * 3 + k] / half[j]));
    // the pixels' centres along a side of n pixels, relative to its middle
    let axis = |n: usize| -> Vec<f32> {
        let (start, end) = (-(n as f64) * 0.5 + 0.5, n as f64 * 0.5 + 0.5 - 1.0);
        match n {
            1 => vec![start as f32],
            _ => (0..n)
                .map(|i| torch_linspace(start as f32, end as f32, n, i))
                .collect(),
        }
    };
    let (xs, ys) = (axis(w), axis(h));
    let mut out = vec![0u8; w * h * 3];
    for (row, &y) in out.chunks_exact_mut(w * 3).zip(&ys) {
        let (y0, y1) = (y * r[1][0], y * r[1][1]);
        for (px, &x) in row.chunks_exact_mut(3).zip(&xs) {
            let gx = x * r[0][0] + y0 + r[2][0];
            let gy = x * r[0][1] + y1 + r[2][1];
            match nearest {
                true => sample_nearest(img.as_raw(), (w, h), (gx, gy), px),
                false => sample_bilinear(img.as_raw(), (w, h), (gx, gy), px),
            }
        }
    }
    RgbImage::from_raw(w as u32, h as u32, out).expect("the image's own size")
}

/// `grid_sample` at the normalised point `(gx, gy)` of the `w` x `h` image `src` (RGB bytes)
/// into the pixel `out`: bilinear with `align_corners=False` and zeros outside the image, as
/// PyTorch's CPU kernel computes it in float32 on x86-64 (its AVX2 and AVX-512 builds fuse the
/// unnormalisation's multiply and subtract, and the four corners' sum, into fused
/// multiply-adds; written out here, as plain arithmetic differs in a few bytes per image),
/// rounded half to even.
#[inline(always)]
fn sample_bilinear(src: &[u8], (w, h): (usize, usize), (gx, gy): (f32, f32), out: &mut [u8]) {
    let (x, y) = (unnormalise(gx, w), unnormalise(gy, h));
    let (x_w, y_n) = (x.floor(), y.floor());
    let (wd, nd) = (x - x_w, y - y_n);
    let (ed, sd) = (1.0 - wd, 1.0 - nd);
    let weights = [sd * ed, sd * wd, nd * ed, nd * wd];
    let (ix, iy) = (x_w as i64, y_n as i64);
    // nw's product, then ne, sw and se each added by a fused multiply-add
    let interpolate = |values: [f32; 4]| {
        let first = values[0] * weights[0];
        let sum = (1..4).fold(first, |sum, k| values[k].mul_add(weights[k], sum));
        sum.round_ties_even() as u8
    };
    if ix >= 0 && iy >= 0 && ix + 1 < w as i64 && iy + 1 < h as i64 {
        // all four corners inside (most pixels): their bytes at fixed steps
        let nw = (iy as usize * w + ix as usize) * 3;
        let [ne, sw] = [nw + 3, nw + w * 3];
        for (c, byte) in out.iter_mut().enumerate() {
            *byte = interpolate([nw, ne, sw, sw + 3].map(|o| src[o + c] as f32));
        }
        return;
    }
    // each corner's first byte; none outside the image (its value is 0)
    let at = |px: i64, py: i64| {
        let inside = (0..w as i64).contains(&px) && (0..h as i64).contains(&py);
        inside.then(|| (py as usize * w + px as usize) * 3)
    };
    let corners = [(ix, iy), (ix + 1, iy), (ix, iy + 1), (ix + 1, iy + 1)].map(|(x, y)| at(x, y));
    for (c, byte) in out.iter_mut().enumerate() {
        *byte = interpolate(corners.map(|o| o.map_or(0.0, |o| src[o + c] as f32)));
    }
}

/// `grid_sample`'s pixel coordinate of the normalised `g` along a side of `n` pixels
/// (`align_corners=False`), with the multiply and subtract fused as its x86-64 builds fuse them.
#[inline(always)]
fn unnormalise(g: f32, n: usize) -> f32 {
    (g + 1.0).mul_add(n as f32 / 2.0, -0.5)
}

/// `grid_sample` with `mode="nearest"` at the normalised point `(gx, gy)`: the position
/// unnormalised as for [`sample_bilinear`] (a fused multiply-add), rounded half to even, its
/// pixel copied, zeros outside the image.
#[inline(always)]
fn sample_nearest(src: &[u8], (w, h): (usize, usize), (gx, gy): (f32, f32), out: &mut [u8]) {
    let x = unnormalise(gx, w).round_ties_even();
    let y = unnormalise(gy, h).round_ties_even();
    let inside = x >= 0.0 && y >= 0.0 && x < w as f32 && y < h as f32;
    match inside {
        true => {
            let at = (y as usize * w + x as usize) * 3;
            out.copy_from_slice(&src[at..at + 3]);
        }
        false => out.fill(0),
    }
}

/// `_blend(img, other, ratio)`: `ratio * img + (1 - ratio) * other` in float32 (the second
/// factor from float64), clamped to [0, 255] and truncated; `other` gives the float value at
/// each byte's index in `img`'s buffer.
fn blend(img: &RgbImage, other: impl Fn(usize) -> f32, ratio: f64) -> RgbImage {
    let (r, q) = (ratio as f32, (1.0 - ratio) as f32);
    let mut out = img.clone();
    for (i, v) in out.iter_mut().enumerate() {
        *v = (r * *v as f32 + q * other(i)).clamp(0.0, 255.0) as u8;
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
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w <= 2 || h <= 2 {
        return img.clone();
    }
    let src = img.as_raw();
    let mut smooth = src.clone();
    let row = w * 3;
    for y in 1..h - 1 {
        for i in y * row + 3..(y + 1) * row - 3 {
            // the centre 5 times, its 8 neighbours once
            let mut sum = 4 * src[i] as u32;
            for above in [i - row, i, i + row] {
                sum += src[above - 3] as u32 + src[above] as u32 + src[above + 3] as u32;
            }
            // sum / 13 rounded: never within 1/26 of a half, so float32's order of the nine
            // products cannot change the rounding, and the exact quotient's nearest integer is
            // torch's
            smooth[i] = ((sum + 6) / 13) as u8;
        }
    }
    blend(img, |i| smooth[i] as f32, factor)
}

/// `autocontrast`: each channel's range stretched to [0, 255] in float32 and truncated; a
/// channel of one value kept.
fn autocontrast(img: &RgbImage) -> RgbImage {
    let (mut lo, mut hi) = ([255u8; 3], [0u8; 3]);
    for p in img.pixels() {
        for c in 0..3 {
            lo[c] = lo[c].min(p[c]);
            hi[c] = hi[c].max(p[c]);
        }
    }
    let stretch: [(f32, f32); 3] = std::array::from_fn(|c| {
        let (lo, hi) = (lo[c] as f32, hi[c] as f32);
        // `bound / (max - min)` on a tensor is its reciprocal times the bound
        let scale = (1.0 / (hi - lo)) * 255.0;
        if scale.is_finite() {
            (lo, scale)
        } else {
            (0.0, 1.0)
        }
    });
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for (v, (lo, scale)) in p.0.iter_mut().zip(stretch) {
            *v = ((*v as f32 - lo) * scale).clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The warps compiled with x86-64's fused multiply-add and without it (the C library's
    /// `fmaf`, as on CPUs without it) give the same bytes: `mul_add` is exact either way.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_fma_build_of_the_warps_is_the_portable_one() {
        if !(std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma"))
        {
            return;
        }
        let img = RgbImage::from_fn(37, 29, |x, y| {
            image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (200 - x * 5) as u8])
        });
        let (w, h) = (37.0, 29.0);
        for (centre, angle, translate, shear) in [
            ((-w / 2.0, -h / 2.0), 0.0, (0.0, 0.0), (13.5, 0.0)),
            ((-w / 2.0, -h / 2.0), 0.0, (0.0, 0.0), (0.0, -8.25)),
            ((0.0, 0.0), -23.0, (0.0, 0.0), (0.0, 0.0)),
            ((0.0, 0.0), 0.0, (-9.0, 4.0), (0.0, 0.0)),
        ] {
            let m = pil::inverse_affine(centre, angle, translate, shear);
            // SAFETY: the CPU has AVX2 and FMA (checked above)
            for nearest in [false, true] {
                let fused = unsafe { affine_with_fma(&img, m, nearest) };
                let plain = affine_in(&img, m, nearest);
                assert_eq!(fused, plain, "{angle} {translate:?} {shear:?} {nearest}");
            }
        }
    }
}
