//! Distributed generation. The agent a request enters coordinates it: for every
//! step it runs the stages in order (its own in-process, others over gRPC), gets a
//! token from the last stage, detokenizes, applies stop strings and streams out.

pub mod msg;
pub mod prefix;
pub mod remote;
pub mod server;
pub mod session;
pub mod worker;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{SamplingParams, StopFilter};
use proto::v1::ForwardHeader;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, RequestStatus};
use crate::state::AgentState;
use remote::RemoteHop;
use session::{step_blocking, StageSession, StepIn, StepOut};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq)]
pub enum GenError {
    /// Client error (400).
    BadRequest(String),
    /// The model is not fully available now (503).
    Unavailable(String),
    /// Something broke while generating (500).
    Internal(String),
    /// Too many requests in flight at this agent (429).
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
}

/// Totals of a finished request.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub finish_reason: &'static str,
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub ttft: Duration,
    pub total: Duration,
    pub tokens_per_second: f64,
    /// Per remote hop: (peer, mean round trip, mean stage compute).
    pub hops: Vec<(String, Duration, Duration)>,
}

/// Events streamed to the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum GenEvent {
    Token {
        id: u32,
        text: String,
    },
    /// Text held back by the stop-string matcher, released at the end.
    Text(String),
    Done(Finished),
    Failed(GenError),
}

enum Hop {
    Local(Option<StageSession>),
    Remote(RemoteHop),
}

impl Hop {
    async fn step(&mut self, input: StepIn, metrics: &Metrics) -> Result<StepOut, GenError> {
        match self {
            Hop::Local(slot) => {
                let session = slot
                    .take()
                    .ok_or_else(|| GenError::Internal("local stage lost after an error".into()))?;
                let (session, out, compute) = step_blocking(session, input)
                    .await
                    .map_err(GenError::Internal)?;
                *slot = Some(session);
                metrics.stage_forward.observe(compute.as_secs_f64());
                Ok(out)
            }
            Hop::Remote(r) => r.step(input).await,
        }
    }
}

/// Default longest wait for a plan that covers the model again after a stage failed
/// (`--recovery-timeout`).
pub const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Validate against the model, plan a route and start generating in a task.
/// Errors here are reported before any token (for a proper HTTP/gRPC status).
pub fn start(
    state: Arc<AgentState>,
    req: GenRequest,
) -> Result<mpsc::Receiver<GenEvent>, GenError> {
    let info = &state.model.info;
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
    // Fail fast (503) when the model is not available now.
    let _ = state.route().map_err(GenError::Unavailable)?;
    let ticket = state
        .admission
        .try_admit()
        .map_err(|m| GenError::Busy(format!("{}: {m}", state.node_id)))?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        state.metrics.queued_requests.inc();
        let slot = tokio::select! {
            s = ticket.slot() => s,
            _ = tx.closed() => None,
        };
        state.metrics.queued_requests.dec();
        let Some(_slot) = slot else {
            state.metrics.finish_request(RequestStatus::Cancelled);
            return;
        };
        state.metrics.active_requests.inc();
        let t0 = Instant::now();
        let id = req.request_id.clone();
        let status = match build_hops(&state, &req) {
            Ok(hops) => run(&state, req, hops, &tx, t0).await,
            Err(e) => {
                let _ = tx.send(GenEvent::Failed(e)).await;
                RequestStatus::Error
            }
        };
        tracing::info!(
            request = %id, ?status,
            ms = t0.elapsed().as_millis() as u64,
            "request finished"
        );
        state.metrics.active_requests.dec();
        state.metrics.finish_request(status);
        state
            .metrics
            .request_duration
            .observe(t0.elapsed().as_secs_f64());
        drop(ticket);
    });
    Ok(rx)
}

/// The hops of the current plan, with fresh sessions (empty KV caches).
fn build_hops(state: &AgentState, req: &GenRequest) -> Result<Vec<Hop>, GenError> {
    let (plan_version, route) = state.route().map_err(GenError::Unavailable)?;
    let mut hops = Vec::with_capacity(route.len());
    for h in &route {
        if h.local {
            let stage = state
                .stage()
                .filter(|s| s.range() == h.range)
                .ok_or_else(|| GenError::Unavailable("local layers are being reloaded".into()))?;
            let session = StageSession::new(stage, &req.params)
                .tracked(state.metrics.pipeline_sessions.clone());
            hops.push(Hop::Local(Some(session)));
        } else {
            let header = ForwardHeader {
                request_id: req.request_id.clone(),
                model: state.model.id.clone(),
                layer_start: h.range.start as u32,
                layer_end: h.range.end as u32,
                plan_version,
                sampling: Some(crate::convert::sampling_to_proto(&req.params)),
                origin_node: state.node_id.clone(),
            };
            let channel = state.channel(&h.api_addr).map_err(GenError::Unavailable)?;
            hops.push(Hop::Remote(RemoteHop::new(
                h.node_id.clone(),
                h.api_addr.clone(),
                header,
                channel,
                state.metrics.clone(),
            )));
        }
    }
    Ok(hops)
}

/// Run one step through every hop; the last stage's token.
async fn step_all(hops: &mut [Hop], input: StepIn, metrics: &Metrics) -> Result<u32, GenError> {
    let mut step = input;
    for hop in hops.iter_mut() {
        match hop.step(step.clone(), metrics).await? {
            StepOut::Hidden(h) => step.hidden = Some(h),
            StepOut::Token(t) => return Ok(t),
        }
    }
    Err(GenError::Internal(
        "the last stage returned no token".into(),
    ))
}

/// A remote hop whose owner gossip now reports dead.
fn dead_peer(state: &AgentState, hops: &[Hop]) -> Option<String> {
    let view = state.view.read().unwrap_or_else(|p| p.into_inner());
    hops.iter().find_map(|h| match h {
        Hop::Remote(r) => view
            .member(&r.peer)
            .filter(|m| m.state == crate::view::Liveness::Dead)
            .map(|_| r.peer.clone()),
        Hop::Local(_) => None,
    })
}

/// Layer ranges no ready stage serves now, e.g. `10..20, 25..30`.
fn missing_layers(state: &AgentState) -> String {
    let view = state.view();
    let n = state.model.info.n_layers;
    let Some(plan) = view.plan.as_ref() else {
        return format!("0..{n}");
    };
    let mut missing: Vec<std::ops::Range<usize>> = plan.gaps();
    for s in &plan.slices {
        let ready = if s.node_id == state.node_id {
            state.local_range().as_ref() == Some(&s.range)
        } else {
            view.member(&s.node_id).is_some_and(|m| {
                m.state != crate::view::Liveness::Dead && m.layers.as_ref() == Some(&s.range)
            })
        };
        if !ready {
            missing.push(s.range.clone());
        }
    }
    missing.sort_by_key(|r| r.start);
    let names: Vec<String> = missing
        .iter()
        .map(|r| format!("{}..{}", r.start, r.end))
        .collect();
    if names.is_empty() {
        "none (stages did not answer)".into()
    } else {
        names.join(", ")
    }
}

/// One step through every hop, abandoned as soon as gossip reports a stage's owner
/// dead (a frozen or cut-off peer fails the hop without waiting for its deadline).
async fn step_watched(state: &AgentState, hops: &mut [Hop], step: StepIn) -> Result<u32, GenError> {
    let dead = |hops: &[Hop]| {
        dead_peer(state, hops).map(|p| GenError::Unavailable(format!("stage owner {p} is dead")))
    };
    if let Some(e) = dead(hops) {
        return Err(e);
    }
    let watched: Vec<String> = hops
        .iter()
        .filter_map(|h| match h {
            Hop::Remote(r) => Some(r.peer.clone()),
            Hop::Local(_) => None,
        })
        .collect();
    let watch = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let view = state.view.read().unwrap_or_else(|p| p.into_inner());
            if let Some(p) = watched.iter().find(|p| {
                view.member(p)
                    .is_some_and(|m| m.state == crate::view::Liveness::Dead)
            }) {
                return GenError::Unavailable(format!("stage owner {p} is dead"));
            }
        }
    };
    tokio::select! {
        r = step_all(hops, step, &state.metrics) => r,
        e = watch => Err(e),
    }
}

/// After a stage failed: wait (bounded) for a plan whose stages all answer, open
/// fresh sessions on them and rebuild their KV caches by replaying `tokens` (the
/// prompt and everything generated so far) in one batched step. Returns the new
/// hops and the token that step samples.
async fn recover(
    state: &AgentState,
    req: &GenRequest,
    tokens: &[u32],
    tx: &mpsc::Sender<GenEvent>,
    cause: &GenError,
) -> Result<(Vec<Hop>, u32), GenError> {
    let t0 = Instant::now();
    let mut last;
    let mut tries = 0u32;
    loop {
        if tx.is_closed() {
            return Err(GenError::Internal("client went away".into()));
        }
        tries += 1;
        match build_hops(state, req) {
            Ok(mut hops) => {
                let replay = StepIn {
                    position: 0,
                    tokens: tokens.to_vec(),
                    hidden: None,
                };
                match step_all(&mut hops, replay, &state.metrics).await {
                    Ok(t) => {
                        state.metrics.pipeline_recoveries.inc();
                        tracing::info!(
                            request = %req.request_id, replayed = tokens.len(), tries,
                            ms = t0.elapsed().as_millis() as u64,
                            "pipeline recovered: {cause}"
                        );
                        return Ok((hops, t));
                    }
                    Err(e @ GenError::BadRequest(_)) => return Err(e),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        if t0.elapsed() >= state.recovery_timeout {
            return Err(GenError::Unavailable(format!(
                "a stage failed mid-generation and no plan covered the model within {} s; \
                 layers not served: {} ({last})",
                state.recovery_timeout.as_secs(),
                missing_layers(state)
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn run(
    state: &AgentState,
    req: GenRequest,
    mut hops: Vec<Hop>,
    tx: &mpsc::Sender<GenEvent>,
    t0: Instant,
) -> RequestStatus {
    let model = &state.model;
    let mut decoder = model.tokenizer.stream();
    let mut stops = StopFilter::new(&req.params.stop);
    let prompt_len = req.prompt_tokens.len();
    let mut input = req.prompt_tokens.clone();
    // Tokens already in every stage's KV cache (replayed after a failure).
    let mut history: Vec<u32> = Vec::with_capacity(prompt_len + req.params.max_tokens);
    let mut position = 0usize;
    let mut generated = 0u32;
    let mut ttft = Duration::ZERO;
    let mut first_at = t0;
    let mut stop_matched = false;
    state.metrics.prompt_tokens.inc_by(prompt_len as u64);
    let finish_reason = loop {
        let step = StepIn {
            position,
            tokens: input.clone(),
            hidden: None,
        };
        let failure = step_watched(state, &mut hops, step).await;
        let token = match failure {
            Ok(t) => t,
            Err(e @ GenError::Unavailable(_)) => {
                tracing::warn!(request = %req.request_id, "stage failed, re-planning: {e}");
                let mut all = history.clone();
                all.extend_from_slice(&input);
                drop(std::mem::take(&mut hops));
                match recover(state, &req, &all, tx, &e).await {
                    Ok((h, t)) => {
                        hops = h;
                        t
                    }
                    Err(_) if tx.is_closed() => {
                        tracing::info!(request = %req.request_id, "client went away during recovery");
                        return RequestStatus::Cancelled;
                    }
                    Err(e) => {
                        tracing::warn!(request = %req.request_id, "generation failed: {e}");
                        let _ = tx.send(GenEvent::Failed(e)).await;
                        return RequestStatus::Error;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(request = %req.request_id, "generation failed: {e}");
                let _ = tx.send(GenEvent::Failed(e)).await;
                return RequestStatus::Error;
            }
        };
        history.extend_from_slice(&input);
        position += input.len();
        generated += 1;
        state.metrics.tokens_generated.inc();
        if generated == 1 {
            ttft = t0.elapsed();
            first_at = Instant::now();
            state.metrics.ttft.observe(ttft.as_secs_f64());
            *state.last_ttft_ms.lock().unwrap_or_else(|p| p.into_inner()) =
                ttft.as_secs_f64() * 1000.0;
        }
        if model.stop_tokens.contains(&token) {
            break "stop";
        }
        let piece = decoder.push(token).ok().flatten().unwrap_or_default();
        let (text, stopped) = stops.push(&piece);
        if tx.send(GenEvent::Token { id: token, text }).await.is_err() {
            tracing::info!(request = %req.request_id, "client went away; stopping");
            return RequestStatus::Cancelled;
        }
        if stopped {
            stop_matched = true;
            break "stop";
        }
        if generated as usize >= req.params.max_tokens || position + 1 >= model.info.context_length
        {
            break "length";
        }
        input = vec![token];
    };
    let rest = stops.finish();
    if !rest.is_empty() && !stop_matched {
        let _ = tx.send(GenEvent::Text(rest)).await;
    }
    let total = t0.elapsed();
    let after_first = first_at.elapsed().as_secs_f64();
    let tps = if generated > 1 && after_first > 0.0 {
        f64::from(generated - 1) / after_first
    } else {
        0.0
    };
    state.metrics.tokens_per_second.set(tps);
    let hops = hops
        .iter()
        .filter_map(|h| match h {
            Hop::Remote(r) if r.steps > 0 => Some((
                r.peer.clone(),
                r.rtt_total / r.steps,
                r.compute_total / r.steps,
            )),
            _ => None,
        })
        .collect();
    let done = Finished {
        finish_reason,
        prompt_tokens: prompt_len as u32,
        completion_tokens: generated,
        ttft,
        total,
        tokens_per_second: tps,
        hops,
    };
    if tx.send(GenEvent::Done(done)).await.is_err() {
        return RequestStatus::Cancelled;
    }
    RequestStatus::Ok
}
