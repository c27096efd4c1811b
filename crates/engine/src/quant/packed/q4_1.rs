//! Q4_1, 8 rows interleaved: scales, minimums, then the quants laid out as packed Q4_0's.

use super::{packed_tiles, Packed};
use crate::quant::{BlockQ4_1, Q8Block, Q4_1};
use half::f16;

#[derive(Clone, Copy)]
#[repr(C)]
pub struct BlockQ4_1x8 {
    d: [f16; 8],
    m: [f16; 8],
    qs: [u8; 128],
}

/// Packed Q4_1.
pub struct Q4_1x8;

impl Packed for Q4_1x8 {
    type K = Q4_1;
    type P = BlockQ4_1x8;

    fn pack(rows: [&[BlockQ4_1]; 8], i: usize) -> BlockQ4_1x8 {
        let mut p = BlockQ4_1x8 {
            d: std::array::from_fn(|r| rows[r][i].d),
            m: std::array::from_fn(|r| rows[r][i].m),
            qs: [0; 128],
        };
        for g in 0..4 {
            for (r, row) in rows.iter().enumerate() {
                p.qs[g * 32 + r * 4..g * 32 + r * 4 + 4]
                    .copy_from_slice(&row[i].qs[4 * g..4 * g + 4]);
            }
        }
        p
    }

    #[inline]
    fn tile<const T: usize>(w: &[BlockQ4_1x8], a: [&[Q8Block]; T]) -> [[f32; 8]; T] {
        tile_any(w, a)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn body<D: super::dot::Dot, const T: usize>(
    w: &[BlockQ4_1x8],
    a: [&[Q8Block]; T],
) -> [[f32; 8]; T] {
    use super::dot::bcast4;
    use std::arch::x86_64::*;
    let mut acc = [_mm256_setzero_ps(); T];
    let m4 = _mm256_set1_epi8(0x0f);
    for i in 0..w.len() {
        let b = w.get_unchecked(i);
        super::prefetch_ahead(b);
        let dw = _mm256_cvtph_ps(_mm_loadu_si128(b.d.as_ptr() as *const __m128i));
        let mw = _mm256_cvtph_ps(_mm_loadu_si128(b.m.as_ptr() as *const __m128i));
        let mut lo = [_mm256_setzero_si256(); 4];
        let mut hi = [_mm256_setzero_si256(); 4];
        for g in 0..4 {
            let q = _mm256_loadu_si256(b.qs.as_ptr().add(32 * g) as *const __m256i);
            lo[g] = _mm256_and_si256(q, m4);
            hi[g] = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        }
        for t in 0..T {
            let ab = a[t].get_unchecked(i);
            let p = ab.qs.as_ptr();
            let mut s = _mm256_setzero_si256();
            for g in 0..4 {
                s = D::dot(s, lo[g], bcast4(p.add(4 * g)));
                s = D::dot(s, hi[g], bcast4(p.add(16 + 4 * g)));
            }
            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(ab.d));
            acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc[t]);
            acc[t] = _mm256_fmadd_ps(mw, _mm256_set1_ps(ab.s), acc[t]);
        }
    }
    crate::quant::simd::lanes(acc)
}

packed_tiles!(BlockQ4_1x8, Q8Block, body);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_plain_kernel() {
        super::super::testing::check::<Q4_1x8>(|r| BlockQ4_1 {
            d: f16::from_f32(r.f32() * 0.1),
            m: f16::from_f32(r.f32() * 0.5),
            qs: r.bytes(),
        });
    }
}
