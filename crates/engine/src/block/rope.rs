//! Rotary position embedding as ggml computes it: "normal" (adjacent pairs, llama GGUF
//! files) and "NeoX" (pairs half a head apart: Qwen, Gemma, Phi-3) modes; frequency
//! factors (Llama 3's `rope_freqs`, Phi-3's long/short factors), linear scaling and YaRN.

/// Which elements form a rotated pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeMode {
    /// `(2i, 2i + 1)`.
    Normal,
    /// `(i, i + n_rot / 2)`.
    Neox,
}

/// YaRN context extension parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yarn {
    pub ext_factor: f32,
    pub beta_fast: f32,
    pub beta_slow: f32,
    pub orig_ctx: usize,
}

/// Everything that defines the rotation of one layer.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    pub mode: RopeMode,
    /// Dimensions of each head that are rotated (the rest pass through).
    pub n_rot: usize,
    pub base: f32,
    /// `1 / factor` of linear scaling (1 = none).
    pub freq_scale: f32,
    pub attn_factor: f32,
    pub yarn: Option<Yarn>,
    /// Per-pair divisors of the frequency.
    pub freq_factors: Option<Vec<f32>>,
}

impl RopeSpec {
    /// Plain rotary embedding over `n_rot` dimensions.
    pub fn plain(mode: RopeMode, n_rot: usize, base: f32) -> RopeSpec {
        RopeSpec {
            mode,
            n_rot,
            base,
            freq_scale: 1.0,
            attn_factor: 1.0,
            yarn: None,
            freq_factors: None,
        }
    }

    /// `(cos, sin)` of each pair for positions `pos0..pos0 + n`, `[n, n_rot / 2]`.
    pub fn table(&self, pos0: usize, n: usize) -> Vec<(f32, f32)> {
        let half = self.n_rot / 2;
        let theta_scale = self.base.powf(-2.0 / self.n_rot as f32);
        let (ext, corr) = match &self.yarn {
            Some(y) => (y.ext_factor, self.corr_dims(y)),
            None => (0.0, [0.0, 0.0]),
        };
        let mut out = Vec::with_capacity(n * half);
        for p in pos0..pos0 + n {
            let mut theta = p as f32;
            for i in 0..half {
                let ff = self.freq_factors.as_ref().map_or(1.0, |f| f[i]);
                out.push(self.yarn_cos_sin(theta / ff, 2 * i, ext, corr));
                theta *= theta_scale;
            }
        }
        out
    }

    fn yarn_cos_sin(&self, theta_extrap: f32, i0: usize, ext: f32, corr: [f32; 2]) -> (f32, f32) {
        let theta_interp = self.freq_scale * theta_extrap;
        let mut theta = theta_interp;
        let mut mscale = self.attn_factor;
        if ext != 0.0 {
            let y = (i0 as f32 / 2.0 - corr[0]) / (corr[1] - corr[0]).max(0.001);
            let ramp = (1.0 - y.clamp(0.0, 1.0)) * ext;
            theta = theta_interp * (1.0 - ramp) + theta_extrap * ramp;
            mscale *= 1.0 + 0.1 * (1.0 / self.freq_scale).ln();
        }
        (theta.cos() * mscale, theta.sin() * mscale)
    }

    fn corr_dims(&self, y: &Yarn) -> [f32; 2] {
        let n = self.n_rot as f32;
        let dim = |rot: f32| {
            n * (y.orig_ctx as f32 / (rot * 2.0 * std::f32::consts::PI)).ln()
                / (2.0 * self.base.ln())
        };
        [
            dim(y.beta_fast).floor().max(0.0),
            dim(y.beta_slow).ceil().min(n - 1.0),
        ]
    }

    /// Rotates every head of `x` (`[n_heads * head_dim]`, one position) with one row of
    /// [`RopeSpec::table`].
    pub fn apply(&self, x: &mut [f32], head_dim: usize, cs: &[(f32, f32)]) {
        let half = self.n_rot / 2;
        for head in x.chunks_exact_mut(head_dim) {
            for (i, (c, s)) in cs.iter().enumerate() {
                let (a, b) = match self.mode {
                    RopeMode::Normal => (2 * i, 2 * i + 1),
                    RopeMode::Neox => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_at_zero_and_keeps_norm() {
        for mode in [RopeMode::Normal, RopeMode::Neox] {
            let r = RopeSpec::plain(mode, 4, 10000.0);
            let mut x = [1.0, 2.0, 3.0, 4.0];
            r.apply(&mut x, 4, &r.table(0, 1));
            assert_eq!(x, [1.0, 2.0, 3.0, 4.0]);
            r.apply(&mut x, 4, &r.table(7, 1));
            let n: f32 = x.iter().map(|v| v * v).sum();
            assert!((n - 30.0).abs() < 1e-4);
        }
    }

    #[test]
    fn partial_rotation_leaves_the_rest() {
        let r = RopeSpec::plain(RopeMode::Neox, 2, 10000.0);
        let mut x = [1.0, 2.0, 3.0, 4.0];
        r.apply(&mut x, 4, &r.table(5, 1));
        assert_eq!(&x[2..], &[3.0, 4.0]);
        assert_ne!(x[0], 1.0);
    }

    #[test]
    fn frequency_factors_slow_the_rotation() {
        let mut r = RopeSpec::plain(RopeMode::Normal, 2, 10000.0);
        let plain = r.table(3, 1)[0];
        r.freq_factors = Some(vec![3.0]);
        let slowed = r.table(3, 1)[0];
        let one = RopeSpec::plain(RopeMode::Normal, 2, 10000.0).table(1, 1)[0];
        assert!((slowed.0 - one.0).abs() < 1e-6 && (slowed.1 - one.1).abs() < 1e-6);
        assert_ne!(plain, slowed);
    }
}
