//! Q6_K, 8 rows interleaved (see [`super::k`]): the rows' 128 low-bit bytes, 64 high-bit
//! bytes and 16 i8 scales, each interleaved 4 bytes at a time, then their `d`.

use super::k::interleave;
use super::{packed_tiles, Packed};
use crate::quant::{BlockQ6_K, Q8KBlock, Q6_K};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ6_Kx8 {
    ql: [u8; 1024],
    qh: [u8; 512],
    scales: [u8; 128],
    d: [f16; 8],
}

/// Packed Q6_K.
#[allow(non_camel_case_types)]
pub struct Q6_Kx8;

impl Packed for Q6_Kx8 {
    type K = Q6_K;
    type P = BlockQ6_Kx8;

    fn pack(rows: [&[BlockQ6_K]; 8], i: usize) -> BlockQ6_Kx8 {
        let mut p = BlockQ6_Kx8 {
            ql: [0; 1024],
            qh: [0; 512],
            scales: [0; 128],
            d: std::array::from_fn(|r| rows[r][i].d),
        };
        let scales: [[u8; 16]; 8] = std::array::from_fn(|r| rows[r][i].scales.map(|s| s as u8));
        interleave(std::array::from_fn(|r| &rows[r][i].ql[..]), &mut p.ql);
        interleave(std::array::from_fn(|r| &rows[r][i].qh[..]), &mut p.qh);
        interleave(std::array::from_fn(|r| &scales[r][..]), &mut p.scales);
        p
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockQ6_Kx8], a: [&[Q8KBlock]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::super::k::{load, load_f16, shuf, summ16, KBlock8, SX};
    use super::*;
    use std::arch::x86_64::*;

    impl KBlock8 for BlockQ6_Kx8 {
        const SUB: usize = 16;
        /// The scales, 4 per lane.
        type S = [__m256i; 4];

        #[inline(always)]
        unsafe fn prep(&self) -> [__m256i; 4] {
            let p = self.scales.as_ptr();
            [load(p), load(p.add(32)), load(p.add(64)), load(p.add(96))]
        }

        #[inline(always)]
        unsafe fn scale(s: &[__m256i; 4], j: usize) -> __m256i {
            _mm256_srai_epi32(shuf(s[j / 4], &SX[j % 4]), 24)
        }

        #[inline(always)]
        unsafe fn q<const J: usize>(&self, c: usize) -> __m256i {
            // J = 4n + g: low 4 bits in ql[64n + 32 (g % 2)..] (high nibbles for g >= 2), top
            // 2 bits at bits 2g.. of qh[32n..] (as the plain kernel does).
            let (n, g) = (J / 4, J % 4);
            let ql = load(self.ql.as_ptr().add(8 * (64 * n + 32 * (g % 2)) + 32 * c));
            let ql = if g < 2 { ql } else { _mm256_srli_epi16(ql, 4) };
            let qh = load(self.qh.as_ptr().add(8 * 32 * n + 32 * c));
            let top = _mm256_and_si256(qh, _mm256_set1_epi8((3 << (2 * g)) as u8 as i8));
            let top = match g {
                0 => _mm256_slli_epi16(top, 4),
                1 => _mm256_slli_epi16(top, 2),
                2 => top,
                _ => _mm256_srli_epi16(top, 2),
            };
            _mm256_or_si256(_mm256_and_si256(ql, _mm256_set1_epi8(0x0f)), top)
        }

        #[inline(always)]
        unsafe fn summ(s: &[__m256i; 4], a: &Q8KBlock) -> __m256i {
            // The offset: 32 Σ sc_j bsums_j.
            _mm256_slli_epi32(summ16(s, a, true), 5)
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
    w: &[BlockQ6_Kx8],
    a: [&[Q8KBlock]; T],
) -> [[f32; 8]; T] {
    super::k::body::<D, BlockQ6_Kx8, T>(w, a)
}

packed_tiles!(BlockQ6_Kx8, Q8KBlock, body);

#[cfg(test)]
mod tests {
    use super::super::testing::{check_with, Plain};
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        check_with::<Q6_Kx8>(
            crate::quant::q6_k::tests::random_block,
            Plain::Equal,
            Some(crate::quant::q6_k::tests::portable),
        );
    }
}
