//! ggml Q3_K: super-blocks of 256 values in 16 sub-blocks of 16, each with a 6-bit scale
//! (stored + 32, packed in 12 bytes), under an f16 `d`: `value = d * (s_j - 32) * (q - 4)`,
//! `q` 3 bits. In each half `n` (128 values) value `128n + 32g + l` (g = 0..4, l = 0..32) has
//! its low 2 bits at bits `2g..2g+2` of `qs[32n + l]` and its third bit at bit `4n + g` of
//! `hmask[l]`. Scale `j` has its low 4 bits in `scales[j % 8]` (low nibble for j < 8, high
//! nibble after) and its top 2 bits at bits `2(j/4)..` of `scales[8 + j % 4]`.
//!
//! The kernels multiply the unsigned `q` and take `4 * sum_j sc_j * bsums_j` off.

use super::act::Q8KBlock;
use super::q4_k::unpacked_tile;
use super::Kernel;
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ3_K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3_K>() == 110);

impl BlockQ3_K {
    /// The 3-bit values (0..8, 4 meaning zero) in order.
    fn values(&self) -> [u8; 256] {
        let mut q = [0u8; 256];
        for (p, v) in q.iter_mut().enumerate() {
            let (n, g, l) = (p / 128, (p / 32) % 4, p % 32);
            let low = (self.qs[32 * n + l] >> (2 * g)) & 3;
            let high = (self.hmask[l] >> (4 * n + g)) & 1;
            *v = low | (high << 2);
        }
        q
    }

    /// The 16 scales (`s_j - 32`).
    fn scales(&self) -> [i8; 16] {
        let s = &self.scales;
        std::array::from_fn(|j| {
            let low = if j < 8 { s[j] & 0x0f } else { s[j - 8] >> 4 };
            let high = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
            (low | (high << 4)) as i8 - 32
        })
    }
}

/// A Q3_K block unpacked for the portable kernel.
struct Unpacked {
    q: [u8; 256],
    sc: [i8; 16],
    d: f32,
}

impl Unpacked {
    fn of(b: &BlockQ3_K) -> Self {
        Unpacked {
            q: b.values(),
            sc: b.scales(),
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
            sumi += self.sc[j] as i32 * (s - 4 * a.bsums[j] as i32);
        }
        self.d * a.d * sumi as f32
    }
}

/// The Q3_K kernels (with Q8_K activations).
#[allow(non_camel_case_types)]
pub struct Q3_K;

impl Kernel for Q3_K {
    type W = BlockQ3_K;
    type A = Q8KBlock;
    const QK: usize = 256;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ3_K]; R],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        unpacked_tile(w, a, Unpacked::of, Unpacked::dot)
    }

    fn dequantize(w: &[BlockQ3_K], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(256)) {
            let d = b.d.to_f32();
            let sc = b.scales();
            for (p, (v, q)) in o.iter_mut().zip(b.values()).enumerate() {
                *v = d * sc[p / 16] as f32 * (q as i32 - 4) as f32;
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

    /// The 16 scales of a block (`s_j - 32`) as i8.
    #[inline(always)]
    pub unsafe fn scales_v(b: &BlockQ3_K) -> __m128i {
        // 16 bytes ending with the block: qs[62..64], the 12 scale bytes, d.
        let v = _mm_loadu_si128(b.scales.as_ptr().sub(2) as *const __m128i);
        // Low 4 bits: s0..7 low nibbles, then s0..7 high nibbles.
        let a = _mm_shuffle_epi8(
            v,
            _mm_setr_epi8(2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5, 6, 7, 8, 9),
        );
        let low = _mm_or_si128(
            _mm_and_si128(a, _mm_set_epi64x(0, 0x0f0f0f0f0f0f0f0f)),
            _mm_and_si128(_mm_srli_epi16(a, 4), _mm_set_epi64x(0x0f0f0f0f0f0f0f0f, 0)),
        );
        // Top 2 bits: scales 4g..4g+4 take bits 2g..2g+2 of s8..11, moved to bits 4..6 by a
        // multiply (left shift by 4, 2, 0) or a high multiply (right shift by 2) per group.
        let hs = _mm_shuffle_epi8(
            v,
            _mm_setr_epi8(
                10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13, 10, 11, 12, 13,
            ),
        );
        let t = _mm_and_si128(
            hs,
            _mm_setr_epi8(
                3, 3, 3, 3, 12, 12, 12, 12, 48, 48, 48, 48, -64, -64, -64, -64,
            ),
        );
        let up = _mm_mullo_epi16(t, _mm_setr_epi16(16, 16, 4, 4, 1, 1, 0, 0));
        let down = _mm_mulhi_epu16(t, _mm_setr_epi16(0, 0, 0, 0, 0, 0, 1 << 14, 1 << 14));
        let high = _mm_or_si128(up, down);
        _mm_sub_epi8(_mm_or_si128(low, high), _mm_set1_epi8(32))
    }

    impl Unpack for BlockQ3_K {
        #[inline(always)]
        unsafe fn scales(&self) -> Scales {
            let s8 = scales_v(self);
            // Vector j holds sub-blocks 2j (low lane) and 2j + 1 (high lane).
            let evens_odds = _mm_shuffle_epi8(
                s8,
                _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15),
            );
            Scales {
                sc: _mm256_cvtepi8_epi16(evens_odds),
                // 4 * sc_j as i16 weights of bsums_j.
                mins: _mm256_slli_epi16(_mm256_cvtepi8_epi16(s8), 2),
                d: h(self.d),
                dmin: None,
            }
        }

        #[inline(always)]
        unsafe fn q(&self, j: usize) -> __m256i {
            // j = 4n + g: low bits 2g..2g+2 of qs[32n..], third bit at bit j of hmask, moved
            // to bit 2 (16-bit shifts; the mask keeps one bit per byte, none crosses into the
            // other byte of its lane).
            let x = _mm256_loadu_si256(self.qs.as_ptr().add(32 * (j / 4)) as *const __m256i);
            let low = match j % 4 {
                0 => x,
                1 => _mm256_srli_epi16(x, 2),
                2 => _mm256_srli_epi16(x, 4),
                _ => _mm256_srli_epi16(x, 6),
            };
            let hb = _mm256_loadu_si256(self.hmask.as_ptr() as *const __m256i);
            let third = match j {
                0 => _mm256_slli_epi16(hb, 2),
                1 => _mm256_slli_epi16(hb, 1),
                2 => hb,
                3 => _mm256_srli_epi16(hb, 1),
                4 => _mm256_srli_epi16(hb, 2),
                5 => _mm256_srli_epi16(hb, 3),
                6 => _mm256_srli_epi16(hb, 4),
                _ => _mm256_srli_epi16(hb, 5),
            };
            _mm256_or_si256(
                _mm256_and_si256(low, _mm256_set1_epi8(3)),
                _mm256_and_si256(third, _mm256_set1_epi8(4)),
            )
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ3_K]; R],
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
    pub(crate) fn portable(w: &[BlockQ3_K], a: &[Q8KBlock]) -> f32 {
        unpacked_tile([w], [a], Unpacked::of, Unpacked::dot)[0][0]
    }

    pub(crate) fn random_block(r: &mut Rng) -> BlockQ3_K {
        BlockQ3_K {
            hmask: r.bytes(),
            qs: r.bytes(),
            scales: r.bytes(),
            d: f16::from_f32(r.f32() * 0.001),
        }
    }

    /// Packs 16 scales (-32..32) as llama.cpp's `quantize_row_q3_K_ref` does.
    fn pack_scales(sc: [i8; 16]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for (j, &v) in sc.iter().enumerate() {
            let l = (v + 32) as u8;
            if j < 8 {
                s[j] = l & 0xf;
            } else {
                s[j - 8] |= (l & 0xf) << 4;
            }
            s[j % 4 + 8] |= (l >> 4) << (2 * (j / 4));
        }
        s
    }

    #[test]
    fn scale_unpacking_matches_llama_cpp() {
        let mut rng = Rng(11);
        for _ in 0..1000 {
            let b = random_block(&mut rng);
            // llama.cpp's dequantize_row_q3_K, transcribed: 4 u32 words of 6-bit scales.
            let aux: [u32; 3] = std::array::from_fn(|i| {
                u32::from_le_bytes(b.scales[4 * i..4 * i + 4].try_into().unwrap())
            });
            let (k1, k2) = (0x03030303u32, 0x0f0f0f0fu32);
            let words = [
                (aux[0] & k2) | ((aux[2] & k1) << 4),
                (aux[1] & k2) | (((aux[2] >> 2) & k1) << 4),
                ((aux[0] >> 4) & k2) | (((aux[2] >> 4) & k1) << 4),
                ((aux[1] >> 4) & k2) | (((aux[2] >> 6) & k1) << 4),
            ];
            let want: Vec<i8> = words
                .iter()
                .flat_map(|w| w.to_le_bytes())
                .map(|s| s as i8 - 32)
                .collect();
            assert_eq!(b.scales().to_vec(), want);
            #[cfg(target_arch = "x86_64")]
            if crate::quant::simd::avx2() {
                let mut v = [0i8; 16];
                // SAFETY: AVX2 detected; the 16 bytes read lie within the block.
                unsafe {
                    std::arch::x86_64::_mm_storeu_si128(v.as_mut_ptr() as *mut _, avx::scales_v(&b))
                };
                assert_eq!(v.to_vec(), want);
            }
        }
        let sc: [i8; 16] = std::array::from_fn(|j| (j as i8) * 4 - 32);
        let b = BlockQ3_K {
            hmask: [0; 32],
            qs: [0; 64],
            scales: pack_scales(sc),
            d: f16::from_f32(1.0),
        };
        assert_eq!(b.scales(), sc);
    }

    #[test]
    fn dequantizes_like_llama_cpp() {
        // d = 0.5, scale of sub-block j = 2j - 16; value p is `0.5 * (2j - 16) * (q - 4)` with
        // q = (p * 5) % 8.
        let q: Vec<u8> = (0..256).map(|p| ((p * 5) % 8) as u8).collect();
        let sc: [i8; 16] = std::array::from_fn(|j| 2 * j as i8 - 16);
        let mut b = BlockQ3_K {
            hmask: [0; 32],
            qs: [0; 64],
            scales: pack_scales(sc),
            d: f16::from_f32(0.5),
        };
        // Packed as llama.cpp's quantize_row_q3_K_ref: the third bit of value p in bit p / 32
        // of hmask[p % 32], the low two bits as Q2_K.
        for (p, &v) in q.iter().enumerate() {
            b.hmask[p % 32] |= (v >> 2) << (p / 32);
            b.qs[32 * (p / 128) + p % 32] |= (v & 3) << (2 * ((p / 32) % 4));
        }
        let mut out = [0f32; 256];
        Q3_K::dequantize(&[b], &mut out);
        assert_eq!(out[0], 0.5 * -16.0 * -4.0); // q = 0
        assert_eq!(out[3], 0.5 * -16.0 * 3.0); // q = 15 % 8 = 7
        assert_eq!(out[200], 0.5 * 8.0 * -4.0); // sub-block 12 (scale 8), q = 1000 % 8 = 0
        for (p, v) in out.iter().enumerate() {
            assert_eq!(*v, 0.5 * sc[p / 16] as f32 * (q[p] as f32 - 4.0), "{p}");
        }
    }

    #[test]
    fn matches_dequantized_reference() {
        check::<Q3_K>(random_block, 4e-3);
    }

    #[test]
    fn portable_matches_dequantized_reference() {
        check_portable::<Q3_K>(
            random_block,
            4e-3,
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
        );
    }
}
