//! Progressive JPEG (SOF2) as libjpeg-turbo reads it (jdphuff.c): the coefficients arrive over
//! several scans (the DC first, then bands of AC coefficients, then their lower bits), and the
//! image is the IDCT of the final coefficients, as for a baseline file.

use super::huffman::{Bits, Table};
use super::{read_huffman, segment, Header, ZIGZAG};

/// Every component's coefficients, block by block in rows of its MCU-padded grid (natural
/// order within a block), in 16 bits as libjpeg keeps them (JCOEF).
pub(super) struct Coefficients {
    pub blocks: Vec<Vec<[i16; 64]>>,
    /// Blocks across a component's grid.
    pub across: Vec<usize>,
}

/// More scans than libjpeg's scripts write (10) or any sensible one: a file with more is left
/// to the other decoder rather than decoded for as long as it likes.
const MAX_SCANS: usize = 1000;

/// One scan's header: the components it codes and its spectral band and bit position.
struct Scan {
    components: Vec<usize>,
    /// Huffman tables per component of the scan (DC or AC, as the scan needs).
    tables: Vec<usize>,
    start: usize,
    end: usize,
    high: u32,
    low: u32,
}

/// Reads every scan from the SOS at `pos` (its payload) to the end of the image.
pub(super) fn coefficients(h: &mut Header, bytes: &[u8], mut pos: usize) -> Option<Coefficients> {
    let (mcus_x, mcus_y) = h.mcus();
    let across: Vec<usize> = h.components.iter().map(|c| mcus_x * c.h).collect();
    let down: Vec<usize> = h.components.iter().map(|c| mcus_y * c.v).collect();
    let total: usize = across.iter().zip(&down).map(|(a, d)| a * d).sum();
    // each block coded in the first DC scan takes a bit at least (only the padding blocks of
    // non-interleaved scans take none): a header the data cannot be the image of is damaged,
    // and not worth the memory it asks for
    if total > bytes.len() * 8 {
        return None;
    }
    let mut c = Coefficients {
        blocks: across
            .iter()
            .zip(&down)
            .map(|(a, d)| vec![[0; 64]; a * d])
            .collect(),
        across,
    };
    // the bit position each coefficient is known to (libjpeg's coef_bits): -1 never sent
    let mut known = vec![[-1i32; 64]; h.components.len()];
    for _ in 0..MAX_SCANS {
        let payload = segment(bytes, pos)?;
        let scan = read_scan(h, payload)?;
        let expected = if scan.high == 0 { -1 } else { scan.high as i32 };
        for &ci in &scan.components {
            for bit in &mut known[ci][scan.start..=scan.end] {
                if *bit != expected {
                    return None; // a band out of order: libjpeg would warn and go on
                }
                *bit = scan.low as i32;
            }
        }
        let data = &bytes[pos + 2 + payload.len()..];
        let used = decode_scan(h, &scan, data, &mut c)?;
        pos = next_scan(h, bytes, pos + 2 + payload.len() + used)?;
        if pos == 0 {
            break;
        }
    }
    if pos != 0 {
        return None; // more scans than any encoder writes: a file built to take time
    }
    // libjpeg smooths blocks where some component's zigzag coefficients 1 to 9 are not known
    // to their last bit (jdcoefct.c smoothing_ok): not covered here; the DC must be known too
    known
        .iter()
        .all(|k| k[..10].iter().all(|&b| b == 0))
        .then_some(c)
}

/// After a scan's data (from `pos`): reads the markers up to the next SOS, whose payload's
/// position it returns, or 0 at the end of the image.
fn next_scan(h: &mut Header, bytes: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        // the data ends at a marker (not a stuffed zero, a fill byte or a restart): skip to it
        while bytes.get(pos)? != &0xFF || matches!(bytes.get(pos + 1)?, 0x00 | 0xFF | 0xD0..=0xD7) {
            pos += 1;
        }
        let marker = bytes[pos + 1];
        pos += 2;
        match marker {
            0xD9 => return Some(0),
            0xDA => return Some(pos),
            _ => {}
        }
        let data = segment(bytes, pos)?;
        match marker {
            0xC4 => read_huffman(h, data)?,
            0xDD => {
                h.restart_interval = u16::from_be_bytes([*data.first()?, *data.get(1)?]) as usize
            }
            0xE0..=0xEF | 0xFE => {}
            _ => return None,
        }
        pos += 2 + data.len();
    }
}

fn read_scan(h: &Header, d: &[u8]) -> Option<Scan> {
    let n = *d.first()? as usize;
    // libjpeg's checks (jdmarker.c get_sos): the exact length
    if n == 0 || n > h.components.len() || d.len() != 1 + 2 * n + 3 {
        return None;
    }
    let (mut components, mut tables) = (Vec::new(), Vec::new());
    let (start, end, a) = (d[1 + 2 * n] as usize, d[2 + 2 * n] as usize, d[3 + 2 * n]);
    for s in d[1..1 + 2 * n].chunks(2) {
        let ci = h.components.iter().position(|c| c.id == s[0])?;
        components.push(ci);
        tables.push(if start == 0 {
            (s[1] >> 4) as usize
        } else {
            (s[1] & 15) as usize
        });
    }
    let (high, low) = ((a >> 4) as u32, (a & 15) as u32);
    // DC scans may interleave components, in frame order (libjpeg refuses any other); an AC
    // band codes one component
    let in_order = components.windows(2).all(|w| w[0] < w[1]);
    let valid = if start == 0 {
        end == 0 && in_order
    } else {
        start <= end && end <= 63 && n == 1
    };
    (valid && low <= 13 && (high == 0 || high == low + 1)).then_some(Scan {
        components,
        tables,
        start,
        end,
        high,
        low,
    })
}

/// Decodes one scan's data into `c`; the bytes its entropy-coded data took.
fn decode_scan(h: &Header, scan: &Scan, data: &[u8], c: &mut Coefficients) -> Option<usize> {
    let dc = scan.start == 0;
    // DC refinement reads bare bits: its table need not exist
    let tables: Vec<Option<&Table>> = scan
        .tables
        .iter()
        .map(|&t| {
            if dc && scan.high != 0 {
                Some(None)
            } else if dc {
                Some(Some(h.dc.get(t)?.as_ref()?))
            } else {
                Some(Some(h.ac.get(t)?.as_ref()?))
            }
        })
        .collect::<Option<_>>()?;
    let order = coding_order(h, scan, c);
    let units_per_mcu = if scan.components.len() == 1 {
        1
    } else {
        scan.components
            .iter()
            .map(|&ci| h.components[ci].h * h.components[ci].v)
            .sum()
    };
    if units_per_mcu > 10 {
        return None; // libjpeg's limit on the blocks of an MCU (jdinput.c)
    }
    let mut bits = Bits::new(data);
    let mut pred = vec![0i32; h.components.len()];
    let mut eobrun = 0u32;
    for (i, &(si, b)) in order.iter().enumerate() {
        let ci = scan.components[si];
        let unit = i / units_per_mcu;
        if i % units_per_mcu == 0
            && h.restart_interval > 0
            && unit > 0
            && unit % h.restart_interval == 0
        {
            let n = ((unit / h.restart_interval - 1) % 8) as u8;
            if bits.overran() || !bits.restart(n) {
                return None;
            }
            pred.fill(0);
            eobrun = 0;
        }
        let t = tables[si];
        let block = &mut c.blocks[ci][b];
        match (dc, scan.high == 0) {
            (true, true) => {
                let s = bits.decode(t?)? as u32;
                if s > 11 {
                    return None;
                }
                pred[ci] = pred[ci].wrapping_add(bits.receive_extend(s));
                block[0] = pred[ci].wrapping_shl(scan.low) as i16;
            }
            (true, false) => {
                if bits.bits(1) == 1 {
                    block[0] |= 1 << scan.low;
                }
            }
            (false, true) => ac_first(&mut bits, t?, scan, block, &mut eobrun)?,
            (false, false) => ac_refine(&mut bits, t?, scan, block, &mut eobrun)?,
        }
    }
    if bits.overran() {
        return None;
    }
    Some(bits.consumed())
}

/// The blocks of a scan in coding order, as (the component's place in the scan, block index):
/// the MCUs of every component, or one component's blocks inside its own area (a
/// non-interleaved scan).
fn coding_order(h: &Header, scan: &Scan, c: &Coefficients) -> Vec<(usize, usize)> {
    let mut order: Vec<(usize, usize)> = Vec::new();
    if let [ci] = scan.components[..] {
        let comp = &h.components[ci];
        let w = (h.width * comp.h).div_ceil(h.hmax).div_ceil(8);
        let hgt = (h.height * comp.v).div_ceil(h.vmax).div_ceil(8);
        for by in 0..hgt {
            for bx in 0..w {
                order.push((0, by * c.across[ci] + bx));
            }
        }
    } else {
        let (mcus_x, mcus_y) = h.mcus();
        for m in 0..mcus_x * mcus_y {
            let (mx, my) = (m % mcus_x, m / mcus_x);
            for (si, &ci) in scan.components.iter().enumerate() {
                let comp = &h.components[ci];
                for v in 0..comp.v {
                    for u in 0..comp.h {
                        let (bx, by) = (mx * comp.h + u, my * comp.v + v);
                        order.push((si, by * c.across[ci] + bx));
                    }
                }
            }
        }
    }
    order
}

/// jdphuff.c's `decode_mcu_AC_first`: a band's coefficients, shifted to their bit position,
/// with runs of blocks ending at once (EOBRUN).
fn ac_first(
    bits: &mut Bits,
    t: &Table,
    s: &Scan,
    block: &mut [i16; 64],
    eobrun: &mut u32,
) -> Option<()> {
    if *eobrun > 0 {
        *eobrun -= 1;
        return Some(());
    }
    let mut k = s.start;
    while k <= s.end {
        let rs = bits.decode(t)?;
        let (r, size) = ((rs >> 4) as usize, (rs & 15) as u32);
        if size != 0 {
            k += r;
            let v = bits.receive_extend(size) << s.low;
            *block.get_mut(*ZIGZAG.get(k)?)? = v as i16;
        } else if r == 15 {
            k += 15;
        } else {
            *eobrun = (1 << r) + bits.bits(r as u32) - 1;
            break;
        }
        k += 1;
    }
    Some(())
}

/// jdphuff.c's `decode_mcu_AC_refine`: one more bit of the band's known coefficients, and the
/// coefficients that become nonzero at this bit.
fn ac_refine(
    bits: &mut Bits,
    t: &Table,
    s: &Scan,
    block: &mut [i16; 64],
    eobrun: &mut u32,
) -> Option<()> {
    let (p1, m1) = (1i16 << s.low, -1i16 << s.low);
    let mut k = s.start;
    let refine = |block: &mut [i16; 64], k: usize, bits: &mut Bits| -> Option<bool> {
        let c = block.get_mut(*ZIGZAG.get(k)?)?;
        if *c == 0 {
            return Some(false);
        }
        if bits.bits(1) == 1 && *c & p1 == 0 {
            *c = c.wrapping_add(if *c >= 0 { p1 } else { m1 });
        }
        Some(true)
    };
    if *eobrun == 0 {
        while k <= s.end {
            let rs = bits.decode(t)?;
            let (mut r, size) = ((rs >> 4) as i32, (rs & 15) as u32);
            let mut value = 0;
            if size != 0 {
                value = if bits.bits(1) == 1 { p1 } else { m1 };
            } else if r != 15 {
                *eobrun = (1 << r) + bits.bits(r as u32);
                break;
            }
            while k <= s.end {
                if !refine(block, k, bits)? {
                    r -= 1;
                    if r < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if value != 0 {
                *block.get_mut(*ZIGZAG.get(k)?)? = value;
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        while k <= s.end {
            refine(block, k, bits)?;
            k += 1;
        }
        *eobrun -= 1;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::super::Component;
    use super::*;

    fn header() -> Header {
        let component = |id| Component {
            id,
            h: 1,
            v: 1,
            quant: 0,
            dc: 0,
            ac: 0,
        };
        Header {
            width: 16,
            height: 16,
            components: vec![component(1), component(2), component(3)],
            hmax: 1,
            vmax: 1,
            progressive: true,
            ..Header::default()
        }
    }

    /// Scans libjpeg refuses are refused: components out of frame order, a length other than
    /// 2n + 6, an AC band of two components, a refinement that skips a bit.
    #[test]
    fn scans_are_checked_as_libjpeg_checks_them() {
        let h = header();
        let scan = |ids: &[u8], tail: &[u8]| {
            let mut d = vec![ids.len() as u8];
            for &id in ids {
                d.extend([id, 0x00]);
            }
            d.extend(tail);
            read_scan(&h, &d)
        };
        assert!(scan(&[1, 2, 3], &[0, 0, 0x01]).is_some());
        assert!(scan(&[2, 3], &[0, 0, 0x00]).is_some());
        assert!(scan(&[2, 1], &[0, 0, 0x00]).is_none());
        assert!(scan(&[1, 2, 3], &[0, 0, 0x00, 0]).is_none());
        assert!(scan(&[1], &[1, 5, 0x00]).is_some());
        assert!(scan(&[1, 2], &[1, 5, 0x00]).is_none());
        assert!(scan(&[1], &[1, 5, 0x21]).is_some());
        assert!(scan(&[1], &[1, 5, 0x20]).is_none());
        assert!(scan(&[1], &[6, 5, 0x00]).is_none());
        assert!(scan(&[4], &[0, 0, 0x00]).is_none());
    }
}
