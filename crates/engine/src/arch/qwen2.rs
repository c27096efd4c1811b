//! `qwen2`: Qwen 2 / 2.5. Llama's layout with Q/K/V biases (loaded whenever the file has
//! them) and NeoX-mode RoPE.

use super::Spec;
use crate::block::RopeMode;
use crate::error::Result;
use crate::gguf::GgufFile;

pub fn spec(f: &GgufFile) -> Result<Spec> {
    Spec::base(f, RopeMode::Neox)
}
