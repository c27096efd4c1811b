//! Pure-Rust inference for GGUF transformer models, over any contiguous range of layers
//! so that one model can be split across machines (pipeline parallelism).
//!
//! - [`gguf`]: the file (header via candle's reader, data memory-mapped) and its metadata.
//! - [`quant`]: weight formats, one file each, behind one kernel trait; parallel matmul.
//! - [`block`]: shared building blocks (projections, norms, RoPE, attention, FFN, MoE).
//! - [`arch`]: one small file per model family, mapping its metadata to a spec.
//! - [`model`]: a stage (layer range) and its batched forward pass (logits or embeddings).
//! - [`constrain`]: constrained decoding (JSON schema, regex, grammars) with llguidance.
//!
//! See `docs/architecture.md` for how the crates fit together.

pub mod arch;
pub mod block;
pub mod chat;
pub mod constrain;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod hidden;
pub mod model;
pub mod quant;
pub mod sampling;
pub mod tokenizer;

pub use chat::{ChatMessage, ChatTemplate};
pub use constrain::{Constraint, Matcher, TokenEnv};
pub use error::{EngineError, Result};
pub use generate::{even_split, FinishReason, Generation, Generator, StopFilter};
pub use gguf::{GgufFile, ModelInfo};
pub use hidden::HiddenState;
pub use model::{KvCache, Output, Pooling, Seq, Stage, StageInput, StageOutput};
pub use sampling::{argmax, Sampler, SamplingParams};
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
