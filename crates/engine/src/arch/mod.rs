//! Model families. Each family is a small file that reads its hyper-parameters from GGUF
//! metadata and returns a [`Spec`]: which shared blocks a layer uses and how. The tensor
//! names are GGUF's standard ones (`blk.N.attn_q.weight`, ...), so the loader in `model`
//! needs no family knowledge beyond the spec. Every choice follows llama.cpp (the
//! reference the tests compare against), including what it ignores.

mod gemma2;
mod gemma3;
mod llama;
mod phi3;
mod qwen2;
mod qwen3;
mod qwen3moe;

use std::path::Path;

use crate::block::{AttnSpec, Gate, RopeMode, RopeSpec, Yarn};
use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, Header, Meta};

/// A model family: its `general.architecture` name and the reader of its spec.
pub struct Family {
    pub name: &'static str,
    spec: fn(&GgufFile) -> Result<Spec>,
}

impl Family {
    const fn new(name: &'static str, spec: fn(&GgufFile) -> Result<Spec>) -> Family {
        Family { name, spec }
    }
}

/// Every family this engine runs: the one table a new family is added to.
pub const FAMILIES: &[Family] = &[
    Family::new("llama", llama::spec),
    Family::new("qwen2", qwen2::spec),
    Family::new("qwen3", qwen3::spec),
    Family::new("qwen3moe", qwen3moe::spec),
    Family::new("gemma2", gemma2::spec),
    Family::new("gemma3", gemma3::spec),
    Family::new("phi3", phi3::spec),
];

/// The architectures this engine runs (`general.architecture`), from [`FAMILIES`].
pub const SUPPORTED: &[&str] = &{
    let mut names = [""; FAMILIES.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = FAMILIES[i].name;
        i += 1;
    }
    names
};

/// The family of architecture `name`, or the error naming the supported ones.
pub fn family(name: &str) -> Result<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.name == name)
        .ok_or_else(|| EngineError::UnsupportedArchitecture {
            arch: name.to_string(),
            supported: SUPPORTED,
        })
}

/// Opens the GGUF file of a model whose family this engine runs: an unsupported
/// architecture is named as such, before any of its keys is looked for.
pub fn open(path: &Path) -> Result<GgufFile> {
    let header = Header::read(path)?;
    family(header.architecture()?)?;
    header.open()
}

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
    /// Multiplies the queries after RoPE (Gemma, Phi-3; their `attn.scale` is then 1).
    pub q_scale: Option<f32>,
}

/// Everything the shared blocks need to run one family's model. Q/K/V fused in one
/// `attn_qkv` matrix, and Q/K/V and output biases, are taken when the file has them
/// (as llama.cpp does for every family).
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
    /// Gate and up in one matrix `ffn_up` (gate first; Phi-3).
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
        (family(&f.info.architecture)?.spec)(f)
    }

    /// A spec with the settings every family shares, read from `{arch}.*` keys: standard
    /// attention scaled by `1 / sqrt(head_dim)`, SwiGLU, no MoE; `rope` for every layer.
    pub fn base(f: &GgufFile, mode: RopeMode) -> Result<Spec> {
        let i = &f.info;
        let rope = rope_from_meta(f, mode, i.head_dim)?;
        let attn = AttnSpec {
            n_heads: i.n_heads,
            n_kv_heads: i.n_kv_heads,
            head_dim: i.head_dim,
            value_dim: i.value_dim,
            scale: 1.0 / (i.head_dim as f32).sqrt(),
            softcap: None,
            window: None,
        };
        if i.n_kv_heads == 0 || !i.n_heads.is_multiple_of(i.n_kv_heads) {
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
            fused_gate_up: false,
            qk_norm: false,
            post_norms: false,
            gate: Gate::Silu,
            moe: None,
            embed_scale: None,
            final_softcap: None,
            ropes: vec![rope],
            layers: vec![
                LayerSpec {
                    attn,
                    rope: 0,
                    q_scale: None
                };
                i.n_layers
            ],
        })
    }

    /// Scales the queries by `q` before attention instead of the scores (same maths;
    /// llama.cpp's rounding for the families that do it so).
    pub fn scale_queries(&mut self, q: f32) {
        for l in &mut self.layers {
            l.q_scale = Some(q);
            l.attn.scale = 1.0;
        }
    }

    /// Gives the layers marked in `sliding` a window of `window` positions and rotary
    /// settings `rope` (added to [`Spec::ropes`]).
    pub fn slide(&mut self, sliding: &[bool], window: usize, rope: RopeSpec) {
        let idx = match self.ropes.iter().position(|r| *r == rope) {
            Some(i) => i,
            None => {
                self.ropes.push(rope);
                self.ropes.len() - 1
            }
        };
        for (l, s) in self.layers.iter_mut().zip(sliding) {
            if *s {
                l.attn.window = Some(window);
                l.rope = idx;
            }
        }
    }

    /// `{arch}.{key}` of this model.
    pub fn key(&self, key: &str) -> String {
        format!("{}.{key}", self.arch)
    }
}

/// Which layers use the sliding window, as llama.cpp reads it: the per-layer array
/// `{arch}.attention.sliding_window_pattern`, or that key (else `period`) as a period
/// `n` where layer `i` slides unless `i % n == n - 1` (`n = 0`: every layer slides).
pub fn sliding_layers(f: &GgufFile, period: usize) -> Result<Vec<bool>> {
    let key = format!("{}.attention.sliding_window_pattern", f.info.architecture);
    let m = f.md();
    let n = f.info.n_layers;
    if let Some(a) = m.usize_array(&key) {
        if a.len() < n {
            return Err(EngineError::InvalidInput(format!(
                "{key} has {} entries for {n} layers",
                a.len()
            )));
        }
        return Ok(a[..n].iter().map(|x| *x != 0).collect());
    }
    Ok(swa_period(n, m.usize_or(&key, period)?))
}

/// Layer `i` of `n` slides unless `i % p == p - 1` (`p = 0`: all slide).
fn swa_period(n: usize, p: usize) -> Vec<bool> {
    (0..n).map(|i| p == 0 || i % p < p - 1).collect()
}

/// The YaRN magnitude llama-context.cpp passes to ggml for a context `factor`: ggml
/// multiplies in `1 + 0.1 ln(factor)` itself, so this is about 1 and the rotation ends up
/// scaled by YaRN's `mscale` once.
fn yarn_attn_factor(factor: f32) -> f32 {
    let mscale = if factor <= 1.0 {
        1.0
    } else {
        0.1 * factor.ln() + 1.0
    };
    mscale * (1.0 / (1.0 + 0.1 * factor.ln()))
}

/// Rotary settings from `{arch}.rope.*` keys and the frequency-factor tensors, as
/// llama.cpp sets them up for a context of the model's full length.
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
    // the original training context (YaRN, and the choice of Phi-3's long/short factors)
    let orig_ctx = m.usize_or(
        &k("rope.scaling.original_context_length"),
        f.info.context_length,
    )?;
    let kind = m.str(&k("rope.scaling.type")).unwrap_or("linear");
    match kind {
        "none" => rope.freq_scale = 1.0,
        "linear" | "longrope" => {}
        "yarn" => {
            rope.yarn = Some(Yarn {
                ext_factor: 1.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                orig_ctx,
            });
            rope.attn_factor = yarn_attn_factor(1.0 / rope.freq_scale);
        }
        other => {
            return Err(EngineError::InvalidInput(format!(
                "rope scaling type '{other}' is not supported (none, linear, yarn, longrope are)"
            )))
        }
    }
    rope.attn_factor *= m.f32_or(&k("rope.scaling.attn_factor"), 1.0)?;
    let long = f.info.context_length > orig_ctx;
    let factors = [
        "rope_freqs.weight",
        if long {
            "rope_factors_long.weight"
        } else {
            "rope_factors_short.weight"
        },
    ];
    if let Some(name) = factors.into_iter().find(|n| f.has(n)) {
        let v = crate::block::load_vector(f, name)?;
        if v.len() < n_rot / 2 {
            return Err(EngineError::InvalidInput(format!(
                "{name}: {} factors for {} rotated pairs",
                v.len(),
                n_rot / 2
            )));
        }
        rope.freq_factors = Some(v);
    }
    Ok(rope)
}

/// Mixture-of-experts settings from `{arch}.expert_*` keys (none when absent); experts
/// are `default_ffn` wide unless `expert_feed_forward_length` says otherwise.
pub fn moe_from_meta(
    m: &Meta,
    arch: &str,
    default_ffn: usize,
    norm_top_k: bool,
) -> Result<Option<MoeSpec>> {
    let k = |s: &str| format!("{arch}.{s}");
    let n_experts = m.usize_or(&k("expert_count"), 0)?;
    if n_experts == 0 {
        return Ok(None);
    }
    let n_used = m.usize(&k("expert_used_count"))?;
    if n_used == 0 || n_used > n_experts {
        return Err(EngineError::InvalidInput(format!(
            "{n_used} of {n_experts} experts per token"
        )));
    }
    Ok(Some(MoeSpec {
        n_experts,
        n_used,
        expert_ffn: m.usize_or(&k("expert_feed_forward_length"), 0).map(|x| {
            if x == 0 {
                default_ffn
            } else {
                x
            }
        })?,
        norm_top_k,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_patterns_as_llama_cpp() {
        // Gemma 2: every other layer from the first; Gemma 3: 5 local, then 1 global.
        assert_eq!(swa_period(4, 2), [true, false, true, false]);
        assert_eq!(
            swa_period(7, 6),
            [true, true, true, true, true, false, true]
        );
        assert_eq!(swa_period(3, 0), [true, true, true]);
        assert_eq!(swa_period(2, 1), [false, false]);
    }

    #[test]
    fn yarn_magnitude_is_applied_once() {
        for f in [1.0f32, 4.0, 32.0] {
            let ggml = 1.0 + 0.1 * f.ln(); // rope_yarn's own factor
            assert!((yarn_attn_factor(f) * ggml - (1.0 + 0.1 * f.ln())).abs() < 1e-6);
            assert!((yarn_attn_factor(f) - 1.0).abs() < 1e-6);
        }
    }
}
