//! libjpeg's accurate integer inverse DCT (`jpeg_idct_islow`, jidctint.c), with its output range
//! limit, so that a block decodes to the samples libjpeg-turbo (and so Pillow, and so
//! torchvision) gives. This follows the C version's arithmetic (jidctint.c) in 32-bit lanes, 8
//! at a time (the columns, then the rows of the transposed intermediate); libjpeg-turbo's SIMD
//! version, which Pillow runs on x86, gives the same bytes for coefficients that fit its 16-bit
//! registers, which the decoder checks (`fits_16_bits`).

const CONST_BITS: i32 = 13;
const PASS1_BITS: i32 = 2;
const FIX_0_298631336: i32 = 2446;
const FIX_0_390180644: i32 = 3196;
const FIX_0_541196100: i32 = 4433;
const FIX_0_765366865: i32 = 6270;
const FIX_0_899976223: i32 = 7373;
const FIX_1_175875602: i32 = 9633;
const FIX_1_501321110: i32 = 12299;
const FIX_1_847759065: i32 = 15137;
const FIX_1_961570560: i32 = 16069;
const FIX_2_053119869: i32 = 16819;
const FIX_2_562915447: i32 = 20995;
const FIX_3_072711026: i32 = 25172;

/// Eight lanes.
type Lanes = [i32; 8];

#[inline(always)]
fn map(f: impl Fn(usize) -> i32) -> Lanes {
    std::array::from_fn(f)
}

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    map(|i| a[i].wrapping_add(b[i]))
}

#[inline(always)]
fn sub(a: Lanes, b: Lanes) -> Lanes {
    map(|i| a[i].wrapping_sub(b[i]))
}

#[inline(always)]
fn mul(a: Lanes, k: i32) -> Lanes {
    map(|i| a[i].wrapping_mul(k))
}

#[inline(always)]
fn shl_const_bits(a: Lanes) -> Lanes {
    map(|i| a[i].wrapping_shl(CONST_BITS as u32))
}

/// libjpeg's `DESCALE`: divide by 2^n, rounding half up (an arithmetic shift).
#[inline(always)]
fn descale(a: Lanes, n: i32) -> Lanes {
    map(|i| a[i].wrapping_add(1 << (n - 1)) >> n)
}

/// One 1-D pass over 8 lanes of 8 values each (`$v[k]` holds coefficient k of every lane):
/// the even and odd parts as jidctint.c computes them, the same in both passes; the 8 outputs
/// before their descale. A macro, so that the portable lanes and the AVX2 vectors run the same
/// text with their own `add`, `sub`, `mul` and `shl_const_bits`.
macro_rules! idct_pass {
    ($v:expr) => {{
        let v = $v;
        let z1 = mul(add(v[2], v[6]), FIX_0_541196100);
        let tmp2 = add(z1, mul(v[6], -FIX_1_847759065));
        let tmp3 = add(z1, mul(v[2], FIX_0_765366865));
        let tmp0 = shl_const_bits(add(v[0], v[4]));
        let tmp1 = shl_const_bits(sub(v[0], v[4]));
        let (tmp10, tmp13) = (add(tmp0, tmp3), sub(tmp0, tmp3));
        let (tmp11, tmp12) = (add(tmp1, tmp2), sub(tmp1, tmp2));

        let (t0, t1, t2, t3) = (v[7], v[5], v[3], v[1]);
        let z1 = add(t0, t3);
        let z2 = add(t1, t2);
        let z3 = add(t0, t2);
        let z4 = add(t1, t3);
        let z5 = mul(add(z3, z4), FIX_1_175875602);
        let t0 = mul(t0, FIX_0_298631336);
        let t1 = mul(t1, FIX_2_053119869);
        let t2 = mul(t2, FIX_3_072711026);
        let t3 = mul(t3, FIX_1_501321110);
        let z1 = mul(z1, -FIX_0_899976223);
        let z2 = mul(z2, -FIX_2_562915447);
        let z3 = add(mul(z3, -FIX_1_961570560), z5);
        let z4 = add(mul(z4, -FIX_0_390180644), z5);
        let t0 = add(t0, add(z1, z3));
        let t1 = add(t1, add(z2, z4));
        let t2 = add(t2, add(z2, z3));
        let t3 = add(t3, add(z1, z4));
        [
            add(tmp10, t3),
            add(tmp11, t2),
            add(tmp12, t1),
            add(tmp13, t0),
            sub(tmp13, t0),
            sub(tmp12, t1),
            sub(tmp11, t2),
            sub(tmp10, t3),
        ]
    }};
}

#[inline(always)]
fn pass(v: &[Lanes; 8]) -> [Lanes; 8] {
    idct_pass!(v)
}

/// libjpeg's output range limit: its table indexed by `x & 1023` is `x + 128` clamped to
/// 0..=255 once `x` is wrapped into -512..=511.
#[inline(always)]
fn range_limit(x: i32) -> u8 {
    let wrapped = ((x.wrapping_add(512)) & 1023) - 512;
    (wrapped + 128).clamp(0, 255) as u8
}

/// A block whose AC coefficients are all zero: every sample is what `idct_islow` gives for it,
/// `(dc * quant * 4 + 16) >> 5` range-limited (its shortcuts for zero columns and rows, which
/// equal the full passes).
#[inline(always)]
pub(super) fn flat(dc: i32, quant: u16, out: &mut [u8], stride: usize) {
    let v = dc
        .wrapping_mul(quant as i32)
        .wrapping_shl(PASS1_BITS as u32);
    let v = range_limit(v.wrapping_add(16) >> 5);
    for r in 0..8 {
        out[r * stride..r * stride + 8].fill(v);
    }
}

/// The samples of one block: `coef` in natural (row-major) order, `quant` likewise, written to
/// `out` (8 rows `stride` apart).
#[inline(always)]
pub(super) fn idct_islow(coef: &[i32; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
    // pass 1 on the columns: lane c of row r is coefficient (r, c)
    let rows: [Lanes; 8] =
        std::array::from_fn(|r| map(|c| coef[r * 8 + c].wrapping_mul(quant[r * 8 + c] as i32)));
    let o = pass(&rows);
    let ws: [Lanes; 8] = std::array::from_fn(|k| descale(o[k], CONST_BITS - PASS1_BITS));
    // pass 2 on the rows: transposed, lane r of k is the intermediate (r, k)
    let cols: [Lanes; 8] = std::array::from_fn(|k| map(|r| ws[r][k]));
    let o = pass(&cols);
    let o: [Lanes; 8] = std::array::from_fn(|k| descale(o[k], CONST_BITS + PASS1_BITS + 3));
    for r in 0..8 {
        let line = &mut out[r * stride..r * stride + 8];
        for (c, px) in line.iter_mut().enumerate() {
            *px = range_limit(o[c][r]);
        }
    }
}

/// The same IDCT in AVX2 intrinsics: each pass on eight 32-bit lanes as the portable one (the
/// same i32 operations in the same order, so the same bits), with 8x8 transposes between and
/// the output range limit as a saturating pack.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    use super::FIX_3_072711026;
    use super::{CONST_BITS, FIX_0_298631336, FIX_0_390180644, FIX_0_541196100, PASS1_BITS};
    use super::{FIX_0_765366865, FIX_0_899976223, FIX_1_175875602, FIX_1_501321110};
    use super::{FIX_1_847759065, FIX_1_961570560, FIX_2_053119869, FIX_2_562915447};
    use std::arch::x86_64::*;

    type V = __m256i;

    #[inline(always)]
    unsafe fn add(a: V, b: V) -> V {
        _mm256_add_epi32(a, b)
    }

    #[inline(always)]
    unsafe fn sub(a: V, b: V) -> V {
        _mm256_sub_epi32(a, b)
    }

    #[inline(always)]
    unsafe fn mul(a: V, k: i32) -> V {
        _mm256_mullo_epi32(a, _mm256_set1_epi32(k))
    }

    /// libjpeg's DESCALE by 2^11 (pass 1) or 2^18 (pass 2).
    #[inline(always)]
    unsafe fn descale<const N: i32>(a: V) -> V {
        _mm256_srai_epi32::<N>(_mm256_add_epi32(a, _mm256_set1_epi32(1 << (N - 1))))
    }

    #[inline(always)]
    unsafe fn shl_const_bits(a: V) -> V {
        _mm256_slli_epi32::<CONST_BITS>(a)
    }

    #[inline(always)]
    unsafe fn pass(v: [V; 8]) -> [V; 8] {
        idct_pass!(v)
    }

    /// Rows to columns: lane j of output i is lane i of input j.
    #[inline(always)]
    unsafe fn transpose(r: [V; 8]) -> [V; 8] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }

    /// libjpeg's range limit on 8 rows: `x` wrapped into -512..=511, plus 128, then the
    /// saturating packs clamp to 0..=255; the bytes in row order.
    #[inline(always)]
    unsafe fn to_bytes(rows: [V; 8]) -> [u8; 64] {
        let limit = |x: V| {
            let wrapped = _mm256_and_si256(add(x, _mm256_set1_epi32(512)), _mm256_set1_epi32(1023));
            sub(wrapped, _mm256_set1_epi32(384))
        };
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        let mut out = [0u8; 64];
        for half in 0..2 {
            let r: [V; 4] = std::array::from_fn(|i| limit(rows[4 * half + i]));
            let p01 = _mm256_packs_epi32(r[0], r[1]);
            let p23 = _mm256_packs_epi32(r[2], r[3]);
            let bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23), order);
            _mm256_storeu_si256(out.as_mut_ptr().add(32 * half) as *mut V, bytes);
        }
        out
    }

    /// [`super::idct_islow`] for a CPU with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn idct_islow(coef: &[i32; 64], quant: &[u16; 64], out: &mut [u8], stride: usize) {
        let rows: [V; 8] = std::array::from_fn(|r| {
            let c = _mm256_loadu_si256(coef.as_ptr().add(8 * r) as *const V);
            let q =
                _mm256_cvtepu16_epi32(_mm_loadu_si128(quant.as_ptr().add(8 * r) as *const __m128i));
            _mm256_mullo_epi32(c, q)
        });
        // pass 1: lanes are the columns
        let o = pass(rows);
        let ws: [V; 8] = std::array::from_fn(|k| descale::<{ CONST_BITS - PASS1_BITS }>(o[k]));
        // pass 2: lanes are the rows
        let o = pass(transpose(ws));
        let o: [V; 8] = std::array::from_fn(|k| descale::<{ CONST_BITS + PASS1_BITS + 3 }>(o[k]));
        let bytes = to_bytes(transpose(o));
        for r in 0..8 {
            out[r * stride..r * stride + 8].copy_from_slice(&bytes[8 * r..8 * r + 8]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DC-only block is flat at DC x quant / 8 + 128, clamped, through the full passes and
    /// through `flat`, for every DC and quantiser step that fits libjpeg's range.
    #[test]
    fn a_dc_only_block_is_flat() {
        for (dc, want) in [(0, 128u8), (-16, 112), (10, 138), (200, 255), (-200, 0)] {
            let mut coef = [0i32; 64];
            coef[0] = dc;
            let mut out = [0u8; 64];
            idct_islow(&coef, &[8; 64], &mut out, 8);
            assert!(out.iter().all(|&p| p == want), "dc {dc}: {out:?}");
        }
        for dc in -2048..2048 {
            for q in [1u16, 2, 3, 5, 8, 16, 31, 99, 255] {
                let mut coef = [0i32; 64];
                coef[0] = dc;
                let (mut full, mut short) = ([0u8; 64], [0u8; 64]);
                idct_islow(&coef, &[q; 64], &mut full, 8);
                flat(dc, q, &mut short, 8);
                assert_eq!(full, short, "dc {dc}, quant {q}");
            }
        }
    }

    /// The AVX2 IDCT gives the portable one's bytes, for coefficients of every size (up to
    /// those whose products wrap, where libjpeg's range table wraps too).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_idct_gives_the_portable_ones_bytes() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            return; // nothing to compare on this CPU
        }
        let mut state = 11u64;
        let mut next = |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        for case in 0..20_000 {
            let range = [8, 64, 512, 2048, 32768][case % 5];
            let coef: [i32; 64] = std::array::from_fn(|_| match next(3) {
                0 => next(2 * range) as i32 - range as i32,
                _ => 0,
            });
            let quant: [u16; 64] = std::array::from_fn(|_| 1 + next(255) as u16);
            let (mut portable, mut avx2) = ([0u8; 80], [0u8; 80]);
            idct_islow(&coef, &quant, &mut portable, 10);
            // SAFETY: the CPU has AVX2 (checked above)
            unsafe { avx2::idct_islow(&coef, &quant, &mut avx2, 10) };
            assert_eq!(portable, avx2, "case {case}: {coef:?} {quant:?}");
        }
    }

    /// Against the exact inverse DCT in f64: within one level (the integer version rounds at
    /// two places).
    #[test]
    fn within_one_level_of_the_exact_idct() {
        let mut state = 7u64;
        for _ in 0..200 {
            let mut coef = [0i32; 64];
            for c in coef.iter_mut().take(20) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                *c = ((state >> 33) % 41) as i32 - 20;
            }
            let mut out = [0u8; 64];
            idct_islow(&coef, &[4; 64], &mut out, 8);
            for y in 0..8 {
                for x in 0..8 {
                    let mut s = 0.0;
                    for v in 0..8 {
                        for u in 0..8 {
                            let cu = if u == 0 { 0.5f64.sqrt() } else { 1.0 };
                            let cv = if v == 0 { 0.5f64.sqrt() } else { 1.0 };
                            let pi = std::f64::consts::PI;
                            s += cu
                                * cv
                                * (coef[v * 8 + u] * 4) as f64
                                * ((2 * x + 1) as f64 * u as f64 * pi / 16.0).cos()
                                * ((2 * y + 1) as f64 * v as f64 * pi / 16.0).cos();
                        }
                    }
                    let want = (s / 4.0 + 128.0).round().clamp(0.0, 255.0);
                    let got = out[y * 8 + x] as f64;
                    assert!((got - want).abs() <= 1.0, "({x}, {y}): {got} vs {want}");
                }
            }
        }
    }
}
