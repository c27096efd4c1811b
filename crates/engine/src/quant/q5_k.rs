//! ggml Q5_K: Q4_K with a fifth bit: `value = d * sc_j * q - dmin * m_j`, `q` 5 bits, scales
//! and mins packed as Q4_K's. The low 4 bits are laid out as Q4_K's; the fifth bit of value
//! `32j + l` (sub-block `j`) is bit `j` of `qh[l]`.

use super::act::Q8KBlock;
use super::q4_k::{scales_mins, sub32_sums, unpacked_tile};
use super::Kernel;
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ5_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_K>() == 176);

/// A Q5_K block unpacked for the portable kernel: values in order, scales, mins.
struct Unpacked {
    q: [u8; 256],
    sm: [u8; 16],
    d: f32,
    dmin: f32,
}

impl Unpacked {
    fn of(b: &BlockQ5_K) -> Self {
        let mut q = [0u8; 256];
        for (k, (qs, o)) in
            b.qs.chunks_exact(32)
                .zip(q.chunks_exact_mut(64))
                .enumerate()
        {
            for l in 0..32 {
                let h = b.qh[l] >> (2 * k);
                o[l] = (qs[l] & 0x0f) | ((h & 1) << 4);
                o[l + 32] = (qs[l] >> 4) | ((h & 2) << 3);
            }
        }
        Unpacked {
            q,
            sm: scales_mins(&b.scales),
            d: b.d.to_f32(),
            dmin: b.dmin.to_f32(),
        }
    }

    fn dot(&self, a: &Q8KBlock) -> f32 {
        let (sumi, summ) = sub32_sums(&self.q, &self.sm, a);
        self.d * a.d * sumi as f32 - self.dmin * a.d * summ as f32
    }
}

/// The Q5_K kernels (with Q8_K activations).
#[allow(non_camel_case_types)]
pub struct Q5_K;

impl Kernel for Q5_K {
    type W = BlockQ5_K;
    type A = Q8KBlock;
    const QK: usize = 256;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ5_K]; R],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        unpacked_tile(w, a, Unpacked::of, Unpacked::dot)
    }

    fn dequantize(w: &[BlockQ5_K], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(256)) {
            let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
            let sm = scales_mins(&b.scales);
            for (k, (qs, o)) in
                b.qs.chunks_exact(32)
                    .zip(o.chunks_exact_mut(64))
                    .enumerate()
            {
                let (d1, m1) = (d * sm[2 * k] as f32, dmin * sm[8 + 2 * k] as f32);
                let (d2, m2) = (d * sm[2 * k + 1] as f32, dmin * sm[9 + 2 * k] as f32);
                let (u1, u2) = (1u8 << (2 * k), 2u8 << (2 * k));
                for l in 0..32 {
                    let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                    let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                    o[l] = d1 * ((qs[l] & 0x0f) + h1) as f32 - m1;
                    o[l + 32] = d2 * ((qs[l] >> 4) + h2) as f32 - m2;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::*;
    use crate::quant::q4_k::avx::{scales_mins_v, tile_k, Scales, Unpack};
    use crate::quant::simd::h;
    use std::arch::x86_64::*;

    impl Unpack for BlockQ5_K {
        #[inline(always)]
        unsafe fn scales(&self) -> Scales {
            // 16 bytes from the scales: the 12 of them and the start of qh.
            let sm = scales_mins_v(self.scales.as_ptr());
            Scales {
                sc: _mm256_cvtepu8_epi16(_mm_unpacklo_epi64(sm, sm)),
                mins: _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)),
                d: h(self.d),
                dmin: Some(h(self.dmin)),
            }
        }

        #[inline(always)]
        unsafe fn q(&self, j: usize) -> __m256i {
            let x = _mm256_loadu_si256(self.qs.as_ptr().add(32 * (j / 2)) as *const __m256i);
            let x = if j & 1 == 0 {
                x
            } else {
                _mm256_srli_epi16(x, 4)
            };
            let hb = _mm256_loadu_si256(self.qh.as_ptr() as *const __m256i);
            // Bit j of each qh byte moved to bit 4 (16-bit shifts; the mask keeps one bit
            // per byte, and no bit crosses into the other byte of its lane).
            let fifth = match j {
                0 => _mm256_slli_epi16(hb, 4),
                1 => _mm256_slli_epi16(hb, 3),
                2 => _mm256_slli_epi16(hb, 2),
                3 => _mm256_slli_epi16(hb, 1),
                4 => hb,
                5 => _mm256_srli_epi16(hb, 1),
                6 => _mm256_srli_epi16(hb, 2),
                _ => _mm256_srli_epi16(hb, 3),
            };
            _mm256_or_si256(
                _mm256_and_si256(x, _mm256_set1_epi8(0x0f)),
                _mm256_and_si256(fifth, _mm256_set1_epi8(0x10)),
            )
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ5_K]; R],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; T]; R] {
        tile_k(w, a)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::q4_k::tests::check_portable;
    use crate::quant::q4_k::tests::pack_scales;
    use crate::quant::testing::{check, Rng};

    /// The portable kernel on one row.
    pub(crate) fn portable(w: &[BlockQ5_K], a: &[Q8KBlock]) -> f32 {
        unpacked_tile([w], [a], Unpacked::of, Unpacked::dot)[0][0]
    }

    pub(crate) fn random_block(r: &mut Rng) -> BlockQ5_K {
        BlockQ5_K {
            d: f16::from_f32(r.f32() * 0.01),
            dmin: f16::from_f32(r.f32() * 0.01),
            scales: r.bytes(),
            qh: r.bytes(),
            qs: r.bytes(),
        }
    }

    #[test]
    fn dequantizes_like_llama_cpp() {
        // d = 0.5, dmin = 0.25; value p is `0.5 * sc[j] * q - 0.25 * m[j]` (j = p / 32) with
        // q = p % 32: its low 4 bits in the nibbles, its fifth bit in qh.
        let sc = [1, 2, 3, 4, 17, 33, 48, 63];
        let m = [0, 4, 8, 12, 16, 31, 32, 63];
        let q: Vec<u8> = (0..256).map(|p| (p % 32) as u8).collect();
        let mut b = BlockQ5_K {
            d: f16::from_f32(0.5),
            dmin: f16::from_f32(0.25),
            scales: pack_scales(sc, m),
            qh: [0; 32],
            qs: [0; 128],
        };
        for k in 0..4 {
            for l in 0..32 {
                let (lo, hi) = (q[64 * k + l], q[64 * k + 32 + l]);
                b.qs[32 * k + l] = (lo & 0xf) | ((hi & 0xf) << 4);
                b.qh[l] |= ((lo >> 4) << (2 * k)) | ((hi >> 4) << (2 * k + 1));
            }
        }
        let mut out = [0f32; 256];
        Q5_K::dequantize(&[b], &mut out);
        assert_eq!(out[5], 2.5); // sub-block 0: 0.5 * 1 * 5
        assert_eq!(out[31], 15.5); // 0.5 * 1 * 31 (fifth bit set)
        assert_eq!(out[32 + 20], 20.0 - 1.0); // sub-block 1: 0.5 * 2 * 20 - 0.25 * 4
        assert_eq!(out[160 + 17], 0.5 * 33.0 * 17.0 - 7.75); // sub-block 5
        assert_eq!(out[255], 0.5 * 63.0 * 31.0 - 15.75); // sub-block 7
        for (p, v) in out.iter().enumerate() {
            let j = p / 32;
            assert_eq!(
                *v,
                0.5 * sc[j] as f32 * (p % 32) as f32 - 0.25 * m[j] as f32,
                "{p}"
            );
        }
    }

    #[test]
    fn matches_dequantized_reference() {
        check::<Q5_K>(random_block, 4e-3);
    }

    #[test]
    fn portable_matches_dequantized_reference() {
        check_portable::<Q5_K>(
            random_block,
            4e-3,
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
        );
    }
}
