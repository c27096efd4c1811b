//! Q3_K, 8 rows interleaved (see [`super::k`]): the rows' 32 high-bit bytes, 64 low-bit
//! bytes and 12 scale bytes, each interleaved 4 bytes at a time, then their `d`. The
//! scales decode for all 8 rows at once.

use super::k::interleave;
use super::{packed_tiles, Packed};
use crate::quant::{BlockQ3_K, Q8KBlock, Q3_K};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ3_Kx8 {
    hmask: [u8; 256],
    qs: [u8; 512],
    scales: [u8; 96],
    d: [f16; 8],
}

/// Packed Q3_K.
#[allow(non_camel_case_types)]
pub struct Q3_Kx8;

impl Packed for Q3_Kx8 {
    type K = Q3_K;
    type P = BlockQ3_Kx8;

    fn pack(rows: [&[BlockQ3_K]; 8], i: usize) -> BlockQ3_Kx8 {
        let mut p = BlockQ3_Kx8 {
            hmask: [0; 256],
            qs: [0; 512],
            scales: [0; 96],
            d: std::array::from_fn(|r| rows[r][i].d),
        };
        interleave(std::array::from_fn(|r| &rows[r][i].hmask[..]), &mut p.hmask);
        interleave(std::array::from_fn(|r| &rows[r][i].qs[..]), &mut p.qs);
        interleave(
            std::array::from_fn(|r| &rows[r][i].scales[..]),
            &mut p.scales,
        );
        p
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockQ3_Kx8], a: [&[Q8KBlock]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::super::k::{load, load_f16, shuf, summ16, KBlock8, SX};
    use super::*;
    use std::arch::x86_64::*;

    impl KBlock8 for BlockQ3_Kx8 {
        const SUB: usize = 16;
        /// The scales (`s_j - 32`, i8), 4 per lane: `S[k]` holds those of sub-blocks
        /// `4k..4k + 4`.
        type S = [__m256i; 4];

        #[inline(always)]
        unsafe fn prep(&self) -> [__m256i; 4] {
            // Words w0, w1, w2 = scale bytes 0..4, 4..8, 8..12 of each row. Scale j has its
            // low 4 bits in the low nibble of byte j (j < 8) or the high nibble of byte
            // j - 8, its top 2 bits at bits 2 (j / 4).. of byte 8 + j % 4.
            let p = self.scales.as_ptr();
            let (w0, w1, w2) = (load(p), load(p.add(32)), load(p.add(64)));
            let m4 = _mm256_set1_epi8(0x0f);
            let m2 = _mm256_set1_epi8(0x03);
            let low = [
                _mm256_and_si256(w0, m4),
                _mm256_and_si256(w1, m4),
                _mm256_and_si256(_mm256_srli_epi16(w0, 4), m4),
                _mm256_and_si256(_mm256_srli_epi16(w1, 4), m4),
            ];
            // 16-bit shifts: the masks keep only each byte's own bits.
            let high = [
                _mm256_and_si256(w2, m2),
                _mm256_and_si256(_mm256_srli_epi16(w2, 2), m2),
                _mm256_and_si256(_mm256_srli_epi16(w2, 4), m2),
                _mm256_and_si256(_mm256_srli_epi16(w2, 6), m2),
            ];
            let mut sc = low;
            for k in 0..4 {
                sc[k] = _mm256_sub_epi8(
                    _mm256_or_si256(low[k], _mm256_slli_epi16(high[k], 4)),
                    _mm256_set1_epi8(32),
                );
            }
            sc
        }

        #[inline(always)]
        unsafe fn scale(s: &[__m256i; 4], j: usize) -> __m256i {
            _mm256_srai_epi32(shuf(s[j / 4], &SX[j % 4]), 24)
        }

        #[inline(always)]
        unsafe fn q<const J: usize>(&self, c: usize) -> __m256i {
            // J = 4n + g: low bits 2g..2g+2 of qs[32n..], third bit at bit J of hmask, moved
            // to bit 2 (as the plain kernel does).
            let x = load(self.qs.as_ptr().add(256 * (J / 4) + 32 * c));
            let low = match J % 4 {
                0 => x,
                1 => _mm256_srli_epi16(x, 2),
                2 => _mm256_srli_epi16(x, 4),
                _ => _mm256_srli_epi16(x, 6),
            };
            let hb = load(self.hmask.as_ptr().add(32 * c));
            let third = match J {
                0 => _mm256_slli_epi16(hb, 2),
                1 => _mm256_slli_epi16(hb, 1),
                2 => hb,
                3 => _mm256_srli_epi16(hb, 1),
                4 => _mm256_srli_epi16(hb, 2),
                5 => _mm256_srli_epi16(hb, 3),
                6 => _mm256_srli_epi16(hb, 4),
                _ => _mm256_srli_epi16(hb, 5),
            };
            _mm256_or_si256(
                _mm256_and_si256(low, _mm256_set1_epi8(3)),
                _mm256_and_si256(third, _mm256_set1_epi8(4)),
            )
        }

        #[inline(always)]
        unsafe fn summ(s: &[__m256i; 4], a: &Q8KBlock) -> __m256i {
            // The offset: 4 Σ sc_j bsums_j.
            _mm256_slli_epi32(summ16(s, a, true), 2)
        }

        #[inline(always)]
        unsafe fn d(&self) -> __m256 {
            load_f16(self.d.as_ptr())
        }

        #[inline(always)]
        unsafe fn dmin(&self) -> Option<__m256> {
            None
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body<D: super::dot::Dot, const T: usize>(
    w: &[BlockQ3_Kx8],
    a: [&[Q8KBlock]; T],
) -> [[f32; 8]; T] {
    super::k::body::<D, BlockQ3_Kx8, T>(w, a)
}

packed_tiles!(BlockQ3_Kx8, Q8KBlock, body);

#[cfg(test)]
mod tests {
    use super::super::testing::{check_with, Plain};
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        check_with::<Q3_Kx8>(
            crate::quant::q3_k::tests::random_block,
            Plain::Equal,
            Some(crate::quant::q3_k::tests::portable),
        );
    }
}
