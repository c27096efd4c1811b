//! Hidden states passed between pipeline stages, and their wire form (f32, so that a split
//! model computes exactly what the unsplit model computes).

use crate::error::{EngineError, Result};

/// Activations of `n_tokens` consecutive positions, `[n_tokens, dim]` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HiddenState {
    pub n_tokens: usize,
    pub dim: usize,
    pub data: Vec<f32>,
}

impl HiddenState {
    /// Encodes as little-endian f32 (4 bytes a value).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() * 4);
        for v in &self.data {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// Decodes [`HiddenState::to_bytes`] output, checking the size against the shape.
    pub fn from_bytes(bytes: &[u8], n_tokens: usize, dim: usize) -> Result<HiddenState> {
        let expected = n_tokens
            .checked_mul(dim)
            .and_then(|v| v.checked_mul(4))
            .ok_or_else(|| EngineError::InvalidInput("hidden state shape overflows".into()))?;
        if n_tokens == 0 || dim == 0 || bytes.len() != expected {
            return Err(EngineError::InvalidInput(format!(
                "hidden state frame has {} bytes, expected {expected} for {n_tokens} tokens x {dim} (f32)",
                bytes.len()
            )));
        }
        let data: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(v) = data.iter().find(|v| !v.is_finite()) {
            return Err(EngineError::InvalidInput(format!(
                "hidden state holds a non-finite value ({v})"
            )));
        }
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
    fn round_trip_is_exact_and_sizes_are_checked() {
        let h = HiddenState {
            n_tokens: 2,
            dim: 3,
            data: vec![0.5, -1.25, 3.0, 0.0, 100.0, -0.001],
        };
        let b = h.to_bytes();
        assert_eq!(b.len(), 24);
        assert_eq!(HiddenState::from_bytes(&b, 2, 3).unwrap(), h);
        assert!(HiddenState::from_bytes(&b, 3, 3).is_err());
        assert!(HiddenState::from_bytes(&b[..23], 2, 3).is_err());
        assert!(HiddenState::from_bytes(&[], 0, 3).is_err());
        let nan = f32::NAN.to_le_bytes().repeat(6);
        assert!(HiddenState::from_bytes(&nan, 2, 3).is_err());
    }
}
