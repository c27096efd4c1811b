//! What this agent recently ran through the pipeline, so that a new request starting
//! with the same tokens asks the stages to reuse their cached prefix.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Shortest prefix worth reusing.
const MIN_REUSE: usize = 16;

/// Token sequences whose KV the stages of plan `version` were asked to keep.
pub struct Prefixes {
    recent: Mutex<VecDeque<(u64, Vec<u32>)>>,
    capacity: usize,
}

impl Prefixes {
    pub fn new(capacity: usize) -> Self {
        Self {
            recent: Mutex::new(VecDeque::new()),
            capacity,
        }
    }

    /// Remembers that the stages of plan `version` hold the KV of `tokens`.
    pub fn record(&self, version: u64, tokens: Vec<u32>) {
        let mut r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.retain(|(v, t)| {
            !(*v == version && t.len() <= tokens.len() && tokens[..t.len()] == t[..])
        });
        r.push_front((version, tokens));
        r.truncate(self.capacity);
    }

    /// The longest recorded prefix of `tokens` under plan `version` (leaving at least one
    /// token to compute), or nothing.
    pub fn lookup(&self, version: u64, tokens: &[u32]) -> Vec<u32> {
        let r = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let best = r
            .iter()
            .filter(|(v, _)| *v == version)
            .map(|(_, t)| t.iter().zip(tokens).take_while(|(a, b)| a == b).count())
            .max()
            .unwrap_or(0)
            .min(tokens.len().saturating_sub(1));
        if best >= MIN_REUSE {
            tokens[..best].to_vec()
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_of_the_same_plan() {
        let p = Prefixes::new(4);
        let a: Vec<u32> = (0..40).collect();
        p.record(1, a.clone());
        let mut b: Vec<u32> = (0..30).collect();
        b.extend([99, 98]);
        assert_eq!(p.lookup(1, &b), (0..30).collect::<Vec<_>>());
        assert!(p.lookup(2, &b).is_empty(), "another plan");
        assert!(p.lookup(1, &[0, 1, 2]).is_empty(), "too short");
        assert_eq!(p.lookup(1, &a).len(), 39, "one token is left to compute");
    }
}
