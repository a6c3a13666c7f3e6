//! PIL's BILINEAR resize (what torchvision's `Resize` and `RandomResizedCrop` do to a PIL image),
//! written from its definition in f64: a triangle filter whose support widens by the scale factor
//! when shrinking (antialiasing), each output pixel the normalised weighted sum of the input
//! pixels within the support, rows then columns. PIL rounds in fixed point after each pass, so
//! its u8 results may differ from these by one.

use image::RgbImage;

/// The weights of each output position along an axis of `len_in` pixels resized to `len_out`:
/// the first input pixel and the normalised weights from there.
fn weights(len_in: usize, len_out: usize) -> Vec<(usize, Vec<f64>)> {
    let scale = len_in as f64 / len_out as f64;
    let widen = scale.max(1.0);
    let support = widen; // the triangle's support is 1, widened when shrinking
    (0..len_out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(len_in);
            let w: Vec<f64> = (lo..hi)
                .map(|i| (1.0 - ((i as f64 - center + 0.5) / widen).abs()).max(0.0))
                .collect();
            let total: f64 = w.iter().sum();
            (lo, w.into_iter().map(|x| x / total).collect())
        })
        .collect()
}

/// `img` resized to `w` x `h`: rows, then columns, in f64, channel-last.
pub fn bilinear(img: &RgbImage, w: usize, h: usize) -> Vec<f64> {
    let size = (img.width() as usize, img.height() as usize);
    let pixels: Vec<f64> = img.as_raw().iter().map(|&v| v as f64).collect();
    let rows = pass(&pixels, size, (w, size.1), true);
    pass(&rows, (w, size.1), (w, h), false)
}

/// One pass of the separable filter: `src` (`from` = (w, h), 3 channels, channel-last) resized
/// to `to` along x (`along_x`) or along y (the other side the same in both).
fn pass(src: &[f64], from: (usize, usize), to: (usize, usize), along_x: bool) -> Vec<f64> {
    let taps = match along_x {
        true => weights(from.0, to.0),
        false => weights(from.1, to.1),
    };
    let mut out = vec![0.0; to.0 * to.1 * 3];
    for y in 0..to.1 {
        for x in 0..to.0 {
            let (lo, ws) = &taps[if along_x { x } else { y }];
            for c in 0..3 {
                let at = |i: usize| match along_x {
                    true => (y * from.0 + i) * 3 + c,
                    false => (i * from.0 + x) * 3 + c,
                };
                let v = ws
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| wt * src[at(lo + k)])
                    .sum();
                out[(y * to.0 + x) * 3 + c] = v;
            }
        }
    }
    out
}
