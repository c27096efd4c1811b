//! A pipeline stage: layers `[start, end)` of a model, and its forward pass over a batch
//! of sequences (one pass over the weights for all their rows; attention per sequence
//! against its own cache; logits only for each sequence's last position, or, for a
//! sequence whose cache asks for it, its pooled embedding).

use super::cache::KvCache;
use super::embed::{normalize_rows, Output, Pooling};
use super::layer::{Ffn, Layer, Qkv};
use crate::arch::Spec;
use crate::block::{
    attend, load_vector, matmul, matmul_many, rms_norm, rms_norm_inplace, softcap, AttnItem,
    LayerKv, Linear,
};
use crate::error::{EngineError, Result};
use crate::gguf::ModelInfo;
use crate::hidden::HiddenState;
use crate::quant::Input;
use std::ops::Range;
use std::path::Path;
use std::time::{Duration, Instant};

/// Input of a stage: token ids for the first stage, hidden states for the others.
#[derive(Debug, Clone)]
pub enum StageInput {
    Tokens(Vec<u32>),
    Hidden(HiddenState),
}

/// Output of a stage: hidden states, or the last position's logits from the last stage.
/// For a sequence whose cache asks for an embedding ([`KvCache::set_output`]) the last
/// stage returns `Hidden`: one row, the pooled embedding of every position so far (with
/// [`Pooling::None`], the chunk's final-normed rows).
#[derive(Debug, Clone)]
pub enum StageOutput {
    Hidden(HiddenState),
    Logits(Vec<f32>),
}

/// One sequence of a batch: its new positions and its cache on this stage.
pub struct Seq<'a> {
    pub input: StageInput,
    pub cache: &'a mut KvCache,
}

/// Layers `[start, end)` of a model, plus the embedding (first stage) and the head (last).
pub struct Stage {
    info: ModelInfo,
    spec: Spec,
    range: Range<usize>,
    embed: Option<Linear>,
    layers: Vec<Layer>,
    output_norm: Option<Vec<f32>>,
    output: Option<Linear>,
    output_bias: Option<Vec<f32>>,
    pooling: Option<Pooling>,
    weight_bytes: usize,
    load_time: Duration,
}

/// Adds `b` to every row of `x` (rows of `b.len()` values).
fn add_rows(x: &mut [f32], b: &[f32]) {
    for row in x.chunks_exact_mut(b.len()) {
        row.iter_mut().zip(b).for_each(|(x, b)| *x += b);
    }
}

/// Where one sequence's rows lie in the batch.
struct Part {
    offset: usize,
    n: usize,
    pos0: usize,
}

impl Stage {
    /// Loads layers `[start, end)` of the GGUF model at `path` (and maps nothing else in).
    pub fn load(path: &Path, start: usize, end: usize) -> Result<Stage> {
        let t0 = Instant::now();
        let f = crate::arch::open(path)?;
        let spec = Spec::read(&f)?;
        let info = f.info.clone();
        if start >= end || end > info.n_layers {
            return Err(EngineError::InvalidRange {
                start,
                end,
                n_layers: info.n_layers,
            });
        }
        let embed = (start == 0)
            .then(|| Linear::load(&f, "token_embd.weight"))
            .transpose()?;
        let layers = (start..end)
            .map(|i| Layer::load(&f, &spec, i))
            .collect::<Result<Vec<_>>>()?;
        let (output_norm, output, output_bias) = if end == info.n_layers {
            let head = if f.has("output.weight") {
                Linear::load(&f, "output.weight")?.pack()
            } else {
                Linear::load(&f, "token_embd.weight")?.pack() // tied to the embedding
            };
            let bias = f
                .has("output.bias")
                .then(|| load_vector(&f, "output.bias"))
                .transpose()?;
            (
                Some(load_vector(&f, "output_norm.weight")?),
                Some(head),
                bias,
            )
        } else {
            (None, None, None)
        };
        let pooling = f
            .md()
            .usize(&format!("{}.pooling_type", info.architecture))
            .ok()
            .and_then(|p| Pooling::from_gguf(p as u64));
        let weight_bytes = layers.iter().map(|l| l.weight_bytes()).sum::<usize>()
            + embed.as_ref().map_or(0, |e| e.bytes())
            + output.as_ref().map_or(0, |o| o.bytes());
        Ok(Stage {
            info,
            spec,
            range: start..end,
            embed,
            layers,
            output_norm,
            output,
            output_bias,
            pooling,
            weight_bytes,
            load_time: t0.elapsed(),
        })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    pub fn spec(&self) -> &Spec {
        &self.spec
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
    /// Bytes of weights this stage uses (mapped from the file).
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }
    /// How long loading took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }
    /// The pooling the model's metadata names for embeddings (`{arch}.pooling_type`,
    /// as embedding models converted for llama.cpp carry it), if any.
    pub fn pooling(&self) -> Option<Pooling> {
        self.pooling
    }
    /// Bytes of KV cache one position takes on this stage.
    pub fn kv_bytes_per_token(&self) -> usize {
        self.info.kv_bytes_per_token(self.layers.len()) as usize
    }

    /// A fresh, empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        let (kd, vd) = (
            self.spec.n_kv_heads * self.spec.head_dim,
            self.spec.n_kv_heads * self.spec.value_dim,
        );
        KvCache::new(vec![LayerKv::new(kd, vd); self.layers.len()])
    }

    /// Runs this stage's layers on the next positions of one sequence.
    pub fn forward(&self, input: StageInput, cache: &mut KvCache) -> Result<StageOutput> {
        let mut out = self.forward_batch(&mut [Seq { input, cache }])?;
        Ok(out.remove(0))
    }

    /// Runs this stage's layers on the next positions of several sequences at once. Each
    /// sequence's result is exactly what it would be alone. On error no cache changes.
    pub fn forward_batch(&self, seqs: &mut [Seq]) -> Result<Vec<StageOutput>> {
        // Run the whole step on a compute thread: the many parallel products inside then
        // fork from within the pool instead of each being handed over from outside.
        if rayon::current_thread_index().is_none() {
            return rayon::scope(|_| self.forward_in_pool(seqs));
        }
        self.forward_in_pool(seqs)
    }

    fn forward_in_pool(&self, seqs: &mut [Seq]) -> Result<Vec<StageOutput>> {
        if seqs.is_empty() {
            return Ok(Vec::new());
        }
        let dim = self.spec.dim;
        let mut parts = Vec::with_capacity(seqs.len());
        let mut total = 0;
        for s in seqs.iter() {
            let n = self.check_input(&s.input)?;
            let pos0 = s.cache.len();
            if pos0 + n > self.info.context_length {
                return Err(EngineError::ContextOverflow {
                    needed: pos0 + n,
                    limit: self.info.context_length,
                });
            }
            if let Output::Embedding {
                pooling: Pooling::Mean | Pooling::Cls,
                ..
            } = s.cache.output
            {
                if self.is_last() && s.cache.pool.n != pos0 {
                    return Err(EngineError::InvalidInput(format!(
                        "an embedding pools every position, but {} of the sequence's {pos0} \
                         positions were not computed here (prefix cache or truncation)",
                        pos0 - s.cache.pool.n.min(pos0)
                    )));
                }
            }
            parts.push(Part {
                offset: total,
                n,
                pos0,
            });
            total += n;
        }
        let mut x = vec![0f32; total * dim];
        for (s, p) in seqs.iter().zip(&parts) {
            let rows = &mut x[p.offset * dim..(p.offset + p.n) * dim];
            match (&s.input, &self.embed) {
                (StageInput::Tokens(ids), Some(embed)) => {
                    for (id, row) in ids.iter().zip(rows.chunks_exact_mut(dim)) {
                        embed.row(*id as usize, row);
                    }
                    if let Some(scale) = self.spec.embed_scale {
                        rows.iter_mut().for_each(|v| *v *= scale);
                    }
                }
                (StageInput::Hidden(h), _) => rows.copy_from_slice(&h.data),
                _ => unreachable!("checked above"),
            }
        }
        let tables: Vec<Vec<Vec<(f32, f32)>>> = self
            .spec
            .ropes
            .iter()
            .map(|r| parts.iter().map(|p| r.table(p.pos0, p.n)).collect())
            .collect();
        for (i, layer) in self.layers.iter().enumerate() {
            self.layer_forward(i, layer, &mut x, &parts, seqs, &tables);
        }
        match (&self.output_norm, &self.output) {
            (Some(norm), Some(head)) => {
                let wants_logits = |s: &Seq| s.cache.output == Output::Logits;
                let n_logits = seqs.iter().filter(|s| wants_logits(s)).count();
                let mut last = Vec::with_capacity(n_logits * dim);
                for (s, p) in seqs.iter().zip(&parts) {
                    if wants_logits(s) {
                        last.extend_from_slice(
                            &x[(p.offset + p.n - 1) * dim..(p.offset + p.n) * dim],
                        );
                    }
                }
                let mut logits = vec![0f32; n_logits * head.rows];
                if n_logits > 0 {
                    let mut xn = vec![0f32; last.len()];
                    rms_norm(&last, norm, self.spec.norm_eps, &mut xn);
                    matmul(&Input::new(&xn, n_logits), head, &mut logits);
                    if let Some(b) = &self.output_bias {
                        add_rows(&mut logits, b);
                    }
                    if let Some(cap) = self.spec.final_softcap {
                        softcap(&mut logits, cap);
                    }
                }
                let mut logits = logits.chunks_exact(head.rows);
                let mut out = Vec::with_capacity(parts.len());
                for (s, p) in seqs.iter_mut().zip(&parts) {
                    let (pooling, normalize) = match s.cache.output {
                        Output::Logits => {
                            let l = logits.next().expect("one row per sequence");
                            out.push(StageOutput::Logits(l.to_vec()));
                            continue;
                        }
                        Output::Embedding { pooling, normalize } => (pooling, normalize),
                    };
                    let rows = &x[p.offset * dim..(p.offset + p.n) * dim];
                    let mut xn = vec![0f32; rows.len()];
                    rms_norm(rows, norm, self.spec.norm_eps, &mut xn);
                    s.cache.pool.add(pooling, &xn, dim);
                    let (n_tokens, data) = if pooling == Pooling::None {
                        if normalize {
                            normalize_rows(&mut xn, dim);
                        }
                        (p.n, xn)
                    } else {
                        (1, s.cache.pool.vector(pooling, normalize))
                    };
                    out.push(StageOutput::Hidden(HiddenState {
                        n_tokens,
                        dim,
                        data,
                    }));
                }
                Ok(out)
            }
            _ => Ok(parts
                .iter()
                .map(|p| {
                    StageOutput::Hidden(HiddenState {
                        n_tokens: p.n,
                        dim,
                        data: x[p.offset * dim..(p.offset + p.n) * dim].to_vec(),
                    })
                })
                .collect()),
        }
    }

    /// Checks that an input fits this stage; returns its number of positions.
    pub fn check_input(&self, input: &StageInput) -> Result<usize> {
        let dim = self.spec.dim;
        match (input, &self.embed) {
            (StageInput::Tokens(ids), Some(embed)) => {
                if ids.is_empty() {
                    return Err(EngineError::InvalidInput("no tokens to process".into()));
                }
                if let Some(id) = ids.iter().find(|id| **id as usize >= embed.rows) {
                    return Err(EngineError::InvalidInput(format!(
                        "token id {id} is outside the vocabulary of {}",
                        embed.rows
                    )));
                }
                Ok(ids.len())
            }
            (StageInput::Hidden(h), None) => {
                if h.dim != dim || h.data.len() != h.n_tokens * dim || h.n_tokens == 0 {
                    return Err(EngineError::InvalidInput(format!(
                        "hidden state of {} x {} does not fit model dimension {dim}",
                        h.n_tokens, h.dim
                    )));
                }
                Ok(h.n_tokens)
            }
            (StageInput::Tokens(_), None) => Err(EngineError::InvalidInput(format!(
                "stage {:?} does not start at layer 0, so it takes hidden states, not tokens",
                self.range
            ))),
            (StageInput::Hidden(_), Some(_)) => Err(EngineError::InvalidInput(
                "the first stage takes tokens, not hidden states".into(),
            )),
        }
    }

    fn layer_forward(
        &self,
        li: usize,
        l: &Layer,
        x: &mut [f32],
        parts: &[Part],
        seqs: &mut [Seq],
        tables: &[Vec<Vec<(f32, f32)>>],
    ) {
        let s = &self.spec;
        let ls = &s.layers[self.range.start + li];
        let a = &ls.attn;
        let total = x.len() / s.dim;
        let (qd, kd, vd) = (
            a.n_heads * a.head_dim,
            a.n_kv_heads * a.head_dim,
            a.n_kv_heads * a.value_dim,
        );
        let eps = s.norm_eps;
        let mut xn = vec![0f32; x.len()];
        rms_norm(x, &l.attn_norm, eps, &mut xn);
        let (mut q, mut k, mut v) = (
            vec![0f32; total * qd],
            vec![0f32; total * kd],
            vec![0f32; total * vd],
        );
        {
            let input = Input::new(&xn, total);
            match &l.qkv {
                Qkv::Separate {
                    q: wq,
                    k: wk,
                    v: wv,
                } => matmul_many(&input, &mut [(wq, &mut q), (wk, &mut k), (wv, &mut v)]),
                Qkv::Fused(w) => {
                    let mut all = vec![0f32; total * (qd + kd + vd)];
                    matmul(&input, w, &mut all);
                    for (t, row) in all.chunks_exact(qd + kd + vd).enumerate() {
                        q[t * qd..(t + 1) * qd].copy_from_slice(&row[..qd]);
                        k[t * kd..(t + 1) * kd].copy_from_slice(&row[qd..qd + kd]);
                        v[t * vd..(t + 1) * vd].copy_from_slice(&row[qd + kd..]);
                    }
                }
            }
        }
        if let Some([bq, bk, bv]) = &l.bias {
            add_rows(&mut q, bq);
            add_rows(&mut k, bk);
            add_rows(&mut v, bv);
        }
        if let (Some(nq), Some(nk)) = (&l.q_norm, &l.k_norm) {
            rms_norm_inplace(&mut q, nq, eps);
            rms_norm_inplace(&mut k, nk, eps);
        }
        let rope = &s.ropes[ls.rope];
        let hd = a.head_dim;
        let half = rope.n_rot / 2;
        for (si, p) in parts.iter().enumerate() {
            let table = &tables[ls.rope][si];
            for t in 0..p.n {
                let row = p.offset + t;
                let cs = &table[t * half..(t + 1) * half];
                rope.apply(&mut q[row * qd..(row + 1) * qd], hd, cs);
                rope.apply(&mut k[row * kd..(row + 1) * kd], hd, cs);
            }
            if let Some(qs) = ls.q_scale {
                q[p.offset * qd..(p.offset + p.n) * qd]
                    .iter_mut()
                    .for_each(|v| *v *= qs);
            }
            let rows = p.offset..p.offset + p.n;
            seqs[si].cache.layers[li].push(
                &k[rows.start * kd..rows.end * kd],
                &v[rows.start * vd..rows.end * vd],
            );
        }
        let od = a.n_heads * a.value_dim;
        let mut att = vec![0f32; total * od];
        {
            let mut rest: &mut [f32] = &mut att;
            let mut items = Vec::with_capacity(parts.len());
            for (seq, p) in seqs.iter().zip(parts) {
                let (mine, tail) = rest.split_at_mut(p.n * od);
                rest = tail;
                items.push(AttnItem {
                    q: &q[p.offset * qd..(p.offset + p.n) * qd],
                    cache: &seq.cache.layers[li],
                    n: p.n,
                    out: mine,
                });
            }
            attend(a, &mut items);
        }
        let mut o = vec![0f32; x.len()];
        matmul(&Input::new(&att, total), &l.wo, &mut o);
        if let Some(b) = &l.wo_bias {
            add_rows(&mut o, b);
        }
        if let Some(w) = &l.post_attn_norm {
            rms_norm_inplace(&mut o, w, eps);
        }
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        rms_norm(x, &l.ffn_norm, eps, &mut xn);
        match &l.ffn {
            Ffn::Dense { gate, up, down } => {
                let input = Input::new(&xn, total);
                let (mut g, u) = match gate {
                    Some(gw) => {
                        let ff = gw.rows;
                        let (mut g, mut u) = (vec![0f32; total * ff], vec![0f32; total * ff]);
                        matmul_many(&input, &mut [(gw, &mut g), (up, &mut u)]);
                        (g, u)
                    }
                    None => {
                        let ff = up.rows / 2;
                        let mut gu = vec![0f32; total * 2 * ff];
                        matmul(&input, up, &mut gu);
                        let (mut g, mut u) = (
                            Vec::with_capacity(total * ff),
                            Vec::with_capacity(total * ff),
                        );
                        for row in gu.chunks_exact(2 * ff) {
                            g.extend_from_slice(&row[..ff]);
                            u.extend_from_slice(&row[ff..]);
                        }
                        (g, u)
                    }
                };
                s.gate.apply(&mut g, &u);
                matmul(&Input::new(&g, total), down, &mut o);
            }
            Ffn::Moe(m) => m.forward(&xn, total, &mut o),
        }
        if let Some(w) = &l.post_ffn_norm {
            rms_norm_inplace(&mut o, w, eps);
        }
        x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
    }
}
