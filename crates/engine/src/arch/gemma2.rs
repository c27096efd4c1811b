//! `gemma2`: Gemma 2. Embedding scaled by `sqrt(dim)`; GELU-gated FFN; RMS norms after
//! attention and after the FFN (the stored norm weights already include Gemma's `+1`);
//! attention-score and final-logit soft-capping (50 and 30 unless the file says);
//! a sliding window (`attention.sliding_window`, default 4096) on every other layer
//! starting with the first; queries scaled before attention by `1 / sqrt(head_dim)`, or
//! `1 / sqrt(dim / n_heads)` for the 27B (46 layers), as llama.cpp does. The head is
//! always the embedding.

use super::{rope_from_meta, sliding_layers, Spec};
use crate::block::{Gate, RopeMode};
use crate::error::Result;
use crate::gguf::GgufFile;

pub fn spec(f: &GgufFile) -> Result<Spec> {
    let mut s = Spec::base(f, RopeMode::Neox)?;
    let m = f.md();
    s.gate = Gate::Gelu;
    s.post_norms = true;
    s.embed_scale = Some((s.dim as f32).sqrt());
    s.final_softcap = Some(m.f32_or(&s.key("final_logit_softcapping"), 30.0)?);
    let cap = m.f32_or(&s.key("attn_logit_softcapping"), 50.0)?;
    let q = if s.n_layers == 46 {
        s.dim / s.n_heads
    } else {
        s.head_dim
    };
    s.scale_queries(1.0 / (q as f32).sqrt());
    for l in &mut s.layers {
        l.attn.softcap = Some(cap);
    }
    // local layers: the global rotation unless `rope.freq_base_swa` says otherwise
    let mut local = rope_from_meta(f, RopeMode::Neox, s.head_dim)?;
    local.base = m.f32_or(&s.key("rope.freq_base_swa"), local.base)?;
    let window = m.usize_or(&s.key("attention.sliding_window"), 4096)?;
    s.slide(&sliding_layers(f, 2)?, window, local);
    Ok(s)
}
