//! Q5_K, 8 rows interleaved (see [`super::k`]): the rows' `d` and `dmin`, then their
//! 12 scale bytes, 32 high-bit bytes and 128 nibble bytes, each interleaved 4 bytes at a
//! time.

use super::k::interleave;
use super::{packed_tiles, Packed};
use crate::quant::{BlockQ5_K, Q8KBlock, Q5_K};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_Kx8 {
    d: [f16; 8],
    dmin: [f16; 8],
    scales: [u8; 96],
    qh: [u8; 256],
    qs: [u8; 1024],
}

/// Packed Q5_K.
#[allow(non_camel_case_types)]
pub struct Q5_Kx8;

impl Packed for Q5_Kx8 {
    type K = Q5_K;
    type P = BlockQ5_Kx8;

    fn pack(rows: [&[BlockQ5_K]; 8], i: usize) -> BlockQ5_Kx8 {
        let mut p = BlockQ5_Kx8 {
            d: std::array::from_fn(|r| rows[r][i].d),
            dmin: std::array::from_fn(|r| rows[r][i].dmin),
            scales: [0; 96],
            qh: [0; 256],
            qs: [0; 1024],
        };
        interleave(
            std::array::from_fn(|r| &rows[r][i].scales[..]),
            &mut p.scales,
        );
        interleave(std::array::from_fn(|r| &rows[r][i].qh[..]), &mut p.qh);
        interleave(std::array::from_fn(|r| &rows[r][i].qs[..]), &mut p.qs);
        p
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockQ5_Kx8], a: [&[Q8KBlock]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::super::k::{load, load_f16, shuf, summ32, KBlock8, ZX};
    use super::super::q4_k::scales_mins8;
    use super::*;
    use std::arch::x86_64::*;

    impl KBlock8 for BlockQ5_Kx8 {
        const SUB: usize = 32;
        type S = [__m256i; 4];

        #[inline(always)]
        unsafe fn prep(&self) -> [__m256i; 4] {
            scales_mins8(self.scales.as_ptr())
        }

        #[inline(always)]
        unsafe fn scale(s: &[__m256i; 4], j: usize) -> __m256i {
            shuf(s[j / 4], &ZX[j % 4])
        }

        #[inline(always)]
        unsafe fn q<const J: usize>(&self, c: usize) -> __m256i {
            let x = load(self.qs.as_ptr().add(256 * (J / 2) + 32 * c));
            let x = if J.is_multiple_of(2) {
                x
            } else {
                _mm256_srli_epi16(x, 4)
            };
            let hb = load(self.qh.as_ptr().add(32 * c));
            // Bit J of each qh byte moved to bit 4 (as the plain kernel does).
            let fifth = match J {
                0 => _mm256_slli_epi16(hb, 4),
                1 => _mm256_slli_epi16(hb, 3),
                2 => _mm256_slli_epi16(hb, 2),
                3 => _mm256_slli_epi16(hb, 1),
                4 => hb,
                5 => _mm256_srli_epi16(hb, 1),
                6 => _mm256_srli_epi16(hb, 2),
                _ => _mm256_srli_epi16(hb, 3),
            };
            _mm256_or_si256(
                _mm256_and_si256(x, _mm256_set1_epi8(0x0f)),
                _mm256_and_si256(fifth, _mm256_set1_epi8(0x10)),
            )
        }

        #[inline(always)]
        unsafe fn summ(s: &[__m256i; 4], a: &Q8KBlock) -> __m256i {
            summ32([s[2], s[3]], a)
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
    w: &[BlockQ5_Kx8],
    a: [&[Q8KBlock]; T],
) -> [[f32; 8]; T] {
    super::k::body::<D, BlockQ5_Kx8, T>(w, a)
}

packed_tiles!(BlockQ5_Kx8, Q8KBlock, body);

#[cfg(test)]
mod tests {
    use super::super::testing::{check_with, Plain};
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        check_with::<Q5_Kx8>(
            crate::quant::q5_k::tests::random_block,
            Plain::Equal,
            Some(crate::quant::q5_k::tests::portable),
        );
    }
}
