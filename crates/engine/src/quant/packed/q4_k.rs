//! Q4_K, 8 rows interleaved (see [`super::k`]): the rows' `d` and `dmin`, then their
//! 12 scale bytes and 128 value bytes, each interleaved 4 bytes at a time. The scales
//! decode for all 8 rows at once (`scales_mins` lane by lane).

use super::k::interleave;
use super::{packed_tiles, Packed};
use crate::quant::{BlockQ4_K, Q8KBlock, Q4_K};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_Kx8 {
    d: [f16; 8],
    dmin: [f16; 8],
    scales: [u8; 96],
    qs: [u8; 1024],
}

/// Packed Q4_K.
#[allow(non_camel_case_types)]
pub struct Q4_Kx8;

impl Packed for Q4_Kx8 {
    type K = Q4_K;
    type P = BlockQ4_Kx8;

    fn pack(rows: [&[BlockQ4_K]; 8], i: usize) -> BlockQ4_Kx8 {
        let mut p = BlockQ4_Kx8 {
            d: std::array::from_fn(|r| rows[r][i].d),
            dmin: std::array::from_fn(|r| rows[r][i].dmin),
            scales: [0; 96],
            qs: [0; 1024],
        };
        interleave(
            std::array::from_fn(|r| &rows[r][i].scales[..]),
            &mut p.scales,
        );
        interleave(std::array::from_fn(|r| &rows[r][i].qs[..]), &mut p.qs);
        p
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockQ4_Kx8], a: [&[Q8KBlock]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx::scales_mins8;

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::super::k::{load, load_f16, shuf, summ32, KBlock8, ZX};
    use super::*;
    use std::arch::x86_64::*;

    /// Each row's 6-bit scales and mins of sub-blocks 0..4 and 4..8, as bytes in its lane
    /// (`scales_mins` on 32-bit lanes).
    #[inline(always)]
    pub unsafe fn scales_mins8(p: *const u8) -> [__m256i; 4] {
        let (u0, u1, u2) = (load(p), load(p.add(32)), load(p.add(64)));
        let low6 = _mm256_set1_epi8(0x3f);
        let low4 = _mm256_set1_epi8(0x0f);
        let low2 = _mm256_set1_epi8(0x03);
        // 16-bit shifts: the masks keep only each byte's own bits.
        let top0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(u0, 6), low2), 4);
        let top1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(u1, 6), low2), 4);
        let sc_lo = _mm256_and_si256(u0, low6);
        let sc_hi = _mm256_or_si256(_mm256_and_si256(u2, low4), top0);
        let m_lo = _mm256_and_si256(u1, low6);
        let m_hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(u2, 4), low4), top1);
        [sc_lo, sc_hi, m_lo, m_hi]
    }

    impl KBlock8 for BlockQ4_Kx8 {
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
            // Values 64k..64k + 32 are the low nibbles of bytes 32k.., the next 32 their high
            // nibbles.
            let x = load(self.qs.as_ptr().add(256 * (J / 2) + 32 * c));
            let x = if J.is_multiple_of(2) {
                x
            } else {
                _mm256_srli_epi16(x, 4)
            };
            _mm256_and_si256(x, _mm256_set1_epi8(0x0f))
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
    w: &[BlockQ4_Kx8],
    a: [&[Q8KBlock]; T],
) -> [[f32; 8]; T] {
    super::k::body::<D, BlockQ4_Kx8, T>(w, a)
}

packed_tiles!(BlockQ4_Kx8, Q8KBlock, body);

#[cfg(test)]
mod tests {
    use super::super::testing::{check_with, Plain};
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        check_with::<Q4_Kx8>(
            crate::quant::q4_k::tests::random_block,
            Plain::Equal,
            Some(crate::quant::q4_k::tests::portable),
        );
    }
}
