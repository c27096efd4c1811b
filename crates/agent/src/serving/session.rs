//! A sequence open on the stages of one route, seen from its origin (this agent): the
//! one session type generation and embeddings run on. It opens the sequence, sends its
//! positions in chunks, and answers with what comes back — the next token, the pooled
//! embedding, or why the sequence cannot go on (a fault, a broken link, a dead stage
//! owner, the deadline). Dropping it closes the sequence on every stage.
//!
//! ```text
//!            open + steps
//!                 │
//!                 ▼        first token          token with `finish`
//!             Prefill ──────────────────▶ Decode ─────────────────────▶ Finished
//!              │    └────────────── embedding (pooled vector) ────────▶ Finished
//!              │                           │
//!              └──── fault, broken link, dead stage owner, deadline ──▶ Stopped
//! ```
//!
//! Routes come from the current plan ([`Serving::route_after`]); after a failure the
//! caller waits for a new one, bounded by the recovery timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::constrain::Constraint;
use engine::SamplingParams;
use tokio::sync::{broadcast, watch};

use super::{GenError, Serving};
use crate::node::view::{fmt_layers, ClusterView, Liveness};
use crate::pipeline::msg::{
    EmbedSpec, Envelope, FaultKind, Hop, Msg, Open, Route, SeqId, Step, Token,
};
use crate::pipeline::router::SeqRx;

/// Longest wait for the first answer, plus an allowance per position to compute; then
/// for each next token.
const PATIENCE: Duration = Duration::from_secs(60);
const PER_POSITION: Duration = Duration::from_millis(100);
/// Longest wait for the view to change before a failed route is tried again, and between
/// looks for a covering plan.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// What a sequence is opened for.
#[allow(clippy::large_enum_variant)] // made once per session and taken apart at once
pub(super) enum Purpose {
    /// Generation: the last stage samples with `params` (seed filled in) under
    /// `constraint`; the stages take the first `reuse.len()` positions from their prefix
    /// caches.
    Generate {
        params: SamplingParams,
        prompt_len: usize,
        reuse: Vec<u32>,
        constraint: Option<Constraint>,
    },
    /// An embedding: the last stage pools every position.
    Embed(EmbedSpec),
}

/// Where a session stands (see the module's diagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Positions sent; waiting for the first token or the embedding.
    Prefill,
    /// Tokens arriving; the next one is at position `next`.
    Decode { next: usize },
    /// The last stage ended the sequence: a token with `finish`, or the embedding.
    Finished,
    /// Ended early: see the [`Stop`] that [`Session::next`] returned.
    Stopped,
}

/// Why a session cannot go on.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Stop {
    /// A stage has no room now: try again shortly.
    Busy(String),
    /// The stages no longer hold the prefix to reuse: open again without reuse.
    PrefixMiss,
    /// A stage failed, its owner died, its link broke or nothing came in time.
    Failed(String),
}

/// What a session hears next.
#[derive(Debug)]
pub(super) enum Event {
    /// The next token; `first`: the first of this session.
    Token {
        token: Token,
        first: bool,
    },
    /// The pooled embedding.
    Embedding(Vec<f32>),
    Stopped(Stop),
}

/// One sequence open on a route.
pub(super) struct Session<'a> {
    s: &'a Serving,
    route: Arc<Route>,
    seq: SeqId,
    embedding: bool,
    rx: SeqRx,
    downs: broadcast::Receiver<String>,
    views: watch::Receiver<ClusterView>,
    phase: Phase,
    /// Positions sent: the first token comes at this position.
    sent: usize,
    /// The wait for the next answer, and when it runs out.
    patience: Duration,
    deadline: tokio::time::Instant,
}

impl<'a> Session<'a> {
    /// Opens a sequence on `route` and sends `tokens` in chunks (all but the positions
    /// reused from the prefix caches); the last chunk asks for the output.
    pub fn open(s: &'a Serving, route: Route, purpose: Purpose, tokens: &[u32]) -> Self {
        let route = Arc::new(route);
        let seq: SeqId = rand::random();
        let rx = s.router.register(seq);
        let downs = s.router.link_down();
        let views = s.state.watch_view();
        let (open, from, embedding) = match purpose {
            Purpose::Generate {
                params,
                prompt_len,
                reuse,
                constraint,
            } => {
                let from = reuse.len();
                let open = Open {
                    seq,
                    route: route.clone(),
                    params,
                    prompt_len,
                    reuse,
                    constraint,
                };
                (Msg::Open(open), from, false)
            }
            Purpose::Embed(spec) => {
                let open = Open {
                    seq,
                    route: route.clone(),
                    // Nothing is sampled; no positions are reserved beyond the input's.
                    params: SamplingParams::greedy(0),
                    prompt_len: tokens.len(),
                    reuse: Vec::new(),
                    constraint: None,
                };
                (Msg::OpenEmbedding(open, spec), 0, true)
            }
        };
        let head = &route.hops[0];
        let to = (head.node_id.clone(), head.addr.clone());
        let send = |msg| {
            s.router.deliver(Envelope {
                to: to.clone(),
                msg,
            })
        };
        send(open);
        let chunk = s.cfg.chunk.max(1);
        for (i, c) in tokens[from..].chunks(chunk).enumerate() {
            let pos = from + i * chunk;
            send(Msg::Step(Step {
                seq,
                pos,
                tokens: c.to_vec(),
                hidden: None,
                sample: pos + c.len() == tokens.len(),
            }));
        }
        let patience = PATIENCE + PER_POSITION * (tokens.len() - from) as u32;
        Session {
            s,
            route,
            seq,
            embedding,
            rx,
            downs,
            views,
            phase: Phase::Prefill,
            sent: tokens.len(),
            patience,
            deadline: tokio::time::Instant::now() + patience,
        }
    }

    /// The plan version of the route.
    pub fn plan_version(&self) -> u64 {
        self.route.plan_version
    }

    /// The next token, the embedding, or why the sequence stopped. Cancel-safe (nothing
    /// is lost when the future is dropped before it answers).
    pub async fn next(&mut self) -> Event {
        loop {
            let expect = match self.phase {
                Phase::Prefill => self.sent,
                Phase::Decode { next } => next,
                Phase::Finished | Phase::Stopped => {
                    return Event::Stopped(Stop::Failed("the sequence has ended".into()))
                }
            };
            if let Some(why) = self.dead_owner() {
                return self.stop(Stop::Failed(why));
            }
            tokio::select! {
                m = self.rx.recv() => match m {
                    Some(Msg::Token(t)) if !self.embedding => {
                        if t.pos != expect {
                            continue; // a late token of an earlier step
                        }
                        let first = self.phase == Phase::Prefill;
                        self.phase = match t.finish {
                            Some(_) => Phase::Finished,
                            None => Phase::Decode { next: t.pos + 1 },
                        };
                        self.patience = PATIENCE;
                        self.deadline = tokio::time::Instant::now() + PATIENCE;
                        return Event::Token { token: t, first };
                    }
                    Some(Msg::Embedding(e)) if self.embedding => {
                        self.phase = Phase::Finished;
                        return Event::Embedding(e.data);
                    }
                    Some(Msg::Fault(f)) => {
                        return self.stop(match f.kind {
                            FaultKind::Busy => Stop::Busy(f.message),
                            FaultKind::PrefixMiss => Stop::PrefixMiss,
                            FaultKind::Failed => Stop::Failed(f.message),
                        })
                    }
                    Some(m) => tracing::debug!(seq = self.seq, "unexpected message dropped: {m:?}"),
                    None => return self.stop(Stop::Failed("the sequence's channel closed".into())),
                },
                d = self.downs.recv() => match d {
                    Ok(node) if self.route.hops.iter().any(|h| h.node_id == node) => {
                        return self.stop(Stop::Failed(format!("the link to {node} broke")));
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        return self.stop(Stop::Failed("the pipeline links are gone".into()));
                    }
                },
                r = self.views.changed() => {
                    if r.is_err() {
                        return self.stop(Stop::Failed("the cluster view is gone".into()));
                    }
                }
                _ = tokio::time::sleep_until(self.deadline) => {
                    let what = if self.embedding { "no embedding" } else { "no progress" };
                    let secs = self.patience.as_secs();
                    return self.stop(Stop::Failed(format!("{what} within {secs} s")));
                }
            }
        }
    }

    fn stop(&mut self, why: Stop) -> Event {
        self.phase = Phase::Stopped;
        Event::Stopped(why)
    }

    /// Why a stage's owner is dead, if one of the route's is.
    fn dead_owner(&self) -> Option<String> {
        let view = self.views.borrow();
        self.route.hops.iter().find_map(|h| {
            view.member(&h.node_id)
                .filter(|m| m.state == Liveness::Dead)
                .map(|_| format!("stage owner {} is dead", h.node_id))
        })
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        // Closes go straight to every stage: a broken route would not pass them on.
        for h in &self.route.hops {
            self.s.router.deliver(Envelope {
                to: (h.node_id.clone(), h.addr.clone()),
                msg: Msg::Close(self.seq),
            });
        }
        self.s.router.unregister(self.seq);
    }
}

impl Serving {
    /// The route of the current plan. After a failure (at `failed_at`) it waits for one,
    /// up to the recovery timeout counted from the failure.
    pub(super) async fn route_after(&self, failed_at: Option<Instant>) -> Result<Route, GenError> {
        let mut views = self.state.watch_view();
        loop {
            match self.state.route() {
                Ok((version, hops)) => {
                    return Ok(Route {
                        plan_version: version,
                        hops: hops
                            .iter()
                            .map(|h| Hop {
                                node_id: h.node_id.clone(),
                                addr: h.api_addr.clone(),
                                range: h.range.clone(),
                            })
                            .collect(),
                        origin: self.router.me().clone(),
                    })
                }
                Err(e) => {
                    let Some(t) = failed_at else {
                        return Err(GenError::Unavailable(e));
                    };
                    if t.elapsed() >= self.cfg.recovery_timeout {
                        return Err(GenError::Unavailable(format!(
                            "a stage failed mid-generation and no plan covered the model within {} s; layers not served: {} ({e})",
                            self.cfg.recovery_timeout.as_secs(),
                            self.missing_layers()
                        )));
                    }
                }
            }
            tokio::select! {
                _ = views.changed() => {}
                _ = tokio::time::sleep(RETRY_PAUSE) => {}
            }
        }
    }

    /// After a failed try: waits for the view to change (a dead member, a new plan), at
    /// most a moment; a transient failure then retries the same route.
    pub(super) async fn pause_after_failure(&self) {
        let mut views = self.state.watch_view();
        tokio::select! {
            _ = views.changed() => {}
            _ = tokio::time::sleep(RETRY_PAUSE) => {}
        }
    }

    /// Layer ranges no ready stage serves now, e.g. `[10,20), [25,30)`.
    fn missing_layers(&self) -> String {
        let view = self.state.view();
        let Some(plan) = view.plan.as_ref() else {
            return fmt_layers(&(0..self.state.model.info.n_layers));
        };
        let mut missing = plan.gaps();
        for sl in &plan.slices {
            let ready = if sl.node_id == self.state.node_id {
                self.state.local_range().as_ref() == Some(&sl.range)
            } else {
                view.member(&sl.node_id).is_some_and(|m| {
                    m.state != Liveness::Dead && m.layers.as_ref() == Some(&sl.range)
                })
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
}
