//! ggml Q5_0: 32 values as 5-bit `q` (low 4 bits packed like Q4_0, the fifth bit of element
//! `j` in bit `j` of `qh`) and an f16 scale, `value = d * (q - 16)`.

use super::act::Q8Block;
use super::{portable_tile, Kernel};
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

impl BlockQ5_0 {
    /// The 5-bit values of the block, in element order.
    fn values(&self) -> [i32; 32] {
        let qh = u32::from_le_bytes(self.qh);
        std::array::from_fn(|j| {
            let lo = if j < 16 {
                self.qs[j] & 0x0f
            } else {
                self.qs[j - 16] >> 4
            };
            (lo as i32 | (((qh >> j) & 1) << 4) as i32) - 16
        })
    }
}

fn portable_dot(w: &BlockQ5_0, a: &Q8Block) -> f32 {
    let sumi: i32 = w
        .values()
        .iter()
        .zip(&a.qs)
        .map(|(x, y)| x * *y as i32)
        .sum();
    w.d.to_f32() * a.d * sumi as f32
}

/// The Q5_0 kernels (with 8-bit activations).
pub struct Q5_0;

impl Kernel for Q5_0 {
    type W = BlockQ5_0;
    type A = Q8Block;
    const QK: usize = 32;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ5_0]; R],
        a: [&[Q8Block]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        portable_tile(w, a, portable_dot)
    }

    fn dequantize(w: &[BlockQ5_0], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for (v, q) in o.iter_mut().zip(b.values()) {
                *v = d * q as f32;
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
        w: [&[BlockQ5_0]; R],
        a: [&[Q8Block]; T],
    ) -> [[f32; T]; R] {
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        let high = _mm256_set1_epi8(0xF0u8 as i8);
        for i in 0..w[0].len() {
            let mut x = [_mm256_setzero_si256(); R];
            let mut ax = [_mm256_setzero_si256(); R];
            let mut d = [0f32; R];
            for r in 0..R {
                let b = w[r].get_unchecked(i);
                prefetch(b);
                // q - 16 as i8: the nibble where the fifth bit is set, else nibble | 0xF0.
                let hb = bits_to_bytes(u32::from_le_bytes(b.qh));
                x[r] = _mm256_or_si256(nibbles(b.qs.as_ptr()), _mm256_andnot_si256(hb, high));
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
pub(crate) mod tests {
    use super::*;
    use crate::quant::testing::{check, Rng};

    pub(crate) fn random_block(r: &mut Rng) -> BlockQ5_0 {
        BlockQ5_0 {
            d: f16::from_f32(r.f32() * 0.1),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }

    /// The portable kernel on one row.
    pub(crate) fn portable(w: &[BlockQ5_0], a: &[Q8Block]) -> f32 {
        portable_tile([w], [a], portable_dot)[0][0]
    }

    #[test]
    fn matches_dequantized_reference() {
        check::<Q5_0>(random_block, 1e-2);
    }
}
