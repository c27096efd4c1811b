//! IQ4_NL, 8 rows interleaved as packed Q4_0 (the rows' f16 scales, then the nibble bytes
//! in groups of 4 per row); the table lookup is one byte shuffle per 32 values. Each result
//! is the portable kernel's (`d · a.d · sumi` per block, added in block order).

use super::q5_0::nibbles;
use super::{packed_tiles, Packed};
use crate::quant::{BlockIQ4_NL, Q8Block, IQ4_NL};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockIQ4_NLx8 {
    d: [f16; 8],
    qs: [u8; 128],
}

/// Packed IQ4_NL.
#[allow(non_camel_case_types)]
pub struct IQ4_NLx8;

impl Packed for IQ4_NLx8 {
    type K = IQ4_NL;
    type P = BlockIQ4_NLx8;

    fn pack(rows: [&[BlockIQ4_NL]; 8], i: usize) -> BlockIQ4_NLx8 {
        BlockIQ4_NLx8 {
            d: std::array::from_fn(|r| rows[r][i].d),
            qs: nibbles(std::array::from_fn(|r| &rows[r][i].qs)),
        }
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockIQ4_NLx8], a: [&[Q8Block]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body<D: super::dot::Dot, const T: usize>(
    w: &[BlockIQ4_NLx8],
    a: [&[Q8Block]; T],
) -> [[f32; 8]; T] {
    use super::dot::bcast4;
    use crate::quant::iq4_nl::KVALUES;
    use std::arch::x86_64::*;
    let table = _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES.as_ptr() as *const __m128i));
    let m4 = _mm256_set1_epi8(0x0f);
    // -0.0: the portable kernel's sum starts there.
    let mut acc = [_mm256_set1_ps(-0.0); T];
    for i in 0..w.len() {
        let b = w.get_unchecked(i);
        super::prefetch_ahead(b);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
        let mut v = [_mm256_setzero_si256(); 8];
        for g in 0..4 {
            let q = _mm256_loadu_si256(b.qs.as_ptr().add(32 * g) as *const __m256i);
            v[g] = _mm256_shuffle_epi8(table, _mm256_and_si256(q, m4));
            v[4 + g] = _mm256_shuffle_epi8(table, _mm256_and_si256(_mm256_srli_epi16(q, 4), m4));
        }
        for t in 0..T {
            let ab = a[t].get_unchecked(i);
            let p = ab.qs.as_ptr();
            let mut s = D::signed_init(ab.isum);
            for g in 0..4 {
                s = D::dot_signed(s, v[g], bcast4(p.add(4 * g)));
                s = D::dot_signed(s, v[4 + g], bcast4(p.add(16 + 4 * g)));
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

packed_tiles!(BlockIQ4_NLx8, Q8Block, body);

#[cfg(test)]
mod tests {
    use super::super::testing::{check_with, Plain};
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        check_with::<IQ4_NLx8>(
            crate::quant::iq4_nl::tests::random_block,
            Plain::Close,
            Some(crate::quant::iq4_nl::tests::portable),
        );
    }
}
