//! The attention cache of one layer for one sequence, in f16 (half of f32's memory; the
//! attention kernel widens it with F16C).

use half::f16;

/// Positions per block of the transposed key cache.
pub const KBLK: usize = 64;

/// Keys and values of one layer for every position seen. Keys are stored transposed in
/// blocks of [`KBLK`] positions, `[block][k_dim][KBLK]`, so that scoring runs over
/// positions in SIMD lanes while each position still sums its dimensions in order.
/// Values are `[pos][v_dim]`.
#[derive(Clone, Default)]
pub struct LayerKv {
    kt: Vec<f16>,
    v: Vec<f16>,
    k_dim: usize,
    v_dim: usize,
    len: usize,
}

impl LayerKv {
    /// An empty cache for keys of `k_dim` and values of `v_dim` values per position.
    pub fn new(k_dim: usize, v_dim: usize) -> LayerKv {
        LayerKv {
            k_dim,
            v_dim,
            ..Default::default()
        }
    }

    /// Positions held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets positions from `len` on.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.len = len;
            self.v.truncate(len * self.v_dim);
        }
    }

    /// Bytes of cache memory in use.
    pub fn bytes(&self) -> usize {
        (self.kt.len() + self.v.len()) * 2
    }

    /// Appends keys `[n, k_dim]` and values `[n, v_dim]` of the next `n` positions.
    pub fn push(&mut self, k: &[f32], v: &[f32]) {
        let pos0 = self.len;
        let n = k.len() / self.k_dim;
        let need = (pos0 + n).div_ceil(KBLK) * KBLK * self.k_dim;
        if self.kt.len() < need {
            self.kt.resize(need, f16::ZERO);
        }
        for (t, row) in k.chunks_exact(self.k_dim).enumerate() {
            let (b, j) = ((pos0 + t) / KBLK, (pos0 + t) % KBLK);
            let base = b * self.k_dim * KBLK + j;
            for (i, x) in row.iter().enumerate() {
                self.kt[base + i * KBLK] = f16::from_f32(*x);
            }
        }
        self.v.extend(v.iter().map(|x| f16::from_f32(*x)));
        self.len += n;
    }

    /// Keys of block `b` for dimensions `dims` (`[dims.len()][KBLK]`).
    pub(crate) fn key_block(&self, b: usize, d0: usize, dims: usize) -> &[f16] {
        let base = b * self.k_dim * KBLK + d0 * KBLK;
        &self.kt[base..base + dims * KBLK]
    }

    /// Values of position `p` for dimensions `d0..d0 + dims`.
    pub(crate) fn value(&self, p: usize, d0: usize, dims: usize) -> &[f16] {
        let base = p * self.v_dim + d0;
        &self.v[base..base + dims]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_truncate_and_layout() {
        let mut kv = LayerKv::new(2, 3);
        kv.push(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        assert_eq!(kv.len(), 2);
        let k = kv.key_block(0, 1, 1);
        assert_eq!((k[0].to_f32(), k[1].to_f32()), (2.0, 4.0));
        assert_eq!(kv.value(1, 0, 3)[2].to_f32(), 2.0);
        kv.truncate(1);
        kv.push(&[5.0, 6.0], &[3.0, 3.0, 3.0]);
        assert_eq!(kv.key_block(0, 0, 1)[1].to_f32(), 5.0);
        assert_eq!(kv.value(1, 0, 3)[0].to_f32(), 3.0);
    }
}
