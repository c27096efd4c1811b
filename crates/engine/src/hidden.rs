//! Hidden states passed between pipeline stages, and their compact f16 wire form.

use crate::error::{EngineError, Result};
use half::f16;

/// Activations of `n_tokens` consecutive positions, `[n_tokens, dim]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HiddenState {
    pub n_tokens: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl HiddenState {
    /// Encodes as little-endian f16 (2 bytes a value).
    pub fn to_f16_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() * 2);
        for v in &self.data {
            out.extend_from_slice(&f16::from_f32(*v).to_le_bytes());
        }
        out
    }

    /// Decodes [`HiddenState::to_f16_bytes`] output, checking the size against the shape.
    pub fn from_f16_bytes(bytes: &[u8], n_tokens: usize, dim: usize) -> Result<HiddenState> {
        let expected = n_tokens
            .checked_mul(dim)
            .and_then(|v| v.checked_mul(2))
            .ok_or_else(|| EngineError::InvalidInput("hidden state shape overflows".into()))?;
        if n_tokens == 0 || dim == 0 || bytes.len() != expected {
            return Err(EngineError::InvalidInput(format!(
                "hidden state frame has {} bytes, expected {expected} for {n_tokens} tokens x {dim} (f16)",
                bytes.len()
            )));
        }
        let data = bytes
            .chunks_exact(2)
            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect();
        Ok(HiddenState {
            n_tokens,
            dim,
            data,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trip_and_size_check() {
        let h = HiddenState {
            n_tokens: 2,
            dim: 3,
            data: vec![0.5, -1.25, 3.0, 0.0, 100.0, -0.001],
        };
        let b = h.to_f16_bytes();
        assert_eq!(b.len(), 12);
        let back = HiddenState::from_f16_bytes(&b, 2, 3).unwrap();
        for (a, b) in h.data.iter().zip(&back.data) {
            assert!((a - b).abs() <= a.abs() * 1e-3 + 1e-4);
        }
        assert!(HiddenState::from_f16_bytes(&b, 3, 3).is_err());
        assert!(HiddenState::from_f16_bytes(&b[..11], 2, 3).is_err());
        assert!(HiddenState::from_f16_bytes(&[], 0, 3).is_err());
    }
}
