//! Pure-Rust inference for llama-architecture GGUF models, over any contiguous range of
//! layers so that one model can be split across machines (pipeline parallelism).
//!
//! Weights are read with candle's GGUF reader and kept in their quantization; the forward
//! pass (RMSNorm, RoPE, grouped-query attention, SwiGLU) and its quantized matrix kernels
//! are written here. See `docs/architecture.md` for how the crates fit together.

pub mod chat;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod hidden;
pub mod linear;
pub mod ops;
pub mod quant;
pub mod sampling;
pub mod stage;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate};
pub use error::{EngineError, Result};
pub use generate::{even_split, FinishReason, Generation, Generator, StopFilter};
pub use gguf::{GgufFile, ModelInfo};
pub use hidden::HiddenState;
pub use sampling::{argmax, Sampler, SamplingParams};
pub use stage::{KvCache, Stage, StageInput, StageOutput};
pub use tokenizer::{TextStream, Tokenizer};

/// Sets the number of compute threads (call once, before any model runs); 0 = all cores.
pub fn init_threads(n: usize) {
    let n = if n == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        n
    };
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
}
