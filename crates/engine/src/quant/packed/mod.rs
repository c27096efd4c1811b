//! Weights repacked at load time into blocks of 8 rows interleaved (as llama.cpp's CPU
//! backend does): one 32-byte load then holds 4 values of each of 8 rows, the 8 rows'
//! scales convert in one instruction, and each SIMD lane accumulates one row, so the
//! kernel needs no horizontal sums and few instructions per weight. Decoding streams one
//! sequential array; prompts reuse each unpacked block for several tokens.
//!
//! A packed format is used for the first `rows / 8 * 8` rows of a matrix when the CPU
//! has AVX2 (with VNNI's `vpdpbusd` when present); remaining rows, and CPUs without
//! AVX2, use the plain kernels. Every result is computed the same way whatever the number
//! of tokens, so batching still never changes a token.

mod q4_0;
mod q4_1;
mod q8_0;

pub use q4_0::Q4_0x8;
pub use q4_1::Q4_1x8;
pub use q8_0::Q8_0x8;

use super::{Format, Kernel};

/// A format with an 8-row interleaved layout.
pub trait Packed: 'static {
    /// The plain format's kernel (its blocks are what gets packed).
    type K: Kernel;
    /// One block of 8 rows.
    type P: Copy + Send + Sync + 'static;

    /// Packs block `i` of 8 rows.
    fn pack(rows: [&[<Self::K as Kernel>::W]; 8], i: usize) -> Self::P;

    /// Dot products of one 8-row group (its blocks) with `T` activation rows.
    fn tile<const T: usize>(w: &[Self::P], a: [&[<Self::K as Kernel>::A]; T]) -> [[f32; 8]; T];
}

/// Whether packed kernels run on this CPU.
pub fn available() -> bool {
    super::simd::avx2()
}

/// Whether `f` has a packed layout.
pub fn packable(f: Format) -> bool {
    matches!(f, Format::Q4_0 | Format::Q4_1 | Format::Q8_0)
}

/// Runs `$body` with `$P` bound to the packed type of format `$f` (which must be
/// [`packable`]).
macro_rules! dispatch_packed {
    ($f:expr, $P:ident => $body:expr) => {{
        use $crate::quant::Format as Fm;
        match $f {
            Fm::Q4_0 => {
                type $P = $crate::quant::packed::Q4_0x8;
                $body
            }
            Fm::Q4_1 => {
                type $P = $crate::quant::packed::Q4_1x8;
                $body
            }
            Fm::Q8_0 => {
                type $P = $crate::quant::packed::Q8_0x8;
                $body
            }
            other => unreachable!("{other:?} has no packed layout"),
        }
    }};
}
pub(crate) use dispatch_packed;

/// Packs the first `groups * 8` rows of `w` (`bpr` blocks per row) into bytes (8-byte
/// aligned storage), groups in parallel.
pub fn pack<P: Packed>(w: &[<P::K as Kernel>::W], bpr: usize, groups: usize) -> Vec<u64> {
    use rayon::prelude::*;
    let size = std::mem::size_of::<P::P>();
    let group_bytes = bpr * size;
    let mut out = vec![0u64; (groups * group_bytes).div_ceil(8)];
    // SAFETY: the u64 buffer is at least `groups * group_bytes` bytes long.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, groups * group_bytes)
    };
    bytes
        .par_chunks_mut(group_bytes)
        .enumerate()
        .for_each(|(g, dst)| {
            let rows: [&[<P::K as Kernel>::W]; 8] =
                std::array::from_fn(|r| &w[(g * 8 + r) * bpr..(g * 8 + r + 1) * bpr]);
            for i in 0..bpr {
                let block = P::pack(rows, i);
                // SAFETY: block i lies within this group's bytes; P is plain old data, written
                // unaligned.
                unsafe {
                    std::ptr::write_unaligned(dst.as_mut_ptr().add(i * size) as *mut P::P, block)
                };
            }
        });
    out
}

/// Integer dot products of 32 unsigned by 32 signed bytes, added per 4 bytes into 8 i32
/// lanes: AVX2 (`maddubs` + `madd`) or AVX512-VNNI (`vpdpbusd`). Both give the same
/// integers for the value ranges used here (no 16-bit saturation).
#[cfg(target_arch = "x86_64")]
pub(crate) mod dot {
    use std::arch::x86_64::*;

    pub trait Dot {
        /// `acc + Σ u·s` per 4 bytes, `u` unsigned, `s` signed.
        unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;
        /// Start value of an accumulator of [`Dot::dot_signed`] products against
        /// activations whose integer sum is `isum`.
        unsafe fn signed_init(isum: i32) -> __m256i;
        /// `acc + Σ w·s` per 4 bytes, both signed (after [`Dot::signed_init`]).
        unsafe fn dot_signed(acc: __m256i, w: __m256i, s: __m256i) -> __m256i;
    }

    pub struct Avx2;
    impl Dot for Avx2 {
        #[inline(always)]
        unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
            _mm256_add_epi32(
                acc,
                _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)),
            )
        }
        #[inline(always)]
        unsafe fn signed_init(_: i32) -> __m256i {
            _mm256_setzero_si256()
        }
        #[inline(always)]
        unsafe fn dot_signed(acc: __m256i, w: __m256i, s: __m256i) -> __m256i {
            Self::dot(acc, _mm256_sign_epi8(w, w), _mm256_sign_epi8(s, w))
        }
    }

    pub struct Vnni;
    impl Dot for Vnni {
        #[inline(always)]
        unsafe fn dot(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
            _mm256_dpbusd_epi32(acc, u, s)
        }
        /// `w + 128` is unsigned; the 128 · Σs it adds is taken off up front.
        #[inline(always)]
        unsafe fn signed_init(isum: i32) -> __m256i {
            _mm256_set1_epi32(-128 * isum)
        }
        #[inline(always)]
        unsafe fn dot_signed(acc: __m256i, w: __m256i, s: __m256i) -> __m256i {
            _mm256_dpbusd_epi32(acc, _mm256_xor_si256(w, _mm256_set1_epi8(-128)), s)
        }
    }

    /// Whether AVX512-VNNI on 256-bit registers is available (detected once).
    pub fn vnni() -> bool {
        use std::sync::OnceLock;
        static HAS: OnceLock<bool> = OnceLock::new();
        *HAS.get_or_init(|| {
            super::super::simd::avx2()
                && is_x86_feature_detected!("avx512vnni")
                && is_x86_feature_detected!("avx512vl")
        })
    }

    /// 4 bytes at `p` broadcast to every 32-bit lane.
    #[inline(always)]
    pub unsafe fn bcast4(p: *const i8) -> __m256i {
        _mm256_set1_epi32(std::ptr::read_unaligned(p as *const i32))
    }
}

/// Defines `$name::<T>` twice — AVX2 and AVX2 + VNNI — around a generic body
/// `$body::<D, T>`, and a dispatcher `tile` picking one at run time.
macro_rules! packed_tiles {
    ($P:ty, $A:ty, $body:ident) => {
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn tile_avx2<const T: usize>(w: &[$P], a: [&[$A]; T]) -> [[f32; 8]; T] {
            $body::<$crate::quant::packed::dot::Avx2, T>(w, a)
        }

        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
        unsafe fn tile_vnni<const T: usize>(w: &[$P], a: [&[$A]; T]) -> [[f32; 8]; T] {
            $body::<$crate::quant::packed::dot::Vnni, T>(w, a)
        }

        #[cfg(target_arch = "x86_64")]
        #[inline]
        fn tile_any<const T: usize>(w: &[$P], a: [&[$A]; T]) -> [[f32; 8]; T] {
            // SAFETY: packed kernels are used only when AVX2/FMA/F16C are present
            // (`packed::available`); VNNI is checked here.
            unsafe {
                if $crate::quant::packed::dot::vnni() {
                    tile_vnni(w, a)
                } else {
                    tile_avx2(w, a)
                }
            }
        }

        #[cfg(not(target_arch = "x86_64"))]
        fn tile_any<const T: usize>(_: &[$P], _: [&[$A]; T]) -> [[f32; 8]; T] {
            unreachable!("packed kernels run on x86-64 only")
        }
    };
}
pub(crate) use packed_tiles;

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::quant::testing::Rng;
    use crate::quant::Act;
    use crate::quant::Input;

    /// Checks `P` against its plain kernel on random rows: results close (the order of
    /// float additions differs), and identical whatever the number of tokens.
    pub fn check<P: Packed>(mut block: impl FnMut(&mut Rng) -> <P::K as Kernel>::W) {
        if !available() {
            return;
        }
        let mut rng = Rng(0x2545f4914f6cdd1d);
        let bpr = 5;
        let cols = bpr * P::K::QK;
        let w: Vec<_> = (0..8 * bpr).map(|_| block(&mut rng)).collect();
        let packed = pack::<P>(&w, bpr, 1);
        // SAFETY: `pack` wrote bpr blocks of P.
        let pw = unsafe { std::slice::from_raw_parts(packed.as_ptr() as *const P::P, bpr) };
        let x: Vec<f32> = (0..4 * cols).map(|_| rng.f32()).collect();
        let input = Input::new(&x, 4);
        let acts = <<P::K as Kernel>::A as Act>::of(&input);
        let a: Vec<_> = acts.chunks(bpr).collect();
        let four = P::tile::<4>(pw, [a[0], a[1], a[2], a[3]]);
        for t in 0..4 {
            let one = P::tile::<1>(pw, [a[t]]);
            assert_eq!(one[0], four[t], "token {t}: result depends on the batch");
            for r in 0..8 {
                let plain = P::K::tile::<1, 1>([&w[r * bpr..(r + 1) * bpr]], [a[t]])[0][0];
                let got = four[t][r];
                assert!(
                    (got - plain).abs() <= 1e-4 * plain.abs().max(1.0),
                    "row {r} token {t}: packed {got}, plain {plain}"
                );
            }
        }
    }
}
