//! Embeddings: instead of logits, the last stage can give a sequence's final-normed
//! hidden states pooled over its positions (llama.cpp's `--embedding`).
//!
//! The pooling state lives in the sequence's [`KvCache`](super::KvCache) on the last
//! stage (the per-sequence state its caller holds), so a prompt processed in several
//! chunks still pools over all its positions: every chunk adds its rows, in position
//! order, and the output after any chunk is the embedding of every position so far.

use serde::{Deserialize, Serialize};

/// How the final hidden states of a sequence's positions become one vector (llama.cpp's
/// `pooling_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// The mean over all positions.
    Mean,
    /// The first position (BERT's CLS).
    Cls,
    /// The last position (decoder models: the one that has seen the whole text).
    Last,
    /// No pooling: each chunk returns its positions' rows.
    None,
}

impl Pooling {
    /// The pooling a GGUF's `{arch}.pooling_type` names (llama.cpp's numbering:
    /// 0 none, 1 mean, 2 cls, 3 last; 4, rank, is a reranker's and not an embedding).
    pub fn from_gguf(value: u64) -> Option<Pooling> {
        match value {
            0 => Some(Pooling::None),
            1 => Some(Pooling::Mean),
            2 => Some(Pooling::Cls),
            3 => Some(Pooling::Last),
            _ => None,
        }
    }
}

/// What the last stage returns for a sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// The last position's logits ([`StageOutput::Logits`](super::StageOutput::Logits)).
    #[default]
    Logits,
    /// The final-normed hidden states pooled over every position so far
    /// ([`StageOutput::Hidden`](super::StageOutput::Hidden) with one row; with
    /// [`Pooling::None`] the chunk's rows), divided by their L2 norm when `normalize`
    /// (as OpenAI's `/v1/embeddings` returns them; llama.cpp's `--embd-normalize 2`).
    Embedding { pooling: Pooling, normalize: bool },
}

/// A sequence's pooling state on the last stage.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pool {
    /// Positions pooled (from position 0 on).
    pub n: usize,
    /// Mean: the sum of the rows; Cls: the first row; Last: the latest row.
    pub acc: Vec<f64>,
}

impl Pool {
    /// Adds the rows of positions `n..n + rows.len() / dim`.
    pub fn add(&mut self, pooling: Pooling, rows: &[f32], dim: usize) {
        if self.acc.len() != dim {
            self.acc = vec![0.0; dim];
        }
        match pooling {
            Pooling::Mean => {
                for row in rows.chunks_exact(dim) {
                    self.acc
                        .iter_mut()
                        .zip(row)
                        .for_each(|(a, v)| *a += *v as f64);
                }
            }
            Pooling::Cls if self.n == 0 => copy(&mut self.acc, &rows[..dim]),
            Pooling::Last => copy(&mut self.acc, &rows[rows.len() - dim..]),
            Pooling::Cls | Pooling::None => {}
        }
        self.n += rows.len() / dim;
    }

    /// The pooled vector so far.
    pub fn vector(&self, pooling: Pooling, normalize: bool) -> Vec<f32> {
        let scale = match pooling {
            Pooling::Mean => 1.0 / self.n.max(1) as f64,
            _ => 1.0,
        };
        let mut v: Vec<f64> = self.acc.iter().map(|a| a * scale).collect();
        if normalize {
            l2_normalize(&mut v);
        }
        v.into_iter().map(|x| x as f32).collect()
    }
}

fn copy(acc: &mut [f64], row: &[f32]) {
    acc.iter_mut().zip(row).for_each(|(a, v)| *a = *v as f64);
}

/// Divides `v` by its Euclidean norm (a zero vector stays zero).
pub(crate) fn l2_normalize(v: &mut [f64]) {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Each `dim`-row of `rows` divided by its Euclidean norm.
pub(crate) fn normalize_rows(rows: &mut [f32], dim: usize) {
    for row in rows.chunks_exact_mut(dim) {
        let mut v: Vec<f64> = row.iter().map(|x| *x as f64).collect();
        l2_normalize(&mut v);
        row.iter_mut().zip(&v).for_each(|(r, x)| *r = *x as f32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_across_chunks() {
        let rows = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let (mut one, mut two) = (Pool::default(), Pool::default());
        one.add(Pooling::Mean, &rows, 2);
        two.add(Pooling::Mean, &rows[..2], 2);
        two.add(Pooling::Mean, &rows[2..], 2);
        assert_eq!(one.vector(Pooling::Mean, false), vec![3.0, 4.0]);
        assert_eq!(two.vector(Pooling::Mean, false), vec![3.0, 4.0]);
        assert_eq!(two.vector(Pooling::Mean, true), vec![0.6, 0.8]);
        for (p, want) in [(Pooling::Cls, [1.0, 2.0]), (Pooling::Last, [5.0, 6.0])] {
            let mut pool = Pool::default();
            pool.add(p, &rows[..4], 2);
            pool.add(p, &rows[4..], 2);
            assert_eq!(pool.vector(p, false), want);
            assert_eq!(pool.n, 3);
        }
        assert_eq!(Pooling::from_gguf(1), Some(Pooling::Mean));
        assert_eq!(Pooling::from_gguf(4), None);
    }
}
