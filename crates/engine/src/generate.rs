//! Local text generation: the whole pipeline in one process (for `agent generate`, tests
//! and the benchmark), plus the stop-string filter shared with the distributed path.

use crate::chat::{ChatMessage, ChatTemplate};
use crate::error::{EngineError, Result};
use crate::model::{KvCache, Stage, StageInput, StageOutput};
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::Tokenizer;
use std::path::Path;
use std::time::{Duration, Instant};

/// Splits `n_layers` into `parts` contiguous, near-equal ranges.
pub fn even_split(n_layers: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, n_layers.max(1));
    (0..parts)
        .map(|i| (i * n_layers / parts, (i + 1) * n_layers / parts))
        .collect()
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence token or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The caller asked to stop.
    Cancelled,
}

impl FinishReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Result and timings of one generation.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub finish: FinishReason,
    pub time_to_first_token: Duration,
    pub total: Duration,
}

impl Generation {
    /// Generated tokens per second after the first token.
    pub fn tokens_per_second(&self) -> f64 {
        let n = self.tokens.len().saturating_sub(1) as f64;
        let t = (self.total - self.time_to_first_token).as_secs_f64();
        if t > 0.0 {
            n / t
        } else {
            0.0
        }
    }
}

/// Holds back text that might be the start of a stop string; cuts at a full match.
pub struct StopFilter {
    stops: Vec<String>,
    pending: String,
}

impl StopFilter {
    pub fn new(stops: &[String]) -> Self {
        StopFilter {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Feeds new text; returns (text safe to emit, whether a stop string was hit).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.pending.push_str(piece);
        if let Some(pos) = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min()
        {
            let out = self.pending[..pos].to_string();
            self.pending.clear();
            return (out, true);
        }
        // Keep the longest suffix that is a prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for k in (1..s.len().min(self.pending.len() + 1)).rev() {
                if self.pending.is_char_boundary(self.pending.len() - k)
                    && s.starts_with(&self.pending[self.pending.len() - k..])
                {
                    keep = keep.max(k);
                    break;
                }
            }
        }
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// Text still held back when generation ends without a stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// A whole model in one process, optionally split into several stages whose hidden
/// states pass through the wire format, exactly as between agents.
pub struct Generator {
    pub stages: Vec<Stage>,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
}

impl Generator {
    /// Loads the model at `path` as `n_stages` even stages.
    pub fn load(path: &Path, n_stages: usize) -> Result<Generator> {
        let f = crate::arch::open(path)?;
        let tokenizer = Tokenizer::from_file(&f)?;
        let template = ChatTemplate::from_file(&f)?;
        let stages = even_split(f.info.n_layers, n_stages)
            .into_iter()
            .map(|(s, e)| Stage::load(path, s, e))
            .collect::<Result<Vec<_>>>()?;
        Ok(Generator {
            stages,
            tokenizer,
            template,
        })
    }

    /// Fresh caches, one per stage.
    pub fn new_caches(&self) -> Vec<KvCache> {
        self.stages.iter().map(|s| s.new_cache()).collect()
    }

    /// Runs `tokens` through every stage and returns the last position's logits.
    pub fn logits(&self, tokens: &[u32], caches: &mut [KvCache]) -> Result<Vec<f32>> {
        let mut input = StageInput::Tokens(tokens.to_vec());
        for (stage, cache) in self.stages.iter().zip(caches.iter_mut()) {
            match stage.forward(input, cache)? {
                StageOutput::Logits(l) => return Ok(l),
                StageOutput::Hidden(h) => {
                    let wire = h.to_bytes();
                    input = StageInput::Hidden(crate::hidden::HiddenState::from_bytes(
                        &wire, h.n_tokens, h.dim,
                    )?);
                }
            }
        }
        Err(EngineError::InvalidInput(
            "the stages do not end with the output head".into(),
        ))
    }

    /// Renders a chat with the model's template and tokenizes it.
    pub fn chat_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        self.tokenizer
            .encode(&self.template.render(messages, true)?)
    }

    /// Generates from prompt tokens; `on_text` gets each new piece of text and returns
    /// `false` to stop early.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &SamplingParams,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let info = self.stages[0].info();
        params
            .validate(info.context_length)
            .map_err(EngineError::InvalidInput)?;
        if prompt.is_empty() {
            return Err(EngineError::InvalidInput("the prompt is empty".into()));
        }
        if prompt.len() + 1 > info.context_length {
            return Err(EngineError::ContextOverflow {
                needed: prompt.len() + 1,
                limit: info.context_length,
            });
        }
        let start = Instant::now();
        let mut caches = self.new_caches();
        let mut sampler = Sampler::new(params);
        let mut history = prompt.to_vec();
        let mut out = Vec::new();
        let mut text = String::new();
        let mut stream = self.tokenizer.stream();
        let mut stop = StopFilter::new(&params.stop);
        let mut ttft = Duration::ZERO;
        let mut next_input = prompt.to_vec();
        let mut finish = FinishReason::Length;
        while out.len() < params.max_tokens && history.len() < info.context_length {
            let mut logits = self.logits(&next_input, &mut caches)?;
            let tok = sampler.sample(&mut logits, &history);
            if out.is_empty() {
                ttft = start.elapsed();
            }
            if self.tokenizer.is_eog(tok) {
                finish = FinishReason::Stop;
                break;
            }
            out.push(tok);
            history.push(tok);
            next_input = vec![tok];
            if let Some(piece) = stream.push(tok)? {
                let (emit, hit) = stop.push(&piece);
                text.push_str(&emit);
                let go_on = emit.is_empty() || on_text(&emit);
                if hit {
                    finish = FinishReason::Stop;
                    break;
                }
                if !go_on {
                    finish = FinishReason::Cancelled;
                    break;
                }
            }
        }
        if finish != FinishReason::Stop {
            let rest = stop.finish();
            if !rest.is_empty() {
                on_text(&rest);
                text.push_str(&rest);
            }
        }
        Ok(Generation {
            text,
            tokens: out,
            prompt_tokens: prompt.len(),
            finish,
            time_to_first_token: ttft,
            total: start.elapsed(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn even_split_covers_all_layers() {
        assert_eq!(even_split(30, 3), vec![(0, 10), (10, 20), (20, 30)]);
        assert_eq!(even_split(5, 2), vec![(0, 2), (2, 5)]);
        assert_eq!(even_split(2, 5), vec![(0, 1), (1, 2)]);
    }

    #[test]
    fn stop_filter_holds_back_prefixes_and_cuts() {
        let mut f = StopFilter::new(&["END".to_string()]);
        assert_eq!(f.push("hello E"), ("hello ".to_string(), false));
        assert_eq!(f.push("N"), (String::new(), false));
        assert_eq!(f.push("D and more"), (String::new(), true));
        let mut f = StopFilter::new(&["END".to_string()]);
        assert_eq!(f.push("hello E"), ("hello ".to_string(), false));
        assert_eq!(f.push("x"), ("Ex".to_string(), false));
        assert_eq!(f.finish(), "");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut f = StopFilter::new(&stops);
        let mut out = String::new();
        for p in pieces {
            let (t, hit) = f.push(p);
            out.push_str(&t);
            if hit {
                return (out, true);
            }
        }
        out.push_str(&f.finish());
        (out, false)
    }

    #[test]
    fn stop_filter_edge_cases() {
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&["", "END"], &["x", "EN", "Dy"]), ("x".into(), true));
        assert_eq!(run(&["b", "a"], &["xab"]), ("x".into(), true));
        assert_eq!(run(&["é!"], &["café", "é", "!"]), ("café".into(), true));
        assert_eq!(run(&["é!"], &["café", "é"]), ("caféé".into(), false));
    }
}
