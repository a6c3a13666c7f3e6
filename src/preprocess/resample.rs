//! Pillow's `Image.resize` of an RGB image, to the bit (what torchvision's `Resize` and
//! `RandomResizedCrop` call on a PIL image), in each of its filters: the nearest pixel to each
//! output pixel's centre, stepped as Pillow's `ImagingScaleAffine` steps it; or its two-pass
//! convolution (`Resample.c`): rows first, then columns, each output value a weighted sum of the
//! input values under the filter, whose support widens by the scale factor when shrinking (the
//! antialiasing), the weights normalised in float64, then rounded to 22-bit fixed point, each
//! pass rounded and clipped to a byte. The arithmetic is Pillow's own, in its order: the first
//! pass's bytes feed the second, so the passes' order changes the result (by a level where the
//! rounding differs, by more where an overshooting filter, bicubic or Lanczos, clips).
//! `tests/interpolation.rs` checks every filter against Pillow's output.

use image::RgbImage;
use std::ops::Range;

use super::Interpolation;

/// The fixed-point weights' fractional bits (8 for the value, 2 spare for overshoot).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's convolution filters: the function and its support (before widening).
fn filter(interpolation: Interpolation) -> (fn(f64) -> f64, f64) {
    match interpolation {
        Interpolation::Box => (box_filter, 0.5),
        Interpolation::Bilinear => (bilinear_filter, 1.0),
        Interpolation::Hamming => (hamming_filter, 1.0),
        Interpolation::Bicubic => (bicubic_filter, 2.0),
        Interpolation::Lanczos => (lanczos_filter, 3.0),
        Interpolation::Nearest => unreachable!("nearest is not a convolution"),
    }
}

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 {
        1.0
    } else {
        0.0
    }
}

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn hamming_filter(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let x = x * std::f64::consts::PI;
    // Pillow writes the window's constants as float literals (0.54f, 0.46f)
    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
}

/// Keys' cubic with a = -0.5.
fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos_filter(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// The weights of one axis: for each output position, the first input position and its
/// fixed-point weights (Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`).
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

impl Taps {
    /// The taps of the output positions `range` only.
    fn restrict(mut self, range: Range<usize>) -> Taps {
        self.first.truncate(range.end);
        self.weights.truncate(range.end);
        self.first.drain(..range.start);
        self.weights.drain(..range.start);
        self
    }
}

fn taps(len_in: usize, len_out: usize, interpolation: Interpolation) -> Taps {
    let (f, support) = filter(interpolation);
    // Pillow's box is float: in1 - in0 is a float32 (exact up to 2^24 pixels a side)
    let scale = (len_in as f32) as f64 / len_out as f64;
    let widen = scale.max(1.0);
    let support = support * widen;
    let inverse = 1.0 / widen;
    let mut first = Vec::with_capacity(len_out);
    let mut weights = Vec::with_capacity(len_out);
    for o in 0..len_out {
        let center = (o as f64 + 0.5) * scale;
        // C's (int) truncates; a negative start is clamped to 0 either way
        let lo = ((center - support + 0.5) as i64).max(0) as usize;
        let hi = ((center + support + 0.5) as i64).min(len_in as i64) as usize;
        let w: Vec<f64> = (lo..hi)
            .map(|i| f((i as f64 - center + 0.5) * inverse))
            .collect();
        let total: f64 = w.iter().sum();
        let fixed = w
            .iter()
            .map(|&k| {
                let k = if total != 0.0 { k / total } else { k };
                let v = k * (1u32 << PRECISION_BITS) as f64;
                (if v < 0.0 { v - 0.5 } else { v + 0.5 }) as i32
            })
            .collect();
        first.push(lo);
        weights.push(fixed);
    }
    Taps { first, weights }
}

/// A fixed-point sum as a byte: rounded (the sum starts at one half) and clipped.
fn clip8(sum: i32) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// `img` resized to (`h`, `w`) as Pillow's `Image.resize(size, resample)` does it.
pub fn resize(img: &RgbImage, (h, w): (usize, usize), interpolation: Interpolation) -> RgbImage {
    resize_region(img, (h, w), interpolation, (0..h, 0..w))
}

/// The rows `rows` and columns `cols` of `img` resized to (`h`, `w`) as Pillow's
/// `Image.resize(size, resample)` does it (then cropped, as `CenterCrop` after `Resize`), with
/// only those pixels computed: each output pixel depends on its own taps alone.
pub fn resize_region(
    img: &RgbImage,
    (h, w): (usize, usize),
    interpolation: Interpolation,
    (rows, cols): (Range<usize>, Range<usize>),
) -> RgbImage {
    let (w_in, h_in) = (img.width() as usize, img.height() as usize);
    assert!(
        rows.end <= h && cols.end <= w,
        "the region lies in the {w}x{h} output"
    );
    let (out_w, out_h) = (cols.len() as u32, rows.len() as u32);
    let src = img.as_raw();
    if interpolation == Interpolation::Nearest {
        let out = nearest(src, (w_in, h_in), (h, w), (rows, cols));
        return RgbImage::from_raw(out_w, out_h, out).expect("the region's RGB pixels");
    }
    let along = |len_in: usize, len: usize, range: Range<usize>| {
        (len_in != len).then(|| taps(len_in, len, interpolation).restrict(range))
    };
    let (x, y) = (along(w_in, w, cols.clone()), along(h_in, h, rows.clone()));
    let out = match (x, y) {
        (None, None) => crop(src, w_in, rows, cols),
        (Some(x), None) => horizontal(&crop(src, w_in, rows, 0..w_in), w_in, &x),
        (None, Some(y)) => {
            let band = vertical(src, w_in, 0, &y);
            crop(&band, w_in, 0..y.first.len(), cols)
        }
        (Some(x), Some(y)) if columns_first(w_in, h_in, w, h) => {
            horizontal(&vertical(src, w_in, 0, &y), w_in, &x)
        }
        (Some(x), Some(y)) => {
            // only the input rows some output row reads are resampled along x
            let last = y.first.len() - 1;
            let (top, bottom) = (y.first[0], y.first[last] + y.weights[last].len());
            let band = horizontal(&src[top * w_in * 3..bottom * w_in * 3], w_in, &x);
            vertical(&band, x.first.len(), top, &y)
        }
    };
    RgbImage::from_raw(out_w, out_h, out).expect("the region's RGB pixels")
}

/// The rows `rows` and columns `cols` of the RGB image `src`, `width` pixels wide.
fn crop(src: &[u8], width: usize, rows: Range<usize>, cols: Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * cols.len() * 3);
    for y in rows {
        out.extend_from_slice(&src[(y * width + cols.start) * 3..(y * width + cols.end) * 3]);
    }
    out
}

/// Whether Pillow resamples the columns first: where the height loses more than twice as many
/// pixels as the width does (Pillow 13, found by comparing its output with each order over 300
/// random sizes; before it, rows always came first).
fn columns_first(w_in: usize, h_in: usize, w: usize, h: usize) -> bool {
    h < h_in && (h_in - h) as i64 > 2 * (w_in as i64 - w as i64)
}

/// Rows of `width_in` RGB pixels (`src`) resampled along x with `taps`: transposed, resampled
/// as columns, transposed back (the same integer sums as Pillow's pixel by pixel ones, in an
/// order that vectorises).
fn horizontal(src: &[u8], width_in: usize, taps: &Taps) -> Vec<u8> {
    let height = src.len() / (width_in * 3);
    let columns = transpose(src, width_in, height);
    let resampled = vertical(&columns, height, 0, taps);
    transpose(&resampled, height, taps.first.len())
}

/// The `height` x `width` RGB image `src` with its rows and columns swapped, in tiles that
/// stay in the cache.
fn transpose(src: &[u8], width: usize, height: usize) -> Vec<u8> {
    const TILE: usize = 32;
    let mut out = vec![0u8; src.len()];
    for y0 in (0..height).step_by(TILE) {
        for x0 in (0..width).step_by(TILE) {
            for y in y0..(y0 + TILE).min(height) {
                for x in x0..(x0 + TILE).min(width) {
                    let (from, to) = ((y * width + x) * 3, (x * height + y) * 3);
                    out[to..to + 3].copy_from_slice(&src[from..from + 3]);
                }
            }
        }
    }
    out
}

/// `band` (rows of `width` RGB pixels, the first being input row `top`) resampled along y with
/// `taps`: each output row sums whole input rows (the same integer sums as Pillow's pixel by
/// pixel ones, in an order that vectorises), with AVX2 where the CPU has it.
fn vertical(band: &[u8], width: usize, top: usize, taps: &Taps) -> Vec<u8> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has the instructions the function is compiled with (checked above)
        return unsafe { vertical_avx2(band, width, top, taps) };
    }
    vertical_in(band, width, top, taps)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_avx2(band: &[u8], width: usize, top: usize, taps: &Taps) -> Vec<u8> {
    vertical_in(band, width, top, taps)
}

#[inline(always)]
fn vertical_in(band: &[u8], width: usize, top: usize, taps: &Taps) -> Vec<u8> {
    let stride = width * 3;
    let mut out = vec![0u8; taps.first.len() * stride];
    let mut sum = vec![0i32; stride];
    for ((&lo, k), dst) in taps
        .first
        .iter()
        .zip(&taps.weights)
        .zip(out.chunks_exact_mut(stride))
    {
        sum.fill(HALF);
        for (i, &k) in k.iter().enumerate() {
            let row = &band[(lo - top + i) * stride..][..stride];
            for (s, &v) in sum.iter_mut().zip(row) {
                *s += v as i32 * k;
            }
        }
        for (d, &s) in dst.iter_mut().zip(&sum) {
            *d = clip8(s);
        }
    }
    out
}

/// Pillow's `NEAREST` resize (`ImagingScaleAffine` with the scale of the sizes) of the `w_in` x
/// `h_in` RGB image `src`, the region (`rows`, `cols`) of its (`h`, `w`) output; a position
/// outside the image (which Pillow's steps never reach) would stay black, as in Pillow.
fn nearest(
    src: &[u8],
    (w_in, h_in): (usize, usize),
    (h, w): (usize, usize),
    (rows, cols): (Range<usize>, Range<usize>),
) -> Vec<u8> {
    // Pillow's box is float: the sides are float32s
    let steps = |len_in: usize, len: usize| {
        let step = (len_in as f32) as f64 / len as f64;
        let inside = |i: i64| (0..len_in as i64).contains(&i).then_some(i as usize);
        let all = super::pil::scale_steps(0.0, step, len);
        all.into_iter().map(inside).collect::<Vec<Option<usize>>>()
    };
    let (columns, lines) = (steps(w_in, w), steps(h_in, h));
    let mut out = vec![0u8; rows.len() * cols.len() * 3];
    let mut pixels = out.chunks_exact_mut(3);
    for y in &lines[rows] {
        for x in &columns[cols.clone()] {
            let px = pixels.next().expect("one pixel each");
            if let (Some(y), Some(x)) = (y, x) {
                let at = (y * w_in + x) * 3;
                px.copy_from_slice(&src[at..at + 3]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A region is the same bytes as the whole resize (checked against Pillow in
    /// tests/interpolation.rs), then cropped, in every branch: one axis, both with rows or
    /// columns first, and nearest.
    #[test]
    fn a_region_is_the_whole_resize_cropped() {
        let img = RgbImage::from_fn(40, 30, |x, y| {
            image::Rgb([(x * 7 + y * 3) as u8, (x * y) as u8, (200 - x * 5) as u8])
        });
        // (h, w): rows only, columns only, both rows first, both columns first, both growing
        for size in [(17, 40), (30, 23), (21, 33), (9, 37), (45, 52)] {
            for interpolation in Interpolation::ALL {
                let whole = resize(&img, size, interpolation);
                let (rows, cols) = (2..size.0 - 3, 1..size.1 - 4);
                let region = resize_region(&img, size, interpolation, (rows.clone(), cols.clone()));
                let cropped = crop(whole.as_raw(), size.1, rows, cols);
                assert_eq!(region.as_raw(), &cropped, "{size:?} {interpolation:?}");
            }
        }
    }
}
