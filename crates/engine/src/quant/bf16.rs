//! BF16 weights, kept 16-bit in memory; the activations are rounded to bf16 as well (as
//! llama.cpp does for BF16 weights). A "block" is 8 values.
//!
//! Every path computes a dot product the same way, that of AVX512-BF16's `vdpbf16ps`:
//! 8 f32 lanes, lane `i` taking values `2i` and `2i + 1` of each 16 (a missing last block
//! counts as zeros), the odd product first, then the even one, each a fused multiply-add
//! (exact products: bf16 × bf16 fits f32); then the lanes summed in a fixed order. Where
//! the CPU has AVX512-BF16 one instruction does 16 products; elsewhere two FMAs (AVX2) or
//! `mul_add` do the same operations, so the result does not depend on the CPU either
//! (`vdpbf16ps` treats subnormal inputs and results as zero, which weights and activations
//! of a model do not reach).

use super::act::BF16x8;
use super::Kernel;

#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct BlockBF16(pub [half::bf16; 8]);

/// The BF16 kernels.
pub struct BF16;

impl Kernel for BF16 {
    type W = BlockBF16;
    type A = BF16x8;
    const QK: usize = 8;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockBF16]; R],
        a: [&[BF16x8]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        {
            if super::simd::avx512bf16() {
                // SAFETY: AVX2, AVX512VL and AVX512-BF16 were detected at run time.
                return unsafe { avx::tile_bf16(w, a) };
            }
            if super::simd::avx2() {
                // SAFETY: AVX2, FMA and F16C were detected at run time.
                return unsafe { avx::tile_fma(w, a) };
            }
        }
        std::array::from_fn(|r| std::array::from_fn(|t| portable_dot(w[r], a[t])))
    }

    /// 4 × 4 tiles (16 accumulators) where AVX512-BF16 runs (with AVX512VL's 32 registers).
    #[inline]
    fn prompt_rows() -> usize {
        if super::simd::avx512bf16() {
            4
        } else {
            2
        }
    }

    fn dequantize(w: &[BlockBF16], out: &mut [f32]) {
        for (b, o) in w.iter().zip(out.chunks_exact_mut(8)) {
            for (v, x) in o.iter_mut().zip(&b.0) {
                *v = x.to_f32();
            }
        }
    }
}

/// bf16 bits as f32.
fn f(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// The lanes of a dot product summed as `simd::hsum` does.
fn hsum8(v: [f32; 8]) -> f32 {
    let s: [f32; 4] = std::array::from_fn(|i| v[i] + v[i + 4]);
    (s[0] + s[2]) + (s[1] + s[3])
}

/// The portable dot product (the operations of the SIMD ones).
fn portable_dot(w: &[BlockBF16], a: &[BF16x8]) -> f32 {
    let mut acc = [0f32; 8];
    for (wc, ac) in w.chunks(2).zip(a.chunks(2)) {
        let mut wv = [0u16; 16];
        let mut xv = [0u16; 16];
        for (k, (b, x)) in wc.iter().zip(ac).enumerate() {
            for i in 0..8 {
                wv[8 * k + i] = b.0[i].to_bits();
                xv[8 * k + i] = x.0[i];
            }
        }
        for (i, s) in acc.iter_mut().enumerate() {
            *s = f(wv[2 * i + 1]).mul_add(f(xv[2 * i + 1]), *s);
            *s = f(wv[2 * i]).mul_add(f(xv[2 * i]), *s);
        }
    }
    hsum8(acc)
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::*;
    use crate::quant::simd::*;
    use std::arch::x86_64::*;

    /// How 16 weights meet 16 activations (lane `i`: values `2i + 1`, then `2i`).
    pub trait Pair {
        /// 16 values prepared for [`Pair::dot`].
        type V: Copy;
        /// # Safety
        /// The CPU must have what the implementation's instructions need.
        unsafe fn prep(v: __m256i) -> Self::V;
        /// # Safety
        /// As [`Pair::prep`].
        unsafe fn dot(acc: __m256, w: Self::V, x: Self::V) -> __m256;
    }

    /// AVX512-BF16: one `vdpbf16ps`.
    pub struct Dp;
    impl Pair for Dp {
        type V = __m256bh;
        #[inline(always)]
        unsafe fn prep(v: __m256i) -> __m256bh {
            std::mem::transmute::<__m256i, __m256bh>(v)
        }
        #[inline(always)]
        unsafe fn dot(acc: __m256, w: __m256bh, x: __m256bh) -> __m256 {
            _mm256_dpbf16_ps(acc, w, x)
        }
    }

    /// AVX2: the even and the odd values widened to f32, two FMAs.
    pub struct Fma;
    impl Pair for Fma {
        type V = (__m256, __m256);
        #[inline(always)]
        unsafe fn prep(v: __m256i) -> (__m256, __m256) {
            let even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
            let odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(-65536)));
            (even, odd)
        }
        #[inline(always)]
        unsafe fn dot(acc: __m256, w: (__m256, __m256), x: (__m256, __m256)) -> __m256 {
            _mm256_fmadd_ps(w.0, x.0, _mm256_fmadd_ps(w.1, x.1, acc))
        }
    }

    /// 32 bytes at `p`, or with `half` 16 bytes and zeros.
    #[inline(always)]
    unsafe fn load<B>(p: *const B, half: bool) -> __m256i {
        if half {
            _mm256_zextsi128_si256(_mm_loadu_si128(p as *const __m128i))
        } else {
            _mm256_loadu_si256(p as *const __m256i)
        }
    }

    /// Values `16c..16c + 16` of every row and token into the accumulators.
    #[inline(always)]
    unsafe fn step<P: Pair, const R: usize, const T: usize>(
        w: [&[BlockBF16]; R],
        a: [&[BF16x8]; T],
        c: usize,
        half: bool,
        acc: &mut [[__m256; T]; R],
    ) {
        let mut wv = [P::prep(_mm256_setzero_si256()); R];
        for r in 0..R {
            let p = w[r].as_ptr().add(2 * c);
            prefetch(p);
            wv[r] = P::prep(load(p, half));
        }
        for t in 0..T {
            let x = P::prep(load(a[t].as_ptr().add(2 * c), half));
            for r in 0..R {
                acc[r][t] = P::dot(acc[r][t], wv[r], x);
            }
        }
    }

    #[inline(always)]
    unsafe fn body<P: Pair, const R: usize, const T: usize>(
        w: [&[BlockBF16]; R],
        a: [&[BF16x8]; T],
    ) -> [[f32; T]; R] {
        let n = w[0].len();
        let mut acc = [[_mm256_setzero_ps(); T]; R];
        for c in 0..n / 2 {
            step::<P, R, T>(w, a, c, false, &mut acc);
        }
        if n % 2 == 1 {
            step::<P, R, T>(w, a, n / 2, true, &mut acc);
        }
        hsums(acc)
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512vl,avx512bf16")]
    pub unsafe fn tile_bf16<const R: usize, const T: usize>(
        w: [&[BlockBF16]; R],
        a: [&[BF16x8]; T],
    ) -> [[f32; T]; R] {
        body::<Dp, R, T>(w, a)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile_fma<const R: usize, const T: usize>(
        w: [&[BlockBF16]; R],
        a: [&[BF16x8]; T],
    ) -> [[f32; T]; R] {
        body::<Fma, R, T>(w, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::testing::{check, Rng};
    use crate::quant::{Act, Input};

    fn random_block(r: &mut Rng) -> BlockBF16 {
        BlockBF16(std::array::from_fn(|_| half::bf16::from_f32(r.f32())))
    }

    #[test]
    fn matches_dequantized_reference() {
        // The activations are rounded to bf16 (8 bits of mantissa).
        check::<BF16>(random_block, 4e-3);
    }

    #[test]
    fn every_path_gives_the_same_result() {
        let mut rng = Rng(11);
        for blocks in [1usize, 2, 5, 64] {
            let w: Vec<BlockBF16> = (0..blocks).map(|_| random_block(&mut rng)).collect();
            let x: Vec<f32> = (0..blocks * 8).map(|_| rng.f32()).collect();
            let input = Input::new(&x, 1);
            let a = BF16x8::of(&input);
            let p = portable_dot(&w, a);
            assert_eq!(BF16::tile::<1, 1>([&w], [a])[0][0].to_bits(), p.to_bits());
            #[cfg(target_arch = "x86_64")]
            {
                use crate::quant::simd;
                if simd::avx2() {
                    // SAFETY: AVX2 detected.
                    let fma = unsafe { avx::tile_fma::<1, 1>([&w], [a]) }[0][0];
                    assert_eq!(fma.to_bits(), p.to_bits(), "{blocks} blocks: AVX2");
                }
                if simd::avx512bf16() {
                    // SAFETY: AVX512-BF16 detected.
                    let dp = unsafe { avx::tile_bf16::<1, 1>([&w], [a]) }[0][0];
                    assert_eq!(dp.to_bits(), p.to_bits(), "{blocks} blocks: AVX512-BF16");
                }
            }
        }
    }
}
