//! Activations of a matrix product: the f32 rows and, computed on first use, the 8-bit
//! forms the integer kernels take (32-value blocks like llama.cpp's Q8_1, 256-value blocks
//! like its Q8_K) and the bf16 form BF16 weights take (as llama.cpp rounds them). Every
//! row is quantized on its own, so a token's activations do not depend on the other tokens
//! of a batch.

use rayon::prelude::*;
use std::sync::OnceLock;

/// 32 activations as i8 with scale `d`; `s = d * sum(qs)` (for formats with an offset)
/// and the exact integer sum `isum`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct Q8Block {
    pub d: f32,
    pub s: f32,
    pub isum: i32,
    pub qs: [i8; 32],
}

/// 256 activations as i8 with scale `d` and the sums of each 16 values.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct Q8KBlock {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
}

impl Default for Q8KBlock {
    fn default() -> Self {
        Q8KBlock {
            d: 0.0,
            qs: [0; 256],
            bsums: [0; 16],
        }
    }
}

/// Eight f32 activations (what the 16- and 32-bit float formats take).
#[derive(Clone, Copy, Debug, Default)]
#[repr(transparent)]
pub struct F32x8(pub [f32; 8]);

/// Eight activations rounded to bf16 (to nearest, ties to even, as llama.cpp does), as
/// raw bits.
#[derive(Clone, Copy, Debug, Default)]
#[repr(transparent)]
pub struct BF16x8(pub [u16; 8]);

/// An input batch `[n, cols]` in f32 and its quantized forms, made on first use.
pub struct Input<'a> {
    pub x: &'a [f32],
    pub n: usize,
    pub cols: usize,
    q8: OnceLock<Vec<Q8Block>>,
    q8k: OnceLock<Vec<Q8KBlock>>,
    bf16: OnceLock<Vec<BF16x8>>,
}

impl<'a> Input<'a> {
    /// `x` holds `n` rows.
    pub fn new(x: &'a [f32], n: usize) -> Self {
        debug_assert!(n > 0 && x.len().is_multiple_of(n));
        Input {
            x,
            n,
            cols: x.len() / n.max(1),
            q8: OnceLock::new(),
            q8k: OnceLock::new(),
            bf16: OnceLock::new(),
        }
    }
}

/// An activation block type: how to get it from an [`Input`].
pub trait Act: Copy + Send + Sync + 'static {
    /// Values per block.
    const QK: usize;
    /// The whole batch as blocks, row after row (`n * cols / QK` blocks).
    fn of<'b>(input: &'b Input) -> &'b [Self];
}

impl Act for Q8Block {
    const QK: usize = 32;
    fn of<'b>(input: &'b Input) -> &'b [Self] {
        input
            .q8
            .get_or_init(|| quantize_all(input.x, 32, quantize_q8))
    }
}

impl Act for Q8KBlock {
    const QK: usize = 256;
    fn of<'b>(input: &'b Input) -> &'b [Self] {
        input
            .q8k
            .get_or_init(|| quantize_all(input.x, 256, quantize_q8k))
    }
}

impl Act for BF16x8 {
    const QK: usize = 8;
    fn of<'b>(input: &'b Input) -> &'b [Self] {
        input.bf16.get_or_init(|| {
            input
                .x
                .chunks_exact(8)
                .map(|c| BF16x8(std::array::from_fn(|i| to_bf16(c[i]))))
                .collect()
        })
    }
}

/// `x` rounded to bf16 (to nearest, ties to even; NaNs stay NaNs), as llama.cpp's
/// `ggml_compute_fp32_to_bf16`.
#[inline]
pub fn to_bf16(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

impl Act for F32x8 {
    const QK: usize = 8;
    fn of<'b>(input: &'b Input) -> &'b [Self] {
        // SAFETY: F32x8 is a transparent [f32; 8]; the length is whole blocks of 8.
        unsafe { std::slice::from_raw_parts(input.x.as_ptr() as *const F32x8, input.x.len() / 8) }
    }
}

/// Quantizes `x` block by block (`qk` values each), in parallel for large inputs.
fn quantize_all<B: Send>(x: &[f32], qk: usize, one: fn(&[f32]) -> B) -> Vec<B> {
    if x.len() >= 1 << 16 {
        x.par_chunks_exact(qk).map(one).collect()
    } else {
        x.chunks_exact(qk).map(one).collect()
    }
}

/// Quantizes one block of 32 values (round to nearest, ties to even, like llama.cpp).
pub fn quantize_q8(x: &[f32]) -> Q8Block {
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx2() {
        // SAFETY: AVX2 was detected; x holds 32 values.
        return unsafe { avx::quantize_q8(x) };
    }
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let id = if amax > 0.0 { 127.0 / amax } else { 0.0 };
    let mut qs = [0i8; 32];
    let mut sum = 0i32;
    for (q, v) in qs.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
        sum += *q as i32;
    }
    q8_block(amax / 127.0, sum, qs)
}

/// A block with llama.cpp's precision: the scale and the sum are kept as f16 values.
fn q8_block(d: f32, sum: i32, qs: [i8; 32]) -> Q8Block {
    Q8Block {
        d: f16r(d),
        s: f16r(d * sum as f32),
        isum: sum,
        qs,
    }
}

/// Rounds to the nearest f16 value.
fn f16r(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Quantizes one block of 256 values.
pub fn quantize_q8k(x: &[f32]) -> Q8KBlock {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let mut b = Q8KBlock::default();
    if amax == 0.0 {
        return b;
    }
    let d = amax / 127.0;
    let id = 1.0 / d;
    #[cfg(target_arch = "x86_64")]
    if super::simd::avx2() {
        for (q, v) in b.qs.chunks_exact_mut(32).zip(x.chunks_exact(32)) {
            // SAFETY: AVX2 was detected; 32 values and 32 bytes.
            unsafe { avx::round32(v, id, q) };
        }
    } else {
        round_portable(x, id, &mut b.qs);
    }
    #[cfg(not(target_arch = "x86_64"))]
    round_portable(x, id, &mut b.qs);
    for (s, c) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
        *s = c.iter().map(|&q| q as i16).sum();
    }
    b.d = d;
    b
}

/// `q[k] = round_ties_even(x[k] · id)` (the vector path computes the same products and
/// rounding; libm's `rintf` call per value was 10% of a Q4_K prompt).
fn round_portable(x: &[f32], id: f32, q: &mut [i8]) {
    for (q, v) in q.iter_mut().zip(x) {
        *q = (v * id).round_ties_even() as i8;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::Q8Block;
    use std::arch::x86_64::*;

    /// 32 values times `id`, rounded to nearest (ties to even), as bytes into `q`.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn round32(x: &[f32], id: f32, q: &mut [i8]) {
        debug_assert!(x.len() >= 32 && q.len() >= 32);
        let p = x.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        store_bytes(rounded(&v, _mm256_set1_ps(id)), q);
    }

    /// Each value times `id`, rounded to nearest (ties to even), as i32 lanes.
    #[inline(always)]
    unsafe fn rounded(v: &[__m256; 4], id: __m256) -> [__m256i; 4] {
        let mut i = [_mm256_setzero_si256(); 4];
        for (i, v) in i.iter_mut().zip(v) {
            *i = _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(*v, id),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            ));
        }
        i
    }

    /// The 32 lanes as (saturated) bytes into `q`, in order.
    #[inline(always)]
    unsafe fn store_bytes(i: [__m256i; 4], q: &mut [i8]) {
        // Packs interleave 128-bit lanes; the permute puts them back in order.
        let a = _mm256_packs_epi32(i[0], i[1]);
        let b = _mm256_packs_epi32(i[2], i[3]);
        let v = _mm256_packs_epi16(a, b);
        let v = _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(q.as_mut_ptr() as *mut __m256i, v);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_q8(x: &[f32]) -> Q8Block {
        let p = x.as_ptr();
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let sign = _mm256_set1_ps(-0.0);
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for x in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *x));
        }
        let m4 = _mm_max_ps(_mm256_extractf128_ps(m, 1), _mm256_castps256_ps128(m));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let amax = _mm_cvtss_f32(m4);
        let id = _mm256_set1_ps(if amax > 0.0 { 127.0 / amax } else { 0.0 });
        let i = rounded(&v, id);
        let sum = _mm256_add_epi32(_mm256_add_epi32(i[0], i[1]), _mm256_add_epi32(i[2], i[3]));
        let s4 = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let s4 = _mm_hadd_epi32(s4, s4);
        let s4 = _mm_hadd_epi32(s4, s4);
        let total = _mm_cvtsi128_si32(s4);
        let mut out = super::q8_block(amax / 127.0, total, [0; 32]);
        store_bytes(i, &mut out.qs);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 2001) as f32 / 1000.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn q8k_rounding_equals_portable() {
        for seed in 0..50 {
            let mut x = data(256, seed);
            x[(seed as usize * 7) % 256] = 0.5 * (seed as f32 - 25.0); // ties and a spread
            let b = quantize_q8k(&x);
            let mut qs = [0i8; 256];
            round_portable(&x, 1.0 / b.d, &mut qs);
            assert_eq!(b.qs, qs, "seed {seed}");
            let sums: Vec<i16> = qs
                .chunks(16)
                .map(|c| c.iter().map(|&q| q as i16).sum())
                .collect();
            assert_eq!(b.bsums.to_vec(), sums);
        }
    }

    #[test]
    fn q8_simd_equals_portable() {
        for seed in 0..50 {
            let x = data(32, seed);
            let fast = quantize_q8(&x);
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let qs: Vec<i8> = x
                .iter()
                .map(|v| (v * (127.0 / amax)).round_ties_even() as i8)
                .collect();
            assert_eq!(fast.d, f16r(amax / 127.0));
            assert_eq!(fast.qs.to_vec(), qs, "seed {seed}");
            let sum: i32 = qs.iter().map(|&q| q as i32).sum();
            assert_eq!(fast.s, f16r(amax / 127.0 * sum as f32));
        }
    }

    #[test]
    fn q8k_sums_and_range() {
        let x = data(256, 7);
        let b = quantize_q8k(&x);
        for (j, s) in b.bsums.iter().enumerate() {
            assert_eq!(
                *s,
                b.qs[j * 16..j * 16 + 16]
                    .iter()
                    .map(|&q| q as i16)
                    .sum::<i16>()
            );
        }
        for (q, v) in b.qs.iter().zip(&x) {
            assert!((*q as f32 * b.d - v).abs() <= b.d * 0.5 + 1e-6);
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        for v in [
            1.0f32,
            -2.5,
            3.0999,
            1e-3,
            65504.0,
            f32::MAX,
            1.0 + 1.0 / 256.0,
        ] {
            assert_eq!(to_bf16(v), half::bf16::from_f32(v).to_bits(), "{v}");
        }
        // Exactly halfway: to the even neighbour.
        assert_eq!(to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert!(f32::from_bits((to_bf16(f32::NAN) as u32) << 16).is_nan());
    }

    #[test]
    fn rows_are_quantized_independently() {
        let x = data(64 * 3, 1);
        let whole = Input::new(&x, 3);
        let one = Input::new(&x[64..128], 1);
        let a = Q8Block::of(&whole);
        let b = Q8Block::of(&one);
        assert_eq!(a.len(), 6);
        assert_eq!(a[2].qs, b[0].qs);
        assert_eq!(a[3].d, b[1].d);
    }
}
