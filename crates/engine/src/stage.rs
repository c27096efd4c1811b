//! A pipeline stage: layers `[start, end)` of a llama model, and its forward pass.

use crate::error::{EngineError, Result};
use crate::gguf::{GgufFile, ModelInfo};
use crate::hidden::HiddenState;
use crate::linear::{f32_from_bytes, matmul_many, Input, Linear};
use crate::ops::{rms_norm, softmax, swiglu, Rope};
use rayon::prelude::*;
use std::ops::Range;
use std::path::Path;

/// Input of a stage: token ids for the first stage, hidden states for the others.
#[derive(Debug, Clone)]
pub enum StageInput {
    Tokens(Vec<u32>),
    Hidden(HiddenState),
}

/// Output of a stage: hidden states, or the last position's logits from the last stage.
#[derive(Debug, Clone)]
pub enum StageOutput {
    Hidden(HiddenState),
    Logits(Vec<f32>),
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

/// Positions per block of the transposed key cache.
const KBLK: usize = 64;

/// Keys and values of one layer for every position seen. Keys are stored transposed in
/// blocks of [`KBLK`] positions, `[block][kv_dim][KBLK]`, so that scoring runs over
/// positions in SIMD lanes while each position still sums its dimensions in order (the
/// rounding of a plain sequential dot product). Values are `[pos][kv_dim]`.
#[derive(Default, Clone)]
struct LayerCache {
    kt: Vec<f32>,
    v: Vec<f32>,
}

impl LayerCache {
    /// Stores the keys `[n, kv_dim]` of positions `pos0..pos0 + n`.
    fn push_keys(&mut self, k: &[f32], pos0: usize, kv_dim: usize) {
        for (t, row) in k.chunks_exact(kv_dim).enumerate() {
            let (b, j) = ((pos0 + t) / KBLK, (pos0 + t) % KBLK);
            let base = b * kv_dim * KBLK;
            if self.kt.len() < base + kv_dim * KBLK {
                self.kt.resize(base + kv_dim * KBLK, 0.0);
            }
            for (i, x) in row.iter().enumerate() {
                self.kt[base + i * KBLK + j] = *x;
            }
        }
    }
}

/// Per-request attention cache of one stage.
#[derive(Clone)]
pub struct KvCache {
    layers: Vec<LayerCache>,
    len: usize,
}

impl KvCache {
    /// Positions already processed.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Forgets positions from `len` on (to rewind after a failed step).
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            for l in &mut self.layers {
                // Keys past `len` are simply overwritten by later positions.
                let kv = l.v.len() / self.len.max(1);
                l.v.truncate(len * kv);
            }
            self.len = len;
        }
    }
}

/// Rounds the residual stream to f16 precision after every layer. Hidden states cross
/// the network as f16; rounding at every layer boundary, in every stage, makes that
/// transport lossless, so any split of the model into stages (and any re-split after a
/// failure) computes exactly what the unsplit model computes.
fn round_to_f16(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = half::f16::from_f32(*v).to_f32();
    }
}

/// Layers `[start, end)` of a model, plus the embedding (first stage) and the head (last).
pub struct Stage {
    info: ModelInfo,
    range: Range<usize>,
    embed: Option<Linear>,
    layers: Vec<Layer>,
    output_norm: Option<Vec<f32>>,
    output: Option<Linear>,
    rope: Rope,
    weight_bytes: usize,
}

impl Stage {
    /// Loads layers `[start, end)` of the GGUF model at `path` (and nothing else).
    pub fn load(path: &Path, start: usize, end: usize) -> Result<Stage> {
        let mut f = GgufFile::open(path)?;
        let info = f.info.clone();
        if start >= end || end > info.n_layers {
            return Err(EngineError::InvalidRange {
                start,
                end,
                n_layers: info.n_layers,
            });
        }
        let mat = |f: &mut GgufFile, name: &str| -> Result<Linear> {
            let (bytes, dtype, dims) = f.tensor_bytes(name)?;
            Linear::from_raw(name, bytes, dtype, &dims)
        };
        let vec = |f: &mut GgufFile, name: &str| -> Result<Vec<f32>> {
            let (bytes, dtype, _) = f.tensor_bytes(name)?;
            match dtype {
                candle_core::quantized::GgmlDType::F32 => Ok(f32_from_bytes(&bytes)),
                other => Err(EngineError::UnsupportedQuantization {
                    tensor: name.into(),
                    dtype: format!("{other:?}"),
                }),
            }
        };
        let embed = if start == 0 {
            Some(mat(&mut f, "token_embd.weight")?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(end - start);
        for i in start..end {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: vec(&mut f, &p("attn_norm"))?,
                wq: mat(&mut f, &p("attn_q"))?,
                wk: mat(&mut f, &p("attn_k"))?,
                wv: mat(&mut f, &p("attn_v"))?,
                wo: mat(&mut f, &p("attn_output"))?,
                ffn_norm: vec(&mut f, &p("ffn_norm"))?,
                w_gate: mat(&mut f, &p("ffn_gate"))?,
                w_up: mat(&mut f, &p("ffn_up"))?,
                w_down: mat(&mut f, &p("ffn_down"))?,
            });
        }
        let (output_norm, output) = if end == info.n_layers {
            let head = if f.content.tensor_infos.contains_key("output.weight") {
                mat(&mut f, "output.weight")?
            } else {
                mat(&mut f, "token_embd.weight")? // tied to the embedding
            };
            (Some(vec(&mut f, "output_norm.weight")?), Some(head))
        } else {
            (None, None)
        };
        let weight_bytes = layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]
                    .iter()
                    .map(|m| m.bytes())
                    .sum::<usize>()
            })
            .sum::<usize>()
            + embed.as_ref().map_or(0, |e| e.bytes())
            + output.as_ref().map_or(0, |o| o.bytes());
        let rope = Rope::new(info.head_dim, info.rope_theta);
        Ok(Stage {
            info,
            range: start..end,
            embed,
            layers,
            output_norm,
            output,
            rope,
            weight_bytes,
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }
    pub fn is_first(&self) -> bool {
        self.range.start == 0
    }
    pub fn is_last(&self) -> bool {
        self.range.end == self.info.n_layers
    }
    /// Bytes of weights this stage holds in memory.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// A fresh, empty cache for one request.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![LayerCache::default(); self.layers.len()],
            len: 0,
        }
    }

    /// Runs this stage's layers on the next positions of a request.
    pub fn forward(&self, input: StageInput, cache: &mut KvCache) -> Result<StageOutput> {
        // Run the whole step on a compute thread: the many parallel matmuls inside then
        // fork from within the pool instead of each being handed over from outside.
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.forward_in_pool(input, cache));
        }
        self.forward_in_pool(input, cache)
    }

    fn forward_in_pool(&self, input: StageInput, cache: &mut KvCache) -> Result<StageOutput> {
        let dim = self.info.hidden_size;
        let (mut x, n) = match (input, &self.embed) {
            (StageInput::Tokens(ids), Some(embed)) => {
                if ids.is_empty() {
                    return Err(EngineError::InvalidInput("no tokens to process".into()));
                }
                let mut x = vec![0f32; ids.len() * dim];
                for (id, row) in ids.iter().zip(x.chunks_exact_mut(dim)) {
                    if *id as usize >= embed.rows {
                        return Err(EngineError::InvalidInput(format!(
                            "token id {id} is outside the vocabulary of {}",
                            embed.rows
                        )));
                    }
                    embed.row(*id as usize, row)?;
                }
                (x, ids.len())
            }
            (StageInput::Hidden(h), None) => {
                if h.dim != dim || h.data.len() != h.n_tokens * dim || h.n_tokens == 0 {
                    return Err(EngineError::InvalidInput(format!(
                        "hidden state of {} x {} does not fit model dimension {dim}",
                        h.n_tokens, h.dim
                    )));
                }
                (h.data, h.n_tokens)
            }
            (StageInput::Tokens(_), None) => {
                return Err(EngineError::InvalidInput(format!(
                    "stage {:?} does not start at layer 0, so it takes hidden states, not tokens",
                    self.range
                )))
            }
            (StageInput::Hidden(_), Some(_)) => {
                return Err(EngineError::InvalidInput(
                    "the first stage takes tokens, not hidden states".into(),
                ))
            }
        };
        let needed = cache.len + n;
        if needed > self.info.context_length {
            return Err(EngineError::ContextOverflow {
                needed,
                limit: self.info.context_length,
            });
        }
        let pos0 = cache.len;
        let rope = self.rope.table(pos0, n);
        for (layer, lc) in self.layers.iter().zip(cache.layers.iter_mut()) {
            self.layer_forward(layer, &mut x, n, pos0, &rope, lc)?;
            round_to_f16(&mut x);
        }
        cache.len = needed;
        match (&self.output_norm, &self.output) {
            (Some(norm), Some(head)) => {
                let last = &x[(n - 1) * dim..];
                let mut xn = vec![0f32; dim];
                rms_norm(last, norm, self.info.rms_eps, &mut xn);
                let mut logits = vec![0f32; head.rows];
                matmul_many(&Input::new(&xn, 1), &mut [(head, &mut logits)])?;
                Ok(StageOutput::Logits(logits))
            }
            _ => Ok(StageOutput::Hidden(HiddenState {
                n_tokens: n,
                dim,
                data: x,
            })),
        }
    }

    fn layer_forward(
        &self,
        l: &Layer,
        x: &mut [f32],
        n: usize,
        pos0: usize,
        rope: &[(f32, f32)],
        lc: &mut LayerCache,
    ) -> Result<()> {
        let info = &self.info;
        let (dim, hd) = (info.hidden_size, info.head_dim);
        let (q_dim, kv_dim) = (info.n_heads * hd, info.n_kv_heads * hd);
        let mut xn = vec![0f32; n * dim];
        rms_norm(x, &l.attn_norm, info.rms_eps, &mut xn);
        let mut q = vec![0f32; n * q_dim];
        let mut k = vec![0f32; n * kv_dim];
        let mut v = vec![0f32; n * kv_dim];
        {
            let input = Input::new(&xn, n);
            matmul_many(
                &input,
                &mut [(&l.wq, &mut q), (&l.wk, &mut k), (&l.wv, &mut v)],
            )?;
        }
        for t in 0..n {
            let sc = &rope[t * hd / 2..(t + 1) * hd / 2];
            Rope::apply(&mut q[t * q_dim..(t + 1) * q_dim], hd, sc);
            Rope::apply(&mut k[t * kv_dim..(t + 1) * kv_dim], hd, sc);
        }
        lc.push_keys(&k, pos0, kv_dim);
        lc.v.extend_from_slice(&v);
        let mut att = vec![0f32; n * q_dim];
        self.attention(&q, lc, n, pos0, &mut att);
        let mut o = vec![0f32; n * dim];
        matmul_many(&Input::new(&att, n), &mut [(&l.wo, &mut o)])?;
        for (a, b) in x.iter_mut().zip(&o) {
            *a += b;
        }
        rms_norm(x, &l.ffn_norm, info.rms_eps, &mut xn);
        let ff = info.ffn_size;
        let mut gate = vec![0f32; n * ff];
        let mut up = vec![0f32; n * ff];
        matmul_many(
            &Input::new(&xn, n),
            &mut [(&l.w_gate, &mut gate), (&l.w_up, &mut up)],
        )?;
        swiglu(&mut gate, &up);
        matmul_many(&Input::new(&gate, n), &mut [(&l.w_down, &mut o)])?;
        for (a, b) in x.iter_mut().zip(&o) {
            *a += b;
        }
        Ok(())
    }

    /// Causal grouped-query attention of `n` new positions over the cache.
    fn attention(&self, q: &[f32], lc: &LayerCache, n: usize, pos0: usize, out: &mut [f32]) {
        let info = &self.info;
        let hd = info.head_dim;
        let (nh, nkv) = (info.n_heads, info.n_kv_heads);
        let kv_dim = nkv * hd;
        let group = nh / nkv;
        let scale = 1.0 / (hd as f32).sqrt();
        let one = |(idx, o): (usize, &mut [f32])| {
            let (t, h) = (idx / nh, idx % nh);
            let kvh = h / group;
            let qh = &q[t * nh * hd + h * hd..][..hd];
            let len = pos0 + t + 1;
            let mut scores = vec![0f32; len];
            for (b, chunk) in scores.chunks_mut(KBLK).enumerate() {
                let base = b * kv_dim * KBLK + kvh * hd * KBLK;
                let mut acc = [0f32; KBLK];
                for (d, qd) in qh.iter().enumerate() {
                    let row = &lc.kt[base + d * KBLK..][..KBLK];
                    for (a, k) in acc.iter_mut().zip(row) {
                        *a += qd * k;
                    }
                }
                for (s, a) in chunk.iter_mut().zip(&acc) {
                    *s = a * scale;
                }
            }
            softmax(&mut scores);
            o.fill(0.0);
            for (p, w) in scores.iter().enumerate() {
                let vp = &lc.v[p * kv_dim + kvh * hd..][..hd];
                for (a, b) in o.iter_mut().zip(vp) {
                    *a += w * b;
                }
            }
        };
        let work = n * nh * (pos0 + n) * hd;
        if work > 1 << 16 {
            out.par_chunks_mut(hd).enumerate().for_each(one);
        } else {
            out.chunks_mut(hd).enumerate().for_each(one);
        }
    }
}
