//! AVX2 building blocks shared by the x86-64 kernels, and run-time feature detection.

/// Whether the AVX2 + FMA + F16C kernels can run here (detected once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    })
}

/// No AVX2 off x86-64: the portable kernels run.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub fn avx2() -> bool {
    false
}

/// Whether AVX512-VNNI on 256-bit registers can run here besides AVX2 (detected once);
/// `DLLM_NO_VNNI=1` turns it off, to compare with the AVX2 kernels (which give the same
/// results).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn vnni() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let off = std::env::var("DLLM_NO_VNNI").is_ok_and(|v| !v.is_empty() && v != "0");
        !off && avx2()
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// Whether AVX512-BF16 on 256-bit registers can run here besides AVX2 (detected once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx512bf16() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        avx2()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512bf16")
    })
}

/// Whether AVX-512 on 256-bit registers (AVX512VL: 32 of them) can run here besides AVX2
/// (detected once).
#[cfg(target_arch = "x86_64")]
#[inline]
pub fn avx512vl() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        avx2() && is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vl")
    })
}

/// No AVX-512 off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub fn avx512bf16() -> bool {
    false
}

/// No AVX-512 off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub fn avx512vl() -> bool {
    false
}

/// No VNNI off x86-64.
#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub fn vnni() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
pub use x86::*;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use half::f16;
    use std::arch::x86_64::*;

    /// f16 -> f32 with the F16C instruction (half's portable call is far slower).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (see [`super::avx2`]).
    #[inline(always)]
    pub unsafe fn h(x: f16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x.to_bits() as i32)))
    }

    /// Prefetch of the weight stream ~1 KiB ahead (an address past the end is harmless).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (see [`super::avx2`]).
    #[inline(always)]
    pub unsafe fn prefetch<T>(p: *const T) {
        _mm_prefetch((p as *const i8).wrapping_add(1024), _MM_HINT_T0);
    }

    /// Horizontal sum of 8 lanes, always in the same order.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (see [`super::avx2`]).
    #[inline(always)]
    pub unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// [`hsum`] of every accumulator of a tile. (Loops, not `std::array::from_fn`: its
    /// closure is not inlined into code compiled for other target features, which then
    /// keeps the accumulators in memory.)
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (see [`super::avx2`]).
    #[inline(always)]
    pub unsafe fn hsums<const R: usize, const T: usize>(acc: [[__m256; T]; R]) -> [[f32; T]; R] {
        let mut out = [[0f32; T]; R];
        for r in 0..R {
            for t in 0..T {
                out[r][t] = hsum(acc[r][t]);
            }
        }
        out
    }

    /// The 8 lanes of each of `T` vectors.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (see [`super::avx2`]).
    #[inline(always)]
    pub unsafe fn lanes<const T: usize>(acc: [__m256; T]) -> [[f32; 8]; T] {
        let mut out = [[0f32; 8]; T];
        for t in 0..T {
            _mm256_storeu_ps(out[t].as_mut_ptr(), acc[t]);
        }
        out
    }

    /// 16 bytes of packed nibbles -> 32 unsigned bytes: low nibbles, then high nibbles.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (see [`super::avx2`]).
    #[inline(always)]
    pub unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(q, m);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
        _mm256_set_m128i(hi, lo)
    }

    /// 32 bits -> 32 bytes, 0xFF where the bit is set (bit j -> byte j).
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (see [`super::avx2`]).
    #[inline(always)]
    pub unsafe fn bits_to_bytes(bits: u32) -> __m256i {
        let shuf = _mm256_set_epi64x(
            0x0303030303030303,
            0x0202020202020202,
            0x0101010101010101,
            0x0000000000000000,
        );
        let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(bits as i32), shuf);
        let others = _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(bytes, others), _mm256_set1_epi64x(-1))
    }

    /// Sum of products of 32 unsigned by 32 signed bytes, as 8 i32 lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (see [`super::avx2`]).
    #[inline(always)]
    pub unsafe fn dot_us8(u: __m256i, s: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1))
    }

    /// Sum of products of two vectors of 32 signed bytes, as 8 i32 lanes; `ax` is `|x|`.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C (see [`super::avx2`]).
    #[inline(always)]
    pub unsafe fn dot_ss8(ax: __m256i, x: __m256i, y: __m256i) -> __m256i {
        dot_us8(ax, _mm256_sign_epi8(y, x))
    }
}
