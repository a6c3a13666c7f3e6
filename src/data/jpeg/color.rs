//! From decoded component planes to RGB as libjpeg-turbo makes it with its defaults (Pillow's):
//! "fancy" upsampling of subsampled chroma (jdsample.c: triangle filters across the sample
//! centres, the image's edge rows repeated) and YCbCr to RGB through its fixed-point tables
//! (jdcolor.c).

/// A component's samples: `width` x `height` of them that matter (its downsampled size), in rows
/// `stride` apart.
pub(super) struct Plane<'a> {
    pub samples: &'a [u8],
    pub stride: usize,
    pub width: usize,
    pub height: usize,
}

impl Plane<'_> {
    fn row(&self, y: usize) -> &[u8] {
        &self.samples[y * self.stride..y * self.stride + self.width]
    }

    /// Row `y` with the image's edges repeated above and below (jdmainct.c's context rows).
    fn row_clamped(&self, y: isize) -> &[u8] {
        self.row(y.clamp(0, self.height as isize - 1) as usize)
    }
}

/// Row `y` of `p` upsampled by (`h`, `v`) ((1, 1), (2, 1) or (2, 2): 4:4:4, 4:2:2, 4:2:0) into
/// `line` (the image's width), as libjpeg-turbo's `jinit_upsampler` chooses with fancy
/// upsampling on: h2v1 and h2v2 fancy where the component is more than 2 samples wide, else
/// each sample repeated.
#[inline(always)]
pub(super) fn upsample_row(
    p: &Plane,
    (h, v): (usize, usize),
    y: usize,
    line: &mut [u8],
    scratch: &mut Scratch,
) {
    let wide = &mut scratch.wide[..2 * p.width];
    let fancy_h = p.width > 2;
    let n = line.len();
    match (h, v) {
        (1, 1) => line.copy_from_slice(&p.row(y)[..n]),
        (2, 1) if fancy_h => {
            h2v1_fancy(p.row(y), wide);
            line.copy_from_slice(&wide[..n]);
        }
        (2, 2) if fancy_h => {
            let (near, far) = vertical_pair(p, y);
            h2v2_fancy(near, far, wide, &mut scratch.sums[..p.width]);
            line.copy_from_slice(&wide[..n]);
        }
        _ => {
            let row = p.row(y / v);
            for (x, o) in line.iter_mut().enumerate() {
                *o = row[x / h];
            }
        }
    }
}

/// Rows reused from one output row to the next.
pub(super) struct Scratch {
    /// A doubled row, before it is cut to the image's width.
    wide: Vec<u8>,
    /// h2v2's column sums.
    sums: Vec<u32>,
    /// R, G and B of a row before they are interleaved.
    pub planar: Vec<u8>,
    /// A YCCK row's C, M, Y as RGB, before the black is applied.
    rgb: Vec<u8>,
}

impl Scratch {
    /// For rows of `width` pixels.
    pub(super) fn new(width: usize) -> Scratch {
        Scratch {
            wide: vec![0; 2 * width + 2],
            sums: vec![0; width + 1],
            planar: vec![0; 3 * width],
            rgb: vec![0; 3 * width],
        }
    }
}

/// For output row `y` of a vertically doubled component: the nearer input row and the other
/// neighbour (above for an even output row, below for an odd one).
#[inline(always)]
fn vertical_pair<'p>(p: &'p Plane, y: usize) -> (&'p [u8], &'p [u8]) {
    let r = (y / 2) as isize;
    let other = if y.is_multiple_of(2) { r - 1 } else { r + 1 };
    (p.row_clamped(r), p.row_clamped(other))
}

/// jdsample.c's `h2v1_fancy_upsample`: each sample twice, `(3 * it + neighbour + 1 | 2) >> 2`,
/// the row's ends kept; `out` is twice `row`'s length (at least 3).
#[inline(always)]
fn h2v1_fancy(row: &[u8], out: &mut [u8]) {
    let n = row.len();
    let s = |i: usize| row[i] as u32;
    out[0] = row[0];
    out[1] = ((s(0) * 3 + s(1) + 2) >> 2) as u8;
    for (i, pair) in out[2..2 * n - 2].chunks_exact_mut(2).enumerate() {
        let (last, this, next) = (s(i), s(i + 1) * 3, s(i + 2));
        pair[0] = ((this + last + 1) >> 2) as u8;
        pair[1] = ((this + next + 2) >> 2) as u8;
    }
    out[2 * n - 2] = ((s(n - 1) * 3 + s(n - 2) + 1) >> 2) as u8;
    out[2 * n - 1] = row[n - 1];
}

/// jdsample.c's `h2v2_fancy_upsample` for one output row: column sums `3 * near + far`, then
/// each twice, `(3 * sum + neighbour's sum + 8 | 7) >> 4`; `out` is twice the rows' length.
#[inline(always)]
fn h2v2_fancy(near: &[u8], far: &[u8], out: &mut [u8], sums: &mut [u32]) {
    let n = near.len();
    for ((s, &a), &b) in sums.iter_mut().zip(near).zip(far) {
        *s = a as u32 * 3 + b as u32;
    }
    out[0] = ((sums[0] * 4 + 8) >> 4) as u8;
    out[1] = ((sums[0] * 3 + sums[1] + 7) >> 4) as u8;
    for (pair, w) in out[2..2 * n - 2].chunks_exact_mut(2).zip(sums.windows(3)) {
        let this = w[1] * 3;
        pair[0] = ((this + w[0] + 8) >> 4) as u8;
        pair[1] = ((this + w[2] + 7) >> 4) as u8;
    }
    out[2 * n - 2] = ((sums[n - 1] * 3 + sums[n - 2] + 8) >> 4) as u8;
    out[2 * n - 1] = ((sums[n - 1] * 4 + 7) >> 4) as u8;
}

const SCALEBITS: u32 = 16;
const ONE_HALF: i32 = 1 << (SCALEBITS - 1);

/// libjpeg's `FIX(x)`: x in 16.16 fixed point, rounded.
fn fix(x: f64) -> i32 {
    (x * (1i64 << SCALEBITS) as f64 + 0.5) as i32
}

/// YCbCr rows to RGB as jdcolor.c's `ycc_rgb_convert` does. Its tables hold
/// `(FIX(1.402) * (cr - 128) + ONE_HALF) >> 16` and the like; computing those products here
/// instead of looking them up gives the same numbers and lets the loop vectorise. `planar` is
/// scratch of 3 x the row's length.
#[inline(always)]
pub(super) fn ycc_to_rgb(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8], planar: &mut [u8]) {
    let (k_cr_r, k_cb_b) = (fix(1.40200), fix(1.77200));
    let (k_cr_g, k_cb_g) = (-fix(0.71414), -fix(0.34414));
    let n = y.len();
    let (red, rest) = planar[..3 * n].split_at_mut(n);
    let (green, blue) = rest.split_at_mut(n);
    let channels = red.iter_mut().zip(green.iter_mut()).zip(blue.iter_mut());
    for ((((r_out, g_out), b_out), &l), (&b, &r)) in channels.zip(y).zip(cb.iter().zip(cr)) {
        let (l, b, r) = (l as i32, b as i32 - 128, r as i32 - 128);
        *r_out = (l + ((k_cr_r * r + ONE_HALF) >> SCALEBITS)).clamp(0, 255) as u8;
        *g_out = (l + ((k_cb_g * b + ONE_HALF + k_cr_g * r) >> SCALEBITS)).clamp(0, 255) as u8;
        *b_out = (l + ((k_cb_b * b + ONE_HALF) >> SCALEBITS)).clamp(0, 255) as u8;
    }
    for (((px, &r), &g), &b) in out.chunks_exact_mut(3).zip(&*red).zip(&*green).zip(&*blue) {
        px.copy_from_slice(&[r, g, b]);
    }
}

/// Pillow's `MULDIV255(a, b)`: a * b / 255, rounded as Pillow rounds it.
fn muldiv255(a: u32, b: u32) -> u32 {
    let t = a * b + 128;
    ((t >> 8) + t) >> 8
}

/// CMYK rows as libjpeg gives them (Adobe's inverted convention: 255 is no ink) to RGB as
/// Pillow makes them: it reads CMYK JPEGs inverted back ("CMYK;I"), then `convert("RGB")`
/// computes each channel as `(255 - k) - MULDIV255(c, 255 - k)` (Convert.c's `cmyk2rgb`). With
/// `ycck`, the first three rows are YCbCr that libjpeg turns into C, M, Y as 255 - R, 255 - G,
/// 255 - B (jdcolor.c's `ycck_cmyk_convert`, with the YCbCr tables of `ycc_to_rgb`).
#[inline(always)]
pub(super) fn cmyk_to_rgb(rows: [&[u8]; 4], ycck: bool, out: &mut [u8], scratch: &mut Scratch) {
    let [c, m, y, k] = rows;
    if ycck {
        // R, G, B are already Pillow's inverted C, M, Y
        let rgb = &mut scratch.rgb[..3 * c.len()];
        ycc_to_rgb(c, m, y, rgb, &mut scratch.planar);
        for ((px, ink), &k) in out.chunks_exact_mut(3).zip(rgb.chunks_exact(3)).zip(k) {
            for (o, &i) in px.iter_mut().zip(ink) {
                *o = (k as u32 - muldiv255(i as u32, k as u32)) as u8;
            }
        }
        return;
    }
    for ((((px, &c), &m), &y), &k) in out.chunks_exact_mut(3).zip(c).zip(m).zip(y).zip(k) {
        let k = k as u32;
        let ink = |v: u8| (k - muldiv255(255 - v as u32, k)) as u8;
        px.copy_from_slice(&[ink(c), ink(m), ink(y)]);
    }
}
