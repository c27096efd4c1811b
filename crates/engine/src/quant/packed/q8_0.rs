//! Q8_0, 8 rows interleaved: the rows' f16 scales, then 8 groups of 32 bytes; group `g`
//! holds values `4g..4g+4` of each row in turn.

use super::{packed_tiles, Packed};
use crate::quant::{BlockQ8_0, Q8Block, Q8_0};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ8_0x8 {
    d: [f16; 8],
    qs: [i8; 256],
}

/// Packed Q8_0.
pub struct Q8_0x8;

impl Packed for Q8_0x8 {
    type K = Q8_0;
    type P = BlockQ8_0x8;

    fn pack(rows: [&[BlockQ8_0]; 8], i: usize) -> BlockQ8_0x8 {
        let mut p = BlockQ8_0x8 {
            d: std::array::from_fn(|r| rows[r][i].d),
            qs: [0; 256],
        };
        for g in 0..8 {
            for (r, row) in rows.iter().enumerate() {
                p.qs[g * 32 + r * 4..g * 32 + r * 4 + 4]
                    .copy_from_slice(&row[i].qs[4 * g..4 * g + 4]);
            }
        }
        p
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockQ8_0x8], a: [&[Q8Block]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body<D: super::dot::Dot, const T: usize>(
    w: &[BlockQ8_0x8],
    a: [&[Q8Block]; T],
) -> [[f32; 8]; T] {
    use super::dot::bcast4;
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); T];
    for i in 0..w.len() {
        let b = w.get_unchecked(i);
        super::prefetch_ahead(b);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
        let mut q = [_mm256_setzero_si256(); 8];
        for (g, qg) in q.iter_mut().enumerate() {
            *qg = _mm256_loadu_si256(b.qs.as_ptr().add(32 * g) as *const __m256i);
        }
        for t in 0..T {
            let ab = a[t].get_unchecked(i);
            let p = ab.qs.as_ptr();
            let mut s = D::signed_init(ab.isum);
            for (g, qg) in q.iter().enumerate() {
                s = D::dot_signed(s, *qg, bcast4(p.add(4 * g)));
            }
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(ab.d));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[t]);
        }
    }
    crate::quant::simd::lanes(acc)
}

packed_tiles!(BlockQ8_0x8, Q8Block, body);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        super::super::testing::check::<Q8_0x8>(|r| BlockQ8_0 {
            d: f16::from_f32(r.f32() * 0.01),
            qs: r.bytes(),
        });
    }
}
