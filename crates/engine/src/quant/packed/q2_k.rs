//! Q2_K, 8 rows interleaved (see [`super::k`]): the rows' 16 scale bytes (scale in the low
//! nibble, min in the high one) and 64 value bytes, each interleaved 4 bytes at a time,
//! then their `d` and `dmin`.

use super::k::interleave;
use super::{packed_tiles, Packed};
use crate::quant::{BlockQ2_K, Q8KBlock, Q2_K};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ2_Kx8 {
    scales: [u8; 128],
    qs: [u8; 512],
    d: [f16; 8],
    dmin: [f16; 8],
}

/// Packed Q2_K.
#[allow(non_camel_case_types)]
pub struct Q2_Kx8;

impl Packed for Q2_Kx8 {
    type K = Q2_K;
    type P = BlockQ2_Kx8;

    fn pack(rows: [&[BlockQ2_K]; 8], i: usize) -> BlockQ2_Kx8 {
        let mut p = BlockQ2_Kx8 {
            scales: [0; 128],
            qs: [0; 512],
            d: std::array::from_fn(|r| rows[r][i].d),
            dmin: std::array::from_fn(|r| rows[r][i].dmin),
        };
        interleave(
            std::array::from_fn(|r| &rows[r][i].scales[..]),
            &mut p.scales,
        );
        interleave(std::array::from_fn(|r| &rows[r][i].qs[..]), &mut p.qs);
        p
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockQ2_Kx8], a: [&[Q8KBlock]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::super::k::{load, load_f16, shuf, summ16, KBlock8, ZX};
    use super::*;
    use std::arch::x86_64::*;

    impl KBlock8 for BlockQ2_Kx8 {
        const SUB: usize = 16;
        /// The scale bytes, 4 per lane, and the mins alone (high nibbles moved down).
        type S = ([__m256i; 4], [__m256i; 4]);

        #[inline(always)]
        unsafe fn prep(&self) -> Self::S {
            let p = self.scales.as_ptr();
            let s = [load(p), load(p.add(32)), load(p.add(64)), load(p.add(96))];
            let m4 = _mm256_set1_epi8(0x0f);
            let mut mins = s;
            for m in mins.iter_mut() {
                *m = _mm256_and_si256(_mm256_srli_epi16(*m, 4), m4);
            }
            (s, mins)
        }

        #[inline(always)]
        unsafe fn scale(s: &Self::S, j: usize) -> __m256i {
            _mm256_and_si256(shuf(s.0[j / 4], &ZX[j % 4]), _mm256_set1_epi32(0x0f))
        }

        #[inline(always)]
        unsafe fn q<const J: usize>(&self, c: usize) -> __m256i {
            // J = 4n + g: bits 2g..2g+2 of qs[32n..].
            let x = load(self.qs.as_ptr().add(256 * (J / 4) + 32 * c));
            let x = match J % 4 {
                0 => x,
                1 => _mm256_srli_epi16(x, 2),
                2 => _mm256_srli_epi16(x, 4),
                _ => _mm256_srli_epi16(x, 6),
            };
            _mm256_and_si256(x, _mm256_set1_epi8(3))
        }

        #[inline(always)]
        unsafe fn summ(s: &Self::S, a: &Q8KBlock) -> __m256i {
            summ16(&s.1, a, false)
        }

        #[inline(always)]
        unsafe fn d(&self) -> __m256 {
            load_f16(self.d.as_ptr())
        }

        #[inline(always)]
        unsafe fn dmin(&self) -> Option<__m256> {
            Some(load_f16(self.dmin.as_ptr()))
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body<D: super::dot::Dot, const T: usize>(
    w: &[BlockQ2_Kx8],
    a: [&[Q8KBlock]; T],
) -> [[f32; 8]; T] {
    super::k::body::<D, BlockQ2_Kx8, T>(w, a)
}

packed_tiles!(BlockQ2_Kx8, Q8KBlock, body);

#[cfg(test)]
mod tests {
    use super::super::testing::{check_with, Plain};
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        check_with::<Q2_Kx8>(
            crate::quant::q2_k::tests::random_block,
            Plain::Equal,
            Some(crate::quant::q2_k::tests::portable),
        );
    }
}
