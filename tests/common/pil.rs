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

/// `img` resized to `w` x `h`: rows (w, h_in, 3) then columns, in f64, channel-last.
pub fn bilinear(img: &RgbImage, w: usize, h: usize) -> Vec<f64> {
    let (w_in, h_in) = (img.width() as usize, img.height() as usize);
    let px = |x: usize, y: usize, c: usize| img.get_pixel(x as u32, y as u32)[c] as f64;
    let mut rows = vec![0.0; w * h_in * 3];
    for (x, (lo, ws)) in weights(w_in, w).into_iter().enumerate() {
        for y in 0..h_in {
            for c in 0..3 {
                let v = ws
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| wt * px(lo + k, y, c))
                    .sum();
                rows[(y * w + x) * 3 + c] = v;
            }
        }
    }
    let mut out = vec![0.0; w * h * 3];
    for (y, (lo, ws)) in weights(h_in, h).into_iter().enumerate() {
        for x in 0..w {
            for c in 0..3 {
                let v = ws
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| wt * rows[((lo + k) * w + x) * 3 + c])
                    .sum();
                out[(y * w + x) * 3 + c] = v;
            }
        }
    }
    out
}
