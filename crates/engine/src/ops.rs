//! Small element-wise kernels of the llama block.

/// `out = x / rms(x) * w` for each row of `x` (`[n, dim]`).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        let scale = 1.0 / (ms + eps).sqrt();
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// Rotary tables: `cos`/`sin` of `pos * theta^(-2i/d)` for the pairs of a head.
pub struct Rope {
    inv_freq: Vec<f32>,
}

impl Rope {
    pub fn new(head_dim: usize, theta: f32) -> Rope {
        let inv_freq = (0..head_dim / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f32 / head_dim as f32))
            .collect();
        Rope { inv_freq }
    }

    /// `(sin, cos)` pairs for positions `pos0..pos0 + n`, `[n, head_dim / 2]`.
    pub fn table(&self, pos0: usize, n: usize) -> Vec<(f32, f32)> {
        (pos0..pos0 + n)
            .flat_map(|p| self.inv_freq.iter().map(move |f| (p as f32 * f).sin_cos()))
            .collect()
    }

    /// Rotates adjacent pairs (ggml's "normal" rope, which llama GGUF files are
    /// converted for) of every head in `x` (`[n_heads * head_dim]`) with one position's
    /// row of [`Rope::table`].
    pub fn apply(x: &mut [f32], head_dim: usize, sc: &[(f32, f32)]) {
        for head in x.chunks_exact_mut(head_dim) {
            for (i, (s, c)) in sc.iter().enumerate() {
                let (a, b) = (head[2 * i], head[2 * i + 1]);
                head[2 * i] = a * c - b * s;
                head[2 * i + 1] = a * s + b * c;
            }
        }
    }

    /// Rotates `x` at position `pos` (convenience for one position).
    pub fn apply_at(&self, x: &mut [f32], head_dim: usize, pos: usize) {
        Self::apply(x, head_dim, &self.table(pos, 1));
    }
}

/// Dot product with 8 independent accumulators, so the compiler can vectorise it.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// In-place softmax.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in x.iter_mut() {
        *v /= sum;
    }
}

/// `gate = silu(gate) * up`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_unit_rms() {
        let x = [3.0, 4.0];
        let mut o = [0.0; 2];
        rms_norm(&x, &[1.0, 1.0], 0.0, &mut o);
        let rms = ((o[0] * o[0] + o[1] * o[1]) / 2.0f32).sqrt();
        assert!((rms - 1.0).abs() < 1e-5);
    }

    #[test]
    fn rope_keeps_norm_and_is_identity_at_zero() {
        let r = Rope::new(4, 10000.0);
        let mut x = [1.0, 2.0, 3.0, 4.0];
        r.apply_at(&mut x, 4, 0);
        assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
        r.apply_at(&mut x, 4, 7);
        let n: f32 = x.iter().map(|v| v * v).sum();
        assert!((n - 30.0).abs() < 1e-4);
    }

    #[test]
    fn dot_matches_naive() {
        let a: Vec<f32> = (0..21).map(|i| i as f32 * 0.5).collect();
        let b: Vec<f32> = (0..21).map(|i| 1.0 - i as f32 * 0.1).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - naive).abs() < 1e-3);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0, 2.0, 3.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }
}
