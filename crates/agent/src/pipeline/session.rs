//! One request's state on one stage: the stage's layers, its KV cache and, on the
//! last stage, the sampler. Used for in-process hops and by `PipelineService`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{HiddenState, KvCache, Sampler, SamplingParams, Stage, StageInput, StageOutput};

/// Input of one pipeline step.
#[derive(Debug, Clone)]
pub struct StepIn {
    /// Position of the first token (tokens already in the cache).
    pub position: usize,
    /// Token ids of this step.
    pub tokens: Vec<u32>,
    /// Hidden state from the previous stage (`None` for the first stage).
    pub hidden: Option<HiddenState>,
}

/// Output of one pipeline step.
#[derive(Debug, Clone)]
pub enum StepOut {
    Hidden(HiddenState),
    Token(u32),
}

/// A request's state on one stage.
pub struct StageSession {
    stage: Arc<Stage>,
    cache: KvCache,
    sampler: Option<Sampler>,
    history: Vec<u32>,
    /// Open-sessions gauge, decremented on drop.
    gauge: Option<prometheus_client::metrics::gauge::Gauge>,
}

impl Drop for StageSession {
    fn drop(&mut self) {
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

impl StageSession {
    /// A fresh session; the last stage samples with `params`.
    pub fn new(stage: Arc<Stage>, params: &SamplingParams) -> Self {
        let cache = stage.new_cache();
        let sampler = stage.is_last().then(|| Sampler::new(params));
        Self {
            stage,
            cache,
            sampler,
            history: Vec::new(),
            gauge: None,
        }
    }

    /// Count this session in `gauge` while it lives (its KV cache is held).
    pub fn tracked(mut self, gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        self.gauge = Some(gauge);
        self
    }

    /// The stage's layer range.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.stage.range()
    }

    /// Run one step (blocking CPU work: call from a blocking thread).
    /// Returns the output and the compute time.
    pub fn step(&mut self, input: StepIn) -> Result<(StepOut, Duration), String> {
        if input.position != self.cache.len() {
            return Err(format!(
                "step at position {} but the stage has seen {} positions",
                input.position,
                self.cache.len()
            ));
        }
        if input.tokens.is_empty() {
            return Err("step without tokens".into());
        }
        let stage_input = if self.stage.is_first() {
            StageInput::Tokens(input.tokens.clone())
        } else {
            let h = input
                .hidden
                .ok_or_else(|| "a stage after the first needs a hidden state".to_string())?;
            if h.n_tokens != input.tokens.len() {
                return Err(format!(
                    "hidden state has {} positions but the step has {} tokens",
                    h.n_tokens,
                    input.tokens.len()
                ));
            }
            StageInput::Hidden(h)
        };
        let t0 = Instant::now();
        let before = self.cache.len();
        let out = match self.stage.forward(stage_input, &mut self.cache) {
            Ok(o) => o,
            Err(e) => {
                self.cache.truncate(before);
                return Err(e.to_string());
            }
        };
        let compute = t0.elapsed();
        self.history.extend_from_slice(&input.tokens);
        match out {
            StageOutput::Hidden(h) => Ok((StepOut::Hidden(h), compute)),
            StageOutput::Logits(mut logits) => {
                let sampler = self
                    .sampler
                    .as_mut()
                    .ok_or_else(|| "logits from a stage that is not last".to_string())?;
                let token = sampler.sample(&mut logits, &self.history);
                Ok((StepOut::Token(token), compute))
            }
        }
    }
}

/// Run a step on a blocking thread, handing the session back. A failed step
/// (or a panic in the engine) ends the request, so the session is dropped then.
pub async fn step_blocking(
    mut session: StageSession,
    input: StepIn,
) -> Result<(StageSession, StepOut, Duration), String> {
    let joined = tokio::task::spawn_blocking(move || {
        let r = session.step(input);
        r.map(|(out, d)| (session, out, d))
    })
    .await;
    match joined {
        Ok(r) => r,
        Err(e) => Err(format!("stage computation failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> Option<std::path::PathBuf> {
        let p = engine::fetch::default_model_path();
        p.is_file().then_some(p)
    }

    #[test]
    fn two_sessions_chain_and_reject_bad_steps() {
        let Some(path) = model() else {
            eprintln!("SKIP: default model not present");
            return;
        };
        let params = SamplingParams::greedy(4);
        let first = Arc::new(Stage::load(&path, 0, 15).unwrap());
        let last = Arc::new(Stage::load(&path, 15, 30).unwrap());
        let mut a = StageSession::new(first, &params);
        let mut b = StageSession::new(last, &params);
        let tokens = vec![1u32, 2, 3];
        let step = |position, hidden| StepIn {
            position,
            tokens: tokens.clone(),
            hidden,
        };
        let (out, _) = a.step(step(0, None)).unwrap();
        let StepOut::Hidden(h) = out else {
            panic!("first stage must return a hidden state")
        };
        assert_eq!((h.n_tokens, h.dim), (3, 576));
        // Wrong position: rejected, nothing cached.
        assert!(b.step(step(5, Some(h.clone()))).is_err());
        // Missing hidden state on a later stage: rejected.
        assert!(b.step(step(0, None)).is_err());
        let (out, _) = b.step(step(0, Some(h))).unwrap();
        assert!(matches!(out, StepOut::Token(t) if (t as usize) < 49152));
        // The first stage has seen 3 positions now; a repeat at 0 is refused.
        assert!(a.step(step(0, None)).is_err());
    }
}
