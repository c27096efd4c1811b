//! Element-wise functions of the blocks: softmax, SiLU/GELU gates, soft-capping.

use half::f16;
use std::sync::OnceLock;

/// In-place softmax (as ggml: the sum in f64, then a multiplication by its inverse).
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let mut sum = 0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    let inv = (1.0 / sum) as f32;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// The gate's activation in a gated feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// `silu(gate) * up` (SwiGLU).
    Silu,
    /// `gelu(gate) * up` with GELU's tanh approximation (GeGLU, Gemma), computed as ggml
    /// does on the CPU: the gate rounded to f16 and looked up in an f16 table.
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
                let table = gelu_table();
                for (g, u) in gate.iter_mut().zip(up) {
                    let x = *g;
                    *g = if x <= -10.0 {
                        0.0
                    } else if x >= 10.0 {
                        x * u
                    } else {
                        table[f16::from_f32(x).to_bits() as usize].to_f32() * u
                    };
                }
            }
        }
    }
}

/// GELU (tanh approximation) in f32.
pub fn gelu(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6; // ggml: 0.79788456080286535587989211986876f
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh())
}

/// GELU of every f16 value, rounded to f16 (ggml's `ggml_table_gelu_f16`).
fn gelu_table() -> &'static [f16] {
    static TABLE: OnceLock<Vec<f16>> = OnceLock::new();
    TABLE.get_or_init(|| {
        (0..=u16::MAX)
            .map(|b| f16::from_f32(gelu(f16::from_bits(b).to_f32())))
            .collect()
    })
}

/// `cap * tanh(x * (1 / cap))` for every value (ggml's order of operations).
pub fn softcap(x: &mut [f32], cap: f32) {
    let inv = 1.0 / cap;
    for v in x.iter_mut() {
        *v = (*v * inv).tanh() * cap;
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
        assert!((g[0] - 0.841_192).abs() < 1e-3 && (g[1] - 2.996_363).abs() < 2e-3);
        let mut g = [-11.0, 12.0];
        Gate::Gelu.apply(&mut g, &[1.0, 0.5]);
        assert_eq!(g, [0.0, 6.0]);
        let mut x = [100.0];
        softcap(&mut x, 30.0);
        assert!(x[0] < 30.0 && x[0] > 29.0);
    }
}
