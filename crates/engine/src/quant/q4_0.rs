//! ggml Q4_0: 32 values as 4-bit `q` and an f16 scale, `value = d * (q - 8)`. Element `j`
//! is the low nibble of `qs[j]`, element `j + 16` its high nibble.

use super::act::Q8Block;
use super::{portable_tile, Kernel};
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// The Q4_0 kernels (with 8-bit activations).
pub struct Q4_0;

impl Kernel for Q4_0 {
    type W = BlockQ4_0;
    type A = Q8Block;
    const QK: usize = 32;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ4_0]; R],
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
                    ((w.qs[j] & 0x0f) as i32 - 8) * a.qs[j] as i32
                        + ((w.qs[j] >> 4) as i32 - 8) * a.qs[j + 16] as i32
                })
                .sum();
            w.d.to_f32() * a.d * sumi as f32
        })
    }

    fn dequantize(w: &[BlockQ4_0], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for j in 0..16 {
                o[j] = d * ((b.qs[j] & 0x0f) as f32 - 8.0);
                o[j + 16] = d * ((b.qs[j] >> 4) as f32 - 8.0);
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
        w: [&[BlockQ4_0]; R],
        a: [&[Q8Block]; T],
    ) -> [[f32; T]; R] {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let eight = _mm256_set1_epi8(8);
        for i in 0..w[0].len() {
            let mut x = [_mm256_setzero_si256(); R];
            let mut ax = [_mm256_setzero_si256(); R];
            let mut d = [0f32; R];
            for r in 0..R {
                let b = w[r].get_unchecked(i);
                prefetch(b);
                x[r] = _mm256_sub_epi8(nibbles(b.qs.as_ptr()), eight);
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
        check::<Q4_0>(
            |r| BlockQ4_0 {
                d: f16::from_f32(r.f32() * 0.1),
                qs: r.bytes(),
            },
            1e-2,
        );
    }
}
