//! `qwen3`: Qwen 3 dense. Per-head RMS norms of queries and keys before NeoX RoPE; heads
//! may be wider than `dim / n_heads` (`attention.key_length`).

use super::Spec;
use crate::block::RopeMode;
use crate::error::Result;
use crate::gguf::GgufFile;

pub fn spec(f: &GgufFile) -> Result<Spec> {
    let mut s = Spec::base(f, RopeMode::Neox)?;
    s.qk_norm = true;
    Ok(s)
}
