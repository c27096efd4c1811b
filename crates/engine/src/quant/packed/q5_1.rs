//! Q5_1, 8 rows interleaved as packed Q5_0 (see there), with the rows' f16 minimums after
//! their scales. Each result is the portable kernel's (`d · a.d · sumi + m · a.s` per
//! block, added in block order).

use super::q5_0::{nibbles, plane};
use super::{packed_tiles, Packed};
use crate::quant::{BlockQ5_1, Q8Block, Q5_1};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ5_1x8 {
    d: [f16; 8],
    m: [f16; 8],
    qh: [u8; 32],
    qs: [u8; 128],
}

/// Packed Q5_1.
pub struct Q5_1x8;

impl Packed for Q5_1x8 {
    type K = Q5_1;
    type P = BlockQ5_1x8;

    fn pack(rows: [&[BlockQ5_1]; 8], i: usize) -> BlockQ5_1x8 {
        BlockQ5_1x8 {
            d: std::array::from_fn(|r| rows[r][i].d),
            m: std::array::from_fn(|r| rows[r][i].m),
            qh: plane(std::array::from_fn(|r| u32::from_le_bytes(rows[r][i].qh))),
            qs: nibbles(std::array::from_fn(|r| &rows[r][i].qs)),
        }
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockQ5_1x8], a: [&[Q8Block]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body<D: super::dot::Dot, const T: usize>(
    w: &[BlockQ5_1x8],
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
        let mw = _mm256_cvtph_ps(_mm_loadu_si128(b.m.as_ptr() as *const __m128i));
        let v = super::q5_0::values5(b.qs.as_ptr(), b.qh.as_ptr());
        for t in 0..T {
            let ab = a[t].get_unchecked(i);
            let p = ab.qs.as_ptr();
            let mut s = _mm256_setzero_si256();
            for g in 0..4 {
                s = D::dot(s, v[g], bcast4(p.add(4 * g)));
                s = D::dot(s, v[4 + g], bcast4(p.add(16 + 4 * g)));
            }
            let f = _mm256_add_ps(
                _mm256_mul_ps(
                    _mm256_mul_ps(dw, _mm256_set1_ps(ab.d)),
                    _mm256_cvtepi32_ps(s),
                ),
                _mm256_mul_ps(mw, _mm256_set1_ps(ab.s)),
            );
            acc[t] = _mm256_add_ps(acc[t], f);
        }
    }
    crate::quant::simd::lanes(acc)
}

packed_tiles!(BlockQ5_1x8, Q8Block, body);

#[cfg(test)]
mod tests {
    use super::super::testing::{check_with, Plain};
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        check_with::<Q5_1x8>(
            crate::quant::q5_1::tests::random_block,
            Plain::Close,
            Some(crate::quant::q5_1::tests::portable),
        );
    }
}
