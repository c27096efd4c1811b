//! ggml IQ4_NL: 32 values as 4-bit indices into a fixed non-linear table and an f16 scale,
//! `value = d * KVALUES[q]`; nibble layout as Q4_0. llama.cpp's quantizer writes it for
//! tensors of Q2_K/Q3_K models whose width is not a multiple of 256.

use super::act::Q8Block;
use super::{portable_tile, Kernel};
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockIQ4_NL {
    pub d: f16,
    pub qs: [u8; 16],
}
const _: () = assert!(std::mem::size_of::<BlockIQ4_NL>() == 18);

/// ggml's `kvalues_iq4nl`.
pub const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

fn portable_dot(w: &BlockIQ4_NL, a: &Q8Block) -> f32 {
    let sumi: i32 = (0..16)
        .map(|j| {
            KVALUES[(w.qs[j] & 0x0f) as usize] as i32 * a.qs[j] as i32
                + KVALUES[(w.qs[j] >> 4) as usize] as i32 * a.qs[j + 16] as i32
        })
        .sum();
    w.d.to_f32() * a.d * sumi as f32
}

/// The IQ4_NL kernels (with 8-bit activations).
#[allow(non_camel_case_types)]
pub struct IQ4_NL;

impl Kernel for IQ4_NL {
    type W = BlockIQ4_NL;
    type A = Q8Block;
    const QK: usize = 32;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockIQ4_NL]; R],
        a: [&[Q8Block]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        portable_tile(w, a, portable_dot)
    }

    fn dequantize(w: &[BlockIQ4_NL], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(32)) {
            let d = b.d.to_f32();
            for j in 0..16 {
                o[j] = d * KVALUES[(b.qs[j] & 0x0f) as usize] as f32;
                o[j + 16] = d * KVALUES[(b.qs[j] >> 4) as usize] as f32;
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
        w: [&[BlockIQ4_NL]; R],
        a: [&[Q8Block]; T],
    ) -> [[f32; T]; R] {
        let table =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(KVALUES.as_ptr() as *const __m128i));
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for i in 0..w[0].len() {
            let mut x = [_mm256_setzero_si256(); R];
            let mut ax = [_mm256_setzero_si256(); R];
            let mut d = [0f32; R];
            for r in 0..R {
                let b = w[r].get_unchecked(i);
                prefetch(b);
                x[r] = _mm256_shuffle_epi8(table, nibbles(b.qs.as_ptr()));
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
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                out[r][t] = hsum(acc[r][t]);
            }
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::q4_k::tests::check_portable;
    use crate::quant::testing::{check, Rng};

    /// The portable kernel on one row.
    pub(crate) fn portable(w: &[BlockIQ4_NL], a: &[Q8Block]) -> f32 {
        portable_tile([w], [a], portable_dot)[0][0]
    }

    pub(crate) fn random_block(r: &mut Rng) -> BlockIQ4_NL {
        BlockIQ4_NL {
            d: f16::from_f32(r.f32() * 0.001),
            qs: r.bytes(),
        }
    }

    #[test]
    fn dequantizes_like_llama_cpp() {
        // Element j is the low nibble of qs[j], element j + 16 its high nibble.
        let b = BlockIQ4_NL {
            d: f16::from_f32(0.5),
            qs: std::array::from_fn(|j| j as u8 | ((15 - j as u8) << 4)),
        };
        let mut out = [0f32; 32];
        IQ4_NL::dequantize(&[b], &mut out);
        assert_eq!(out[0], -63.5);
        assert_eq!(out[8], 0.5);
        assert_eq!(out[15], 56.5);
        assert_eq!(out[16], 56.5);
        assert_eq!(out[31], -63.5);
    }

    #[test]
    fn matches_dequantized_reference() {
        check::<IQ4_NL>(random_block, 1e-2);
    }

    #[test]
    fn portable_matches_dequantized_reference() {
        check_portable::<IQ4_NL>(
            random_block,
            1e-2,
            |w, a| portable_tile(w, a, portable_dot),
            |w, a| portable_tile(w, a, portable_dot),
        );
    }
}
