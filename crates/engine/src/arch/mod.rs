//! Model families. Each family is a small file that reads its hyper-parameters from GGUF
//! metadata and returns a [`Spec`]: which shared blocks a layer uses and how. The tensor
//! names are GGUF's standard ones (`blk.N.attn_q.weight`, ...), so the loader in `model`
//! needs no family knowledge beyond the spec.

mod llama;

use crate::block::{AttnSpec, Gate, RopeMode, RopeSpec, Yarn};
use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, Meta};

/// The architectures this engine runs (`general.architecture`).
pub const SUPPORTED: &[&str] = &["llama"];

/// Routing of a mixture-of-experts feed-forward block.
#[derive(Debug, Clone, PartialEq)]
pub struct MoeSpec {
    pub n_experts: usize,
    /// Experts each token is sent to.
    pub n_used: usize,
    /// Hidden size of each expert.
    pub expert_ffn: usize,
    /// Renormalise the chosen experts' weights to sum to 1.
    pub norm_top_k: bool,
}

/// Per-layer settings (they differ between layers in Gemma's local/global pattern).
#[derive(Debug, Clone)]
pub struct LayerSpec {
    pub attn: AttnSpec,
    /// Index into [`Spec::ropes`].
    pub rope: usize,
}

/// Everything the shared blocks need to run one family's model.
#[derive(Debug, Clone)]
pub struct Spec {
    pub arch: String,
    pub n_layers: usize,
    pub dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub value_dim: usize,
    pub ffn: usize,
    pub vocab: usize,
    pub context_length: usize,
    pub norm_eps: f32,
    /// Q, K, V in one matrix `attn_qkv`.
    pub fused_qkv: bool,
    /// Gate and up in one matrix `ffn_up` (gate first).
    pub fused_gate_up: bool,
    /// Per-head RMS norm of queries and keys (`attn_q_norm`, `attn_k_norm`).
    pub qk_norm: bool,
    /// Norms after attention and after the feed-forward block (Gemma 2/3).
    pub post_norms: bool,
    pub gate: Gate,
    pub moe: Option<MoeSpec>,
    /// Multiplies the embedding (Gemma: `sqrt(dim)`).
    pub embed_scale: Option<f32>,
    /// Soft-capping of the final logits (Gemma 2).
    pub final_softcap: Option<f32>,
    /// Distinct rotary settings used by the layers.
    pub ropes: Vec<RopeSpec>,
    pub layers: Vec<LayerSpec>,
}

impl Spec {
    /// Reads the spec of the model in `f`, or explains that its family is unsupported.
    pub fn read(f: &GgufFile) -> Result<Spec> {
        let arch = f.info.architecture.as_str();
        match arch {
            "llama" => llama::spec(f),
            other => Err(unsupported(other)),
        }
    }

    /// A spec with the settings every family shares, read from `{arch}.*` keys: standard
    /// attention, SwiGLU, no MoE; `rope` for every layer.
    pub fn base(f: &GgufFile, mode: RopeMode) -> Result<Spec> {
        let i = &f.info;
        let m = f.md();
        let k = |s: &str| format!("{}.{s}", i.architecture);
        let rope = rope_from_meta(f, mode, i.head_dim)?;
        let attn = AttnSpec {
            n_heads: i.n_heads,
            n_kv_heads: i.n_kv_heads,
            head_dim: i.head_dim,
            value_dim: i.value_dim,
            scale: m
                .f32_or(&k("attention.scale"), 0.0)
                .ok()
                .filter(|s| *s != 0.0)
                .unwrap_or(1.0 / (i.head_dim as f32).sqrt()),
            softcap: None,
            window: None,
        };
        if i.n_kv_heads == 0 || i.n_heads % i.n_kv_heads != 0 {
            return Err(EngineError::InvalidInput(format!(
                "{} query heads cannot be grouped over {} KV heads",
                i.n_heads, i.n_kv_heads
            )));
        }
        Ok(Spec {
            arch: i.architecture.clone(),
            n_layers: i.n_layers,
            dim: i.hidden_size,
            n_heads: i.n_heads,
            n_kv_heads: i.n_kv_heads,
            head_dim: i.head_dim,
            value_dim: i.value_dim,
            ffn: i.ffn_size,
            vocab: i.vocab_size,
            context_length: i.context_length,
            norm_eps: i.rms_eps,
            fused_qkv: false,
            fused_gate_up: false,
            qk_norm: false,
            post_norms: false,
            gate: Gate::Silu,
            moe: moe_from_meta(&m, &i.architecture)?,
            embed_scale: None,
            final_softcap: None,
            ropes: vec![rope],
            layers: vec![LayerSpec { attn, rope: 0 }; i.n_layers],
        })
    }
}

/// The error for an architecture outside [`SUPPORTED`].
pub fn unsupported(arch: &str) -> EngineError {
    EngineError::UnsupportedArchitecture(arch.to_string())
}

/// Rotary settings from `{arch}.rope.*` keys and the `rope_freqs` tensor.
pub fn rope_from_meta(f: &GgufFile, mode: RopeMode, head_dim: usize) -> Result<RopeSpec> {
    let m = f.md();
    let k = |s: &str| format!("{}.{s}", f.info.architecture);
    let n_rot = m.usize_or(&k("rope.dimension_count"), head_dim)?;
    let mut rope = RopeSpec::plain(mode, n_rot, f.info.rope_theta);
    let factor = m
        .f32(&k("rope.scaling.factor"))
        .or_else(|_| m.f32(&k("rope.scale_linear")))
        .unwrap_or(0.0);
    if factor != 0.0 {
        rope.freq_scale = 1.0 / factor;
    }
    let kind = m.str(&k("rope.scaling.type")).unwrap_or("linear");
    match kind {
        "none" | "linear" => {}
        "yarn" => {
            rope.yarn = Some(Yarn {
                ext_factor: 1.0,
                beta_fast: m.f32_or(&k("rope.scaling.yarn_beta_fast"), 32.0)?,
                beta_slow: m.f32_or(&k("rope.scaling.yarn_beta_slow"), 1.0)?,
                orig_ctx: m.usize_or(
                    &k("rope.scaling.original_context_length"),
                    f.info.context_length,
                )?,
            });
            // ggml multiplies by (1 + 0.1 ln(factor)) inside; llama.cpp cancels that here.
            rope.attn_factor = m.f32_or(&k("rope.scaling.attn_factor"), 1.0)?;
        }
        other => {
            return Err(EngineError::InvalidInput(format!(
                "rope scaling type '{other}' is not supported (none, linear, yarn are)"
            )))
        }
    }
    if f.has("rope_freqs.weight") {
        rope.freq_factors = Some(crate::block::load_vector(f, "rope_freqs.weight")?);
    }
    Ok(rope)
}

/// Mixture-of-experts settings from `{arch}.expert_*` keys (none when absent).
pub fn moe_from_meta(m: &Meta, arch: &str) -> Result<Option<MoeSpec>> {
    let k = |s: &str| format!("{arch}.{s}");
    let n_experts = m.usize_or(&k("expert_count"), 0)?;
    if n_experts == 0 {
        return Ok(None);
    }
    Ok(Some(MoeSpec {
        n_experts,
        n_used: m.usize(&k("expert_used_count"))?,
        expert_ffn: m.usize_or(&k("expert_feed_forward_length"), 0)?,
        norm_top_k: m.bool_or(&k("expert_weights_norm"), true),
    }))
}
