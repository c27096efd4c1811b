//! F16 weights, kept 16-bit in memory and widened with F16C in the kernel; activations
//! stay f32. A "block" is 8 values.

use super::act::F32x8;
use super::{portable_tile, Kernel};

#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct BlockF16(pub [half::f16; 8]);

/// The F16 kernels.
pub struct F16;

impl Kernel for F16 {
    type W = BlockF16;
    type A = F32x8;
    const QK: usize = 8;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockF16]; R],
        a: [&[F32x8]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        portable_tile(w, a, |w, a| {
            w.0.iter().zip(&a.0).map(|(w, x)| w.to_f32() * x).sum()
        })
    }

    fn dequantize(w: &[BlockF16], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(8)) {
            for (v, x) in o.iter_mut().zip(&b.0) {
                *v = x.to_f32();
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
        w: [&[BlockF16]; R],
        a: [&[F32x8]; T],
    ) -> [[f32; T]; R] {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for i in 0..w[0].len() {
            let mut x = [_mm256_setzero_ps(); R];
            for r in 0..R {
                let b = w[r].get_unchecked(i);
                prefetch(b);
                x[r] = _mm256_cvtph_ps(_mm_loadu_si128(b.0.as_ptr() as *const __m128i));
            }
            for t in 0..T {
                let y = _mm256_loadu_ps(a[t].get_unchecked(i).0.as_ptr());
                for r in 0..R {
                    acc[r][t] = _mm256_fmadd_ps(x[r], y, acc[r][t]);
                }
            }
        }
        std::array::from_fn(|r| std::array::from_fn(|t| hsum(acc[r][t])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testing::check;

    #[test]
    fn matches_dequantized_reference() {
        check::<F16>(
            |r| BlockF16(std::array::from_fn(|_| half::f16::from_f32(r.f32()))),
            1e-5,
        );
    }
}
