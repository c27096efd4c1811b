//! A sequence's attention cache on one stage: one [`LayerKv`] per layer of the stage,
//! and on the last stage what it returns for the sequence (logits or an embedding, with
//! the embedding's pooling state).

use super::embed::{Output, Pool};
use crate::block::LayerKv;

/// Per-sequence attention cache of one stage.
#[derive(Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
    pub(crate) output: Output,
    pub(crate) pool: Pool,
}

impl KvCache {
    pub(crate) fn new(layers: Vec<LayerKv>) -> KvCache {
        KvCache {
            layers,
            output: Output::Logits,
            pool: Pool::default(),
        }
    }

    /// Chooses what the last stage returns for this sequence (logits unless set; other
    /// stages ignore it). Set it before the first step: it starts pooling afresh.
    pub fn set_output(&mut self, output: Output) {
        self.output = output;
        self.pool = Pool::default();
    }

    /// What the last stage returns for this sequence.
    pub fn output(&self) -> Output {
        self.output
    }

    /// Positions already processed.
    pub fn len(&self) -> usize {
        self.layers.first().map_or(0, |l| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets positions from `len` on (to rewind after a failed step, or to keep a
    /// shared prefix).
    /// A pooled embedding cannot forget positions: it restarts, and (for mean and CLS
    /// pooling) only a sequence truncated to 0 can go on.
    pub fn truncate(&mut self, len: usize) {
        for l in &mut self.layers {
            l.truncate(len);
        }
        if len < self.pool.n {
            self.pool = Pool::default();
        }
    }

    /// Bytes of cache memory in use.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bytes()).sum()
    }
}
