//! Weights repacked at load time into blocks of 8 rows interleaved (as llama.cpp's CPU
//! backend does): one 32-byte load then holds 4 values of each of 8 rows, the 8 rows'
//! scales convert in one instruction, and each SIMD lane accumulates one row, so the
//! kernel needs no horizontal sums and few instructions per weight. Decoding streams one
//! sequential array; prompts reuse each unpacked block for several tokens.
//!
//! A packed format is used for the first `rows / 8 * 8` rows of a matrix when the CPU
//! has AVX2 (with VNNI's `vpdpbusd` when present); remaining rows, and CPUs without
//! AVX2, use the plain kernels. Every result is computed the same way whatever the number
//! of tokens, so batching still never changes a token; the AVX2 and VNNI instructions
//! give the same integers, so the result does not depend on which of them runs either.
//!
//! The formats added after Q4_0, Q4_1 and Q8_0 (Q5_0, Q5_1, IQ4_NL and the K-quants)
//! compute each result with the operations of the portable kernel (exact integer sums
//! per block, then the same float multiplications and additions in block order), so they
//! equal it bit for bit; the K-quants' plain kernels do too.

mod iq4_nl;
mod k;
mod q2_k;
mod q3_k;
mod q4_0;
mod q4_1;
mod q4_k;
mod q5_0;
mod q5_1;
mod q5_k;
mod q6_k;
mod q8_0;

pub use iq4_nl::IQ4_NLx8;
pub use q2_k::Q2_Kx8;
pub use q3_k::Q3_Kx8;
pub use q4_0::Q4_0x8;
pub use q4_1::Q4_1x8;
pub use q4_k::Q4_Kx8;
pub use q5_0::Q5_0x8;
pub use q5_1::Q5_1x8;
pub use q5_k::Q5_Kx8;
pub use q6_k::Q6_Kx8;
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
    matches!(
        f,
        Format::Q4_0
            | Format::Q4_1
            | Format::Q5_0
            | Format::Q5_1
            | Format::Q8_0
            | Format::IQ4_NL
            | Format::Q2_K
            | Format::Q3_K
            | Format::Q4_K
            | Format::Q5_K
            | Format::Q6_K
    )
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
            Fm::Q5_0 => {
                type $P = $crate::quant::packed::Q5_0x8;
                $body
            }
            Fm::Q5_1 => {
                type $P = $crate::quant::packed::Q5_1x8;
                $body
            }
            Fm::Q8_0 => {
                type $P = $crate::quant::packed::Q8_0x8;
                $body
            }
            Fm::IQ4_NL => {
                type $P = $crate::quant::packed::IQ4_NLx8;
                $body
            }
            Fm::Q2_K => {
                type $P = $crate::quant::packed::Q2_Kx8;
                $body
            }
            Fm::Q3_K => {
                type $P = $crate::quant::packed::Q3_Kx8;
                $body
            }
            Fm::Q4_K => {
                type $P = $crate::quant::packed::Q4_Kx8;
                $body
            }
            Fm::Q5_K => {
                type $P = $crate::quant::packed::Q5_Kx8;
                $body
            }
            Fm::Q6_K => {
                type $P = $crate::quant::packed::Q6_Kx8;
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

/// The first `groups * 8` rows of the `format` matrix `data` (`cols` wide) packed, as
/// the engine packs a matrix when it loads it; None if the format or the CPU has no
/// packed kernels.
pub fn pack_matrix(format: Format, data: &[u8], cols: usize, groups: usize) -> Option<Vec<u64>> {
    if !available() || !packable(format) || groups == 0 {
        return None;
    }
    Some(dispatch_packed!(format, P => {
        type W = <<P as Packed>::K as Kernel>::W;
        let size = std::mem::size_of::<W>();
        let bpr = cols / <<P as Packed>::K as Kernel>::QK;
        assert!(data.len() >= groups * 8 * bpr * size);
        assert!((data.as_ptr() as usize).is_multiple_of(std::mem::align_of::<W>()));
        // SAFETY: the blocks are plain old data; length and alignment checked above.
        let w = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const W, groups * 8 * bpr) };
        pack::<P>(w, bpr, groups)
    }))
}

/// How far ahead of the block in use the weights are prefetched, in bytes (measured with
/// packed Q4_K: decoding 4 tokens from memory on one thread went from ~7 to ~11 GB/s going
/// from one block ahead, ~1.1 KiB, to 4 KiB; 8 KiB was no better).
#[cfg(target_arch = "x86_64")]
const PREFETCH: usize = 4096;

/// Prefetches the cache lines of block `b` [`PREFETCH`] bytes ahead (an address past the
/// end is harmless): the hardware prefetcher alone leaves the core waiting on memory when
/// several tokens share the weight stream.
///
/// # Safety
/// The CPU must have SSE (any x86-64 does).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) unsafe fn prefetch_ahead<B>(b: &B) {
    use std::arch::x86_64::*;
    let p = b as *const B as *const i8;
    let mut o = 0;
    while o < std::mem::size_of::<B>() {
        _mm_prefetch(p.wrapping_add(PREFETCH + o), _MM_HINT_T0);
        o += 64;
    }
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

    /// Whether AVX512-VNNI on 256-bit registers is available (detected once), and not
    /// turned off with `DLLM_NO_VNNI=1` (to compare with the AVX2 kernels, which give the
    /// same results).
    #[inline]
    pub fn vnni() -> bool {
        #[cfg(test)]
        if FORCE_AVX2.with(|f| f.get()) {
            return false;
        }
        super::super::simd::vnni()
    }

    #[cfg(test)]
    thread_local! {
        static FORCE_AVX2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    /// Runs `f` with the AVX2 kernels on this thread even where VNNI is present.
    #[cfg(test)]
    pub fn with_avx2<R>(f: impl FnOnce() -> R) -> R {
        FORCE_AVX2.with(|c| c.set(true));
        let r = f();
        FORCE_AVX2.with(|c| c.set(false));
        r
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

    /// How close a packed kernel must be to its plain kernel.
    #[derive(Clone, Copy, PartialEq)]
    pub enum Plain {
        /// Within 1e-4 (relative): the order of float operations differs.
        Close,
        /// Bit for bit.
        Equal,
    }

    /// Checks `P` against its plain kernel on random rows (see [`Plain`]); its results
    /// identical whatever the number of tokens, and on the AVX2 and VNNI paths alike.
    pub fn check<P: Packed>(block: impl FnMut(&mut Rng) -> <P::K as Kernel>::W) {
        check_with::<P>(block, Plain::Close, None)
    }

    /// A portable kernel: the dot product of one row with one activation row.
    pub type Portable<K> = fn(&[<K as Kernel>::W], &[<K as Kernel>::A]) -> f32;

    /// [`check`], the plain kernel compared as `plain` says, and each result equal bit for
    /// bit to `portable`'s if given.
    pub fn check_with<P: Packed>(
        mut block: impl FnMut(&mut Rng) -> <P::K as Kernel>::W,
        plain: Plain,
        portable: Option<Portable<P::K>>,
    ) {
        if !available() {
            return;
        }
        let mut rng = Rng(0x2545f4914f6cdd1d);
        for bpr in [1, 5] {
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
            #[cfg(target_arch = "x86_64")]
            assert_eq!(
                dot::with_avx2(|| P::tile::<4>(pw, [a[0], a[1], a[2], a[3]])),
                four,
                "AVX2 and VNNI differ"
            );
            let eight = P::tile::<8>(pw, [a[0], a[1], a[2], a[3], a[3], a[2], a[1], a[0]]);
            assert_eq!(eight[..4], four, "8 tokens");
            assert_eq!(eight[4..], [four[3], four[2], four[1], four[0]], "8 tokens");
            let three = P::tile::<3>(pw, [a[1], a[2], a[3]]);
            let two = P::tile::<2>(pw, [a[2], a[0]]);
            assert_eq!(three, [four[1], four[2], four[3]], "3 tokens");
            assert_eq!(two, [four[2], four[0]], "2 tokens");
            for t in 0..4 {
                let one = P::tile::<1>(pw, [a[t]]);
                assert_eq!(one[0], four[t], "token {t}: result depends on the batch");
                for r in 0..8 {
                    let plain_row = &w[r * bpr..(r + 1) * bpr];
                    let p = P::K::tile::<1, 1>([plain_row], [a[t]])[0][0];
                    let got = four[t][r];
                    match plain {
                        Plain::Close => assert!(
                            (got - p).abs() <= 1e-4 * p.abs().max(1.0),
                            "row {r} token {t}: packed {got}, plain {p}"
                        ),
                        Plain::Equal => assert_eq!(
                            got.to_bits(),
                            p.to_bits(),
                            "row {r} token {t}: packed {got}, plain {p}"
                        ),
                    }
                    if let Some(portable) = portable {
                        let p = portable(plain_row, a[t]);
                        assert_eq!(
                            got.to_bits(),
                            p.to_bits(),
                            "row {r} token {t}: packed {got}, portable {p}"
                        );
                    }
                }
            }
        }
    }
}
