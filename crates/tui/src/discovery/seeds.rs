//! `--seed-nodes`: a fixed list of agent API addresses.

use super::{normalize_addr, push_unique, BoxFuture, Discovery};

/// Discovery from a fixed list of addresses.
#[derive(Debug, Clone)]
pub struct SeedDiscovery {
    addrs: Vec<String>,
}

impl SeedDiscovery {
    /// From raw `host[:port]` entries (port 8080 when absent); empty entries are dropped.
    pub fn new<S: AsRef<str>>(seeds: &[S]) -> Self {
        let mut addrs = Vec::new();
        for s in seeds {
            if let Some(a) = normalize_addr(s.as_ref(), 8080) {
                push_unique(&mut addrs, a);
            }
        }
        Self { addrs }
    }
}

impl Discovery for SeedDiscovery {
    fn mode(&self) -> &'static str {
        "seeds"
    }

    fn discover(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move { self.addrs.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seeds_are_normalised_and_deduplicated() {
        let d = SeedDiscovery::new(&["localhost:8080", "localhost", " ", "127.0.0.1:8081"]);
        assert_eq!(d.discover().await, vec!["localhost:8080", "127.0.0.1:8081"]);
        assert_eq!(d.mode(), "seeds");
    }
}
