//! The weights of one transformer layer, loaded as the family's spec says. Like llama.cpp,
//! any family may store Q/K/V fused in `attn_qkv`, and carry Q/K/V and output biases.

use crate::arch::Spec;
use crate::block::{load_vector, Linear, Moe};
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

/// Query, key and value projections: separate, or one fused matrix (Phi-3).
pub enum Qkv {
    Separate { q: Linear, k: Linear, v: Linear },
    Fused(Linear),
}

/// The feed-forward block: dense (gate may be fused into up) or mixture of experts.
pub enum Ffn {
    Dense {
        gate: Option<Linear>,
        up: Linear,
        down: Linear,
    },
    Moe(Moe),
}

/// One layer's weights.
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub qkv: Qkv,
    /// Q, K, V biases (Qwen 2); a missing one of the three is zeros.
    pub bias: Option<[Vec<f32>; 3]>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wo: Linear,
    pub wo_bias: Option<Vec<f32>>,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
    pub post_ffn_norm: Option<Vec<f32>>,
}

impl Layer {
    /// Loads layer `i` of `f` (only its own tensors are touched).
    pub fn load(f: &GgufFile, spec: &Spec, i: usize) -> Result<Layer> {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        let b = |s: &str| format!("blk.{i}.{s}.bias");
        let opt = |name: String| f.has(&name).then(|| load_vector(f, &name)).transpose();
        let vec_if = |on: bool, s: &str| on.then(|| load_vector(f, &n(s))).transpose();
        let mat = |s: &str| Linear::load(f, &n(s)).map(Linear::pack);
        let (qd, kd) = (
            spec.n_heads * spec.head_dim,
            spec.n_kv_heads * spec.head_dim,
        );
        let vd = spec.n_kv_heads * spec.value_dim;
        let (qkv, bias) = if f.has(&n("attn_qkv")) {
            let w = mat("attn_qkv")?;
            check_rows(&w, qd + kd + vd, &n("attn_qkv"))?;
            let bias = opt(b("attn_qkv"))?.map(|v| {
                [
                    v[..qd].to_vec(),
                    v[qd..qd + kd].to_vec(),
                    v[qd + kd..].to_vec(),
                ]
            });
            (Qkv::Fused(w), bias)
        } else {
            let (q, k, v) = (mat("attn_q")?, mat("attn_k")?, mat("attn_v")?);
            check_rows(&q, qd, &n("attn_q"))?;
            check_rows(&k, kd, &n("attn_k"))?;
            check_rows(&v, vd, &n("attn_v"))?;
            (Qkv::Separate { q, k, v }, None)
        };
        let bias = match bias {
            Some(b) => Some(b),
            None => {
                let [bq, bk, bv] = [opt(b("attn_q"))?, opt(b("attn_k"))?, opt(b("attn_v"))?];
                (bq.is_some() || bk.is_some() || bv.is_some()).then(|| {
                    [
                        bq.unwrap_or(vec![0.0; qd]),
                        bk.unwrap_or(vec![0.0; kd]),
                        bv.unwrap_or(vec![0.0; vd]),
                    ]
                })
            }
        };
        let ffn = match &spec.moe {
            Some(moe) => {
                let m = Moe {
                    router: mat("ffn_gate_inp")?,
                    gate: mat("ffn_gate_exps")?,
                    up: mat("ffn_up_exps")?,
                    down: mat("ffn_down_exps")?,
                    n_experts: moe.n_experts,
                    n_used: moe.n_used,
                    norm_top_k: moe.norm_top_k,
                    act: spec.gate,
                };
                let ef = moe.n_experts * moe.expert_ffn;
                check_rows(&m.router, moe.n_experts, &n("ffn_gate_inp"))?;
                check_rows(&m.gate, ef, &n("ffn_gate_exps"))?;
                check_rows(&m.up, ef, &n("ffn_up_exps"))?;
                check_rows(&m.down, moe.n_experts * spec.dim, &n("ffn_down_exps"))?;
                Ffn::Moe(m)
            }
            None => Ffn::Dense {
                gate: if spec.fused_gate_up {
                    None
                } else {
                    Some(mat("ffn_gate")?)
                },
                up: mat("ffn_up")?,
                down: mat("ffn_down")?,
            },
        };
        Ok(Layer {
            attn_norm: load_vector(f, &n("attn_norm"))?,
            qkv,
            bias,
            q_norm: vec_if(spec.qk_norm, "attn_q_norm")?,
            k_norm: vec_if(spec.qk_norm, "attn_k_norm")?,
            wo: mat("attn_output")?,
            wo_bias: opt(b("attn_output"))?,
            post_attn_norm: vec_if(spec.post_norms, "post_attention_norm")?,
            ffn_norm: load_vector(f, &n("ffn_norm"))?,
            ffn,
            post_ffn_norm: vec_if(spec.post_norms, "post_ffw_norm")?,
        })
    }

    /// Bytes of this layer's matrices.
    pub fn weight_bytes(&self) -> usize {
        let qkv = match &self.qkv {
            Qkv::Separate { q, k, v } => q.bytes() + k.bytes() + v.bytes(),
            Qkv::Fused(m) => m.bytes(),
        };
        let ffn = match &self.ffn {
            Ffn::Dense { gate, up, down } => {
                gate.as_ref().map_or(0, |g| g.bytes()) + up.bytes() + down.bytes()
            }
            Ffn::Moe(m) => m.router.bytes() + m.gate.bytes() + m.up.bytes() + m.down.bytes(),
        };
        qkv + self.wo.bytes() + ffn
    }
}

/// Checks that a projection has the rows the spec expects.
fn check_rows(w: &Linear, rows: usize, name: &str) -> Result<()> {
    if w.rows != rows {
        return Err(EngineError::InvalidInput(format!(
            "{name}: {} rows, the model's hyper-parameters need {rows}",
            w.rows
        )));
    }
    Ok(())
}
