//! ggml Q4_1: 32 values as 4-bit `q`, an f16 scale and an f16 minimum,
//! `value = d * q + m`; nibble layout as Q4_0.

use super::act::Q8Block;
use super::{portable_tile, Kernel};
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// The Q4_1 kernels (with 8-bit activations and their sums).
pub struct Q4_1;

impl Kernel for Q4_1 {
    type W = BlockQ4_1;
    type A = Q8Block;
    const QK: usize = 32;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ4_1]; R],
        a: [&[Q8Block]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        portable_tile(w, a, |w, a| {
            let sumi: i32 = (0..16)
                .map(|j| {
                    (w.qs[j] & 0x0f) as i32 * a.qs[j] as i32
                        + (w.qs[j] >> 4) as i32 * a.qs[j + 16] as i32
                })
                .sum();
            w.d.to_f32() * a.d * sumi as f32 + w.m.to_f32() * a.s
        })
    }

    fn dequantize(w: &[BlockQ4_1], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(32)) {
            let (d, m) = (b.d.to_f32(), b.m.to_f32());
            for j in 0..16 {
                o[j] = d * (b.qs[j] & 0x0f) as f32 + m;
                o[j + 16] = d * (b.qs[j] >> 4) as f32 + m;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::*;
    use crate::quant::simd::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ4_1]; R],
        a: [&[Q8Block]; T],
    ) -> [[f32; T]; R] {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let mut summ = [[0f32; T]; R];
        for i in 0..w[0].len() {
            let mut x = [_mm256_setzero_si256(); R];
            let mut d = [0f32; R];
            let mut m = [0f32; R];
            for r in 0..R {
                let b = w[r].get_unchecked(i);
                prefetch(b);
                x[r] = nibbles(b.qs.as_ptr());
                d[r] = h(b.d);
                m[r] = h(b.m);
            }
            for t in 0..T {
                let ab = a[t].get_unchecked(i);
                let y = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
                for r in 0..R {
                    let p = _mm256_cvtepi32_ps(dot_us8(x[r], y));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(d[r] * ab.d), p, acc[r][t]);
                    summ[r][t] += m[r] * ab.s;
                }
            }
        }
        let mut out = hsums(acc);
        for r in 0..R {
            for t in 0..T {
                out[r][t] += summ[r][t];
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testing::check;

    #[test]
    fn matches_dequantized_reference() {
        check::<Q4_1>(
            |r| BlockQ4_1 {
                d: f16::from_f32(r.f32() * 0.1),
                m: f16::from_f32(r.f32() * 0.5),
                qs: r.bytes(),
            },
            1e-2,
        );
    }
}
