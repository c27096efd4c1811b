//! Serving requests entered at this agent: admission by KV budget, and a coordinator per
//! request that drives its sequence through the pipeline as a session (`session.rs`),
//! streams its tokens and, when a stage fails, replays it on the new plan (the same
//! tokens: sampling is seeded per position). Embeddings run on the same session type.

pub mod admission;
mod coordinator;
mod embed;
mod prefixes;
mod session;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::SamplingParams;
use tokio::sync::mpsc;

use crate::metrics::RequestStatus;
use crate::node::state::AgentState;
use crate::pipeline::router::Router;
use admission::Admission;
use prefixes::Prefixes;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq)]
pub enum GenError {
    /// Client error (400).
    BadRequest(String),
    /// The model is not fully available now (503).
    Unavailable(String),
    /// Something broke while generating (500).
    Internal(String),
    /// Too many requests waiting at this agent (429).
    Busy(String),
}

impl std::fmt::Display for GenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GenError::BadRequest(m)
            | GenError::Unavailable(m)
            | GenError::Internal(m)
            | GenError::Busy(m) => f.write_str(m),
        }
    }
}

/// A tokenized generation request.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub request_id: String,
    pub prompt_tokens: Vec<u32>,
    pub params: SamplingParams,
    /// What the output must follow (`response_format`, tool calls).
    pub constraint: Option<engine::constrain::Constraint>,
}

/// Totals of a finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub finish_reason: &'static str,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    /// Prompt positions taken from the stages' prefix caches.
    pub cached_tokens: u32,
    pub ttft: Duration,
    pub total: Duration,
    pub tokens_per_second: f64,
}

/// Events streamed to the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Token {
        id: u32,
        text: String,
        /// Log-probability and the most likely alternatives, when asked for.
        logprob: f32,
        top: Vec<(u32, f32)>,
    },
    /// Text held back by the stop-string matcher, released at the end.
    Text(String),
    Done(Finished),
    Failed(GenError),
}

/// Settings of the serving layer.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    /// Longest wait for a covering plan after a stage failed.
    pub recovery_timeout: Duration,
    /// Prompt positions per step (the stage worker's chunk).
    pub chunk: usize,
}

/// Default longest wait for a plan that covers the model again after a stage failed
/// (`--recovery-timeout`).
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The requests of this agent.
pub struct Serving {
    pub state: Arc<AgentState>,
    pub router: Arc<Router>,
    pub admission: Admission,
    pub cfg: ServingConfig,
    prefixes: Prefixes,
}

impl Serving {
    pub fn new(
        state: Arc<AgentState>,
        router: Arc<Router>,
        admission: Admission,
        cfg: ServingConfig,
    ) -> Arc<Self> {
        Arc::new(Self {
            state,
            router,
            admission,
            cfg,
            prefixes: Prefixes::new(64),
        })
    }

    /// Validates against the model, admits (or refuses with 429) and starts the request;
    /// errors here come before any token, for a proper HTTP/gRPC status.
    pub fn start(self: &Arc<Self>, req: GenRequest) -> Result<mpsc::Receiver<GenEvent>, GenError> {
        let info = &self.state.model.info;
        req.params
            .validate(info.context_length)
            .map_err(GenError::BadRequest)?;
        if req.prompt_tokens.is_empty() {
            return Err(GenError::BadRequest("the prompt is empty".into()));
        }
        if req.prompt_tokens.len() >= info.context_length {
            return Err(GenError::BadRequest(format!(
                "the prompt has {} tokens; the model's context is {}",
                req.prompt_tokens.len(),
                info.context_length
            )));
        }
        let _ = self.state.route().map_err(GenError::Unavailable)?;
        let need = (req.prompt_tokens.len() + req.params.max_tokens).min(info.context_length);
        let ticket = self
            .admission
            .try_admit(need)
            .map_err(|m| GenError::Busy(format!("{}: {m}", self.state.node_id)))?;
        let (tx, rx) = mpsc::channel(256);
        let me = self.clone();
        tokio::spawn(async move {
            let m = &me.state.metrics;
            m.queued_requests.inc();
            let slot = tokio::select! {
                s = ticket.slot() => Some(s),
                _ = tx.closed() => None,
            };
            m.queued_requests.dec();
            let Some(_slot) = slot else {
                m.finish_request(RequestStatus::Cancelled);
                return;
            };
            m.active_requests.inc();
            let t0 = Instant::now();
            let id = req.request_id.clone();
            let status = coordinator::run(&me, req, &tx, t0).await;
            tracing::info!(request = %id, ?status, ms = t0.elapsed().as_millis() as u64, "request finished");
            m.active_requests.dec();
            m.finish_request(status);
            m.request_duration.observe(t0.elapsed().as_secs_f64());
        });
        Ok(rx)
    }
}
