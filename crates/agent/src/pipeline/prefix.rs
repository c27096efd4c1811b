//! A stage's prefix cache: the KV caches of finished sequences, kept while memory
//! allows and evicted least recently used first, so that a new sequence starting with the
//! same tokens (the next turn of a chat, a shared system prompt) reuses them.

use engine::KvCache;

struct Entry {
    tokens: Vec<u32>,
    cache: KvCache,
    used: u64,
}

/// Finished sequences' caches, bounded in positions.
pub struct PrefixCache {
    entries: Vec<Entry>,
    capacity: usize,
    clock: u64,
    pub hits: u64,
    pub misses: u64,
}

impl PrefixCache {
    /// A cache holding at most `capacity` positions in all.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Vec::new(),
            capacity,
            clock: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// Positions held.
    pub fn positions(&self) -> usize {
        self.entries.iter().map(|e| e.tokens.len()).sum()
    }

    /// Bytes of cache memory held.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.cache.bytes()).sum()
    }

    /// A copy of the cache of the first `prefix.len()` positions, if an entry starts
    /// with `prefix`.
    pub fn take(&mut self, prefix: &[u32]) -> Option<KvCache> {
        self.clock += 1;
        let clock = self.clock;
        match self
            .entries
            .iter_mut()
            .find(|e| e.tokens.len() >= prefix.len() && e.tokens[..prefix.len()] == *prefix)
        {
            Some(e) => {
                e.used = clock;
                self.hits += 1;
                let mut c = e.cache.clone();
                c.truncate(prefix.len());
                Some(c)
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// Keeps a finished sequence's cache (`tokens` are its positions), replacing entries
    /// it extends and evicting the least recently used beyond capacity.
    pub fn put(&mut self, tokens: Vec<u32>, cache: KvCache) {
        if tokens.is_empty() || tokens.len() > self.capacity || cache.len() != tokens.len() {
            return;
        }
        self.clock += 1;
        self.entries.retain(|e| {
            !(e.tokens.len() <= tokens.len() && tokens[..e.tokens.len()] == e.tokens[..])
        });
        self.entries.push(Entry {
            tokens,
            cache,
            used: self.clock,
        });
        self.shrink_to(self.capacity);
    }

    /// Evicts least recently used entries until at most `positions` are held.
    pub fn shrink_to(&mut self, positions: usize) {
        while self.positions() > positions {
            let Some(i) = self
                .entries
                .iter()
                .enumerate()
                .min_by_key(|(_, e)| e.used)
                .map(|(i, _)| i)
            else {
                break;
            };
            self.entries.swap_remove(i);
        }
    }
}
