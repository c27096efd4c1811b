//! One request's coordinator: runs its sequence as a [`Session`] on the route of the
//! current plan, turns the tokens coming back into text (stop strings, end of
//! generation), and recovers when a stage fails: it waits (bounded) for a plan covering
//! the model and replays the prompt and the tokens so far in a fresh session. The sampler
//! draws per position from the request's seed, so the replay gives the same tokens.
//!
//! ```text
//!   Healthy ──stage failed──▶ Replaying { since, cause } ──the replay's first token──▶ Healthy
//!                                   │
//!                                   └── no covering plan within the recovery timeout ──▶ error
//! ```

use std::time::{Duration, Instant};

use engine::StopFilter;
use tokio::sync::mpsc;

use super::session::{Event, Purpose, Session, Stop};
use super::{Finished, GenError, GenEvent, GenRequest, Serving};
use crate::metrics::RequestStatus;
use crate::pipeline::msg::{Finish, Token};

/// Waits between retries when a stage has no room for the sequence.
const BUSY_BACKOFF: Duration = Duration::from_millis(200);

/// How a request's stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// An end-of-generation token (not streamed).
    Eog,
    /// A stop string matched: the text held back is dropped.
    StopString,
    /// `max_tokens` or the context reached.
    Length,
}

impl End {
    fn reason(self) -> &'static str {
        match self {
            End::Eog | End::StopString => "stop",
            End::Length => "length",
        }
    }
}

/// Whether the request is getting over a stage failure.
enum Recovery {
    /// No failure since the last token.
    Healthy,
    /// A stage failed at `since` (`cause`): the next session replays the prompt and the
    /// tokens so far, on a route found within the recovery timeout.
    Replaying { since: Instant, cause: String },
}

/// How one session ended.
enum Outcome {
    Done(End),
    Stopped(Stop),
    /// The client went away.
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
    t0: Instant,
    ttft: Duration,
    first_at: Instant,
    cached: usize,
}

impl Progress<'_> {
    /// Takes the next token; `Some(end)` when the request is complete, `Err` when the
    /// client went away.
    async fn token(&mut self, t: Token) -> Result<Option<End>, ()> {
        let m = &self.s.state.metrics;
        self.generated.push(t.id);
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
        if t.finish == Some(Finish::Eog) {
            return Ok(Some(End::Eog));
        }
        let piece = self.decoder.push(t.id).ok().flatten().unwrap_or_default();
        let (text, stopped) = self.stops.push(&piece);
        let event = GenEvent::Token {
            id: t.id,
            text,
            logprob: t.logprob,
            top: t.top,
        };
        if self.tx.send(event).await.is_err() {
            return Err(());
        }
        if stopped {
            return Ok(Some(End::StopString));
        }
        Ok(t.finish.map(|_| End::Length))
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
    s.state
        .metrics
        .prompt_tokens
        .inc_by(req.prompt_tokens.len() as u64);
    let mut p = Progress {
        s,
        tx,
        prompt_len: req.prompt_tokens.len(),
        generated: Vec::new(),
        decoder: s.state.model.tokenizer.stream(),
        stops: StopFilter::new(&params.stop),
        t0,
        ttft: Duration::ZERO,
        first_at: t0,
        cached: 0,
    };
    let mut reuse_ok = true;
    let mut recovery = Recovery::Healthy;
    let end = loop {
        let failed_at = match &recovery {
            Recovery::Healthy => None,
            Recovery::Replaying { since, .. } => Some(*since),
        };
        let route = tokio::select! {
            r = s.route_after(failed_at) => r,
            _ = tx.closed() => return RequestStatus::Cancelled,
        };
        let route = match route {
            Ok(r) => r,
            Err(_) if tx.is_closed() => return RequestStatus::Cancelled,
            Err(e) => {
                let e = match &recovery {
                    Recovery::Replaying { cause, .. } => {
                        GenError::Unavailable(format!("{e} (after: {cause})"))
                    }
                    Recovery::Healthy => e,
                };
                tracing::warn!(request = %req.request_id, "generation failed: {e}");
                let _ = tx.send(GenEvent::Failed(e)).await;
                return RequestStatus::Error;
            }
        };
        let mut tokens = req.prompt_tokens.clone();
        tokens.extend_from_slice(&p.generated);
        let reuse = if reuse_ok {
            s.prefixes.lookup(route.plan_version, &tokens)
        } else {
            Vec::new()
        };
        if p.generated.is_empty() {
            p.cached = reuse.len();
        }
        let purpose = Purpose::Generate {
            params: params.clone(),
            prompt_len: p.prompt_len,
            reuse,
            constraint: req.constraint.clone(),
        };
        let session = Session::open(s, route, purpose, &tokens);
        match follow(session, &tokens, &mut p, &mut recovery).await {
            Outcome::Done(end) => break end,
            Outcome::Cancelled => return RequestStatus::Cancelled,
            Outcome::Stopped(Stop::PrefixMiss) => reuse_ok = false,
            Outcome::Stopped(Stop::Busy(why)) => {
                tracing::debug!(request = %req.request_id, "stage busy, retrying: {why}");
                tokio::time::sleep(BUSY_BACKOFF).await;
            }
            Outcome::Stopped(Stop::Failed(cause)) => {
                tracing::warn!(request = %req.request_id, "stage failed, re-planning: {cause}");
                if let Recovery::Healthy = recovery {
                    recovery = Recovery::Replaying {
                        since: Instant::now(),
                        cause,
                    };
                }
                tokio::select! {
                    _ = s.pause_after_failure() => {}
                    _ = tx.closed() => return RequestStatus::Cancelled,
                }
            }
        }
    };
    if end != End::StopString {
        let rest = p.stops.finish();
        if !rest.is_empty() {
            let _ = tx.send(GenEvent::Text(rest)).await;
        }
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
        finish_reason: end.reason(),
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

/// Streams a session's tokens (it was sent `tokens`: the prompt and the tokens so far)
/// until the end, a stop or the client going away; the first token of a replay ends the
/// recovery. The session is closed on the stages when this returns.
async fn follow(
    mut session: Session<'_>,
    tokens: &[u32],
    p: &mut Progress<'_>,
    recovery: &mut Recovery,
) -> Outcome {
    loop {
        let event = tokio::select! {
            e = session.next() => e,
            _ = p.tx.closed() => return Outcome::Cancelled,
        };
        match event {
            Event::Token { token, first } => {
                if first {
                    if let Recovery::Replaying { cause, .. } = recovery {
                        // The replay went through: the stream goes on on the new route.
                        p.s.state.metrics.pipeline_recoveries.inc();
                        tracing::info!(
                            replayed = tokens.len(),
                            plan = %crate::node::view::fmt_plan(session.plan_version()),
                            "pipeline recovered: {cause}"
                        );
                        *recovery = Recovery::Healthy;
                    }
                }
                match p.token(token).await {
                    Ok(Some(end)) => {
                        let version = session.plan_version();
                        drop(session);
                        // Every position but the last sampled token is now in the
                        // stages' caches.
                        let mut kept = tokens.to_vec();
                        kept.extend_from_slice(&p.generated[(tokens.len() - p.prompt_len)..]);
                        kept.pop();
                        p.s.prefixes.record(version, kept);
                        return Outcome::Done(end);
                    }
                    Ok(None) => {}
                    Err(()) => return Outcome::Cancelled,
                }
            }
            Event::Embedding(_) => {
                return Outcome::Stopped(Stop::Failed("an embedding for a generation".into()))
            }
            Event::Stopped(why) => return Outcome::Stopped(why),
        }
    }
}
