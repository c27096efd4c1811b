//! `qwen3moe`: Qwen 3 MoE. Qwen 3's attention; every layer's feed-forward block is a
//! mixture of experts: router `ffn_gate_inp`, experts `ffn_{gate,up,down}_exps`, softmax
//! over all experts, top-k, renormalised over the chosen ones (llama.cpp always does for
//! this family, whatever `expert_weights_norm` says). Experts are
//! `expert_feed_forward_length` wide (else `feed_forward_length / expert_used_count`).

use super::{moe_from_meta, Spec};
use crate::block::RopeMode;
use crate::error::{EngineError, Result};
use crate::gguf::GgufFile;

pub fn spec(f: &GgufFile) -> Result<Spec> {
    let mut s = Spec::base(f, RopeMode::Neox)?;
    s.qk_norm = true;
    let used = f.md().usize_or(&s.key("expert_used_count"), 0)?.max(1);
    s.moe = moe_from_meta(&f.md(), &s.arch, s.ffn / used, true)?;
    if s.moe.is_none() {
        return Err(EngineError::MissingMetadata(s.key("expert_count")));
    }
    Ok(s)
}
