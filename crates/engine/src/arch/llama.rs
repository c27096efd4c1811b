//! `llama`: Llama 2/3, Mistral, SmolLM, TinyLlama (and Mixtral-style experts). RMSNorm,
//! normal-mode RoPE (Llama 3's frequency factors come as `rope_freqs`), GQA, SwiGLU.

use super::Spec;
use crate::block::RopeMode;
use crate::error::Result;
use crate::gguf::GgufFile;

pub fn spec(f: &GgufFile) -> Result<Spec> {
    Spec::base(f, RopeMode::Normal)
}
