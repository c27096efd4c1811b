//! Errors of the engine, worded for the person who has to fix the cause.

use std::path::PathBuf;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("model file not found: {0} (pass a GGUF file with --model, or run `make model` to fetch the default model)")]
    NotFound(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a GGUF model file ({reason})")]
    NotGguf { path: PathBuf, reason: String },
    #[error(
        "unsupported model architecture '{arch}': this engine runs {}",
        .supported.join(", ")
    )]
    UnsupportedArchitecture {
        arch: String,
        /// The architectures this engine runs.
        supported: &'static [&'static str],
    },
    #[error(
        "unsupported tensor type {dtype} for tensor {tensor}: supported are {list}",
        list = crate::quant::SUPPORTED
    )]
    UnsupportedQuantization { tensor: String, dtype: String },
    #[error("the GGUF file lacks metadata key '{0}'")]
    MissingMetadata(String),
    #[error("the GGUF file lacks tensor '{0}'")]
    MissingTensor(String),
    #[error("invalid layer range {start}..{end} for a model with {n_layers} layers")]
    InvalidRange {
        start: usize,
        end: usize,
        n_layers: usize,
    },
    #[error("context length exceeded: {needed} positions needed, the model's context is {limit} (shorten the prompt or lower max_tokens)")]
    ContextOverflow { needed: usize, limit: usize },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    Template(String),
    #[error("model download failed: {0}")]
    Download(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

/// Result with [`EngineError`].
pub type Result<T> = std::result::Result<T, EngineError>;
