//! ggml Q8_0: 32 values as i8 and an f16 scale, `value = d * q`.

use super::act::Q8Block;
use super::{portable_tile, Kernel};
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// The Q8_0 kernels (with 8-bit activations).
pub struct Q8_0;

impl Kernel for Q8_0 {
    type W = BlockQ8_0;
    type A = Q8Block;
    const QK: usize = 32;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ8_0]; R],
        a: [&[Q8Block]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        portable_tile(w, a, |w, a| {
            let sumi: i32 =
                w.qs.iter()
                    .zip(&a.qs)
                    .map(|(x, y)| *x as i32 * *y as i32)
                    .sum();
            w.d.to_f32() * a.d * sumi as f32
        })
    }

    fn dequantize(w: &[BlockQ8_0], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for (q, v) in b.qs.iter().zip(o) {
                *v = d * *q as f32;
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
        w: [&[BlockQ8_0]; R],
        a: [&[Q8Block]; T],
    ) -> [[f32; T]; R] {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for i in 0..w[0].len() {
            let mut x = [_mm256_setzero_si256(); R];
            let mut ax = [_mm256_setzero_si256(); R];
            let mut d = [0f32; R];
            for r in 0..R {
                let b = w[r].get_unchecked(i);
                prefetch(b);
                x[r] = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
                ax[r] = _mm256_sign_epi8(x[r], x[r]);
                d[r] = h(b.d);
            }
            for t in 0..T {
                let ab = a[t].get_unchecked(i);
                let y = _mm256_loadu_si256(ab.qs.as_ptr() as *const __m256i);
                for r in 0..R {
                    let p = _mm256_cvtepi32_ps(dot_ss8(ax[r], x[r], y));
                    acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(d[r] * ab.d), p, acc[r][t]);
                }
            }
        }
        hsums(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testing::check;

    #[test]
    fn matches_dequantized_reference() {
        check::<Q8_0>(
            |r| BlockQ8_0 {
                d: f16::from_f32(r.f32() * 0.01),
                qs: r.bytes(),
            },
            1e-2,
        );
    }
}
