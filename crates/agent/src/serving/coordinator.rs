//! One request's coordinator: opens its sequence on the route of the current plan, sends
//! the prompt in chunks, turns the tokens coming back into text (stop strings, end of
//! generation), and recovers when a stage fails: it waits (bounded) for a plan covering
//! the model, opens a fresh sequence and replays the prompt and the tokens so far. The
//! sampler draws per position from the request's seed, so the replay gives the same
//! tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::StopFilter;
use tokio::sync::mpsc;

use super::{Finished, GenError, GenEvent, GenRequest, Serving};
use crate::metrics::RequestStatus;
use crate::node::view::{fmt_layers, Liveness, RouteHop};
use crate::pipeline::msg::{Envelope, FaultKind, Finish, Hop, Msg, Open, Route, SeqId, Step};

/// Longest wait for progress (a token) before the route is given up, plus an allowance
/// per position still to compute.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(60);
const PER_POSITION: Duration = Duration::from_millis(100);
/// Waits between retries when a stage has no room for the sequence.
const BUSY_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait for the view to change before a failed route is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How an attempt on one route ended.
enum Outcome {
    Done(&'static str),
    /// The stages dropped a prefix: run again without reuse.
    PrefixMiss,
    /// A stage has no room now: try again shortly.
    Busy(String),
    /// A stage failed: recover on a new plan.
    Failed(String),
    Cancelled,
}

/// Text and totals of the request so far.
struct Progress<'a> {
    s: &'a Serving,
    tx: &'a mpsc::Sender<GenEvent>,
    prompt_len: usize,
    generated: Vec<u32>,
    decoder: engine::TextStream<'a>,
    stops: StopFilter,
    stop_matched: bool,
    t0: Instant,
    ttft: Duration,
    first_at: Instant,
    cached: usize,
    /// Set when a replay after a failure produced its first token.
    recovered: bool,
    /// What the output must follow (checked on the last stage).
    constraint: Option<engine::constrain::Constraint>,
}

impl Progress<'_> {
    /// Takes the next token; `Some(reason)` when the request is complete.
    async fn token(
        &mut self,
        id: u32,
        logprob: f32,
        top: Vec<(u32, f32)>,
        finish: Option<Finish>,
    ) -> Result<Option<&'static str>, ()> {
        let m = &self.s.state.metrics;
        self.generated.push(id);
        m.tokens_generated.inc();
        if self.generated.len() == 1 {
            self.ttft = self.t0.elapsed();
            self.first_at = Instant::now();
            m.ttft.observe(self.ttft.as_secs_f64());
            *self
                .s
                .state
                .last_ttft_ms
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = self.ttft.as_secs_f64() * 1000.0;
        }
        if finish == Some(Finish::Eog) {
            return Ok(Some("stop"));
        }
        let piece = self.decoder.push(id).ok().flatten().unwrap_or_default();
        let (text, stopped) = self.stops.push(&piece);
        if self
            .tx
            .send(GenEvent::Token {
                id,
                text,
                logprob,
                top,
            })
            .await
            .is_err()
        {
            return Err(());
        }
        if stopped {
            self.stop_matched = true;
            return Ok(Some("stop"));
        }
        Ok(finish.map(|_| "length"))
    }
}

/// Runs a request to its end; the status counts it in the metrics.
pub async fn run(
    s: &Serving,
    req: GenRequest,
    tx: &mpsc::Sender<GenEvent>,
    t0: Instant,
) -> RequestStatus {
    let mut params = req.params.clone();
    // A fixed seed: a replay after a failure draws the same tokens.
    params.seed.get_or_insert_with(rand::random);
    let model = &s.state.model;
    s.state
        .metrics
        .prompt_tokens
        .inc_by(req.prompt_tokens.len() as u64);
    let mut p = Progress {
        s,
        tx,
        prompt_len: req.prompt_tokens.len(),
        generated: Vec::new(),
        decoder: model.tokenizer.stream(),
        stops: StopFilter::new(&params.stop),
        stop_matched: false,
        t0,
        ttft: Duration::ZERO,
        first_at: t0,
        cached: 0,
        recovered: false,
        constraint: req.constraint.clone(),
    };
    let mut reuse_ok = true;
    let mut failed_since: Option<(Instant, String)> = None;
    let finish = loop {
        let route = match route_now(s, failed_since.as_ref().map(|f| f.0), tx).await {
            Ok(r) => r,
            Err(e) => {
                let e = match &failed_since {
                    Some((_, cause)) => GenError::Unavailable(format!("{e} (after: {cause})")),
                    None => e,
                };
                if tx.is_closed() {
                    return RequestStatus::Cancelled;
                }
                tracing::warn!(request = %req.request_id, "generation failed: {e}");
                let _ = tx.send(GenEvent::Failed(e)).await;
                return RequestStatus::Error;
            }
        };
        let mut tokens = req.prompt_tokens.clone();
        tokens.extend_from_slice(&p.generated);
        let recovering = failed_since.as_ref().map(|(_, cause)| cause.as_str());
        let outcome = attempt(s, &route, &params, &tokens, reuse_ok, recovering, &mut p).await;
        if matches!(outcome, Outcome::Done(_)) || p.recovered {
            failed_since = None;
            p.recovered = false;
        }
        match outcome {
            Outcome::Done(reason) => break reason,
            Outcome::Cancelled => return RequestStatus::Cancelled,
            Outcome::PrefixMiss => reuse_ok = false,
            Outcome::Busy(why) => {
                tracing::debug!(request = %req.request_id, "stage busy, retrying: {why}");
                tokio::time::sleep(BUSY_BACKOFF).await;
            }
            Outcome::Failed(cause) => {
                tracing::warn!(request = %req.request_id, "stage failed, re-planning: {cause}");
                if failed_since.is_none() {
                    failed_since = Some((Instant::now(), cause));
                }
                // Give the view a moment to change (a dead member, a new plan) before
                // trying again; a transient failure retries the same route.
                let mut views = s.state.watch_view();
                tokio::select! {
                    _ = views.changed() => {}
                    _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    _ = tx.closed() => return RequestStatus::Cancelled,
                }
                continue;
            }
        }
    };
    let rest = p.stops.finish();
    if !rest.is_empty() && !p.stop_matched {
        let _ = tx.send(GenEvent::Text(rest)).await;
    }
    let total = t0.elapsed();
    let n = p.generated.len() as u32;
    let after_first = p.first_at.elapsed().as_secs_f64();
    let tps = if n > 1 && after_first > 0.0 {
        f64::from(n - 1) / after_first
    } else {
        0.0
    };
    s.state.metrics.tokens_per_second.set(tps);
    let done = Finished {
        finish_reason: finish,
        prompt_tokens: p.prompt_len as u32,
        completion_tokens: n,
        cached_tokens: p.cached as u32,
        ttft: p.ttft,
        total,
        tokens_per_second: tps,
    };
    if tx.send(GenEvent::Done(done)).await.is_err() {
        return RequestStatus::Cancelled;
    }
    RequestStatus::Ok
}

/// The route of the current plan; after a failure, waits for one (bounded by the
/// recovery timeout, counted from the failure).
async fn route_now(
    s: &Serving,
    failed_at: Option<Instant>,
    tx: &mpsc::Sender<GenEvent>,
) -> Result<Route, GenError> {
    let mut views = s.state.watch_view();
    loop {
        match s.state.route() {
            Ok((version, hops)) => return Ok(to_route(s, version, &hops)),
            Err(e) => {
                let Some(t) = failed_at else {
                    return Err(GenError::Unavailable(e));
                };
                if t.elapsed() >= s.cfg.recovery_timeout {
                    return Err(GenError::Unavailable(format!(
                        "a stage failed mid-generation and no plan covered the model within {} s; layers not served: {} ({e})",
                        s.cfg.recovery_timeout.as_secs(),
                        missing_layers(s)
                    )));
                }
            }
        }
        tokio::select! {
            _ = views.changed() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tx.closed() => return Err(GenError::Internal("client went away".into())),
        }
    }
}

fn to_route(s: &Serving, version: u64, hops: &[RouteHop]) -> Route {
    Route {
        plan_version: version,
        hops: hops
            .iter()
            .map(|h| Hop {
                node_id: h.node_id.clone(),
                addr: h.api_addr.clone(),
                range: h.range.clone(),
            })
            .collect(),
        origin: s.router.me().clone(),
    }
}

/// Layer ranges no ready stage serves now, e.g. `[10,20), [25,30)`.
fn missing_layers(s: &Serving) -> String {
    let view = s.state.view();
    let Some(plan) = view.plan.as_ref() else {
        return fmt_layers(&(0..s.state.model.info.n_layers));
    };
    let mut missing = plan.gaps();
    for sl in &plan.slices {
        let ready = if sl.node_id == s.state.node_id {
            s.state.local_range().as_ref() == Some(&sl.range)
        } else {
            view.member(&sl.node_id)
                .is_some_and(|m| m.state != Liveness::Dead && m.layers.as_ref() == Some(&sl.range))
        };
        if !ready {
            missing.push(sl.range.clone());
        }
    }
    missing.sort_by_key(|r| r.start);
    if missing.is_empty() {
        "none (stages did not answer)".into()
    } else {
        missing
            .iter()
            .map(fmt_layers)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One run of the sequence on `route`: open, send `tokens` (prompt and tokens so far),
/// stream what comes back until the end or a failure. Closes the sequence on the stages
/// whatever happens.
async fn attempt(
    s: &Serving,
    route: &Route,
    params: &engine::SamplingParams,
    tokens: &[u32],
    reuse_ok: bool,
    recovering: Option<&str>,
    p: &mut Progress<'_>,
) -> Outcome {
    let route = Arc::new(route.clone());
    let head = (route.hops[0].node_id.clone(), route.hops[0].addr.clone());
    let seq: SeqId = rand::random();
    let mut rx = s.router.register(seq);
    let mut downs = s.router.link_down();
    let mut views = s.state.watch_view();
    let reuse = if reuse_ok {
        s.prefixes.lookup(route.plan_version, tokens)
    } else {
        Vec::new()
    };
    if p.generated.is_empty() {
        p.cached = reuse.len();
    }
    let send = |msg| {
        s.router.deliver(Envelope {
            to: head.clone(),
            msg,
        })
    };
    send(Msg::Open(Open {
        seq,
        route: route.clone(),
        params: params.clone(),
        prompt_len: p.prompt_len,
        reuse: reuse.clone(),
        constraint: p.constraint.clone(),
    }));
    let chunk = s.cfg.chunk.max(1);
    let todo = &tokens[reuse.len()..];
    for (i, c) in todo.chunks(chunk).enumerate() {
        send(Msg::Step(Step {
            seq,
            pos: reuse.len() + i * chunk,
            tokens: c.to_vec(),
            hidden: None,
            sample: reuse.len() + (i + 1) * chunk >= tokens.len(),
        }));
    }
    let mut expect = tokens.len();
    let mut patience = PROGRESS_TIMEOUT + PER_POSITION * todo.len() as u32;
    let outcome = loop {
        let dead = |v: &crate::node::view::ClusterView| {
            route.hops.iter().find_map(|h| {
                v.member(&h.node_id)
                    .filter(|m| m.state == Liveness::Dead)
                    .map(|_| format!("stage owner {} is dead", h.node_id))
            })
        };
        if let Some(why) = dead(&s.state.view()) {
            break Outcome::Failed(why);
        }
        tokio::select! {
            m = rx.recv() => match m {
                Some(Msg::Token(t)) if t.pos == expect => {
                    if expect == tokens.len() {
                        if let Some(cause) = recovering {
                            // The replay went through: the stream goes on on the new route.
                            s.state.metrics.pipeline_recoveries.inc();
                            p.recovered = true;
                            tracing::info!(
                                replayed = tokens.len(),
                                plan = %crate::node::view::fmt_plan(route.plan_version),
                                "pipeline recovered: {cause}"
                            );
                        }
                    }
                    expect += 1;
                    patience = PROGRESS_TIMEOUT;
                    match p.token(t.id, t.logprob, t.top, t.finish).await {
                        Ok(Some(reason)) => break Outcome::Done(reason),
                        Ok(None) => {}
                        Err(()) => break Outcome::Cancelled,
                    }
                }
                Some(Msg::Token(_)) => {}
                Some(Msg::Fault(f)) => break match f.kind {
                    FaultKind::Busy => Outcome::Busy(f.message),
                    FaultKind::PrefixMiss => Outcome::PrefixMiss,
                    FaultKind::Failed => Outcome::Failed(f.message),
                },
                Some(_) | None => break Outcome::Failed("the token channel closed".into()),
            },
            d = downs.recv() => {
                if let Ok(node) = d {
                    if route.hops.iter().any(|h| h.node_id == node) {
                        break Outcome::Failed(format!("the link to {node} broke"));
                    }
                }
            }
            _ = views.changed() => {}
            _ = tokio::time::sleep(patience) => {
                break Outcome::Failed(format!("no progress within {} s", patience.as_secs()));
            }
            _ = p.tx.closed() => break Outcome::Cancelled,
        }
    };
    // Closes go straight to every stage: a broken route would not pass them on.
    for h in &route.hops {
        s.router.deliver(Envelope {
            to: (h.node_id.clone(), h.addr.clone()),
            msg: Msg::Close(seq),
        });
    }
    s.router.unregister(seq);
    if matches!(outcome, Outcome::Done(_)) {
        // Every position but the last sampled token is now in the stages' caches.
        let mut kept = tokens.to_vec();
        kept.extend_from_slice(&p.generated[(tokens.len() - p.prompt_len)..]);
        kept.pop();
        s.prefixes.record(route.plan_version, kept);
    }
    outcome
}
