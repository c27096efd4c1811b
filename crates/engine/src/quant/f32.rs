//! F32 weights. A "block" is 8 values.

use super::act::F32x8;
use super::{portable_tile, Kernel};

#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct BlockF32(pub [f32; 8]);

/// The F32 kernels.
pub struct F32;

impl Kernel for F32 {
    type W = BlockF32;
    type A = F32x8;
    const QK: usize = 8;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockF32]; R],
        a: [&[F32x8]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        portable_tile(w, a, |w, a| w.0.iter().zip(&a.0).map(|(w, x)| w * x).sum())
    }

    fn dequantize(w: &[BlockF32], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(8)) {
            o.copy_from_slice(&b.0);
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
        w: [&[BlockF32]; R],
        a: [&[F32x8]; T],
    ) -> [[f32; T]; R] {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for i in 0..w[0].len() {
            let mut x = [_mm256_setzero_ps(); R];
            for r in 0..R {
                let b = w[r].get_unchecked(i);
                prefetch(b);
                x[r] = _mm256_loadu_ps(b.0.as_ptr());
            }
            for t in 0..T {
                let y = _mm256_loadu_ps(a[t].get_unchecked(i).0.as_ptr());
                for r in 0..R {
                    acc[r][t] = _mm256_fmadd_ps(x[r], y, acc[r][t]);
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
        check::<F32>(|r| BlockF32(std::array::from_fn(|_| r.f32())), 1e-5);
    }
}
