//! The weights of one transformer layer, loaded as the family's spec says.

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
    Dense { gate: Option<Linear>, up: Linear, down: Linear },
    Moe(Moe),
}

/// One layer's weights.
pub struct Layer {
    pub attn_norm: Vec<f32>,
    pub qkv: Qkv,
    /// Q, K, V biases (Qwen 2).
    pub bias: Option<[Vec<f32>; 3]>,
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wo: Linear,
    pub post_attn_norm: Option<Vec<f32>>,
    pub ffn_norm: Vec<f32>,
    pub ffn: Ffn,
    pub post_ffn_norm: Option<Vec<f32>>,
}

impl Layer {
    /// Loads layer `i` of `f` (only its own tensors are touched).
    pub fn load(f: &GgufFile, spec: &Spec, i: usize) -> Result<Layer> {
        let n = |s: &str| format!("blk.{i}.{s}.weight");
        let opt_vec = |s: &str| -> Result<Option<Vec<f32>>> {
            let name = n(s);
            f.has(&name).then(|| load_vector(f, &name)).transpose()
        };
        let mat = |s: &str| Linear::load(f, &n(s));
        let qkv = if spec.fused_qkv {
            Qkv::Fused(mat("attn_qkv")?)
        } else {
            Qkv::Separate {
                q: mat("attn_q")?,
                k: mat("attn_k")?,
                v: mat("attn_v")?,
            }
        };
        let bias = if f.has(&format!("blk.{i}.attn_q.bias")) {
            let b = |s: &str| load_vector(f, &format!("blk.{i}.{s}.bias"));
            Some([b("attn_q")?, b("attn_k")?, b("attn_v")?])
        } else {
            None
        };
        let ffn = match &spec.moe {
            Some(moe) => Ffn::Moe(Moe {
                router: mat("ffn_gate_inp")?,
                gate: mat("ffn_gate_exps")?,
                up: mat("ffn_up_exps")?,
                down: mat("ffn_down_exps")?,
                n_experts: moe.n_experts,
                n_used: moe.n_used,
                norm_top_k: moe.norm_top_k,
                act: spec.gate,
            }),
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
        let need = |v: Option<Vec<f32>>, s: &str| v.ok_or_else(|| EngineError::MissingTensor(n(s)));
        Ok(Layer {
            attn_norm: load_vector(f, &n("attn_norm"))?,
            qkv,
            bias,
            q_norm: if spec.qk_norm { Some(need(opt_vec("attn_q_norm")?, "attn_q_norm")?) } else { None },
            k_norm: if spec.qk_norm { Some(need(opt_vec("attn_k_norm")?, "attn_k_norm")?) } else { None },
            wo: mat("attn_output")?,
            post_attn_norm: if spec.post_norms {
                Some(need(opt_vec("post_attention_norm")?, "post_attention_norm")?)
            } else {
                None
            },
            ffn_norm: load_vector(f, &n("ffn_norm"))?,
            ffn,
            post_ffn_norm: if spec.post_norms {
                Some(need(opt_vec("post_ffw_norm")?, "post_ffw_norm")?)
            } else {
                None
            },
        })
    }

    /// Bytes of this layer's matrices.
    pub fn weight_bytes(&self) -> usize {
        let qkv = match &self.qkv {
            Qkv::Separate { q, k, v } => q.bytes() + k.bytes() + v.bytes(),
            Qkv::Fused(m) => m.bytes(),
        };
        let ffn = match &self.ffn {
            Ffn::Dense { gate, up, down } => gate.as_ref().map_or(0, |g| g.bytes()) + up.bytes() + down.bytes(),
            Ffn::Moe(m) => m.router.bytes() + m.gate.bytes() + m.up.bytes() + m.down.bytes(),
        };
        qkv + self.wo.bytes() + ffn
    }
}
