//! The shared building blocks every family is made of: linear projections over any
//! weight format, RMS norm, rotary embeddings, attention over an f16 cache, gated
//! feed-forward activations.

pub mod activation;
pub mod attention;
pub mod kv;
pub mod linear;
pub mod moe;
pub mod norm;
pub mod rope;

pub use activation::{softcap, softmax, Gate};
pub use attention::{attend, AttnItem, AttnSpec};
pub use kv::LayerKv;
pub use linear::{load_vector, matmul, matmul_many, Linear};
pub use moe::Moe;
pub use norm::{rms_norm, rms_norm_inplace};
pub use rope::{RopeMode, RopeSpec, Yarn};
