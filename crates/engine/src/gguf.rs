//! Reading GGUF files: metadata ([`ModelInfo`]) and the raw bytes of single tensors.

use crate::error::{EngineError, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::GgmlDType;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Shape and size facts of a llama-architecture model, read from GGUF metadata alone.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub architecture: String,
    pub n_layers: usize,
    pub hidden_size: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
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
    /// Bytes of each transformer layer's tensors.
    pub layer_bytes: Vec<u64>,
}

impl ModelInfo {
    /// Reads the metadata of a GGUF file without loading its weights.
    pub fn read(path: &Path) -> Result<ModelInfo> {
        Ok(GgufFile::open(path)?.info)
    }
}

/// An open GGUF file: parsed header plus a reader for tensor data.
pub struct GgufFile {
    pub path: PathBuf,
    pub content: Content,
    pub info: ModelInfo,
    reader: BufReader<File>,
}

impl GgufFile {
    /// Opens and validates a GGUF file of a llama-architecture model.
    pub fn open(path: &Path) -> Result<GgufFile> {
        if !path.exists() {
            return Err(EngineError::NotFound(path.to_path_buf()));
        }
        let io = |source| EngineError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_bytes = file.metadata().map_err(io)?.len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        if reader.read_exact(&mut magic).is_err() || &magic != b"GGUF" {
            return Err(EngineError::NotGguf {
                path: path.to_path_buf(),
                reason: "no GGUF magic at the start".into(),
            });
        }
        reader.seek(SeekFrom::Start(0)).map_err(io)?;
        let content = Content::read(&mut reader).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("dtype") {
                EngineError::UnsupportedQuantization {
                    tensor: "?".into(),
                    dtype: msg,
                }
            } else {
                EngineError::NotGguf {
                    path: path.to_path_buf(),
                    reason: msg,
                }
            }
        })?;
        let info = model_info(&content, file_bytes)?;
        Ok(GgufFile {
            path: path.to_path_buf(),
            content,
            info,
            reader,
        })
    }

    /// Metadata value by key.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// Raw bytes, type and shape (row-major, outermost first) of one tensor.
    pub fn tensor_bytes(&mut self, name: &str) -> Result<(Vec<u8>, GgmlDType, Vec<usize>)> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| EngineError::MissingTensor(name.into()))?;
        let dims = info.shape.dims().to_vec();
        let elems: usize = dims.iter().product();
        let size = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
        let dtype = info.ggml_dtype;
        let start = self.content.tensor_data_offset + info.offset;
        let io = |source| EngineError::Io {
            path: self.path.clone(),
            source,
        };
        let mut buf = vec![0u8; size];
        self.reader.seek(SeekFrom::Start(start)).map_err(&io)?;
        self.reader.read_exact(&mut buf).map_err(io)?;
        Ok((buf, dtype, dims))
    }

    /// Size in bytes of a tensor's data, 0 if absent.
    pub fn tensor_size(content: &Content, name: &str) -> u64 {
        content
            .tensor_infos
            .get(name)
            .map(|i| {
                (i.shape.elem_count() / i.ggml_dtype.block_size() * i.ggml_dtype.type_size()) as u64
            })
            .unwrap_or(0)
    }
}

fn get<'a>(c: &'a Content, key: &str) -> Result<&'a Value> {
    c.metadata
        .get(key)
        .ok_or_else(|| EngineError::MissingMetadata(key.into()))
}

fn get_usize(c: &Content, key: &str) -> Result<usize> {
    let v = get(c, key)?;
    let n = match v {
        Value::U8(x) => *x as u64,
        Value::U16(x) => *x as u64,
        Value::U32(x) => *x as u64,
        Value::U64(x) => *x,
        Value::I32(x) => *x as u64,
        Value::I64(x) => *x as u64,
        _ => {
            return Err(EngineError::MissingMetadata(format!(
                "{key} (not an integer)"
            )))
        }
    };
    Ok(n as usize)
}

fn get_f32(c: &Content, key: &str) -> Result<f32> {
    match get(c, key)? {
        Value::F32(x) => Ok(*x),
        Value::F64(x) => Ok(*x as f32),
        _ => Err(EngineError::MissingMetadata(format!("{key} (not a float)"))),
    }
}

fn model_info(c: &Content, file_bytes: u64) -> Result<ModelInfo> {
    let arch = match get(c, "general.architecture")? {
        Value::String(s) => s.clone(),
        _ => return Err(EngineError::MissingMetadata("general.architecture".into())),
    };
    if arch != "llama" {
        return Err(EngineError::UnsupportedArchitecture(arch));
    }
    let name = match c.metadata.get("general.name") {
        Some(Value::String(s)) => s.clone(),
        _ => "unnamed".into(),
    };
    let n_layers = get_usize(c, "llama.block_count")?;
    let hidden_size = get_usize(c, "llama.embedding_length")?;
    let n_heads = get_usize(c, "llama.attention.head_count")?;
    let n_kv_heads = get_usize(c, "llama.attention.head_count_kv").unwrap_or(n_heads);
    let head_dim = hidden_size / n_heads;
    let vocab_size = match c.metadata.get("tokenizer.ggml.tokens") {
        Some(Value::Array(a)) => a.len(),
        _ => get_usize(c, "llama.vocab_size")?,
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
    let head_bytes =
        GgufFile::tensor_size(c, "output_norm.weight") + if head > 0 { head } else { embed_bytes };
    Ok(ModelInfo {
        name,
        architecture: arch,
        n_layers,
        hidden_size,
        n_heads,
        n_kv_heads,
        head_dim,
        ffn_size: get_usize(c, "llama.feed_forward_length")?,
        vocab_size,
        context_length: get_usize(c, "llama.context_length").unwrap_or(2048),
        rope_theta: get_f32(c, "llama.rope.freq_base").unwrap_or(10000.0),
        rms_eps: get_f32(c, "llama.attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
        bos_token_id: get_usize(c, "tokenizer.ggml.bos_token_id").unwrap_or(1) as u32,
        eos_token_id: get_usize(c, "tokenizer.ggml.eos_token_id").unwrap_or(2) as u32,
        file_bytes,
        embed_bytes,
        head_bytes,
        layer_bytes,
    })
}
