//! Chat state: transcript, input line, sampling settings and live timings.

use std::time::Instant;

use proto::v1 as pb;

use crate::client::ChatEvent;

/// Temperatures cycled with Ctrl-T.
pub const TEMPERATURES: [f32; 5] = [0.0, 0.3, 0.7, 1.0, 1.5];
/// Maximum tokens cycled with Ctrl-N.
pub const MAX_TOKENS: [u32; 5] = [64, 128, 256, 512, 32];
/// Top-p values cycled with Ctrl-P.
pub const TOP_P: [f32; 4] = [1.0, 0.95, 0.9, 0.8];
/// Turns sent back to the model (older ones are dropped from the request).
pub const CONTEXT_TURNS: usize = 8;
/// Longest input line accepted.
pub const MAX_INPUT: usize = 4000;

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    /// "user" or "assistant".
    pub role: String,
    /// Text so far.
    pub text: String,
}

/// Sampling settings chosen by the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Model id; `None` = the cluster's model.
    pub model: Option<String>,
    /// Index into [`TEMPERATURES`].
    pub temperature: usize,
    /// Index into [`MAX_TOKENS`].
    pub max_tokens: usize,
    /// Index into [`TOP_P`].
    pub top_p: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: None,
            temperature: 2,
            max_tokens: 1,
            top_p: 1,
        }
    }
}

impl Settings {
    /// The request's sampling parameters.
    pub fn sampling(&self) -> pb::SamplingParams {
        pb::SamplingParams {
            temperature: Some(TEMPERATURES[self.temperature]),
            top_p: Some(TOP_P[self.top_p]),
            max_tokens: Some(MAX_TOKENS[self.max_tokens]),
            ..Default::default()
        }
    }
}

/// The chat view's state.
#[derive(Debug, Clone, Default)]
pub struct Chat {
    /// Conversation so far.
    pub transcript: Vec<Turn>,
    /// Line being typed.
    pub input: String,
    /// A generation is running.
    pub streaming: bool,
    /// Agent the current/last request went to.
    pub target: Option<String>,
    /// When the current request was sent.
    pub started: Option<Instant>,
    /// When its first token arrived.
    pub first_token: Option<Instant>,
    /// Time to first token (ms): measured live, then the agent's figure.
    pub ttft_ms: Option<f64>,
    /// Tokens per second: measured live, then the agent's figure.
    pub tokens_per_second: Option<f64>,
    /// Tokens received for the current/last request.
    pub tokens: u32,
    /// Why the last request ended ("stop", "length", "cancelled").
    pub finish: Option<String>,
    /// Last error.
    pub error: Option<String>,
    /// Lines scrolled up from the bottom of the transcript.
    pub scroll: u16,
    /// Sampling settings.
    pub settings: Settings,
}

impl Chat {
    /// Start a request for the current input; `None` when empty or already streaming.
    pub fn begin(&mut self, target: String, now: Instant) -> Option<pb::GenerateRequest> {
        let text = self.input.trim().to_string();
        if text.is_empty() || self.streaming {
            return None;
        }
        self.input.clear();
        self.transcript.push(Turn {
            role: "user".into(),
            text,
        });
        let start = self.transcript.len().saturating_sub(CONTEXT_TURNS);
        let messages = self.transcript[start..]
            .iter()
            .filter(|t| !t.text.is_empty())
            .map(|t| pb::ChatMessage {
                role: t.role.clone(),
                content: t.text.clone(),
                ..Default::default()
            })
            .collect();
        self.transcript.push(Turn {
            role: "assistant".into(),
            text: String::new(),
        });
        self.streaming = true;
        self.target = Some(target);
        self.started = Some(now);
        self.first_token = None;
        self.ttft_ms = None;
        self.tokens_per_second = None;
        self.tokens = 0;
        self.finish = None;
        self.error = None;
        self.scroll = 0;
        Some(pb::GenerateRequest {
            model: self.settings.model.clone(),
            messages,
            sampling: Some(self.settings.sampling()),
            ..Default::default()
        })
    }

    /// Apply a stream event received at `now`.
    pub fn on_event(&mut self, ev: ChatEvent, now: Instant) {
        if !self.streaming {
            return; // late event of a cancelled request
        }
        match ev {
            ChatEvent::Token(t) => {
                self.tokens += 1;
                if self.first_token.is_none() {
                    self.first_token = Some(now);
                    self.ttft_ms = self.started.map(|s| ms(now - s));
                } else if let Some(f) = self.first_token {
                    let secs = (now - f).as_secs_f64();
                    if secs > 0.0 {
                        self.tokens_per_second = Some((self.tokens - 1) as f64 / secs);
                    }
                }
                if let Some(last) = self.transcript.last_mut() {
                    last.text.push_str(&t);
                }
            }
            ChatEvent::Done(d) => {
                self.streaming = false;
                if let Some(t) = d.timings {
                    self.ttft_ms = Some(t.ttft_ms);
                    self.tokens_per_second = Some(t.tokens_per_second);
                }
                if let Some(u) = d.usage {
                    self.tokens = u.completion_tokens;
                }
                self.finish = Some(d.finish_reason);
            }
            ChatEvent::Error(e) => {
                self.streaming = false;
                self.error = Some(e);
                self.drop_empty_answer();
            }
        }
    }

    /// The user cancelled the running request.
    pub fn cancel(&mut self) {
        if self.streaming {
            self.streaming = false;
            self.finish = Some("cancelled".into());
            self.drop_empty_answer();
        }
    }

    fn drop_empty_answer(&mut self) {
        if self
            .transcript
            .last()
            .is_some_and(|t| t.role == "assistant" && t.text.is_empty())
        {
            self.transcript.pop();
        }
    }

    /// Cycle the model among `ids` (after them, back to the cluster default).
    pub fn next_model(&mut self, ids: &[String]) {
        let pos = self
            .settings
            .model
            .as_ref()
            .and_then(|m| ids.iter().position(|i| i == m));
        self.settings.model = match pos {
            None => ids.first().cloned(),
            Some(i) => ids.get(i + 1).cloned(),
        };
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
