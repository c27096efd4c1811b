//! ggml Q4_K: super-blocks of 256 values in 8 sub-blocks of 32. Each sub-block `j` has a
//! 6-bit scale `sc_j` and a 6-bit min `m_j` (16 values packed in 12 bytes), under the
//! block's f16 `d` and `dmin`: `value = d * sc_j * q - dmin * m_j`, `q` 4 bits. Values
//! `64k..64k+32` are the low nibbles of `qs[32k..32k+32]`, values `64k+32..64k+64` their
//! high nibbles.
//!
//! The kernels take Q8_K activations: `sum sc_j * q * a` is one exact integer sum per block
//! and the mins use the activations' sums of 16 (`bsums`), as llama.cpp does.
//!
//! All the 256-value formats (Q2_K..Q6_K) share the machinery here: [`scales_mins`] (also
//! Q5_K's scale layout), the portable [`unpacked_tile`] (a weight block unpacked once for
//! all tokens) and, on x86-64, `avx::tile_k`: each format only says how to get a block's
//! scales and its values 32 at a time (`avx::Unpack`). Decoding (one token) walks the rows
//! of a tile one after the other, so that the weights stream sequentially; prompt tiles
//! unpack each 32 values of a row once and use them for every token of the tile.

use super::act::Q8KBlock;
use super::Kernel;
use half::f16;

#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_K>() == 144);

/// The 8 scales then the 8 mins packed in the 12 bytes of a Q4_K/Q5_K block (llama.cpp's
/// `get_scale_min_k4` for j = 0..8): `sc_j, m_j = s[j] & 63, s[j+4] & 63` for j < 4,
/// else the low (scale) or high (min) nibble of `s[j+4]` with the top two bits of
/// `s[j-4]` (scale) or `s[j]` (min) above it.
#[inline(always)]
pub(crate) fn scales_mins(s: &[u8; 12]) -> [u8; 16] {
    let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    const LOW6: u32 = 0x3f3f3f3f;
    const LOW4: u32 = 0x0f0f0f0f;
    const LOW2: u32 = 0x03030303;
    let sc_lo = u0 & LOW6;
    let sc_hi = (u2 & LOW4) | (((u0 >> 6) & LOW2) << 4);
    let m_lo = u1 & LOW6;
    let m_hi = ((u2 >> 4) & LOW4) | (((u1 >> 6) & LOW2) << 4);
    let v = sc_lo as u128 | (sc_hi as u128) << 32 | (m_lo as u128) << 64 | (m_hi as u128) << 96;
    v.to_le_bytes()
}

/// Portable tile for formats whose blocks are worth unpacking once (`unpack`) for all the
/// tokens of the tile; each result is the sum over blocks, in order, of `dot`.
#[inline(always)]
pub(crate) fn unpacked_tile<W, A, U, const R: usize, const T: usize>(
    w: [&[W]; R],
    a: [&[A]; T],
    unpack: impl Fn(&W) -> U,
    dot: impl Fn(&U, &A) -> f32,
) -> [[f32; T]; R] {
    let mut out = [[0f32; T]; R];
    for i in 0..w[0].len() {
        for r in 0..R {
            let u = unpack(&w[r][i]);
            for t in 0..T {
                out[r][t] += dot(&u, &a[t][i]);
            }
        }
    }
    out
}

/// A Q4_K block unpacked for the portable kernel: values in order, scales, mins.
struct Unpacked {
    q: [u8; 256],
    sm: [u8; 16],
    d: f32,
    dmin: f32,
}

impl Unpacked {
    fn of(b: &BlockQ4_K) -> Self {
        let mut q = [0u8; 256];
        for (qs, o) in b.qs.chunks_exact(32).zip(q.chunks_exact_mut(64)) {
            for l in 0..32 {
                o[l] = qs[l] & 0x0f;
                o[l + 32] = qs[l] >> 4;
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

/// `sum_j sc_j * (q . a over sub-block j)` and `sum_j m_j * (a's sum over sub-block j)`
/// for 8 sub-blocks of 32 unsigned values (`sm` = 8 scales then 8 mins).
#[inline(always)]
pub(crate) fn sub32_sums(q: &[u8; 256], sm: &[u8; 16], a: &Q8KBlock) -> (i32, i32) {
    let mut sumi = 0i32;
    for j in 0..8 {
        let s: i32 = q[32 * j..32 * j + 32]
            .iter()
            .zip(&a.qs[32 * j..32 * j + 32])
            .map(|(&x, &y)| x as i32 * y as i32)
            .sum();
        sumi += sm[j] as i32 * s;
    }
    let summ: i32 = (0..8)
        .map(|j| sm[8 + j] as i32 * (a.bsums[2 * j] as i32 + a.bsums[2 * j + 1] as i32))
        .sum();
    (sumi, summ)
}

/// The Q4_K kernels (with Q8_K activations).
#[allow(non_camel_case_types)]
pub struct Q4_K;

impl Kernel for Q4_K {
    type W = BlockQ4_K;
    type A = Q8KBlock;
    const QK: usize = 256;

    #[inline]
    fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ4_K]; R],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; T]; R] {
        #[cfg(target_arch = "x86_64")]
        if super::simd::avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::tile(w, a) };
        }
        unpacked_tile(w, a, Unpacked::of, Unpacked::dot)
    }

    fn dequantize(w: &[BlockQ4_K], out: &mut [f32]) {
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
                for l in 0..32 {
                    o[l] = d1 * (qs[l] & 0x0f) as f32 - m1;
                    o[l + 32] = d2 * (qs[l] >> 4) as f32 - m2;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx {
    use super::*;
    use crate::quant::simd::*;
    use std::arch::x86_64::*;

    /// The 8 scales then the 8 mins of a Q4_K/Q5_K block as 16 bytes (as [`scales_mins`]),
    /// from the 12 packed bytes at `p`; reads 16 bytes (the block goes on after them).
    #[inline(always)]
    pub unsafe fn scales_mins_v(p: *const u8) -> __m128i {
        let v = _mm_loadu_si128(p as *const __m128i);
        // a = s0..3, s8..11, s4..7, s8..11; b = s0..3 in bytes 4..7, s4..7 in 12..15.
        let a = _mm_shuffle_epi8(
            v,
            _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 8, 9, 10, 11),
        );
        let b = _mm_shuffle_epi8(
            v,
            _mm_setr_epi8(-1, -1, -1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 4, 5, 6, 7),
        );
        let low = _mm_and_si128(
            a,
            _mm_setr_epi8(63, 63, 63, 63, 15, 15, 15, 15, 63, 63, 63, 63, 0, 0, 0, 0),
        );
        let high = _mm_and_si128(
            _mm_srli_epi16(a, 4),
            _mm_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 15, 15, 15, 15),
        );
        // The top two bits of s0..7, moved to bits 4..5.
        let top = _mm_and_si128(_mm_srli_epi16(b, 2), _mm_set1_epi8(0x30));
        _mm_or_si128(_mm_or_si128(low, high), top)
    }

    /// The scale of vector `j`'s values as 16 i16 lanes, from `sc` holding 8 i16 scales in
    /// each 128-bit lane: `sc[j]` of the low lane for the low 16 values, of the high lane
    /// for the high 16 (the same for 32-value sub-blocks, two neighbours for 16-value ones).
    /// `pat` is [`SPREAD`] behind [`opaque`]: the compiler would otherwise turn the shuffles
    /// into two-instruction broadcasts.
    #[inline(always)]
    pub unsafe fn spread(sc: __m256i, j: usize, pat: *const __m256i) -> __m256i {
        _mm256_shuffle_epi8(sc, _mm256_loadu_si256(pat.add(j)))
    }

    /// The byte shuffles of [`spread`]: bytes `2j, 2j + 1` in every 16-bit lane.
    pub static SPREAD: [[u8; 32]; 8] = {
        let mut t = [[0u8; 32]; 8];
        let mut j = 0;
        while j < 8 {
            let mut k = 0;
            while k < 32 {
                t[j][k] = (2 * j + k % 2) as u8;
                k += 1;
            }
            j += 1;
        }
        t
    };

    /// `p`, hidden from the optimiser (an empty asm that might change it).
    #[inline(always)]
    pub unsafe fn opaque<T>(mut p: *const T) -> *const T {
        std::arch::asm!("/* {0} */", inout(reg) p, options(nostack, preserves_flags));
        p
    }

    /// Prefetch of the lines of a block ~1 KiB ahead in the weight stream.
    #[inline(always)]
    pub unsafe fn prefetch_block<B>(b: &B) {
        let p = b as *const B as *const u8;
        let mut o = 0;
        while o < std::mem::size_of::<B>() {
            prefetch(p.wrapping_add(o));
            o += 64;
        }
    }

    /// What a block's dot products take besides its values: the scales (`sc`, see
    /// [`spread`]), the i16 weights of the activations' 16 `bsums` (`mins`), and `d`,
    /// `dmin`. With activations `a`, `sumi = Σ_j q_j · spread(sc, j) · a_j` and
    /// `summ = mins · bsums` (exact integers), the dot product is the portable kernel's
    /// `d * a.d * sumi - dmin * a.d * summ`, or with `dmin == None` (one scale and an
    /// offset), `d * a.d * (sumi - summ)`.
    #[derive(Clone, Copy)]
    pub struct Scales {
        pub sc: __m256i,
        pub mins: __m256i,
        pub d: f32,
        pub dmin: Option<f32>,
    }

    /// A 256-value weight block for [`tile_k`].
    pub trait Unpack {
        /// # Safety
        /// AVX2, FMA and F16C must be available.
        unsafe fn scales(&self) -> Scales;
        /// Values `32j..32j + 32` as unsigned bytes.
        ///
        /// # Safety
        /// AVX2, FMA and F16C must be available; `j < 8`.
        unsafe fn q(&self, j: usize) -> __m256i;
    }

    impl Unpack for BlockQ4_K {
        #[inline(always)]
        unsafe fn scales(&self) -> Scales {
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
            _mm256_and_si256(x, _mm256_set1_epi8(0x0f))
        }
    }

    /// `sumi[t] += spread(sc, j) · q_j · a[t]_j` for each t.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn step<B: Unpack, const T: usize>(
        b: &B,
        sc: __m256i,
        pat: *const __m256i,
        a: [&Q8KBlock; T],
        j: usize,
        sumi: &mut [__m256i; T],
    ) {
        let q = b.q(j);
        let sc = spread(sc, j, pat);
        for t in 0..T {
            let y = _mm256_loadu_si256(a[t].qs.as_ptr().add(32 * j) as *const __m256i);
            let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, y), sc);
            sumi[t] = _mm256_add_epi32(sumi[t], p);
        }
        if T > 1 {
            // Without this fence the compiler works token by token and spills the unpacked
            // block to the stack; with it, each vector is unpacked and used for all tokens.
            fence(sumi);
        }
    }

    /// An empty asm that takes and gives back all of `s` at once: what follows cannot start
    /// before all of it is computed (in groups of 4).
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn fence<const T: usize>(s: &mut [__m256i; T]) {
        for c in s.chunks_mut(4) {
            match c {
                [a] => std::arch::asm!(
                    "/* {0} */",
                    inout(ymm_reg) * a,
                    options(pure, nomem, nostack, preserves_flags)
                ),
                [a, b] => std::arch::asm!(
                    "/* {0} {1} */",
                    inout(ymm_reg) * a,
                    inout(ymm_reg) * b,
                    options(pure, nomem, nostack, preserves_flags)
                ),
                [a, b, c] => std::arch::asm!(
                    "/* {0} {1} {2} */",
                    inout(ymm_reg) * a,
                    inout(ymm_reg) * b,
                    inout(ymm_reg) * c,
                    options(pure, nomem, nostack, preserves_flags)
                ),
                [a, b, c, d] => std::arch::asm!(
                    "/* {0} {1} {2} {3} */",
                    inout(ymm_reg) * a,
                    inout(ymm_reg) * b,
                    inout(ymm_reg) * c,
                    inout(ymm_reg) * d,
                    options(pure, nomem, nostack, preserves_flags)
                ),
                _ => unreachable!(),
            }
        }
    }

    /// The two exact sums of the 8 lanes of `a` and of `b`.
    #[inline(always)]
    unsafe fn hsum2(a: __m256i, b: __m256i) -> (i32, i32) {
        let h = _mm256_hadd_epi32(a, b);
        let s = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
        let s = _mm_hadd_epi32(s, s);
        (_mm_cvtsi128_si32(s), _mm_extract_epi32(s, 1))
    }

    /// `acc[t]` plus the dot product of block `b` with `a[t]`, for each t: the integer sums
    /// are exact and the float operations the portable kernel's, so the result is the same
    /// whatever `T` is, and equal to the portable and packed kernels'.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn block<B: Unpack, const T: usize>(
        b: &B,
        pat: *const __m256i,
        a: [&Q8KBlock; T],
        acc: [f32; T],
    ) -> [f32; T] {
        let s = b.scales();
        let mut sumi = [_mm256_setzero_si256(); T];
        // Vector by vector (unrolled by hand: the loop holds asm, which the compiler does not
        // unroll, and `q(j)` must see a constant j).
        step(b, s.sc, pat, a, 0, &mut sumi);
        step(b, s.sc, pat, a, 1, &mut sumi);
        step(b, s.sc, pat, a, 2, &mut sumi);
        step(b, s.sc, pat, a, 3, &mut sumi);
        step(b, s.sc, pat, a, 4, &mut sumi);
        step(b, s.sc, pat, a, 5, &mut sumi);
        step(b, s.sc, pat, a, 6, &mut sumi);
        step(b, s.sc, pat, a, 7, &mut sumi);
        let mut out = acc;
        for t in 0..T {
            let bsums = _mm256_loadu_si256(a[t].bsums.as_ptr() as *const __m256i);
            let summ = _mm256_madd_epi16(s.mins, bsums);
            let (si, sm) = hsum2(sumi[t], summ);
            let da = a[t].d;
            out[t] += match s.dmin {
                Some(dmin) => s.d * da * si as f32 - dmin * da * sm as f32,
                None => s.d * da * (si - sm) as f32,
            };
        }
        out
    }

    /// The tile of any [`Unpack`] format. With one token, each row in turn: the rows of a
    /// tile lie one after the other, so the weights are read as one sequential stream that
    /// the hardware prefetcher follows (measured faster than interleaving the rows with
    /// software prefetches). With more, each row's block is unpacked once for all tokens,
    /// one vector of 32 values at a time.
    #[inline(always)]
    pub unsafe fn tile_k<B: Unpack, const R: usize, const T: usize>(
        w: [&[B]; R],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; T]; R] {
        let mut acc = [[0f32; T]; R];
        let pat = opaque(SPREAD.as_ptr() as *const __m256i);
        if T == 1 {
            for r in 0..R {
                let mut acc1 = [0f32; 1];
                for i in 0..w[r].len() {
                    acc1 = block(w[r].get_unchecked(i), pat, [a[0].get_unchecked(i)], acc1);
                }
                acc[r][0] = acc1[0];
            }
        } else {
            for i in 0..w[0].len() {
                let mut ab = [a[0].get_unchecked(i); T];
                for t in 1..T {
                    ab[t] = a[t].get_unchecked(i);
                }
                for r in 0..R {
                    let b = w[r].get_unchecked(i);
                    prefetch_block(b);
                    // Each row reads the activations afresh (from L1): kept from the
                    // optimiser, which otherwise shares the loads between rows and spills
                    // all of them.
                    let mut abr = ab;
                    for x in abr.iter_mut() {
                        *x = &*opaque(*x);
                    }
                    acc[r] = block(b, pat, abr, acc[r]);
                }
            }
        }
        acc
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn tile<const R: usize, const T: usize>(
        w: [&[BlockQ4_K]; R],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; T]; R] {
        tile_k(w, a)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::quant::testing::{check, Rng};

    /// The portable kernel on one row.
    pub(crate) fn portable(w: &[BlockQ4_K], a: &[Q8KBlock]) -> f32 {
        unpacked_tile([w], [a], Unpacked::of, Unpacked::dot)[0][0]
    }

    pub(crate) fn random_block(r: &mut Rng) -> BlockQ4_K {
        BlockQ4_K {
            d: f16::from_f32(r.f32() * 0.01),
            dmin: f16::from_f32(r.f32() * 0.01),
            scales: r.bytes(),
            qs: r.bytes(),
        }
    }

    /// Packs 8 six-bit scales and mins as llama.cpp's `quantize_row_q4_K_ref` does.
    pub(crate) fn pack_scales(sc: [u8; 8], m: [u8; 8]) -> [u8; 12] {
        let mut s = [0u8; 12];
        for j in 0..8 {
            if j < 4 {
                s[j] = sc[j];
                s[j + 4] = m[j];
            } else {
                s[j + 4] = (sc[j] & 0xf) | ((m[j] & 0xf) << 4);
                s[j - 4] |= (sc[j] >> 4) << 6;
                s[j] |= (m[j] >> 4) << 6;
            }
        }
        s
    }

    /// llama.cpp's `get_scale_min_k4`, transcribed.
    fn get_scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
        if j < 4 {
            (q[j] & 63, q[j + 4] & 63)
        } else {
            (
                (q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4),
                (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
            )
        }
    }

    #[test]
    fn scale_unpacking_matches_llama_cpp() {
        let mut rng = Rng(7);
        for _ in 0..1000 {
            let s: [u8; 12] = rng.bytes();
            let sm = scales_mins(&s);
            for j in 0..8 {
                assert_eq!((sm[j], sm[8 + j]), get_scale_min_k4(j, &s));
            }
            #[cfg(target_arch = "x86_64")]
            if crate::quant::simd::avx2() {
                let mut buf = [0u8; 16];
                buf[..12].copy_from_slice(&s);
                buf[12..].copy_from_slice(&rng.bytes::<[u8; 4]>());
                let mut v = [0u8; 16];
                // SAFETY: AVX2 detected; 16 readable bytes.
                unsafe {
                    std::arch::x86_64::_mm_storeu_si128(
                        v.as_mut_ptr() as *mut _,
                        avx::scales_mins_v(buf.as_ptr()),
                    )
                };
                assert_eq!(v, sm);
            }
        }
        let sc = [1, 2, 3, 63, 17, 33, 48, 63];
        let m = [0, 5, 62, 7, 16, 31, 32, 63];
        assert_eq!(
            scales_mins(&pack_scales(sc, m)),
            [sc, m].concat().as_slice()
        );
    }

    #[test]
    fn dequantizes_like_llama_cpp() {
        // d = 0.5, dmin = 0.25; sub-block j has scale sc[j], min m[j]; value v at position p
        // is `0.5 * sc[j] * q - 0.25 * m[j]` with q = p % 16.
        let sc = [1, 2, 3, 4, 17, 33, 48, 63];
        let m = [0, 4, 8, 12, 16, 31, 32, 63];
        let mut q = [0u8; 256];
        for (p, v) in q.iter_mut().enumerate() {
            *v = (p % 16) as u8;
        }
        let mut qs = [0u8; 128];
        for k in 0..4 {
            for l in 0..32 {
                qs[32 * k + l] = q[64 * k + l] | (q[64 * k + 32 + l] << 4);
            }
        }
        let b = BlockQ4_K {
            d: f16::from_f32(0.5),
            dmin: f16::from_f32(0.25),
            scales: pack_scales(sc, m),
            qs,
        };
        let mut out = [0f32; 256];
        Q4_K::dequantize(&[b], &mut out);
        assert_eq!(out[0], 0.0); // sub-block 0: 0.5 * 1 * 0 - 0
        assert_eq!(out[5], 2.5); // 0.5 * 1 * 5
        assert_eq!(out[32 + 3], 3.0 - 1.0); // sub-block 1: 0.5 * 2 * 3 - 0.25 * 4
        assert_eq!(out[64 + 15], 22.5 - 2.0); // sub-block 2: 0.5 * 3 * 15 - 0.25 * 8
        assert_eq!(out[128 + 7], 0.5 * 17.0 * 7.0 - 4.0); // sub-block 4 (high scale bits)
        assert_eq!(out[160 + 1], 16.5 - 7.75); // sub-block 5
        assert_eq!(out[192 + 31], 0.5 * 48.0 * 15.0 - 8.0); // sub-block 6
        assert_eq!(out[255], 0.5 * 63.0 * 15.0 - 15.75); // sub-block 7
        for (p, v) in out.iter().enumerate() {
            let j = p / 32;
            assert_eq!(
                *v,
                0.5 * sc[j] as f32 * (p % 16) as f32 - 0.25 * m[j] as f32,
                "{p}"
            );
        }
    }

    #[test]
    fn matches_dequantized_reference() {
        check::<Q4_K>(random_block, 4e-3);
    }

    #[test]
    fn portable_matches_dequantized_reference() {
        check_portable::<Q4_K>(
            random_block,
            4e-3,
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
            |w, a| unpacked_tile(w, a, Unpacked::of, Unpacked::dot),
        );
    }

    /// A tile function of kernel `K`.
    pub(crate) type TileFn<K, const R: usize, const T: usize> =
        fn([&[<K as Kernel>::W]; R], [&[<K as Kernel>::A]; T]) -> [[f32; T]; R];

    /// Checks a portable kernel (run here even where the SIMD one is taken) like
    /// [`check`](crate::quant::testing::check): within `tol` of dequantize-then-f32 (relative
    /// to `sum |w x|`), and 4x4 and 1x1 tiles bit-identical.
    pub(crate) fn check_portable<K: Kernel>(
        mut block: impl FnMut(&mut crate::quant::testing::Rng) -> K::W,
        tol: f32,
        tile44: TileFn<K, 4, 4>,
        tile11: TileFn<K, 1, 1>,
    ) {
        use crate::quant::{Act, Input};
        let mut rng = crate::quant::testing::Rng(0x2545f4914f6cdd1d);
        for blocks in [1usize, 3] {
            let cols = blocks * K::QK;
            let w: Vec<Vec<K::W>> = (0..4)
                .map(|_| (0..blocks).map(|_| block(&mut rng)).collect())
                .collect();
            let x: Vec<f32> = (0..4 * cols).map(|_| rng.f32()).collect();
            let input = Input::new(&x, 4);
            let acts = <K::A as Act>::of(&input);
            let a: Vec<&[K::A]> = acts.chunks(blocks).collect();
            let tile = tile44([&w[0], &w[1], &w[2], &w[3]], [a[0], a[1], a[2], a[3]]);
            let mut deq = vec![0f32; cols];
            for r in 0..4 {
                K::dequantize(&w[r], &mut deq);
                for t in 0..4 {
                    let xt = &x[t * cols..(t + 1) * cols];
                    let exact: f32 = deq.iter().zip(xt).map(|(a, b)| a * b).sum();
                    let mag: f32 = deq.iter().zip(xt).map(|(a, b)| (a * b).abs()).sum();
                    let got = tile[r][t];
                    assert!(
                        (got - exact).abs() <= tol * mag + 1e-5,
                        "{blocks} blocks, row {r} token {t}: portable {got}, reference {exact}"
                    );
                    assert_eq!(
                        tile11([&w[r]], [a[t]])[0][0],
                        got,
                        "tile shape changes the result"
                    );
                }
            }
        }
    }
}
