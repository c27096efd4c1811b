//! Mixture-of-experts feed-forward block, as llama.cpp's `build_moe_ffn` with softmax
//! gating: a router picks the top-k experts of each token (softmax over all experts, then
//! renormalised over the chosen ones when asked; ties go to the lower index), each expert
//! is a gated FFN, and a token's output is the weighted sum of its experts' outputs in
//! the order they were chosen (so it does not depend on the batch).

use super::activation::{softmax, Gate};
use super::linear::{matmul, matmul_many, Linear};
use crate::quant::Input;

/// The weights of one MoE block; expert tensors hold all experts' rows stacked.
pub struct Moe {
    pub router: Linear,
    pub gate: Linear,
    pub up: Linear,
    pub down: Linear,
    pub n_experts: usize,
    pub n_used: usize,
    pub norm_top_k: bool,
    pub act: Gate,
}

impl Moe {
    /// `out = moe(x)` for `n` rows.
    pub fn forward(&self, x: &[f32], n: usize, out: &mut [f32]) {
        let dim = x.len() / n;
        let ne = self.n_experts;
        let ff = self.gate.rows / ne;
        let mut logits = vec![0f32; n * ne];
        matmul(&Input::new(x, n), &self.router, &mut logits);
        // Per token: chosen experts and weights, in choice order.
        let mut choice = Vec::with_capacity(n * self.n_used);
        for row in logits.chunks_exact_mut(ne) {
            softmax(row);
            let mut idx: Vec<usize> = (0..ne).collect();
            idx.sort_by(|a, b| row[*b].total_cmp(&row[*a]).then(a.cmp(b)));
            let top = &idx[..self.n_used];
            // (clamped like llama.cpp: never below f16's smallest normal)
            let sum = top.iter().map(|e| row[*e]).sum::<f32>().max(6.103_515_6e-5);
            for e in top {
                let w = if self.norm_top_k {
                    row[*e] / sum
                } else {
                    row[*e]
                };
                choice.push((*e, w));
            }
        }
        // Each expert runs once over the tokens routed to it.
        let mut results = vec![0f32; n * self.n_used * dim];
        for e in 0..ne {
            let slots: Vec<usize> = (0..choice.len()).filter(|s| choice[*s].0 == e).collect();
            if slots.is_empty() {
                continue;
            }
            let m = slots.len();
            let mut xs = Vec::with_capacity(m * dim);
            for s in &slots {
                let t = s / self.n_used;
                xs.extend_from_slice(&x[t * dim..(t + 1) * dim]);
            }
            let (gate, up) = (
                self.gate.rows(e * ff..(e + 1) * ff),
                self.up.rows(e * ff..(e + 1) * ff),
            );
            let mut g = vec![0f32; m * ff];
            let mut u = vec![0f32; m * ff];
            matmul_many(&Input::new(&xs, m), &mut [(&gate, &mut g), (&up, &mut u)]);
            self.act.apply(&mut g, &u);
            let down = self.down.rows(e * dim..(e + 1) * dim);
            let mut y = vec![0f32; m * dim];
            matmul(&Input::new(&g, m), &down, &mut y);
            for (k, s) in slots.iter().enumerate() {
                results[s * dim..(s + 1) * dim].copy_from_slice(&y[k * dim..(k + 1) * dim]);
            }
        }
        for (t, o) in out.chunks_exact_mut(dim).enumerate() {
            o.fill(0.0);
            for j in 0..self.n_used {
                let s = t * self.n_used + j;
                let w = choice[s].1;
                for (a, b) in o.iter_mut().zip(&results[s * dim..(s + 1) * dim]) {
                    *a += w * b;
                }
            }
        }
    }
}
