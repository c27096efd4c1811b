//! A sequence's attention cache on one stage: one [`LayerKv`] per layer of the stage.

use crate::block::LayerKv;

/// Per-sequence attention cache of one stage.
#[derive(Clone)]
pub struct KvCache {
    pub(crate) layers: Vec<LayerKv>,
}

impl KvCache {
    pub(crate) fn new(layers: Vec<LayerKv>) -> KvCache {
        KvCache { layers }
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
    pub fn truncate(&mut self, len: usize) {
        for l in &mut self.layers {
            l.truncate(len);
        }
    }

    /// Bytes of cache memory in use.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(|l| l.bytes()).sum()
    }
}
