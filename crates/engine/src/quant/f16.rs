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
        {
            if super::simd::avx512vl() {
                // SAFETY: AVX2, FMA, F16C and AVX512VL were detected at run time.
                return unsafe { avx::tile_vl(w, a) };
            }
            if super::simd::avx2() {
                // SAFETY: AVX2, FMA and F16C were detected at run time.
                return unsafe { avx::tile(w, a) };
            }
        }
        portable_tile(w, a, |w, a| {
            w.0.iter().zip(&a.0).map(|(w, x)| w.to_f32() * x).sum()
        })
    }

    /// 4 × 4 tiles (16 accumulators) where AVX512VL's 32 registers hold them.
    #[inline]
    fn prompt_rows() -> usize {
        if super::simd::avx512vl() {
            4
        } else {
            2
        }
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
        body(w, a)
    }

    /// The same operations with AVX512VL's 32 registers (no spills in the bigger tiles).
    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl")]
    pub unsafe fn tile_vl<const R: usize, const T: usize>(
        w: [&[BlockF16]; R],
        a: [&[F32x8]; T],
    ) -> [[f32; T]; R] {
        body(w, a)
    }

    #[inline(always)]
    unsafe fn body<const R: usize, const T: usize>(
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
        hsums(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testing::check;

    fn random_block(r: &mut crate::quant::testing::Rng) -> BlockF16 {
        BlockF16(std::array::from_fn(|_| half::f16::from_f32(r.f32())))
    }

    #[test]
    fn matches_dequantized_reference() {
        check::<F16>(random_block, 1e-5);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512vl_path_equals_avx2() {
        use crate::quant::{Act, Input};
        if !crate::quant::simd::avx512vl() {
            return;
        }
        let mut rng = crate::quant::testing::Rng(5);
        let w: Vec<Vec<BlockF16>> = (0..4)
            .map(|_| (0..40).map(|_| random_block(&mut rng)).collect())
            .collect();
        let x: Vec<f32> = (0..4 * 320).map(|_| rng.f32()).collect();
        let input = Input::new(&x, 4);
        let a: Vec<&[F32x8]> = F32x8::of(&input).chunks(40).collect();
        let (w4, a4) = ([&w[0][..], &w[1], &w[2], &w[3]], [a[0], a[1], a[2], a[3]]);
        // SAFETY: AVX512VL (and so AVX2) detected.
        let (x, y) = unsafe { (avx::tile(w4, a4), avx::tile_vl(w4, a4)) };
        assert_eq!(x, y);
    }
}
