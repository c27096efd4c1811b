//! RMS normalisation (the sum of squares in f64, like ggml).

/// `out = x / rms(x) * w` for each row of `x` (rows of `w.len()` values).
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        let scale = inv_rms(xr, eps);
        for ((o, v), g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * scale * g;
        }
    }
}

/// In-place [`rms_norm`] (e.g. of each head of q and k, with `w` of one head's size).
pub fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32) {
    let dim = w.len();
    for xr in x.chunks_exact_mut(dim) {
        let scale = inv_rms(xr, eps);
        for (v, g) in xr.iter_mut().zip(w) {
            *v = *v * scale * g;
        }
    }
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let sum: f64 = x.iter().map(|v| (v * v) as f64).sum();
    let mean = (sum / x.len() as f64) as f32;
    1.0 / (mean + eps).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_rms() {
        let x = [3.0, 4.0];
        let mut o = [0.0; 2];
        rms_norm(&x, &[1.0, 1.0], 0.0, &mut o);
        let rms = ((o[0] * o[0] + o[1] * o[1]) / 2.0f32).sqrt();
        assert!((rms - 1.0).abs() < 1e-5);
        let mut y = x;
        rms_norm_inplace(&mut y, &[1.0, 1.0], 0.0);
        assert_eq!(y, o);
    }
}
