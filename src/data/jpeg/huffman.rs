//! JPEG's Huffman entropy coding, sequential and progressive: the bit stream (0xFF00 stuffing, markers ending it) and the
//! canonical Huffman tables of a DHT segment.

/// A Huffman table: codes of up to 16 bits, looked up 9 bits at a time, longer ones by length.
pub(super) struct Table {
    /// For each 9-bit prefix: (code length, value), length 0 where the code is longer.
    fast: Vec<(u8, u8)>,
    /// For each length 1..=16: the largest code of that length (-1 if none), and the index in
    /// `values` of its first code minus that code.
    max_code: [i32; 17],
    offset: [i32; 17],
    values: Vec<u8>,
}

const FAST_BITS: u32 = 9;

impl Table {
    /// From a DHT segment's 16 counts and its values; `None` when they cannot be a code.
    pub(super) fn new(counts: &[u8; 16], values: &[u8]) -> Option<Table> {
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total != values.len() || total > 256 {
            return None;
        }
        let mut t = Table {
            fast: vec![(0, 0); 1 << FAST_BITS],
            max_code: [-1; 17],
            offset: [0; 17],
            values: values.to_vec(),
        };
        let (mut code, mut k) = (0i32, 0usize);
        for len in 1..=16usize {
            let n = counts[len - 1] as usize;
            // libjpeg's check (jdhuff.c): the codes must fit the length, the all-ones code
            // left unused
            if n > 0 && code + n as i32 >= 1 << len {
                return None;
            }
            t.offset[len] = k as i32 - code;
            for _ in 0..n {
                if len as u32 <= FAST_BITS {
                    let shift = FAST_BITS - len as u32;
                    let first = (code as usize) << shift;
                    for e in &mut t.fast[first..first + (1 << shift)] {
                        *e = (len as u8, values[k]);
                    }
                }
                code += 1;
                k += 1;
            }
            if n > 0 {
                t.max_code[len] = code - 1;
            }
            code <<= 1;
        }
        Some(t)
    }
}

/// The entropy-coded data of a scan, read bit by bit.
pub(super) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    count: u32,
    /// A marker (not a stuffed 0xFF00) was reached: zero bits are fed from there on, and
    /// counted, so that a scan that reads them is known to be cut short.
    marker: Option<u8>,
    padding: u32,
}

impl<'a> Bits<'a> {
    pub(super) fn new(data: &'a [u8]) -> Bits<'a> {
        Bits {
            data,
            pos: 0,
            buf: 0,
            count: 0,
            marker: None,
            padding: 0,
        }
    }

    #[inline(always)]
    fn fill(&mut self) {
        while self.count <= 56 {
            let byte = match (self.marker, self.data.get(self.pos)) {
                (None, Some(&0xFF)) => {
                    // fill bytes: FF FF ... 00 is one FF of data, as libjpeg reads it
                    let mut next = self.pos + 1;
                    while self.data.get(next) == Some(&0xFF) {
                        next += 1;
                    }
                    match self.data.get(next) {
                        Some(0x00) => {
                            self.pos = next + 1;
                            0xFF
                        }
                        Some(&m) => {
                            self.marker = Some(m);
                            0
                        }
                        None => {
                            self.marker = Some(0xD9);
                            0
                        }
                    }
                }
                (None, Some(&b)) => {
                    self.pos += 1;
                    b
                }
                (None, None) => {
                    self.marker = Some(0xD9);
                    0
                }
                (Some(_), _) => 0,
            };
            if self.marker.is_some() {
                self.padding += 8;
            }
            self.buf |= (byte as u64) << (56 - self.count);
            self.count += 8;
        }
    }

    /// The next `n` bits (0 to 16) as a number.
    #[inline(always)]
    pub(super) fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        if self.count < n {
            self.fill();
        }
        let v = (self.buf >> (64 - n)) as u32;
        self.buf <<= n;
        self.count -= n;
        v
    }

    /// `n` bits as JPEG's signed magnitude category `n` (F.2.2.1's EXTEND).
    #[inline(always)]
    pub(super) fn receive_extend(&mut self, n: u32) -> i32 {
        if n == 0 {
            return 0;
        }
        let v = self.bits(n) as i32;
        if v < 1 << (n - 1) {
            v - (1 << n) + 1
        } else {
            v
        }
    }

    /// The next value coded with `t`; `None` on a code that is not in it.
    #[inline(always)]
    pub(super) fn decode(&mut self, t: &Table) -> Option<u8> {
        if self.count < 16 {
            self.fill();
        }
        let peek = (self.buf >> (64 - FAST_BITS)) as usize;
        let (len, value) = t.fast[peek];
        if len > 0 {
            self.buf <<= len;
            self.count -= len as u32;
            return Some(value);
        }
        let mut len = FAST_BITS as usize + 1;
        let code = loop {
            let code = (self.buf >> (64 - len)) as i32;
            if code <= t.max_code[len] {
                break code;
            }
            len += 1;
            if len > 16 {
                return None;
            }
        };
        self.buf <<= len;
        self.count -= len as u32;
        t.values.get((code + t.offset[len]) as usize).copied()
    }

    /// The bytes of data read so far: the next marker is at or after this.
    pub(super) fn consumed(&self) -> usize {
        self.pos
    }

    /// Whether more bits were read than the data holds (the zeros fed after a marker): the
    /// scan, or this restart interval, was cut short, which libjpeg fills in with grey and
    /// Pillow refuses ("image file is truncated").
    pub(super) fn overran(&self) -> bool {
        self.padding > self.count
    }

    /// Drops the bits left in the current byte (the encoder's padding) and expects the restart
    /// marker `RSTn`, `n` the restart's number mod 8; false where it is not there. All of the
    /// interval's bytes have been read by then, so the marker is next: where `fill` stopped at
    /// it, or the next byte.
    pub(super) fn restart(&mut self, n: u8) -> bool {
        self.buf = 0;
        self.count = 0;
        self.marker = None;
        self.padding = 0;
        let mut p = self.pos;
        while self.data.get(p) == Some(&0xFF) && self.data.get(p + 1) == Some(&0xFF) {
            p += 1; // fill bytes before a marker
        }
        let at = self.data.get(p) == Some(&0xFF) && self.data.get(p + 1) == Some(&(0xD0 + n));
        if at {
            self.pos = p + 2;
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tables that are no prefix code, or that use the all-ones code, are refused (libjpeg
    /// refuses them too); a valid one decodes its codes.
    #[test]
    fn tables_are_checked_as_libjpeg_checks_them() {
        let counts = |lens: &[(usize, u8)]| {
            let mut c = [0u8; 16];
            for &(len, n) in lens {
                c[len - 1] = n;
            }
            c
        };
        assert!(Table::new(&counts(&[(1, 3)]), &[1, 2, 3]).is_none());
        assert!(Table::new(&counts(&[(1, 2)]), &[1, 2]).is_none());
        assert!(Table::new(&counts(&[(2, 4)]), &[1, 2, 3, 4]).is_none());
        assert!(Table::new(&counts(&[(2, 3), (12, 1)]), &[1, 2, 3, 4]).is_some());
        // codes 0, 10, 110, 1110 then 11110 (the last: 5 bits), of values 5, 6, 7, 8, 9
        let t = Table::new(
            &counts(&[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)]),
            &[5, 6, 7, 8, 9],
        );
        let t = t.unwrap();
        let mut bits = Bits::new(&[0b0101_1011, 0b1011_1100]);
        let got: Vec<u8> = (0..5).map(|_| bits.decode(&t).unwrap()).collect();
        assert_eq!(got, [5, 6, 7, 8, 9]);
        assert!(!bits.overran());
    }
}
