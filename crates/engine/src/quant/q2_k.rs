//! ggml Q2_K: super-blocks of 256 values in 16 sub-blocks of 16, each with a 4-bit scale
//! (low nibble of `scales[j]`) and a 4-bit min (high nibble), under the block's f16 `d` and
//! `dmin`: `value = d * sc_j * q - dmin * m_j`, `q` 2 bits. In each half `n` (128 values)
//! value `128n + 32g + l` (g = 0..4, l = 0..32) is bits `2g..2g+2` of `qs[32n + l]`.

use super::act::Q8KBlock;
use super::q4_k::unpacked_tile;
use super::Kernel;
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ2_K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: f16,
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2_K>() == 84);

impl BlockQ2_K {
    /// The 2-bit values in order.
    fn values(&self) -> [u8; 256] {
        let mut q = [0u8; 256];
        for (p, v) in q.iter_mut().enumerate() {
            let (n, g, l) = (p / 128, (p / 32) % 4, p % 32);
            *v = (self.qs[32 * n + l] >> (2 * g)) & 3;
        }
        q
    }
}

/// A Q2_K block unpacked for the portable kernel.
struct Unpacked {
    q: [u8; 256],
    scales: [u8; 16],
    d: f32,
    dmin: f32,
}

impl Unpacked {
    fn of(b: &BlockQ2_K) -> Self {
        Unpacked {
            q: b.values(),
            scales: b.scales,
            d: b.d.to_f32(),
            dmin: b.dmin.to_f32(),
        }
    }

    fn dot(&self, a: &Q8KBlock) -> f32 {
        let (mut sumi, mut summ) = (0i32, 0i32);
        for j in 0..16 {
            let s: i32 = self.q[16 * j..16 * j + 16]
                .iter()
                .zip(&a.qs[16 * j..16 * j + 16])
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            sumi += (self.scales[j] & 0x0f) as i32 * s;
            summ += (self.scales[j] >> 4) as i32 * a.bsums[j] as i32;
        }
        self.d * a.d * sumi as f32 - self.dmin * a.d * summ as f32
    }
}

/// The Q2_K kernels (with Q8_K activations).
#[allow(non_camel_case_types)]
pub struct Q2_K;

impl Kernel for Q2_K {
    type W = BlockQ2_K;
    type A = Q8KBlock;
    const QK: usize = 256;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ2_K]; R],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        unpacked_tile(w, a, Unpacked::of, Unpacked::dot)
    }

    fn dequantize(w: &[BlockQ2_K], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(256)) {
            let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
            for (p, (v, q)) in o.iter_mut().zip(b.values()).enumerate() {
                let sc = b.scales[p / 16];
                let (dl, ml) = (d * (sc & 0x0f) as f32, dmin * (sc >> 4) as f32);
                *v = dl * q as f32 - ml;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::*;
    use crate::quant::q4_k::avx::{tile_k, Scales, Unpack};
    use crate::quant::simd::h;
    use std::arch::x86_64::*;

    impl Unpack for BlockQ2_K {
        #[inline(always)]
        unsafe fn scales(&self) -> Scales {
            let s = _mm_loadu_si128(self.scales.as_ptr() as *const __m128i);
            let m4 = _mm_set1_epi8(0x0f);
            let sc8 = _mm_and_si128(s, m4);
            let mins8 = _mm_and_si128(_mm_srli_epi16(s, 4), m4);
            // Vector j holds sub-blocks 2j (low lane) and 2j + 1 (high lane).
            let evens_odds = _mm_shuffle_epi8(
                sc8,
                _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15),
            );
            Scales {
                sc: _mm256_cvtepu8_epi16(evens_odds),
                mins: _mm256_cvtepu8_epi16(mins8),
                d: h(self.d),
                dmin: Some(h(self.dmin)),
            }
        }

        #[inline(always)]
        unsafe fn q(&self, j: usize) -> __m256i {
            // j = 4n + g: bits 2g..2g+2 of qs[32n..].
            let x = _mm256_loadu_si256(self.qs.as_ptr().add(32 * (j / 4)) as *const __m256i);
            let x = match j % 4 {
                0 => x,
                1 => _mm256_srli_epi16(x, 2),
                2 => _mm256_srli_epi16(x, 4),
                _ => _mm256_srli_epi16(x, 6),
            };
            _mm256_and_si256(x, _mm256_set1_epi8(3))
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ2_K]; R],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; T]; R] {
        tile_k(w, a)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::q4_k::tests::check_portable;
    use crate::quant::testing::{check, Rng};

    /// The portable kernel on one row.
    pub(crate) fn portable(w: &[BlockQ2_K], a: &[Q8KBlock]) -> f32 {
        unpacked_tile([w], [a], Unpacked::of, Unpacked::dot)[0][0]
    }

    pub(crate) fn random_block(r: &mut Rng) -> BlockQ2_K {
        BlockQ2_K {
            scales: r.bytes(),
            qs: r.bytes(),
            d: f16::from_f32(r.f32() * 0.01),
            dmin: f16::from_f32(r.f32() * 0.01),
        }
    }

    #[test]
    fn dequantizes_like_llama_cpp() {
        // d = 0.5, dmin = 0.25; sub-block j has scale j % 16 and min 15 - j; value p is
        // `0.5 * sc * q - 0.25 * m` with q = (p / 3) % 4.
        let q: Vec<u8> = (0..256).map(|p| ((p / 3) % 4) as u8).collect();
        let mut b = BlockQ2_K {
            scales: std::array::from_fn(|j| j as u8 | ((15 - j as u8) << 4)),
            qs: [0; 64],
            d: f16::from_f32(0.5),
            dmin: f16::from_f32(0.25),
        };
        // Packed as llama.cpp's quantize_row_q2_K_ref.
        for n in 0..2 {
            for l in 0..32 {
                b.qs[32 * n + l] = (0..4).map(|g| q[128 * n + 32 * g + l] << (2 * g)).sum();
            }
        }
        let mut out = [0f32; 256];
        Q2_K::dequantize(&[b], &mut out);
        assert_eq!(out[0], -3.75); // sub-block 0: 0.5 * 0 * 0 - 0.25 * 15
        assert_eq!(out[30], 1.0 - 3.5); // sub-block 1 (scale 1, min 14), q = 10 % 4 = 2
        assert_eq!(out[255], 7.5); // sub-block 15 (scale 15, min 0), q = 85 % 4 = 1
        for (p, v) in out.iter().enumerate() {
            let j = p / 16;
            assert_eq!(
                *v,
                0.5 * j as f32 * q[p] as f32 - 0.25 * (15 - j) as f32,
                "{p}"
            );
        }
    }

    #[test]
    fn matches_dequantized_reference() {
        check::<Q2_K>(random_block, 4e-3);
    }

    #[test]
    fn portable_matches_dequantized_reference() {
        check_portable::<Q2_K>(
            random_block,
            4e-3,
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
        );
    }
}
