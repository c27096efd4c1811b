//! Turning logits into the next token: greedy, temperature, top-k, top-p, repetition penalty.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// How to pick tokens and when to stop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// 0 means no top-k cut.
    pub top_k: usize,
    /// 1.0 means no nucleus cut.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the top one's (0 = off).
    pub min_p: f32,
    /// 1.0 means no penalty.
    pub repeat_penalty: f32,
    /// How many recent tokens the repeat penalty looks at.
    pub repeat_last_n: usize,
    /// Subtracted from a token's logit once per time it was generated (OpenAI semantics).
    pub frequency_penalty: f32,
    /// Subtracted from a token's logit once if it was generated at all.
    pub presence_penalty: f32,
    /// Added to the logits of these tokens (-100 bans, +100 forces).
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the sampler: with a seed, every position draws from its own generator
    /// derived from (seed, position), so a replay gives the same tokens.
    pub seed: Option<u64>,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Log-probabilities to report: `None` none, `Some(k)` the chosen token's and the `k`
    /// most likely.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
            max_tokens: 256,
            stop: Vec::new(),
            logprobs: None,
        }
    }
}

/// Most log-probabilities one token may report.
pub const MAX_TOP_LOGPROBS: usize = 20;

impl SamplingParams {
    /// Greedy decoding of up to `max_tokens` tokens.
    pub fn greedy(max_tokens: usize) -> Self {
        SamplingParams {
            max_tokens,
            ..Default::default()
        }
    }

    /// Checks ranges; the message names the bad field.
    pub fn validate(&self, context_length: usize) -> Result<(), String> {
        if !self.temperature.is_finite() || self.temperature < 0.0 || self.temperature > 100.0 {
            return Err(format!(
                "temperature must be within 0..=100, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be within (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return Err(format!("min_p must be within [0, 1], got {}", self.min_p));
        }
        if !self.repeat_penalty.is_finite() || self.repeat_penalty <= 0.0 {
            return Err(format!(
                "repeat_penalty must be positive, got {}",
                self.repeat_penalty
            ));
        }
        for (name, v) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !v.is_finite() || !(-2.0..=2.0).contains(&v) {
                return Err(format!("{name} must be within -2..=2, got {v}"));
            }
        }
        if let Some((t, b)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| !b.is_finite() || b.abs() > 100.0)
        {
            return Err(format!(
                "logit_bias for token {t} must be within -100..=100, got {b}"
            ));
        }
        if let Some(k) = self.logprobs.filter(|k| *k > MAX_TOP_LOGPROBS) {
            return Err(format!(
                "top_logprobs must be at most {MAX_TOP_LOGPROBS}, got {k}"
            ));
        }
        if self.max_tokens == 0 {
            return Err("max_tokens must be at least 1".into());
        }
        if self.max_tokens > context_length {
            return Err(format!(
                "max_tokens {} exceeds the model's context length {context_length}",
                self.max_tokens
            ));
        }
        Ok(())
    }
}

/// A sampled token and, when asked, log-probabilities (natural log).
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    pub token: u32,
    /// Log-probability of `token` under the distribution it was drawn from at
    /// temperature 1 (after penalties and biases); 0 when not asked.
    pub logprob: f32,
    /// The most likely tokens with their log-probabilities, best first.
    pub top: Vec<(u32, f32)>,
}

/// Picks tokens. Stateless between calls apart from its seed, so a sequence can be
/// replayed anywhere (another stage after a failure) with the same results.
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    prompt_len: usize,
}

impl Sampler {
    /// A sampler for a sequence whose first `prompt_len` tokens are the prompt (the
    /// frequency and presence penalties look only at generated tokens). Without a seed
    /// in `params` a random one is drawn.
    pub fn new(params: &SamplingParams) -> Sampler {
        let seed = params.seed.unwrap_or_else(rand::random);
        Sampler {
            params: params.clone(),
            seed,
            prompt_len: usize::MAX,
        }
    }

    /// Sets where the prompt ends in the histories passed to [`Sampler::pick`].
    pub fn with_prompt_len(mut self, prompt_len: usize) -> Sampler {
        self.prompt_len = prompt_len;
        self
    }

    /// The seed in use.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Picks the next token; `history` holds prompt and generated tokens so far.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        self.pick(logits, history, None).token
    }

    /// Picks the next token after `history`; `allowed` (a bitset, bit `i` of word
    /// `i / 32`) restricts the choice (constrained decoding).
    pub fn pick(&self, logits: &mut [f32], history: &[u32], allowed: Option<&[u32]>) -> Sampled {
        let p = &self.params;
        self.penalize(logits, history);
        for (t, b) in &p.logit_bias {
            if let Some(l) = logits.get_mut(*t as usize) {
                *l += b;
            }
        }
        if let Some(mask) = allowed {
            for (i, l) in logits.iter_mut().enumerate() {
                if mask.get(i / 32).is_none_or(|w| w >> (i % 32) & 1 == 0) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let token = if p.temperature <= 0.0 {
            argmax(logits)
        } else {
            self.draw(logits, history.len())
        };
        match p.logprobs {
            None => Sampled {
                token,
                logprob: 0.0,
                top: Vec::new(),
            },
            Some(k) => {
                let (logprob, top) = log_probs(logits, token, k);
                Sampled {
                    token,
                    logprob,
                    top,
                }
            }
        }
    }

    fn penalize(&self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        if p.repeat_penalty != 1.0 {
            let start = history.len().saturating_sub(p.repeat_last_n);
            let mut seen = std::collections::HashSet::new();
            for &t in &history[start..] {
                if let Some(l) = logits.get_mut(t as usize) {
                    if seen.insert(t) {
                        *l = if *l > 0.0 {
                            *l / p.repeat_penalty
                        } else {
                            *l * p.repeat_penalty
                        };
                    }
                }
            }
        }
        if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
            let generated = &history[self.prompt_len.min(history.len())..];
            let mut counts = std::collections::HashMap::<u32, u32>::new();
            for &t in generated {
                *counts.entry(t).or_default() += 1;
            }
            for (t, c) in counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= c as f32 * p.frequency_penalty + p.presence_penalty;
                }
            }
        }
    }

    /// Draws from the temperature-scaled distribution cut by top-k, top-p and min-p,
    /// with the generator of position `pos`.
    fn draw(&self, logits: &[f32], pos: usize) -> u32 {
        let p = &self.params;
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, l)| (i as u32, *l))
            .collect();
        if cand.is_empty() {
            return argmax(logits);
        }
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit);
            cand.truncate(p.top_k);
        }
        cand.sort_unstable_by(by_logit);
        let max = cand[0].1;
        let mut sum = 0.0;
        for c in cand.iter_mut() {
            c.1 = ((c.1 - max) / p.temperature).exp();
            sum += c.1;
        }
        let floor = p.min_p * cand[0].1 / sum;
        let mut cum = 0.0;
        let mut keep = cand.len();
        for (i, c) in cand.iter_mut().enumerate() {
            c.1 /= sum;
            if i > 0 && c.1 < floor {
                keep = i;
                break;
            }
            cum += c.1;
            if cum >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        cand.truncate(keep);
        let total: f32 = cand.iter().map(|c| c.1).sum();
        let mut rng = StdRng::seed_from_u64(mix(self.seed, pos as u64));
        let mut r = rng.random::<f32>() * total;
        for c in &cand {
            r -= c.1;
            if r <= 0.0 {
                return c.0;
            }
        }
        cand.last().map(|c| c.0).unwrap_or(0)
    }
}

/// A well-spread 64-bit value of (seed, position) (splitmix64 of their mix).
fn mix(seed: u64, pos: u64) -> u64 {
    let mut z = seed ^ pos.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Log-probability of `token` and the `k` best tokens under `softmax(logits)`.
fn log_probs(logits: &[f32], token: u32, k: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    let lse = max
        + logits
            .iter()
            .map(|l| ((l - max) as f64).exp())
            .sum::<f64>()
            .ln() as f32;
    let mut top: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, l)| (i as u32, *l))
        .collect();
    let by = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if k > 0 && k < top.len() {
        top.select_nth_unstable_by(k - 1, by);
    }
    top.truncate(k);
    top.sort_unstable_by(by);
    for t in top.iter_mut() {
        t.1 -= lse;
    }
    (logits[token as usize] - lse, top)
}

/// Index of the largest value (first one on ties).
pub fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in x.iter().enumerate() {
        if *v > x[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_max_and_penalty_changes_it() {
        let mut s = Sampler::new(&SamplingParams::greedy(1));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[]), 1);
        let p = SamplingParams {
            repeat_penalty: 2.0,
            ..SamplingParams::greedy(1)
        };
        let mut s = Sampler::new(&p);
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.9], &[1]), 2);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_top_k() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            seed: Some(7),
            ..Default::default()
        };
        let logits = [1.0, 5.0, 4.9, 0.0, -1.0];
        let hist = [0u32; 50];
        let a: Vec<u32> = {
            let mut s = Sampler::new(&p);
            (0..50)
                .map(|i| s.sample(&mut logits.clone(), &hist[..i]))
                .collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(&p);
            (0..50)
                .map(|i| s.sample(&mut logits.clone(), &hist[..i]))
                .collect()
        };
        assert_eq!(a, b);
        assert!(a.iter().all(|t| *t == 1 || *t == 2));
        assert!(a.contains(&1) && a.contains(&2));
    }

    #[test]
    fn replays_draw_the_same_tokens_at_the_same_positions() {
        let p = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: Some(11),
            ..Default::default()
        };
        let logits = [1.0, 1.2, 0.9, 1.1, 1.05];
        let s1 = Sampler::new(&p);
        let s2 = Sampler::new(&p);
        let hist: Vec<u32> = (0..40).collect();
        let a: Vec<u32> = (0..40)
            .map(|i| s1.pick(&mut logits.clone(), &hist[..i], None).token)
            .collect();
        // A fresh sampler (a replay elsewhere) at the same positions, in another order.
        let b: Vec<u32> = (0..40)
            .rev()
            .map(|i| s2.pick(&mut logits.clone(), &hist[..i], None).token)
            .collect();
        assert_eq!(a, b.into_iter().rev().collect::<Vec<_>>());
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 2);
    }

    #[test]
    fn penalties_bias_mask_and_logprobs() {
        let p = SamplingParams {
            frequency_penalty: 1.0,
            presence_penalty: 0.5,
            logprobs: Some(2),
            ..SamplingParams::greedy(1)
        };
        // Prompt [1]; generated [2, 2]: token 2 loses 2 * 1.0 + 0.5, token 1 nothing.
        let s = Sampler::new(&p).with_prompt_len(1);
        let out = s.pick(&mut [0.0, 2.0, 3.0], &[1, 2, 2], None);
        assert_eq!(out.token, 1);
        assert_eq!(out.top.len(), 2);
        assert_eq!(out.top[0].0, 1);
        let total: f32 = [0.0f32, 2.0, 0.5].iter().map(|l| l.exp()).sum();
        assert!((out.logprob - (2.0 - total.ln())).abs() < 1e-5);
        let biased = SamplingParams {
            logit_bias: vec![(0, 10.0)],
            ..SamplingParams::greedy(1)
        };
        assert_eq!(
            Sampler::new(&biased)
                .pick(&mut [0.0, 2.0, 3.0], &[], None)
                .token,
            0
        );
        let mask = [0b010u32];
        assert_eq!(
            Sampler::new(&SamplingParams::greedy(1))
                .pick(&mut [0.0, 2.0, 3.0], &[], Some(&mask))
                .token,
            1
        );
    }

    #[test]
    fn validation_names_the_field() {
        let ctx = 8192;
        assert!(SamplingParams::greedy(0)
            .validate(ctx)
            .unwrap_err()
            .contains("max_tokens"));
        assert!(SamplingParams::greedy(100_000)
            .validate(ctx)
            .unwrap_err()
            .contains("max_tokens"));
        let p = SamplingParams {
            temperature: -1.0,
            ..Default::default()
        };
        assert!(p.validate(ctx).unwrap_err().contains("temperature"));
        assert!(SamplingParams::greedy(10).validate(ctx).is_ok());
    }
}
