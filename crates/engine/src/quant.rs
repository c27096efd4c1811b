//! Quantized weight blocks (ggml layouts) and their dot products with 8-bit activations.
//!
//! Weights stay in their GGUF quantization; activations are quantized per 32 values to
//! [`ActBlock`] (like llama.cpp's Q8_1), so each dot product is integer work plus one
//! scale per block. AVX2 kernels are picked at run time, with portable fallbacks.

use half::f16;

/// Values per quantization block for every type handled here.
pub const QK: usize = 32;

/// ggml Q4_0: `value = d * (q - 8)`, q in 0..16; element j in the low nibble of `qs[j]`,
/// element j+16 in the high nibble.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK / 2],
}

/// ggml Q4_1: `value = d * q + m`, nibble layout as Q4_0.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK / 2],
}

/// ggml Q8_0: `value = d * q`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK],
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// 32 activations quantized to i8 with scale `d`; `s = d * sum(qs)`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(16))]
pub struct ActBlock {
    pub d: f32,
    pub s: f32,
    pub qs: [i8; QK],
}

/// Reinterprets the raw GGUF bytes of a tensor as blocks of type `B`.
pub fn blocks_from_bytes<B: Copy>(bytes: &[u8]) -> Vec<B> {
    let size = std::mem::size_of::<B>();
    assert_eq!(bytes.len() % size, 0, "tensor bytes are not whole blocks");
    let n = bytes.len() / size;
    let mut out: Vec<B> = Vec::with_capacity(n);
    // SAFETY: B is a repr(C) plain-old-data block of exactly `size` bytes with alignment 2 or
    // less; the copy fills all n elements before the length is set.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), out.as_mut_ptr() as *mut u8, n * size);
        out.set_len(n);
    }
    out
}

/// Quantizes `x` (length a multiple of 32) into activation blocks.
pub fn quantize_acts(x: &[f32], out: &mut Vec<ActBlock>) {
    out.clear();
    out.extend(x.chunks_exact(QK).map(|c| {
        let amax = c.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; QK];
        let mut sum = 0i32;
        for (q, v) in qs.iter_mut().zip(c) {
            *q = (v * id).round() as i8;
            sum += *q as i32;
        }
        ActBlock {
            d,
            s: d * sum as f32,
            qs,
        }
    }));
}

/// Portable sum of 4-bit weights (nibble layout of Q4_0/Q4_1) times 8-bit activations.
fn nibble_dot(qs: &[u8; QK / 2], a: &[i8; QK]) -> i32 {
    (0..QK / 2)
        .map(|j| (qs[j] & 0x0f) as i32 * a[j] as i32 + (qs[j] >> 4) as i32 * a[j + QK / 2] as i32)
        .sum()
}

/// Dot products of one weight row (as blocks) with one activation row.
pub trait VecDot: Copy + Send + Sync {
    fn dot(w: &[Self], a: &[ActBlock]) -> f32;

    /// One weight row against four activation rows (unpacks the weights once).
    fn dot4(w: &[Self], a: [&[ActBlock]; 4]) -> [f32; 4] {
        a.map(|a| Self::dot(w, a))
    }
}

impl VecDot for BlockQ4_1 {
    #[inline]
    fn dot4(w: &[Self], a: [&[ActBlock]; 4]) -> [f32; 4] {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::dot4_q4_1(w, a) };
        }
        a.map(|a| Self::dot(w, a))
    }

    #[inline]
    fn dot(w: &[Self], a: &[ActBlock]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::dot_q4_1(w, a) };
        }
        w.iter()
            .zip(a)
            .map(|(w, a)| {
                let sumi = nibble_dot(&w.qs, &a.qs);
                w.d.to_f32() * a.d * sumi as f32 + w.m.to_f32() * a.s
            })
            .sum()
    }
}

impl VecDot for BlockQ4_0 {
    #[inline]
    fn dot(w: &[Self], a: &[ActBlock]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::dot_q4_0(w, a) };
        }
        w.iter()
            .zip(a)
            .map(|(w, a)| {
                let sumi = nibble_dot(&w.qs, &a.qs);
                let d = w.d.to_f32();
                d * a.d * sumi as f32 - 8.0 * d * a.s
            })
            .sum()
    }
}

impl VecDot for BlockQ8_0 {
    #[inline]
    fn dot4(w: &[Self], a: [&[ActBlock]; 4]) -> [f32; 4] {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::dot4_q8_0(w, a) };
        }
        a.map(|a| Self::dot(w, a))
    }

    #[inline]
    fn dot(w: &[Self], a: &[ActBlock]) -> f32 {
        #[cfg(target_arch = "x86_64")]
        if avx2() {
            // SAFETY: AVX2, FMA and F16C were detected at run time.
            return unsafe { avx::dot_q8_0(w, a) };
        }
        w.iter()
            .zip(a)
            .map(|(w, a)| {
                let sumi: i32 =
                    w.qs.iter()
                        .zip(&a.qs)
                        .map(|(x, y)| *x as i32 * *y as i32)
                        .sum();
                w.d.to_f32() * a.d * sumi as f32
            })
            .sum()
    }
}

/// Dequantizes one Q8_0 row (the embedding lookup).
pub fn dequantize_q8_0(w: &[BlockQ8_0], out: &mut [f32]) {
    for (b, o) in w.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (q, v) in b.qs.iter().zip(o) {
            *v = d * *q as f32;
        }
    }
}

/// Dequantizes one Q4_0 row.
pub fn dequantize_q4_0(w: &[BlockQ4_0], out: &mut [f32]) {
    for (b, o) in w.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for j in 0..QK / 2 {
            o[j] = d * ((b.qs[j] & 0x0f) as f32 - 8.0);
            o[j + QK / 2] = d * ((b.qs[j] >> 4) as f32 - 8.0);
        }
    }
}

/// Dequantizes one Q4_1 row.
pub fn dequantize_q4_1(w: &[BlockQ4_1], out: &mut [f32]) {
    for (b, o) in w.iter().zip(out.chunks_exact_mut(QK)) {
        let (d, m) = (b.d.to_f32(), b.m.to_f32());
        for j in 0..QK / 2 {
            o[j] = d * (b.qs[j] & 0x0f) as f32 + m;
            o[j + QK / 2] = d * (b.qs[j] >> 4) as f32 + m;
        }
    }
}

/// Whether the AVX2 + FMA kernels can run here (cached).
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

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::*;
    use std::arch::x86_64::*;

    /// f16 -> f32 with the F16C instruction (half's portable call is far slower here).
    #[inline(always)]
    unsafe fn h(x: f16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(x.to_bits() as i32)))
    }

    /// Weights stream from memory row after row: ask for data ~1 KiB ahead (a prefetch of
    /// an address past the tensor is harmless).
    #[inline(always)]
    unsafe fn prefetch<T>(p: *const T) {
        _mm_prefetch((p as *const i8).wrapping_add(PREFETCH_AHEAD), _MM_HINT_T0);
    }
    const PREFETCH_AHEAD: usize = 1024;

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Unpacks 16 bytes of nibbles to 32 unsigned bytes (low nibbles first).
    #[inline(always)]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        let q = _mm_loadu_si128(p as *const __m128i);
        let m = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(q, m);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
        _mm256_set_m128i(hi, lo)
    }

    /// Sum of u8 x i8 products as 8 f32 lanes.
    #[inline(always)]
    unsafe fn mul_sum_us8(u: __m256i, s: __m256i) -> __m256 {
        let p16 = _mm256_maddubs_epi16(u, s);
        _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, _mm256_set1_epi16(1)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_1(w: &[BlockQ4_1], a: &[ActBlock]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut summ = 0f32;
        for (w, a) in w.iter().zip(a) {
            prefetch(w);
            let wv = nibbles(w.qs.as_ptr());
            let av = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let d = _mm256_set1_ps(h(w.d) * a.d);
            acc = _mm256_fmadd_ps(d, mul_sum_us8(wv, av), acc);
            summ += h(w.m) * a.s;
        }
        hsum(acc) + summ
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q4_1(w: &[BlockQ4_1], a: [&[ActBlock]; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut summ = [0f32; 4];
        for (i, w) in w.iter().enumerate() {
            prefetch(w);
            let wv = nibbles(w.qs.as_ptr());
            let (dw, mw) = (h(w.d), h(w.m));
            for k in 0..4 {
                let a = a[k].get_unchecked(i);
                let av = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
                acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), mul_sum_us8(wv, av), acc[k]);
                summ[k] += mw * a.s;
            }
        }
        std::array::from_fn(|k| hsum(acc[k]) + summ[k])
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot4_q8_0(w: &[BlockQ8_0], a: [&[ActBlock]; 4]) -> [f32; 4] {
        let mut acc = [_mm256_setzero_ps(); 4];
        for (i, w) in w.iter().enumerate() {
            prefetch(w);
            let wv = _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i);
            let ax = _mm256_sign_epi8(wv, wv);
            let dw = h(w.d);
            for k in 0..4 {
                let a = a[k].get_unchecked(i);
                let sy = _mm256_sign_epi8(_mm256_loadu_si256(a.qs.as_ptr() as *const __m256i), wv);
                acc[k] = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), mul_sum_us8(ax, sy), acc[k]);
            }
        }
        std::array::from_fn(|k| hsum(acc[k]))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q4_0(w: &[BlockQ4_0], a: &[ActBlock]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        let mut corr = 0f32;
        for (w, a) in w.iter().zip(a) {
            prefetch(w);
            let wv = nibbles(w.qs.as_ptr());
            let av = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let dw = h(w.d);
            acc = _mm256_fmadd_ps(_mm256_set1_ps(dw * a.d), mul_sum_us8(wv, av), acc);
            corr += 8.0 * dw * a.s;
        }
        hsum(acc) - corr
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot_q8_0(w: &[BlockQ8_0], a: &[ActBlock]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (w, a) in w.iter().zip(a) {
            prefetch(w);
            let wv = _mm256_loadu_si256(w.qs.as_ptr() as *const __m256i);
            let av = _mm256_loadu_si256(a.qs.as_ptr() as *const __m256i);
            let ax = _mm256_sign_epi8(wv, wv);
            let sy = _mm256_sign_epi8(av, wv);
            let d = _mm256_set1_ps(h(w.d) * a.d);
            acc = _mm256_fmadd_ps(d, mul_sum_us8(ax, sy), acc);
        }
        hsum(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acts(n: usize, seed: u32) -> (Vec<f32>, Vec<ActBlock>) {
        let x: Vec<f32> = (0..n)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect();
        let mut q = Vec::new();
        quantize_acts(&x, &mut q);
        (x, q)
    }

    #[test]
    fn q4_1_dot_matches_dequantized() {
        let blocks: Vec<BlockQ4_1> = (0..4)
            .map(|i| BlockQ4_1 {
                d: f16::from_f32(0.01 * (i + 1) as f32),
                m: f16::from_f32(-0.05),
                qs: std::array::from_fn(|j| (j * 7 + i) as u8),
            })
            .collect();
        let (x, q) = acts(128, 3);
        let mut w = vec![0f32; 128];
        dequantize_q4_1(&blocks, &mut w);
        let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
        let got = BlockQ4_1::dot(&blocks, &q);
        assert!(
            (exact - got).abs() < 0.02 * exact.abs().max(1.0),
            "{exact} vs {got}"
        );
    }

    #[test]
    fn nibble_dot_reads_low_then_high_nibbles() {
        let qs: [u8; QK / 2] = std::array::from_fn(|j| (j as u8 % 16) | (15 - j as u8 % 16) << 4);
        let a: [i8; QK] = std::array::from_fn(|j| j as i8 - 16);
        let want: i32 = (0..QK / 2)
            .map(|j| (j % 16) as i32 * (j as i32 - 16) + (15 - j % 16) as i32 * (j as i32))
            .sum();
        assert_eq!(nibble_dot(&qs, &a), want);
    }

    #[test]
    fn dot4_matches_dot() {
        let b41: Vec<BlockQ4_1> = (0..3)
            .map(|i| BlockQ4_1 {
                d: f16::from_f32(0.01),
                m: f16::from_f32(0.02 * i as f32 - 0.03),
                qs: std::array::from_fn(|j| (j * 13 + i) as u8),
            })
            .collect();
        let b80: Vec<BlockQ8_0> = (0..3)
            .map(|i| BlockQ8_0 {
                d: f16::from_f32(0.004),
                qs: std::array::from_fn(|j| ((j * 29 + i * 7) % 251) as i8),
            })
            .collect();
        let rows: Vec<Vec<ActBlock>> = (0..4).map(|s| acts(96, s * 17 + 1).1).collect();
        let four = [&rows[0][..], &rows[1][..], &rows[2][..], &rows[3][..]];
        let got = BlockQ4_1::dot4(&b41, four);
        for k in 0..4 {
            assert!((got[k] - BlockQ4_1::dot(&b41, &rows[k])).abs() < 1e-4);
        }
        let got = BlockQ8_0::dot4(&b80, four);
        for k in 0..4 {
            assert!((got[k] - BlockQ8_0::dot(&b80, &rows[k])).abs() < 1e-4);
        }
    }

    #[test]
    fn q4_0_and_q8_0_dot_match_dequantized() {
        let b40: Vec<BlockQ4_0> = (0..2)
            .map(|i| BlockQ4_0 {
                d: f16::from_f32(0.02),
                qs: std::array::from_fn(|j| (j * 5 + i * 3) as u8),
            })
            .collect();
        let b80: Vec<BlockQ8_0> = (0..2)
            .map(|i| BlockQ8_0 {
                d: f16::from_f32(0.003),
                qs: std::array::from_fn(|j| ((j * 37 + i * 11) % 255) as i8),
            })
            .collect();
        let (x, q) = acts(64, 9);
        let mut w = vec![0f32; 64];
        dequantize_q4_0(&b40, &mut w);
        let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
        assert!((exact - BlockQ4_0::dot(&b40, &q)).abs() < 0.02 * exact.abs().max(1.0));
        dequantize_q8_0(&b80, &mut w);
        let exact: f32 = w.iter().zip(&x).map(|(a, b)| a * b).sum();
        assert!((exact - BlockQ8_0::dot(&b80, &q)).abs() < 0.02 * exact.abs().max(1.0));
    }
}
