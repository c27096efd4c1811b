//! Causal grouped-query attention of new positions over their sequence's cache, for
//! several sequences at once (each against its own cache). Options of the families:
//! a score scale, logit soft-capping and a sliding window.

use super::kv::{LayerKv, KBLK};
use rayon::prelude::*;

/// Shape and options of one layer's attention.
#[derive(Debug, Clone, Copy)]
pub struct AttnSpec {
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub value_dim: usize,
    /// Multiplies the scores (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// `cap * tanh(score / cap)` (Gemma 2).
    pub softcap: Option<f32>,
    /// A position sees only the previous `window` positions, itself included.
    pub window: Option<usize>,
}

/// One sequence's part of a batch: its `n` new queries (`[n, n_heads * head_dim]`), whose
/// keys and values are already in `cache`, and where to write the result.
pub struct AttnItem<'a> {
    pub q: &'a [f32],
    pub cache: &'a LayerKv,
    pub n: usize,
    pub out: &'a mut [f32],
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: each task writes its own head of its own position.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// Computes every item's attention output `[n, n_heads * value_dim]`.
pub fn attend(s: &AttnSpec, items: &mut [AttnItem]) {
    let nh = s.n_heads;
    let mut tasks = Vec::new();
    let mut work = 0;
    for (i, it) in items.iter().enumerate() {
        debug_assert_eq!(it.out.len(), it.n * nh * s.value_dim);
        for t in 0..it.n {
            for h in 0..nh {
                tasks.push((i, t, h));
            }
        }
        work += it.n * nh * it.cache.len() * (s.head_dim + s.value_dim);
    }
    let outs: Vec<SendPtr> = items
        .iter_mut()
        .map(|it| SendPtr(it.out.as_mut_ptr()))
        .collect();
    let items = &*items;
    let one = |&(i, t, h): &(usize, usize, usize)| {
        let it = &items[i];
        let len = it.cache.len() - it.n + t + 1;
        let q = &it.q[(t * nh + h) * s.head_dim..][..s.head_dim];
        // SAFETY: (i, t, h) owns this slice of item i's output.
        let out = unsafe {
            std::slice::from_raw_parts_mut(outs[i].0.add((t * nh + h) * s.value_dim), s.value_dim)
        };
        head(s, q, it.cache, h / (nh / s.n_kv_heads), len, out);
    };
    if work > 1 << 16 && tasks.len() > 1 {
        tasks.par_iter().for_each(one);
    } else {
        tasks.iter().for_each(one);
    }
}

/// One query head at position `len - 1` against cache positions `..len`.
fn head(s: &AttnSpec, q: &[f32], kv: &LayerKv, kvh: usize, len: usize, out: &mut [f32]) {
    let lo = s.window.map_or(0, |w| len.saturating_sub(w));
    // The query meets f16 keys at f16 precision, as in llama.cpp.
    let q: Vec<f32> = q.iter().map(|v| half::f16::from_f32(*v).to_f32()).collect();
    let q = &q[..];
    let mut scores = vec![0f32; len];
    let hd = s.head_dim;
    for b in lo / KBLK..len.div_ceil(KBLK) {
        let keys = kv.key_block(b, kvh * hd, hd);
        let acc = scores_block(q, keys);
        let p0 = b * KBLK;
        for (j, a) in acc.iter().enumerate() {
            let p = p0 + j;
            if p >= lo && p < len {
                scores[p] = a * s.scale;
            }
        }
    }
    let scores = &mut scores[lo..];
    if let Some(cap) = s.softcap {
        super::activation::softcap(scores, cap);
    }
    super::activation::softmax(scores);
    // llama.cpp multiplies the f16 values by the probabilities rounded to f16
    scores
        .iter_mut()
        .for_each(|p| *p = half::f16::from_f32(*p).to_f32());
    values(scores, kv, lo, kvh * s.value_dim, out);
}

/// Scores of one query against a block of keys (`[hd][KBLK]`), each a sequential sum
/// over dimensions.
fn scores_block(q: &[f32], keys: &[half::f16]) -> [f32; KBLK] {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::avx2() {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        return unsafe { avx::scores_block(q, keys) };
    }
    let mut acc = [0f32; KBLK];
    for (qd, row) in q.iter().zip(keys.chunks_exact(KBLK)) {
        for (a, k) in acc.iter_mut().zip(row) {
            *a += qd * k.to_f32();
        }
    }
    acc
}

/// `out = Σ_p w[p] * v[lo + p]` over the value rows of one KV head.
fn values(w: &[f32], kv: &LayerKv, lo: usize, d0: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::quant::simd::avx2() && out.len().is_multiple_of(8) {
        // SAFETY: AVX2, FMA and F16C were detected at run time.
        return unsafe { avx::values(w, kv, lo, d0, out) };
    }
    out.fill(0.0);
    let vd = out.len();
    for (p, wp) in w.iter().enumerate() {
        for (o, v) in out.iter_mut().zip(kv.value(lo + p, d0, vd)) {
            *o += wp * v.to_f32();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scores_block(q: &[f32], keys: &[half::f16]) -> [f32; KBLK] {
        let mut acc = [_mm256_setzero_ps(); KBLK / 8];
        for (d, qd) in q.iter().enumerate() {
            let qv = _mm256_set1_ps(*qd);
            let row = keys.as_ptr().add(d * KBLK) as *const __m128i;
            for (j, a) in acc.iter_mut().enumerate() {
                let k = _mm256_cvtph_ps(_mm_loadu_si128(row.add(j)));
                *a = _mm256_fmadd_ps(qv, k, *a);
            }
        }
        let mut out = [0f32; KBLK];
        for (j, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.as_mut_ptr().add(8 * j), *a);
        }
        out
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn values(w: &[f32], kv: &LayerKv, lo: usize, d0: usize, out: &mut [f32]) {
        let vd = out.len();
        for c in (0..vd).step_by(32).map(|c| c..(c + 32).min(vd)) {
            let lanes = c.len() / 8;
            let mut acc = [_mm256_setzero_ps(); 4];
            for (p, wp) in w.iter().enumerate() {
                let wv = _mm256_set1_ps(*wp);
                let v = kv.value(lo + p, d0 + c.start, c.len()).as_ptr() as *const __m128i;
                for (l, a) in acc.iter_mut().enumerate().take(lanes) {
                    *a = _mm256_fmadd_ps(wv, _mm256_cvtph_ps(_mm_loadu_si128(v.add(l))), *a);
                }
            }
            for (l, a) in acc.iter().enumerate().take(lanes) {
                _mm256_storeu_ps(out.as_mut_ptr().add(c.start + 8 * l), *a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(s: &AttnSpec, q: &[f32], k: &[Vec<f32>], v: &[Vec<f32>], pos: usize) -> Vec<f32> {
        let lo = s.window.map_or(0, |w| (pos + 1).saturating_sub(w));
        let mut sc: Vec<f32> = (lo..=pos)
            .map(|p| q.iter().zip(&k[p]).map(|(a, b)| a * b).sum::<f32>() * s.scale)
            .map(|x| s.softcap.map_or(x, |c| (x * (1.0 / c)).tanh() * c))
            .collect();
        crate::block::softmax(&mut sc);
        sc.iter_mut()
            .for_each(|p| *p = half::f16::from_f32(*p).to_f32());
        let mut o = vec![0f32; s.value_dim];
        for (i, w) in sc.iter().enumerate() {
            for (a, b) in o.iter_mut().zip(&v[lo + i]) {
                *a += w * b;
            }
        }
        o
    }

    #[test]
    fn matches_naive_with_window_and_softcap() {
        let hd = 16;
        let f = |i: usize| ((i * 7919) % 97) as f32 / 48.0 - 1.0;
        let k: Vec<Vec<f32>> = (0..150)
            .map(|p| (0..hd).map(|d| f(p * hd + d)).collect())
            .collect();
        let v: Vec<Vec<f32>> = (0..150)
            .map(|p| (0..hd).map(|d| f(p * 31 + d * 3)).collect())
            .collect();
        let k16: Vec<Vec<f32>> = k
            .iter()
            .map(|r| r.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect())
            .collect();
        let v16: Vec<Vec<f32>> = v
            .iter()
            .map(|r| r.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect())
            .collect();
        let mut cache = LayerKv::new(hd, hd);
        cache.push(&k.concat(), &v.concat());
        for (window, softcap) in [(None, None), (Some(70), Some(5.0))] {
            let s = AttnSpec {
                n_heads: 1,
                n_kv_heads: 1,
                head_dim: hd,
                value_dim: hd,
                scale: 0.25,
                softcap,
                window,
            };
            let q: Vec<f32> = (0..2 * hd).map(|i| f(i * 13 + 5)).collect();
            let mut out = vec![0f32; 2 * hd];
            // The last two positions as two new queries.
            attend(
                &s,
                &mut [AttnItem {
                    q: &q,
                    cache: &cache,
                    n: 2,
                    out: &mut out,
                }],
            );
            for t in 0..2 {
                let want = naive(&s, &q[t * hd..(t + 1) * hd], &k16, &v16, 148 + t);
                for (a, b) in out[t * hd..(t + 1) * hd].iter().zip(&want) {
                    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
                }
            }
            // A query alone gives the same bits as inside the batch.
            let mut one = vec![0f32; hd];
            let mut c1 = cache.clone();
            c1.truncate(149);
            attend(
                &s,
                &mut [AttnItem {
                    q: &q[..hd],
                    cache: &c1,
                    n: 1,
                    out: &mut one,
                }],
            );
            assert_eq!(one, out[..hd]);
        }
    }
}
