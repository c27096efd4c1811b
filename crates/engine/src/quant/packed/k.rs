//! What the packed K-quants (256-value super-blocks, Q8_K activations) share.
//!
//! Every byte array of the plain block (values, high bits, packed scales) is interleaved
//! 4 bytes at a time over the 8 rows ([`interleave`]: bytes `4c..4c + 4` of row `r` at
//! `32c + 4r`), so one 32-byte load holds the same 4 bytes of each row and the plain
//! block's bit manipulations apply unchanged, lane `r` working on row `r`; the f16 fields
//! become arrays of 8. Lane `r` accumulates row `r`'s exact integer sums of a block (per
//! sub-block `Σ q·a` by `vpdpbusd` or AVX2's pair, times the sub-block's scale; the mins or
//! the offset against the activations' `bsums`), then applies the portable kernel's float
//! operations (`d·a.d·sumi − dmin·a.d·summ`, added in block order): a packed result equals
//! the portable and plain kernels' bit for bit.

/// Interleaves the 8 rows' copies of one byte array (a multiple of 4 bytes) 4 bytes at a
/// time into `out`, 8 times as long.
pub(super) fn interleave(rows: [&[u8]; 8], out: &mut [u8]) {
    let n = rows[0].len();
    debug_assert!(n.is_multiple_of(4) && out.len() == 8 * n);
    for c in 0..n / 4 {
        for (r, row) in rows.iter().enumerate() {
            out[32 * c + 4 * r..32 * c + 4 * r + 4].copy_from_slice(&row[4 * c..4 * c + 4]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx::*;

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::super::dot::{bcast4, Dot};
    use super::super::prefetch_ahead;
    use crate::quant::Q8KBlock;
    use std::arch::x86_64::*;

    /// A packed K-quant block of 8 rows, for [`body`].
    pub trait KBlock8: Copy {
        /// Values per sub-block (one scale each): 16 or 32.
        const SUB: usize;
        /// What the block's scales decode to, once per block.
        type S: Copy;
        /// # Safety
        /// AVX2, FMA and F16C must be available (also for every method below).
        unsafe fn prep(&self) -> Self::S;
        /// The scale of sub-block `j` of each row, as i32 lanes.
        unsafe fn scale(s: &Self::S, j: usize) -> __m256i;
        /// Values `32 J + 4c..32 J + 4c + 4` of each row as unsigned bytes.
        unsafe fn q<const J: usize>(&self, c: usize) -> __m256i;
        /// Each row's `Σ_j m_j · bsums_j` with activations `a`: the mins (taken off with
        /// `dmin`) or the offset (taken off the integer sum, `dmin` None).
        unsafe fn summ(s: &Self::S, a: &Q8KBlock) -> __m256i;
        /// The rows' `d`.
        unsafe fn d(&self) -> __m256;
        /// The rows' `dmin`, for formats with mins.
        unsafe fn dmin(&self) -> Option<__m256>;
    }

    /// Shuffles of 32-bit lanes: `ZX[k]` zero-extends byte `k` of each lane.
    pub static ZX: [[u8; 32]; 4] = {
        let mut t = [[0x80u8; 32]; 4];
        let mut k = 0;
        while k < 4 {
            let mut l = 0;
            while l < 8 {
                t[k][4 * l] = (4 * (l % 4) + k) as u8;
                l += 1;
            }
            k += 1;
        }
        t
    };

    /// `SX[k]` moves byte `k` of each lane to its top byte (then `srai 24` sign-extends).
    pub static SX: [[u8; 32]; 4] = {
        let mut t = [[0x80u8; 32]; 4];
        let mut k = 0;
        while k < 4 {
            let mut l = 0;
            while l < 8 {
                t[k][4 * l + 3] = (4 * (l % 4) + k) as u8;
                l += 1;
            }
            k += 1;
        }
        t
    };

    /// `PAIR[p]`: bytes `2p`, `2p + 1` of each lane as two u16 (zero-extended).
    pub static PAIR: [[u8; 32]; 2] = {
        let mut t = [[0x80u8; 32]; 2];
        let mut p = 0;
        while p < 2 {
            let mut l = 0;
            while l < 8 {
                t[p][4 * l] = (4 * (l % 4) + 2 * p) as u8;
                t[p][4 * l + 2] = (4 * (l % 4) + 2 * p + 1) as u8;
                l += 1;
            }
            p += 1;
        }
        t
    };

    /// `SPAIR[p]`: bytes `2p`, `2p + 1` of each lane in the high bytes of two i16 (then
    /// `srai 8` sign-extends).
    pub static SPAIR: [[u8; 32]; 2] = {
        let mut t = [[0x80u8; 32]; 2];
        let mut p = 0;
        while p < 2 {
            let mut l = 0;
            while l < 8 {
                t[p][4 * l + 1] = (4 * (l % 4) + 2 * p) as u8;
                t[p][4 * l + 3] = (4 * (l % 4) + 2 * p + 1) as u8;
                l += 1;
            }
            p += 1;
        }
        t
    };

    /// `_mm256_shuffle_epi8(v, table)`.
    #[inline(always)]
    pub unsafe fn shuf(v: __m256i, table: &[u8; 32]) -> __m256i {
        _mm256_shuffle_epi8(v, _mm256_loadu_si256(table.as_ptr() as *const __m256i))
    }

    /// 32 bytes at `p`.
    #[inline(always)]
    pub unsafe fn load(p: *const u8) -> __m256i {
        _mm256_loadu_si256(p as *const __m256i)
    }

    /// 8 f16 at `p` as f32.
    #[inline(always)]
    pub unsafe fn load_f16(p: *const half::f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    /// `Σ_j w_j · bsums_j` over 16 sub-blocks of 16, each row's 16 i8 scales `w` in 4 lanes
    /// of 4 (`w[k]` holding `w_4k..w_4k+4`), sign-extended when `signed`.
    #[inline(always)]
    pub unsafe fn summ16(w: &[__m256i; 4], a: &Q8KBlock, signed: bool) -> __m256i {
        let mut s = _mm256_setzero_si256();
        for k in 0..8 {
            let pair = if signed {
                _mm256_srai_epi16(shuf(w[k / 2], &SPAIR[k % 2]), 8)
            } else {
                shuf(w[k / 2], &PAIR[k % 2])
            };
            let b = bcast4(a.bsums.as_ptr().add(2 * k) as *const i8);
            s = _mm256_add_epi32(s, _mm256_madd_epi16(pair, b));
        }
        s
    }

    /// `Σ_j m_j · (bsums_2j + bsums_2j+1)` over 8 sub-blocks of 32, each row's 8 u8 mins in
    /// 2 lanes of 4.
    #[inline(always)]
    pub unsafe fn summ32(m: [__m256i; 2], a: &Q8KBlock) -> __m256i {
        let bs = _mm256_loadu_si256(a.bsums.as_ptr() as *const __m256i);
        // Low half: the sums of 32 of sub-blocks 0..4 (twice), high half: 4..8.
        let h = _mm256_hadd_epi16(bs, bs);
        let mut s = _mm256_setzero_si256();
        for (k, idx) in [0, 1, 4, 5].into_iter().enumerate() {
            let b = _mm256_permutevar8x32_epi32(h, _mm256_set1_epi32(idx));
            s = _mm256_add_epi32(s, _mm256_madd_epi16(shuf(m[k / 2], &PAIR[k % 2]), b));
        }
        s
    }

    /// The sub-blocks of values `32 J..32 J + 32`: `sumi[t] += scale_j · Σ q·a[t]` for each.
    #[inline(always)]
    unsafe fn vec32<D: Dot, B: KBlock8, const T: usize, const J: usize>(
        b: &B,
        s: &B::S,
        a: [&Q8KBlock; T],
        sumi: &mut [__m256i; T],
    ) {
        let per = B::SUB / 4;
        for h in 0..32 / B::SUB {
            let mut raw = [_mm256_setzero_si256(); T];
            for c in h * per..(h + 1) * per {
                let q = b.q::<J>(c);
                for t in 0..T {
                    let y = bcast4(a[t].qs.as_ptr().add(32 * J + 4 * c));
                    raw[t] = D::dot(raw[t], q, y);
                }
            }
            let sc = B::scale(s, J * (32 / B::SUB) + h);
            for t in 0..T {
                sumi[t] = _mm256_add_epi32(sumi[t], _mm256_mullo_epi32(raw[t], sc));
            }
        }
    }

    /// Dot products of one group of packed K-quant blocks with `T` activation rows.
    #[inline(always)]
    pub unsafe fn body<D: Dot, B: KBlock8, const T: usize>(
        w: &[B],
        a: [&[Q8KBlock]; T],
    ) -> [[f32; 8]; T] {
        let mut acc = [_mm256_setzero_ps(); T];
        for i in 0..w.len() {
            let b = w.get_unchecked(i);
            prefetch_ahead(b);
            let s = b.prep();
            let mut ab: [&Q8KBlock; T] = [a[0].get_unchecked(i); T];
            for t in 1..T {
                ab[t] = a[t].get_unchecked(i);
            }
            let mut sumi = [_mm256_setzero_si256(); T];
            vec32::<D, B, T, 0>(b, &s, ab, &mut sumi);
            vec32::<D, B, T, 1>(b, &s, ab, &mut sumi);
            vec32::<D, B, T, 2>(b, &s, ab, &mut sumi);
            vec32::<D, B, T, 3>(b, &s, ab, &mut sumi);
            vec32::<D, B, T, 4>(b, &s, ab, &mut sumi);
            vec32::<D, B, T, 5>(b, &s, ab, &mut sumi);
            vec32::<D, B, T, 6>(b, &s, ab, &mut sumi);
            vec32::<D, B, T, 7>(b, &s, ab, &mut sumi);
            let d = b.d();
            let dmin = b.dmin();
            for t in 0..T {
                let da = _mm256_set1_ps(ab[t].d);
                let summ = B::summ(&s, ab[t]);
                // The portable kernel's `d * a.d * sumi - dmin * a.d * summ`, or with an
                // offset `d * a.d * (sumi - summ)`, lane by lane.
                let f = match dmin {
                    Some(dmin) => _mm256_sub_ps(
                        _mm256_mul_ps(_mm256_mul_ps(d, da), _mm256_cvtepi32_ps(sumi[t])),
                        _mm256_mul_ps(_mm256_mul_ps(dmin, da), _mm256_cvtepi32_ps(summ)),
                    ),
                    None => _mm256_mul_ps(
                        _mm256_mul_ps(d, da),
                        _mm256_cvtepi32_ps(_mm256_sub_epi32(sumi[t], summ)),
                    ),
                };
                acc[t] = _mm256_add_ps(acc[t], f);
            }
        }
        crate::quant::simd::lanes(acc)
    }
}
