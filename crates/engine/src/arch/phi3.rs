//! `phi3`: Phi-3 / 3.5. Q, K, V fused in `attn_qkv`; gate and up fused in `ffn_up`
//! (gate first); NeoX RoPE with the long/short frequency factors of LongRoPE models
//! (`rope_factors_long` when the context exceeds the original one, else `_short`);
//! queries scaled by `1 / sqrt(head_dim)` before attention. A `sliding_window` key is
//! ignored, as llama.cpp does (the converters do not write a correct one).

use super::Spec;
use crate::block::RopeMode;
use crate::error::Result;
use crate::gguf::GgufFile;

pub fn spec(f: &GgufFile) -> Result<Spec> {
    let mut s = Spec::base(f, RopeMode::Neox)?;
    s.fused_gate_up = true;
    s.scale_queries(1.0 / (s.head_dim as f32).sqrt());
    Ok(s)
}
