//! `llama`: Llama 2/3, Mistral, SmolLM, TinyLlama and Mixtral. RMSNorm, normal-mode RoPE
//! (Llama 3's frequency factors come as `rope_freqs`), GQA, SwiGLU; a separate
//! `output.weight` when the head is untied; with `expert_count`, Mixtral-style experts
//! as wide as `feed_forward_length`, routed by softmax over all experts and renormalised
//! over the chosen ones (llama.cpp always renormalises for this family).

use super::{moe_from_meta, Spec};
use crate::block::RopeMode;
use crate::error::Result;
use crate::gguf::GgufFile;

pub fn spec(f: &GgufFile) -> Result<Spec> {
    let mut s = Spec::base(f, RopeMode::Normal)?;
    s.moe = moe_from_meta(&f.md(), &s.arch, s.ffn, true)?;
    Ok(s)
}
