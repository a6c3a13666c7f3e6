//! Baseline JPEG decoded to the RGB bytes libjpeg-turbo gives with its defaults, which is what
//! Pillow's `Image.open(path).convert("RGB")` and so torchvision's `ImageFolder` read: its
//! accurate integer IDCT, its fancy upsampling and its YCbCr tables. Other JPEG decoders (the
//! `image` crate's zune-jpeg, jpeg-decoder) round differently and move a few pixel values by 1 to
//! 4 levels, enough to change some predictions (BENCHMARKS.md).
//!
//! Covered: baseline and extended sequential Huffman JPEG (SOF0, SOF1: one interleaved scan) and
//! progressive JPEG (SOF2, `progressive.rs`), 8-bit samples, 1, 3 or 4 components (grayscale,
//! YCbCr or RGB, or CMYK and YCCK as Adobe writes them, converted to RGB as Pillow converts CMYK) in
//! 4:4:4, 4:2:2 or 4:2:0, restart intervals: nearly every photo. Anything else (arithmetic
//! coding, sequential files of several scans, 4:4:0, 12-bit samples, damaged data) gives
//! `None`, and the caller decodes it with the `image` crate.

mod color;
mod huffman;
mod idct;
mod progressive;

use color::{cmyk_to_rgb, upsample_row, ycc_to_rgb, Plane, Scratch};
use huffman::{Bits, Table};
use image::RgbImage;

/// The zigzag order: the natural (row-major) index of the k-th coefficient of a block.
const ZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// A component of the frame.
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    /// The scan's Huffman tables for it.
    dc: usize,
    ac: usize,
}

/// What a frame's components hold (jdapimin.c's `jpeg_color_space`).
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum Color {
    #[default]
    Gray,
    YCbCr,
    /// Three components stored as R, G, B (no conversion).
    Rgb,
    /// Four components, printers' inks.
    Cmyk,
    /// Four components: YCbCr for C, M, Y, and K (Adobe's transform 2, or any but 0).
    Ycck,
}

/// What the markers before the scan said.
#[derive(Default)]
struct Header {
    width: usize,
    height: usize,
    components: Vec<Component>,
    /// Quantisation tables in natural order.
    quant: [Option<[u16; 64]>; 4],
    dc: [Option<Table>; 4],
    ac: [Option<Table>; 4],
    restart_interval: usize,
    /// The largest sampling factors, across and down.
    hmax: usize,
    vmax: usize,
    /// A JFIF APP0 segment was seen (the components are YCbCr whatever their ids).
    jfif: bool,
    /// The colour transform of an Adobe APP14 segment, where one was seen.
    adobe: Option<u8>,
    /// What the components hold, decided at the first scan as libjpeg decides it.
    color: Color,
    /// SOF2: the coefficients come in several scans.
    progressive: bool,
}

impl Header {
    /// MCUs across and down in an interleaved scan: 8 x 8 samples of the most sampled
    /// component each.
    fn mcus(&self) -> (usize, usize) {
        let across = self.width.div_ceil(8 * self.hmax);
        (across, self.height.div_ceil(8 * self.vmax))
    }
}

/// Pillow's `Image.MAX_IMAGE_PIXELS`: it refuses larger images as decompression bombs.
const MAX_PIXELS: usize = 178_956_970;

/// Proof that the CPU has AVX2: made only by [`Avx2::detect`], so the functions that take one
/// stay safe to call.
#[derive(Clone, Copy)]
struct Avx2(());

impl Avx2 {
    #[cfg(target_arch = "x86_64")]
    fn detect() -> Option<Avx2> {
        std::arch::is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }
}

/// The image in `bytes` as libjpeg-turbo decodes it, or `None` where it is not a JPEG this
/// covers (or is damaged): the caller then decodes it with another decoder.
pub(crate) fn decode(bytes: &[u8]) -> Option<RgbImage> {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return None;
    }
    let (mut header, scan_start) = read_header(bytes)?;
    if header.progressive {
        return progressive_pixels(&mut header, bytes, scan_start);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(avx2) = Avx2::detect() {
        // SAFETY: the CPU has the instructions the function is compiled with (detected)
        return unsafe { pixels_avx2(&header, &bytes[scan_start..], avx2) };
    }
    pixels(&header, &bytes[scan_start..], None)
}

/// [`pixels`] compiled for AVX2: the IDCT in AVX2 intrinsics, the colour conversion's loops
/// vectorised.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pixels_avx2(header: &Header, scan: &[u8], avx2: Avx2) -> Option<RgbImage> {
    pixels(header, scan, Some(avx2))
}

/// The scan's data decoded and converted to RGB, with AVX2 where given.
#[inline(always)]
fn pixels(header: &Header, scan: &[u8], avx2: Option<Avx2>) -> Option<RgbImage> {
    let planes = decode_scan(header, scan, avx2)?;
    Some(to_rgb(header, &planes))
}

/// A progressive image: its coefficients from every scan (the SOS payload at `sos`), then the
/// IDCT of each block and the colour conversion as for a baseline one.
fn progressive_pixels(header: &mut Header, bytes: &[u8], sos: usize) -> Option<RgbImage> {
    let c = progressive::coefficients(header, bytes, sos)?;
    #[cfg(target_arch = "x86_64")]
    let avx2 = Avx2::detect();
    #[cfg(not(target_arch = "x86_64"))]
    let avx2 = None;
    let mut planes: Planes = Vec::new();
    for (ci, comp) in header.components.iter().enumerate() {
        let quant = header.quant[comp.quant].as_ref()?;
        let across = c.across[ci];
        let stride = across * 8;
        let mut plane = vec![0u8; stride * (c.blocks[ci].len() / across) * 8];
        for (b, coef) in c.blocks[ci].iter().enumerate() {
            let coef: [i32; 64] = coef.map(i32::from);
            for (k, &v) in coef.iter().enumerate() {
                fits_16_bits(v, quant[k])?;
            }
            let (x, y) = ((b % across) * 8, (b / across) * 8);
            idct_block(avx2, &coef, quant, &mut plane[y * stride + x..], stride);
        }
        planes.push((plane, stride));
    }
    Some(to_rgb(header, &planes))
}

/// The segment of the marker at `pos` (just after its two bytes): its payload.
fn segment(bytes: &[u8], pos: usize) -> Option<&[u8]> {
    let len = u16::from_be_bytes([*bytes.get(pos)?, *bytes.get(pos + 1)?]) as usize;
    bytes.get(pos + 2..pos + len.checked_sub(2)? + 2)
}

/// Reads the markers up to the first scan: the header and where the scan's data starts.
fn read_header(bytes: &[u8]) -> Option<(Header, usize)> {
    let mut h = Header::default();
    let mut pos = 2;
    loop {
        while bytes.get(pos) == Some(&0xFF) && bytes.get(pos + 1) == Some(&0xFF) {
            pos += 1;
        }
        if bytes.get(pos) != Some(&0xFF) {
            return None;
        }
        let marker = *bytes.get(pos + 1)?;
        pos += 2;
        let data = segment(bytes, pos)?;
        let next = pos + 2 + data.len();
        match marker {
            0xC0 | 0xC1 => read_frame(&mut h, data)?,
            0xC2 => {
                read_frame(&mut h, data)?;
                h.progressive = true;
            }
            0xC4 => read_huffman(&mut h, data)?,
            0xDB => read_quant(&mut h, data)?,
            0xDD => {
                h.restart_interval = u16::from_be_bytes([*data.first()?, *data.get(1)?]) as usize
            }
            0xDA => {
                if h.components.is_empty() {
                    return None; // a scan before any frame (get_sos refuses it)
                }
                h.color = color_space(&h);
                if h.progressive {
                    return Some((h, pos)); // each scan's header is read with its scan
                }
                read_scan_header(&mut h, data)?;
                return Some((h, next));
            }
            // libjpeg takes an APP0 for JFIF from 14 bytes on (examine_app0)
            0xE0 if data.len() >= 14 && data.starts_with(b"JFIF\0") => h.jfif = true,
            0xEE if data.len() >= 12 && data.starts_with(b"Adobe") => h.adobe = Some(data[11]),
            0xE0..=0xEF | 0xFE => {}
            _ => return None, // lossless, arithmetic coding, hierarchical, ...
        }
        pos = next;
    }
}

/// What the components hold, as libjpeg-turbo's `default_decompress_parms` decides it.
fn color_space(h: &Header) -> Color {
    let ids: Vec<u8> = h.components.iter().map(|c| c.id).collect();
    match ids.len() {
        1 => Color::Gray,
        // JFIF means YCbCr; else Adobe's transform says RGB (0) or YCbCr; else components
        // named 'R', 'G', 'B' are RGB
        3 if h.jfif => Color::YCbCr,
        3 if h.adobe == Some(0) => Color::Rgb,
        3 if h.adobe.is_none() && ids == b"RGB" => Color::Rgb,
        3 => Color::YCbCr,
        // CMYK without Adobe's segment or with its transform 0, else YCCK
        _ if matches!(h.adobe, None | Some(0)) => Color::Cmyk,
        _ => Color::Ycck,
    }
}

fn read_frame(h: &mut Header, d: &[u8]) -> Option<()> {
    if d.len() < 6 || d[0] != 8 || !h.components.is_empty() {
        return None;
    }
    h.height = u16::from_be_bytes([d[1], d[2]]) as usize;
    h.width = u16::from_be_bytes([d[3], d[4]]) as usize;
    let n = d[5] as usize;
    if h.height == 0 || h.width == 0 || !matches!(n, 1 | 3 | 4) || d.len() < 6 + 3 * n {
        return None;
    }
    for c in d[6..6 + 3 * n].chunks(3) {
        let (hs, vs, quant) = ((c[1] >> 4) as usize, (c[1] & 15) as usize, c[2] as usize);
        if !(1..=2).contains(&hs) || !(1..=2).contains(&vs) || quant > 3 {
            return None;
        }
        h.components.push(Component {
            id: c[0],
            h: hs,
            v: vs,
            quant,
            dc: 0,
            ac: 0,
        });
    }
    h.hmax = h.components.iter().map(|c| c.h).max()?;
    h.vmax = h.components.iter().map(|c| c.v).max()?;
    // 4:4:4, 4:2:2 and 4:2:0 (the chroma at full, half width, half both): what the tests hold
    // to Pillow's bytes; 4:4:0's vertical-only filter is left to the other decoder
    let layout_ok = h.components.iter().all(|c| {
        let (across, down) = (h.hmax / c.h, h.vmax / c.v);
        matches!((across, down), (1, 1) | (2, 1) | (2, 2))
    });
    (layout_ok && h.width * h.height <= MAX_PIXELS).then_some(())
}

fn read_huffman(h: &mut Header, mut d: &[u8]) -> Option<()> {
    while !d.is_empty() {
        let (class, id) = (d[0] >> 4, (d[0] & 15) as usize);
        let counts: [u8; 16] = d.get(1..17)?.try_into().ok()?;
        let n: usize = counts.iter().map(|&c| c as usize).sum();
        let values = d.get(17..17 + n)?;
        let table = Table::new(&counts, values)?;
        match (class, id) {
            (0, 0..=3) => h.dc[id] = Some(table),
            (1, 0..=3) => h.ac[id] = Some(table),
            _ => return None,
        }
        d = &d[17 + n..];
    }
    Some(())
}

fn read_quant(h: &mut Header, mut d: &[u8]) -> Option<()> {
    while !d.is_empty() {
        let (precision, id) = (d[0] >> 4, (d[0] & 15) as usize);
        let size = if precision == 0 { 64 } else { 128 };
        let raw = d.get(1..1 + size)?;
        let mut table = [0u16; 64];
        for (k, &natural) in ZIGZAG.iter().enumerate() {
            table[natural] = match precision {
                0 => raw[k] as u16,
                _ => u16::from_be_bytes([raw[2 * k], raw[2 * k + 1]]),
            };
            // libjpeg-turbo's SIMD IDCT multiplies by 16-bit signed steps
            if table[natural] > i16::MAX as u16 {
                return None;
            }
        }
        *h.quant.get_mut(id)? = Some(table);
        d = &d[1 + size..];
    }
    Some(())
}

/// The scan must cover every component at once, with the full spectrum (baseline).
fn read_scan_header(h: &mut Header, d: &[u8]) -> Option<()> {
    let n = *d.first()? as usize;
    if n != h.components.len() || d.len() < 1 + 2 * n + 3 {
        return None;
    }
    for (i, s) in d[1..1 + 2 * n].chunks(2).enumerate() {
        let c = h.components.get_mut(i)?;
        if c.id != s[0] {
            return None;
        }
        c.dc = (s[1] >> 4) as usize;
        c.ac = (s[1] & 15) as usize;
    }
    let spectral = &d[1 + 2 * n..];
    (spectral == [0, 63, 0]).then_some(())
}

/// Each component's samples, whole blocks of them: (samples, stride).
type Planes = Vec<(Vec<u8>, usize)>;

/// Decodes the scan's MCUs into component planes.
#[inline(always)]
fn decode_scan(h: &Header, data: &[u8], avx2: Option<Avx2>) -> Option<Planes> {
    // one component: a non-interleaved scan of its own blocks; else MCUs of every component
    let single = h.components.len() == 1;
    let (mcus_x, mcus_y) = match single {
        true => (h.width.div_ceil(8), h.height.div_ceil(8)),
        false => h.mcus(),
    };
    let blocks = |c: &Component| if single { (1, 1) } else { (c.h, c.v) };
    // a block takes 2 bits at least (a DC code and an end of block): a header whose size the
    // data cannot fill is damaged, and is not worth the memory it asks for
    let per_mcu: usize = h.components.iter().map(|c| blocks(c).0 * blocks(c).1).sum();
    // libjpeg's limit on the blocks of an MCU (jdinput.c): three 2x2 components are too many
    if per_mcu > 10 || mcus_x * mcus_y * per_mcu > data.len() * 4 {
        return None;
    }
    let mut planes: Planes = h
        .components
        .iter()
        .map(|c| {
            let (bw, bh) = blocks(c);
            let stride = mcus_x * bw * 8;
            (vec![0u8; stride * mcus_y * bh * 8], stride)
        })
        .collect();
    let tables: Vec<(&Table, &Table, &[u16; 64])> = h
        .components
        .iter()
        .map(|c| {
            let dc = h.dc.get(c.dc)?.as_ref()?;
            Some((dc, h.ac.get(c.ac)?.as_ref()?, h.quant[c.quant].as_ref()?))
        })
        .collect::<Option<_>>()?;
    let mut bits = Bits::new(data);
    let mut pred = vec![0i32; h.components.len()];
    let mut coef = [0i32; 64];
    let total = mcus_x * mcus_y;
    for m in 0..total {
        if h.restart_interval > 0 && m > 0 && m % h.restart_interval == 0 {
            let n = ((m / h.restart_interval - 1) % 8) as u8;
            if bits.overran() || !bits.restart(n) {
                return None;
            }
            pred.fill(0);
        }
        let (mx, my) = (m % mcus_x, m / mcus_x);
        for (ci, c) in h.components.iter().enumerate() {
            let (bw, bh) = blocks(c);
            let (dc, ac, quant) = tables[ci];
            for by in 0..bh {
                for bx in 0..bw {
                    let tables = (dc, ac, quant);
                    let ac_coded = decode_block(&mut bits, tables, &mut pred[ci], &mut coef)?;
                    let (plane, stride) = &mut planes[ci];
                    let (x, y) = ((mx * bw + bx) * 8, (my * bh + by) * 8);
                    let out = &mut plane[y * *stride + x..];
                    match ac_coded {
                        true => idct_block(avx2, &coef, quant, out, *stride),
                        false => idct::flat(coef[0], quant[0], out, *stride),
                    }
                }
            }
        }
    }
    (!bits.overran()).then_some(planes)
}

/// The IDCT of a block: in AVX2 where the CPU has it, else the portable one; the same bits
/// either way.
#[inline(always)]
fn idct_block(
    avx2: Option<Avx2>,
    coef: &[i32; 64],
    quant: &[u16; 64],
    out: &mut [u8],
    stride: usize,
) {
    #[cfg(target_arch = "x86_64")]
    if avx2.is_some() {
        // SAFETY: an Avx2 exists only where the CPU has the instructions
        return unsafe { idct::avx2::idct_islow(coef, quant, out, stride) };
    }
    let _ = avx2;
    idct::idct_islow(coef, quant, out, stride)
}

/// One block's coefficients, in natural order, into `coef`; whether any AC coefficient was
/// coded (else the block is flat).
#[inline(always)]
fn decode_block(
    bits: &mut Bits,
    (dc, ac, quant): (&Table, &Table, &[u16; 64]),
    pred: &mut i32,
    coef: &mut [i32; 64],
) -> Option<bool> {
    coef.fill(0);
    let s = bits.decode(dc)? as u32;
    if s > 11 {
        return None;
    }
    *pred = pred.wrapping_add(bits.receive_extend(s));
    // libjpeg keeps the coefficient in 16 bits (JCOEF)
    coef[0] = *pred as i16 as i32;
    fits_16_bits(coef[0], quant[0])?;
    let (mut k, mut coded) = (1, false);
    while k < 64 {
        let rs = bits.decode(ac)?;
        let (r, s) = ((rs >> 4) as usize, (rs & 15) as u32);
        if s == 0 {
            if r != 15 {
                break; // end of block
            }
            k += 16;
            continue;
        }
        k += r;
        let natural = *ZIGZAG.get(k)?;
        let v = bits.receive_extend(s);
        fits_16_bits(v, quant[natural])?;
        coef[natural] = v;
        coded = true;
        k += 1;
    }
    Some(coded)
}

/// `Some` where a dequantised coefficient fits 16 bits, as libjpeg-turbo's SIMD IDCT holds
/// it (no encoder writes more: an 8-bit block's coefficients stay within about 1,100), so that
/// the IDCT's 32-bit arithmetic gives its bytes; else the file is left to the other decoder.
#[inline(always)]
fn fits_16_bits(coef: i32, quant: u16) -> Option<()> {
    let v = coef * quant as i32;
    (i16::MIN as i32..=i16::MAX as i32)
        .contains(&v)
        .then_some(())
}

/// The RGB image from the component planes: grayscale repeated, or YCbCr upsampled and
/// converted.
#[inline(always)]
fn to_rgb(h: &Header, planes: &Planes) -> RgbImage {
    let (w, hgt) = (h.width, h.height);
    let (hmax, vmax) = (h.hmax, h.vmax);
    let components: Vec<(Plane, (usize, usize))> = h
        .components
        .iter()
        .zip(planes)
        .map(|(c, (samples, stride))| {
            let plane = Plane {
                samples,
                stride: *stride,
                width: (w * c.h).div_ceil(hmax),
                height: (hgt * c.v).div_ceil(vmax),
            };
            (plane, (hmax / c.h, vmax / c.v))
        })
        .collect();
    // a row at a time: the upsampled rows stay in the cache, no whole-image planes
    let mut rows = vec![vec![0u8; w]; components.len()];
    let mut scratch = Scratch::new(w);
    let mut out = vec![0u8; 3 * w * hgt];
    for (y, line) in out.chunks_exact_mut(3 * w).enumerate() {
        for ((plane, factors), row) in components.iter().zip(&mut rows) {
            upsample_row(plane, *factors, y, row, &mut scratch);
        }
        match &rows[..] {
            [l] => {
                for (px, &l) in line.chunks_exact_mut(3).zip(l) {
                    px.fill(l);
                }
            }
            [r, g, b] if h.color == Color::Rgb => {
                for (((px, &r), &g), &b) in line.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
                    px.copy_from_slice(&[r, g, b]);
                }
            }
            [l, cb, cr] => ycc_to_rgb(l, cb, cr, line, &mut scratch.planar),
            [c, m, y, k] => {
                let ycck = h.color == Color::Ycck;
                cmyk_to_rgb([c, m, y, k], ycck, line, &mut scratch);
            }
            _ => unreachable!("read_frame takes 1, 3 or 4 components"),
        }
    }
    RgbImage::from_raw(w as u32, hgt as u32, out).expect("3 bytes a pixel")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AVX2 build and the portable one decode every fixture JPEG to the same bytes (the
    /// integration test compares the first with Pillow's).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_build_decodes_as_the_portable_one() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return; // nothing to compare on this CPU
        }
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg");
        let mut decoded = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let Some((header, start)) = bytes
                .starts_with(&[0xFF, 0xD8])
                .then(|| read_header(&bytes))
                .flatten()
                .filter(|(h, _)| !h.progressive)
            else {
                continue; // progressive files share the IDCT, compared on its own
            };
            let portable = pixels(&header, &bytes[start..], None).unwrap();
            let token = Avx2::detect().unwrap();
            // SAFETY: the CPU has AVX2 (detected)
            let avx2 = unsafe { pixels_avx2(&header, &bytes[start..], token) }.unwrap();
            assert_eq!(portable, avx2);
            decoded += 1;
        }
        assert!(decoded >= 10, "{decoded} fixtures decoded");
    }

    /// A file cut off inside its scan is not decoded (libjpeg would fill the rest with grey,
    /// Pillow refuses it). Components named R, G, B without a JFIF segment are RGB to libjpeg,
    /// not YCbCr: the same file with those names decodes to other pixels.
    #[test]
    fn truncated_scans_are_left_to_the_other_decoder_and_rgb_ids_are_rgb() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg");
        let bytes = std::fs::read(dir.join("cat_500x375_420.jpg")).unwrap();
        assert!(decode(&bytes).is_some());
        assert!(decode(&bytes[..bytes.len() * 3 / 5]).is_none());
        let mut rgb = bytes.clone();
        let find = |b: &[u8], marker: u8| b.windows(2).position(|w| w == [0xFF, marker]).unwrap();
        let app0 = find(&rgb, 0xE0);
        rgb[app0 + 1] = 0xE1; // no longer JFIF
        let sof = find(&rgb, 0xC0);
        let sos = find(&rgb, 0xDA);
        for (i, id) in b"RGB".iter().enumerate() {
            rgb[sof + 10 + 3 * i] = *id;
            rgb[sos + 5 + 2 * i] = *id;
        }
        let unconverted = decode(&rgb).unwrap();
        assert_ne!(Some(unconverted), decode(&bytes));
        // the same ids with the JFIF segment: YCbCr
        rgb[app0 + 1] = 0xE0;
        assert_eq!(decode(&rgb), decode(&bytes));
    }

    /// The colour spaces libjpeg reads, decoded here (tests/jpeg.rs holds their bytes to
    /// Pillow's): four components are CMYK (Adobe's transform 0, or no Adobe segment) or YCCK
    /// (transform 2); three are RGB with Adobe's transform 0 and no JFIF segment, or named R,
    /// G, B with neither, and YCbCr with Adobe's transform 1 or with JFIF whatever Adobe says.
    #[test]
    fn colour_spaces_are_libjpegs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg");
        for (name, color) in [
            ("cat_120x90_cmyk_420", Color::Cmyk),
            ("frog_91x45_cmyk_progressive", Color::Cmyk),
            ("deer_64x48_cmyk_no_adobe", Color::Cmyk),
            ("dog_80x60_ycck_420", Color::Ycck),
            ("horse_33x17_ycck_progressive_422", Color::Ycck),
            ("airplane_61x47_rgb", Color::Rgb),
            ("bird_45x33_rgb_no_adobe", Color::Rgb),
        ] {
            let bytes = std::fs::read(dir.join(format!("{name}.jpg"))).unwrap();
            assert_eq!(read_header(&bytes).unwrap().0.color, color, "{name}");
            assert!(decode(&bytes).is_some(), "{name}");
        }
        let bytes = std::fs::read(dir.join("cat_500x375_420.jpg")).unwrap();
        let app0 = bytes.windows(2).position(|w| w == [0xFF, 0xE0]).unwrap();
        let adobe = |transform: u8, jfif: bool| {
            let mut b = bytes[..2].to_vec();
            b.extend_from_slice(b"\xFF\xEE\x00\x0EAdobe\x00\x64\x00\x00\x00\x00");
            b.push(transform);
            b.extend_from_slice(&bytes[2..]);
            if !jfif {
                b[app0 + 16 + 1] = 0xE1; // the JFIF segment, 16 bytes on, is no longer one
            }
            read_header(&b).unwrap().0.color
        };
        assert_eq!(adobe(0, false), Color::Rgb);
        assert_eq!(adobe(1, false), Color::YCbCr);
        assert_eq!(adobe(0, true), Color::YCbCr);
    }

    /// Damaged files never panic: every prefix of a fixture, and the fixture with bytes
    /// changed, decode to an image or to `None` (then the other decoder says what is wrong).
    #[test]
    fn damaged_jpegs_do_not_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jpeg");
        let mut state = 5u64;
        for name in [
            "ship_120x90_restarts.jpg",
            "truck_37x23_420.jpg",
            "truck_99x77_gray.jpg",
            "horse_150x100_progressive_restarts.jpg",
            "dog_80x60_progressive.jpg",
            "ship_37x23_cmyk_444.jpg",
            "horse_33x17_ycck_progressive_422.jpg",
        ] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            for end in 0..bytes.len() {
                let _ = decode(&bytes[..end]);
            }
            for _ in 0..2000 {
                let mut damaged = bytes.clone();
                for _ in 0..3 {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    let at = (state >> 33) as usize % damaged.len();
                    damaged[at] = (state >> 20) as u8;
                }
                let _ = decode(&damaged);
            }
        }
        // a scan with no frame before it, which libjpeg refuses
        let no_frame = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x06, 0x00, 0x00, 0x3F, 0x00];
        assert!(decode(&no_frame).is_none());
    }
}
