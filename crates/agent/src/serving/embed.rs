//! Embeddings through the pipeline: a sequence opened with [`Msg::OpenEmbedding`] runs
//! its tokens through every stage of the route exactly like a generation's prompt (in
//! chunks, the same hidden states on the wire); the last stage pools the final-normed
//! hidden states of all positions instead of sampling and sends the vector back to this
//! agent as a [`Msg::Embedding`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::{Pooling, SamplingParams};

use super::{GenError, Serving};
use crate::metrics::RequestStatus;
use crate::node::view::Liveness;
use crate::pipeline::msg::{EmbedSpec, Envelope, FaultKind, Hop, Msg, Open, Route, SeqId, Step};
use crate::pipeline::router::Router;

/// Longest wait for the embedding, plus an allowance per position to compute.
const TIMEOUT: Duration = Duration::from_secs(60);
const PER_POSITION: Duration = Duration::from_millis(100);
/// Waits between tries when a stage has no room for the sequence.
const BUSY_BACKOFF: Duration = Duration::from_millis(200);
/// Longest time spent retrying stages that have no room.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);
/// Longest wait for the view to change before a failed route is tried again.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// How one try on one route ended.
enum Attempt {
    Done(Vec<f32>),
    /// A stage has no room now.
    Busy(String),
    /// A stage failed (or did not answer in time).
    Failed(String),
}

/// Counts one embedding sequence in the request metrics (active now; ok, error or, when
/// dropped unfinished, cancelled).
struct Track<'a> {
    s: &'a Serving,
    t0: Instant,
    status: RequestStatus,
}

impl Drop for Track<'_> {
    fn drop(&mut self) {
        let m = &self.s.state.metrics;
        m.active_requests.dec();
        m.finish_request(self.status);
        m.request_duration.observe(self.t0.elapsed().as_secs_f64());
    }
}

/// An open sequence: closed on every stage of its route and unregistered when dropped,
/// also when the caller goes away mid-way.
struct OpenSeq {
    router: Arc<Router>,
    seq: SeqId,
    hops: Vec<Hop>,
}

impl Drop for OpenSeq {
    fn drop(&mut self) {
        // Closes go straight to every stage: a broken route would not pass them on.
        for h in &self.hops {
            self.router.deliver(Envelope {
                to: (h.node_id.clone(), h.addr.clone()),
                msg: Msg::Close(self.seq),
            });
        }
        self.router.unregister(self.seq);
    }
}

impl Serving {
    /// The embedding of `tokens`: the final hidden states of all positions pooled with
    /// `pooling` (L2-normalized when `normalize`), computed through the pipeline on the
    /// current plan's route. Admitted like a generation request (its positions reserve
    /// KV budget; 429 when the waiting line is full). Each call is one sequence and
    /// counts as one request in the request metrics.
    ///
    /// Recovery is simpler than generation's: a stage without room is retried for a
    /// while, but after a stage failure (a fault, a dead owner, a broken link, no answer
    /// in time) the sequence is retried once, on the route of the plan then current
    /// (waiting for one up to the recovery timeout); a second failure is the error.
    pub async fn embed(
        &self,
        tokens: Vec<u32>,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<f32>, GenError> {
        let info = &self.state.model.info;
        if tokens.is_empty() {
            return Err(GenError::BadRequest("the input is empty".into()));
        }
        if tokens.len() > info.context_length {
            return Err(GenError::BadRequest(format!(
                "the input has {} tokens; the model's context is {}",
                tokens.len(),
                info.context_length
            )));
        }
        let _ = self.state.route().map_err(GenError::Unavailable)?;
        let m = &self.state.metrics;
        let ticket = match self.admission.try_admit(tokens.len()) {
            Ok(t) => t,
            Err(e) => {
                m.finish_request(RequestStatus::Rejected);
                return Err(GenError::Busy(format!("{}: {e}", self.state.node_id)));
            }
        };
        m.queued_requests.inc();
        let queued = scopeguard(|| {
            m.queued_requests.dec();
        });
        let _slot = ticket.slot().await;
        drop(queued);
        m.active_requests.inc();
        m.prompt_tokens.inc_by(tokens.len() as u64);
        let mut track = Track {
            s: self,
            t0: Instant::now(),
            status: RequestStatus::Cancelled,
        };
        let spec = EmbedSpec { pooling, normalize };
        let result = self.embed_routed(&tokens, spec).await;
        track.status = match &result {
            Ok(_) => RequestStatus::Ok,
            Err(_) => RequestStatus::Error,
        };
        if let Err(e) = &result {
            tracing::warn!(tokens = tokens.len(), "embedding failed: {e}");
        }
        result
    }

    /// Tries routes until the embedding comes back (see [`Serving::embed`]).
    async fn embed_routed(&self, tokens: &[u32], spec: EmbedSpec) -> Result<Vec<f32>, GenError> {
        let mut failure: Option<(Instant, String)> = None;
        let mut busy_since: Option<Instant> = None;
        loop {
            let route = self.embed_route(failure.as_ref().map(|f| f.0)).await?;
            match self.embed_attempt(route, tokens, spec).await {
                Attempt::Done(v) => return Ok(v),
                Attempt::Busy(why) => {
                    let since = *busy_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= BUSY_PATIENCE {
                        return Err(GenError::Busy(why));
                    }
                    tokio::time::sleep(BUSY_BACKOFF).await;
                }
                Attempt::Failed(why) => {
                    if let Some((_, first)) = &failure {
                        return Err(GenError::Internal(format!(
                            "embedding failed twice: {first}; then: {why}"
                        )));
                    }
                    tracing::warn!("embedding: stage failed, retrying once: {why}");
                    failure = Some((Instant::now(), why));
                    let mut views = self.state.watch_view();
                    tokio::select! {
                        _ = views.changed() => {}
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                }
            }
        }
    }

    /// The route of the current plan; after a failure (at `failed_at`), waits for one up
    /// to the recovery timeout.
    async fn embed_route(&self, failed_at: Option<Instant>) -> Result<Route, GenError> {
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
                Err(e) => match failed_at {
                    Some(t) if t.elapsed() < self.cfg.recovery_timeout => {}
                    _ => return Err(GenError::Unavailable(e)),
                },
            }
            tokio::select! {
                _ = views.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    /// One try on `route`: open, send the tokens in chunks (only the last one asks for
    /// the output), wait for the embedding. The sequence is closed on every stage
    /// whatever happens.
    async fn embed_attempt(&self, route: Route, tokens: &[u32], spec: EmbedSpec) -> Attempt {
        let route = Arc::new(route);
        let head = (route.hops[0].node_id.clone(), route.hops[0].addr.clone());
        let seq: SeqId = rand::random();
        let mut rx = self.router.register(seq);
        let _open = OpenSeq {
            router: self.router.clone(),
            seq,
            hops: route.hops.clone(),
        };
        let mut downs = self.router.link_down();
        let mut views = self.state.watch_view();
        let send = |msg| {
            self.router.deliver(Envelope {
                to: head.clone(),
                msg,
            })
        };
        send(Msg::OpenEmbedding(
            Open {
                seq,
                route: route.clone(),
                // Nothing is sampled; no positions are reserved beyond the input's.
                params: SamplingParams::greedy(0),
                prompt_len: tokens.len(),
                reuse: Vec::new(),
                constraint: None,
            },
            spec,
        ));
        let chunk = self.cfg.chunk.max(1);
        for (i, c) in tokens.chunks(chunk).enumerate() {
            send(Msg::Step(Step {
                seq,
                pos: i * chunk,
                tokens: c.to_vec(),
                hidden: None,
                sample: (i + 1) * chunk >= tokens.len(),
            }));
        }
        let dim = self.state.model.info.hidden_size;
        let patience = TIMEOUT + PER_POSITION * tokens.len() as u32;
        let deadline = tokio::time::sleep(patience);
        tokio::pin!(deadline);
        loop {
            let dead = route.hops.iter().find_map(|h| {
                self.state
                    .view()
                    .member(&h.node_id)
                    .filter(|m| m.state == Liveness::Dead)
                    .map(|_| format!("stage owner {} is dead", h.node_id))
            });
            if let Some(why) = dead {
                return Attempt::Failed(why);
            }
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Msg::Embedding(e)) => {
                        if pooling_rows(spec.pooling, e.data.len(), dim) {
                            return Attempt::Done(e.data);
                        }
                        return Attempt::Failed(format!(
                            "the last stage sent {} values, not a multiple of the model's width {dim}",
                            e.data.len()
                        ));
                    }
                    Some(Msg::Fault(f)) => {
                        return match f.kind {
                            FaultKind::Busy => Attempt::Busy(f.message),
                            FaultKind::PrefixMiss | FaultKind::Failed => Attempt::Failed(f.message),
                        }
                    }
                    Some(_) => {}
                    None => return Attempt::Failed("the sequence's channel closed".into()),
                },
                d = downs.recv() => {
                    if let Ok(node) = d {
                        if route.hops.iter().any(|h| h.node_id == node) {
                            return Attempt::Failed(format!("the link to {node} broke"));
                        }
                    }
                }
                _ = views.changed() => {}
                _ = &mut deadline => {
                    return Attempt::Failed(format!(
                        "no embedding within {} s",
                        patience.as_secs()
                    ));
                }
            }
        }
    }
}

/// Whether `n` values are what the last stage gives for `pooling`: one row, or (no
/// pooling) whole rows.
fn pooling_rows(pooling: Pooling, n: usize, dim: usize) -> bool {
    match pooling {
        Pooling::None => n > 0 && n.is_multiple_of(dim),
        _ => n == dim,
    }
}

/// Runs `f` when dropped.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f()
            }
        }
    }
    Guard(Some(f))
}
