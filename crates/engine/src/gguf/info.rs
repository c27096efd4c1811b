//! [`ModelInfo`]: shape and size facts of a model, from GGUF metadata alone.

use super::{GgufFile, Meta};
use crate::error::Result;
use candle_core::quantized::gguf_file::{Content, Value};

/// Shape and size facts of a transformer model, read from GGUF metadata (the keys every
/// llama.cpp architecture shares, prefixed by `general.architecture`). Which
/// architectures the engine runs is the families' business (`arch`), not the file's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub n_layers: usize,
    pub hidden_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Size of each key (and query) head.
    pub head_dim: usize,
    /// Size of each value head.
    pub value_dim: usize,
    pub ffn_size: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rope_theta: f32,
    pub rms_eps: f32,
    pub bos_token_id: u32,
    pub eos_token_id: u32,
    /// Size of the whole file.
    pub file_bytes: u64,
    /// Token embedding bytes (held by the first stage).
    pub embed_bytes: u64,
    /// Final norm + output head bytes (held by the last stage; the embedding when tied).
    pub head_bytes: u64,
    /// Bytes of each transformer layer's tensors (MoE layers are much larger).
    pub layer_bytes: Vec<u64>,
}

impl ModelInfo {
    /// Facts of a parsed header; `file_bytes` is the file's size.
    pub fn from_content(c: &Content, file_bytes: u64) -> Result<ModelInfo> {
        let m = Meta(c);
        let arch = m.str("general.architecture")?.to_string();
        let k = |s: &str| format!("{arch}.{s}");
        let name = m.str("general.name").unwrap_or("unnamed").to_string();
        let n_layers = m.usize(&k("block_count"))?;
        let hidden_size = m.usize(&k("embedding_length"))?;
        let n_heads = m.usize(&k("attention.head_count"))?;
        let n_kv_heads = m
            .usize(&k("attention.head_count_kv"))
            .or_else(|_| {
                m.usize_array(&k("attention.head_count_kv"))
                    .and_then(|a| a.into_iter().max())
                    .ok_or(())
            })
            .unwrap_or(n_heads);
        let head_dim = m.usize_or(&k("attention.key_length"), hidden_size / n_heads.max(1))?;
        let value_dim = m.usize_or(&k("attention.value_length"), head_dim)?;
        let ffn_size = m
            .usize(&k("feed_forward_length"))
            .or_else(|_| {
                m.usize_array(&k("feed_forward_length"))
                    .and_then(|a| a.into_iter().max())
                    .ok_or(())
            })
            .unwrap_or(0);
        let vocab_size = match c.metadata.get("tokenizer.ggml.tokens") {
            Some(Value::Array(a)) => a.len(),
            _ => m.usize(&k("vocab_size"))?,
        };
        let layer_bytes = (0..n_layers)
            .map(|i| {
                let prefix = format!("blk.{i}.");
                c.tensor_infos
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .map(|k| GgufFile::tensor_size(c, k))
                    .sum()
            })
            .collect();
        let embed_bytes = GgufFile::tensor_size(c, "token_embd.weight");
        let head = GgufFile::tensor_size(c, "output.weight");
        let head_bytes = GgufFile::tensor_size(c, "output_norm.weight")
            + if head > 0 { head } else { embed_bytes };
        Ok(ModelInfo {
            name,
            n_layers,
            hidden_size,
            n_heads,
            n_kv_heads,
            head_dim,
            value_dim,
            ffn_size,
            vocab_size,
            context_length: m.usize_or(&k("context_length"), 2048)?,
            rope_theta: m.f32_or(&k("rope.freq_base"), 10000.0)?,
            rms_eps: m.f32_or(&k("attention.layer_norm_rms_epsilon"), 1e-5)?,
            bos_token_id: m.usize_or("tokenizer.ggml.bos_token_id", 1)? as u32,
            eos_token_id: m.usize_or("tokenizer.ggml.eos_token_id", 2)? as u32,
            architecture: arch,
            file_bytes,
            embed_bytes,
            head_bytes,
            layer_bytes,
        })
    }

    /// Bytes of KV cache (f16 keys and values) one position takes in `n_layers` layers.
    pub fn kv_bytes_per_token(&self, n_layers: usize) -> u64 {
        (n_layers * self.n_kv_heads * (self.head_dim + self.value_dim) * 2) as u64
    }
}
