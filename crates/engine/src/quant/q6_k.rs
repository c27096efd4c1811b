//! ggml Q6_K: super-blocks of 256 values in 16 sub-blocks of 16, each with an i8 scale, under
//! an f16 `d`: `value = d * sc_j * (q - 32)`, `q` 6 bits. In each half `n` (128 values) value
//! `128n + 32g + l` (g = 0..4, l = 0..32) has its low 4 bits in `ql[64n + l + 32 * (g % 2)]`
//! (low nibble for g < 2, high for g >= 2) and its top 2 bits at bit `2g` of `qh[32n + l]`.
//!
//! The kernels multiply the unsigned `q` and take `32 * sum_j sc_j * bsums_j` off, as
//! llama.cpp does.

use super::act::Q8KBlock;
use super::q4_k::unpacked_tile;
use super::Kernel;
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ6_K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6_K>() == 210);

impl BlockQ6_K {
    /// The 6-bit values (0..64) in order.
    fn values(&self) -> [u8; 256] {
        let mut q = [0u8; 256];
        for n in 0..2 {
            let (ql, qh) = (&self.ql[64 * n..64 * n + 64], &self.qh[32 * n..32 * n + 32]);
            let o = &mut q[128 * n..128 * n + 128];
            for l in 0..32 {
                o[l] = (ql[l] & 0x0f) | ((qh[l] & 3) << 4);
                o[l + 32] = (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4);
                o[l + 64] = (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4);
                o[l + 96] = (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4);
            }
        }
        q
    }
}

/// A Q6_K block unpacked for the portable kernel.
struct Unpacked {
    q: [u8; 256],
    sc: [i8; 16],
    d: f32,
}

impl Unpacked {
    fn of(b: &BlockQ6_K) -> Self {
        Unpacked {
            q: b.values(),
            sc: b.scales,
            d: b.d.to_f32(),
        }
    }

    fn dot(&self, a: &Q8KBlock) -> f32 {
        let mut sumi = 0i32;
        for j in 0..16 {
            let s: i32 = self.q[16 * j..16 * j + 16]
                .iter()
                .zip(&a.qs[16 * j..16 * j + 16])
                .map(|(&x, &y)| x as i32 * y as i32)
                .sum();
            sumi += self.sc[j] as i32 * (s - 32 * a.bsums[j] as i32);
        }
        self.d * a.d * sumi as f32
    }
}

/// The Q6_K kernels (with Q8_K activations).
#[allow(non_camel_case_types)]
pub struct Q6_K;

impl Kernel for Q6_K {
    type W = BlockQ6_K;
    type A = Q8KBlock;
    const QK: usize = 256;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ6_K]; R],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        unpacked_tile(w, a, Unpacked::of, Unpacked::dot)
    }

    fn dequantize(w: &[BlockQ6_K], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(256)) {
            let d = b.d.to_f32();
            for (p, (v, q)) in o.iter_mut().zip(b.values()).enumerate() {
                *v = d * b.scales[p / 16] as f32 * (q as i32 - 32) as f32;
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

    impl Unpack for BlockQ6_K {
        #[inline(always)]
        unsafe fn scales(&self) -> Scales {
            let s8 = _mm_loadu_si128(self.scales.as_ptr() as *const __m128i);
            // Vector j holds sub-blocks 2j (low lane) and 2j + 1 (high lane): even scales in
            // the low lane, odd ones in the high lane.
            let evens_odds = _mm_shuffle_epi8(
                s8,
                _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15),
            );
            Scales {
                sc: _mm256_cvtepi8_epi16(evens_odds),
                // 32 * sc_j as i16 weights of bsums_j.
                mins: _mm256_slli_epi16(_mm256_cvtepi8_epi16(s8), 5),
                d: h(self.d),
                dmin: None,
            }
        }

        #[inline(always)]
        unsafe fn q(&self, j: usize) -> __m256i {
            // j = 4n + g: low 4 bits in ql[64n + 32 (g % 2)..] (high nibbles for g >= 2), top
            // 2 bits at bits 2g.. of qh[32n..], moved to bits 4..6 (16-bit shifts of masked
            // bytes, no bit crossing into the other byte of its lane).
            let (n, g) = (j / 4, j % 4);
            let ql =
                _mm256_loadu_si256(self.ql.as_ptr().add(64 * n + 32 * (g % 2)) as *const __m256i);
            let ql = if g < 2 { ql } else { _mm256_srli_epi16(ql, 4) };
            let qh = _mm256_loadu_si256(self.qh.as_ptr().add(32 * n) as *const __m256i);
            let top = _mm256_and_si256(qh, _mm256_set1_epi8((3 << (2 * g)) as u8 as i8));
            let top = match g {
                0 => _mm256_slli_epi16(top, 4),
                1 => _mm256_slli_epi16(top, 2),
                2 => top,
                _ => _mm256_srli_epi16(top, 2),
            };
            _mm256_or_si256(_mm256_and_si256(ql, _mm256_set1_epi8(0x0f)), top)
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ6_K]; R],
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
    pub(crate) fn portable(w: &[BlockQ6_K], a: &[Q8KBlock]) -> f32 {
        unpacked_tile([w], [a], Unpacked::of, Unpacked::dot)[0][0]
    }

    pub(crate) fn random_block(r: &mut Rng) -> BlockQ6_K {
        BlockQ6_K {
            ql: r.bytes(),
            qh: r.bytes(),
            scales: r.bytes(),
            d: f16::from_f32(r.f32() * 0.001),
        }
    }

    #[test]
    fn dequantizes_like_llama_cpp() {
        // d = 0.25, scale of sub-block j = j - 8; value p is `0.25 * (j - 8) * (q - 32)` with
        // q = (p * 7) % 64.
        let q: Vec<u8> = (0..256).map(|p| ((p * 7) % 64) as u8).collect();
        let mut b = BlockQ6_K {
            ql: [0; 128],
            qh: [0; 64],
            scales: std::array::from_fn(|j| j as i8 - 8),
            d: f16::from_f32(0.25),
        };
        // Packed as llama.cpp's quantize_row_q6_K_ref.
        for n in 0..2 {
            for l in 0..32 {
                let v = |g: usize| q[128 * n + 32 * g + l];
                b.ql[64 * n + l] = (v(0) & 0xf) | ((v(2) & 0xf) << 4);
                b.ql[64 * n + l + 32] = (v(1) & 0xf) | ((v(3) & 0xf) << 4);
                b.qh[32 * n + l] =
                    (v(0) >> 4) | ((v(1) >> 4) << 2) | ((v(2) >> 4) << 4) | ((v(3) >> 4) << 6);
            }
        }
        let mut out = [0f32; 256];
        Q6_K::dequantize(&[b], &mut out);
        assert_eq!(out[0], 0.25 * -8.0 * -32.0); // q = 0
        assert_eq!(out[10], 0.25 * -8.0 * -26.0); // q = 70 % 64 = 6
        assert_eq!(out[130], 0.25 * 0.0); // sub-block 8: scale 0
        assert_eq!(out[255], 0.25 * 7.0 * ((255 * 7 % 64) - 32) as f32); // sub-block 15
        for (p, v) in out.iter().enumerate() {
            assert_eq!(
                *v,
                0.25 * ((p / 16) as f32 - 8.0) * (q[p] as f32 - 32.0),
                "{p}"
            );
        }
    }

    #[test]
    fn matches_dequantized_reference() {
        check::<Q6_K>(random_block, 4e-3);
    }

    #[test]
    fn portable_matches_dequantized_reference() {
        check_portable::<Q6_K>(
            random_block,
            4e-3,
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
        );
    }
}
