//! A model's stage: the weights of a layer range (loaded as the family's spec says), its
//! per-sequence caches and the batched forward pass.

mod cache;
mod embed;
mod layer;
mod stage;

pub use cache::KvCache;
pub use embed::{Output, Pooling};
pub use stage::{Seq, Stage, StageInput, StageOutput};

use crate::arch;
use crate::error::Result;
use crate::gguf::ModelInfo;
use std::path::Path;

impl ModelInfo {
    /// Reads the metadata of a GGUF file without loading its weights; fails for an
    /// architecture this engine does not run.
    pub fn read(path: &Path) -> Result<ModelInfo> {
        let f = arch::open(path)?;
        arch::Spec::read(&f)?;
        Ok(f.info)
    }
}
