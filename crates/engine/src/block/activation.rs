//! Element-wise functions of the blocks: softmax, SiLU/GELU gates, soft-capping.

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

/// The gate's activation in a gated feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `silu(gate) * up` (SwiGLU).
    Silu,
    /// `gelu(gate) * up` with GELU's tanh approximation (GeGLU, Gemma).
    Gelu,
}

impl Gate {
    /// `gate = act(gate) * up`.
    pub fn apply(self, gate: &mut [f32], up: &[f32]) {
        match self {
            Gate::Silu => {
                for (g, u) in gate.iter_mut().zip(up) {
                    *g = *g / (1.0 + (-*g).exp()) * u;
                }
            }
            Gate::Gelu => {
                const C: f32 = 0.797_884_6; // sqrt(2 / pi)
                for (g, u) in gate.iter_mut().zip(up) {
                    let x = *g;
                    *g = 0.5 * x * (1.0 + (C * x * (1.0 + 0.044715 * x * x)).tanh()) * u;
                }
            }
        }
    }
}

/// `cap * tanh(x / cap)` for every value.
pub fn softcap(x: &mut [f32], cap: f32) {
    for v in x.iter_mut() {
        *v = cap * (*v / cap).tanh();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let mut x = [1.0, 2.0, 3.0];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[2] > x[1] && x[1] > x[0]);
    }

    #[test]
    fn gates() {
        let mut g = [0.0, 1.0, -20.0];
        Gate::Silu.apply(&mut g, &[1.0, 2.0, 1.0]);
        assert!((g[1] - 2.0 * 0.731_058_6).abs() < 1e-5 && g[0] == 0.0 && g[2].abs() < 1e-6);
        let mut g = [1.0, 3.0];
        Gate::Gelu.apply(&mut g, &[1.0, 1.0]);
        assert!((g[0] - 0.841_192).abs() < 1e-4 && (g[1] - 2.996_363).abs() < 1e-4);
        let mut x = [100.0];
        softcap(&mut x, 30.0);
        assert!(x[0] < 30.0 && x[0] > 29.0);
    }
}
