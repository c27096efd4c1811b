//! FNV-1a 64-bit: a tiny, stable hash (identical on every machine and build).

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

/// Incremental FNV-1a 64 hasher.
#[derive(Debug, Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Self(OFFSET)
    }
}

impl Fnv64 {
    /// Feeds raw bytes.
    pub fn bytes(&mut self, data: &[u8]) -> &mut Self {
        for b in data {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(PRIME);
        }
        self
    }

    /// Feeds a u64 as 8 little-endian bytes.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// Feeds a string, length-prefixed so that concatenations cannot collide.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    /// The hash so far.
    pub fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::Fnv64;

    #[test]
    fn matches_reference_vectors() {
        assert_eq!(Fnv64::default().finish(), 0xcbf29ce484222325);
        assert_eq!(Fnv64::default().bytes(b"a").finish(), 0xaf63dc4c8601ec8c);
        assert_eq!(
            Fnv64::default().bytes(b"foobar").finish(),
            0x85944171f73967e8
        );
    }

    #[test]
    fn length_prefix_separates_strings() {
        let ab_c = Fnv64::default().str("ab").str("c").finish();
        let a_bc = Fnv64::default().str("a").str("bc").finish();
        assert_ne!(ab_c, a_bc);
    }
}
