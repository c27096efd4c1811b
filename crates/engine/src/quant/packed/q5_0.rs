//! Q5_0, 8 rows interleaved: the rows' f16 scales, their fifth bits as one 32-byte plane,
//! then 4 groups of 32 nibble bytes laid out as packed Q4_0's (lane `r` of group `g` holds
//! row `r`'s values `4g..4g + 4` in its low nibbles, `16 + 4g..` in its high ones). Byte
//! `4r + e` of the plane holds in bit `g` the fifth bit of row `r`'s value `4g + e` and in
//! bit `4 + g` that of value `16 + 4g + e`, so that one shift and mask give each group's
//! fifth bits. The `-16` offset is taken off with the activations' integer sums; each
//! result is the portable kernel's (exact integer sum per block, `d · a.d · sumi` added in
//! block order).

use super::{packed_tiles, Packed};
use crate::quant::{BlockQ5_0, Q8Block, Q5_0};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_0x8 {
    d: [f16; 8],
    qh: [u8; 32],
    qs: [u8; 128],
}

/// The fifth-bit plane of 8 rows' `qh` (see the module's documentation).
pub(super) fn plane(qh: [u32; 8]) -> [u8; 32] {
    std::array::from_fn(|b| {
        let (r, e) = (b / 4, b % 4);
        let bit = |j: usize| ((qh[r] >> j) & 1) as u8;
        (0..4).fold(0u8, |v, g| {
            v | bit(4 * g + e) << g | bit(16 + 4 * g + e) << (4 + g)
        })
    })
}

/// 8 rows' nibble bytes in packed Q4_0's layout.
pub(super) fn nibbles(qs: [&[u8; 16]; 8]) -> [u8; 128] {
    let mut p = [0u8; 128];
    for g in 0..4 {
        for (r, q) in qs.iter().enumerate() {
            p[g * 32 + r * 4..g * 32 + r * 4 + 4].copy_from_slice(&q[4 * g..4 * g + 4]);
        }
    }
    p
}

/// Packed Q5_0.
pub struct Q5_0x8;

impl Packed for Q5_0x8 {
    type K = Q5_0;
    type P = BlockQ5_0x8;

    fn pack(rows: [&[BlockQ5_0]; 8], i: usize) -> BlockQ5_0x8 {
        BlockQ5_0x8 {
            d: std::array::from_fn(|r| rows[r][i].d),
            qh: plane(std::array::from_fn(|r| u32::from_le_bytes(rows[r][i].qh))),
            qs: nibbles(std::array::from_fn(|r| &rows[r][i].qs)),
        }
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockQ5_0x8], a: [&[Q8Block]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

/// The 8 unsigned 5-bit values of a block: groups `0..4` (low nibbles) then `4..8`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) unsafe fn values5(qs: *const u8, plane: *const u8) -> [std::arch::x86_64::__m256i; 8] {
    use std::arch::x86_64::*;
    let m4 = _mm256_set1_epi8(0x0f);
    let m5 = _mm256_set1_epi8(0x10);
    let h = _mm256_loadu_si256(plane as *const __m256i);
    // Bit g of the plane to bit 4 for the low nibbles, bit 4 + g for the high ones (16-bit
    // shifts: the mask keeps only each byte's own bit).
    let lo_bits = [
        _mm256_slli_epi16(h, 4),
        _mm256_slli_epi16(h, 3),
        _mm256_slli_epi16(h, 2),
        _mm256_slli_epi16(h, 1),
    ];
    let hi_bits = [
        h,
        _mm256_srli_epi16(h, 1),
        _mm256_srli_epi16(h, 2),
        _mm256_srli_epi16(h, 3),
    ];
    let mut v = [_mm256_setzero_si256(); 8];
    for g in 0..4 {
        let q = _mm256_loadu_si256(qs.add(32 * g) as *const __m256i);
        v[g] = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_and_si256(lo_bits[g], m5));
        v[4 + g] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
            _mm256_and_si256(hi_bits[g], m5),
        );
    }
    v
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body<D: super::dot::Dot, const T: usize>(
    w: &[BlockQ5_0x8],
    a: [&[Q8Block]; T],
) -> [[f32; 8]; T] {
    use super::dot::bcast4;
    use std::arch::x86_64::*;
    // -0.0: the portable kernel's sum starts there.
    let mut acc = [_mm256_set1_ps(-0.0); T];
    for i in 0..w.len() {
        let b = w.get_unchecked(i);
        super::prefetch_ahead(b);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
        let v = values5(b.qs.as_ptr(), b.qh.as_ptr());
        for t in 0..T {
            let ab = a[t].get_unchecked(i);
            let p = ab.qs.as_ptr();
            let mut s = _mm256_set1_epi32(-16 * ab.isum);
            for g in 0..4 {
                s = D::dot(s, v[g], bcast4(p.add(4 * g)));
                s = D::dot(s, v[4 + g], bcast4(p.add(16 + 4 * g)));
            }
            let f = _mm256_mul_ps(
                _mm256_mul_ps(dw, _mm256_set1_ps(ab.d)),
                _mm256_cvtepi32_ps(s),
            );
            acc[t] = _mm256_add_ps(acc[t], f);
        }
    }
    crate::quant::simd::lanes(acc)
}

packed_tiles!(BlockQ5_0x8, Q8Block, body);

#[cfg(test)]
mod tests {
    use super::super::testing::{check_with, Plain};
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        check_with::<Q5_0x8>(
            crate::quant::q5_0::tests::random_block,
            Plain::Close,
            Some(crate::quant::q5_0::tests::portable),
        );
    }

    #[test]
    fn plane_holds_the_fifth_bits() {
        let qh: [u32; 8] = std::array::from_fn(|r| 0x9e3779b9u32.rotate_left(3 * r as u32));
        let p = plane(qh);
        for r in 0..8 {
            for v in 0..32 {
                let bit = if v < 16 { v / 4 } else { 4 + (v - 16) / 4 };
                assert_eq!((p[4 * r + v % 4] >> bit) & 1, ((qh[r] >> v) & 1) as u8);
            }
        }
    }
}
