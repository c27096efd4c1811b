//! Embeddings through the pipeline: a [`Session`] opened for an embedding runs its
//! tokens through every stage of the route exactly like a generation's prompt (in
//! chunks, the same hidden states on the wire); the last stage pools the final-normed
//! hidden states of all positions instead of sampling and sends the vector back to this
//! agent.

use std::time::{Duration, Instant};

use engine::Pooling;

use super::session::{Event, Purpose, Session, Stop};
use super::{GenError, Serving};
use crate::metrics::RequestStatus;
use crate::pipeline::msg::{EmbedSpec, Route};

/// Waits between tries when a stage has no room for the sequence.
const BUSY_BACKOFF: Duration = Duration::from_millis(200);
/// Longest time spent retrying stages that have no room.
const BUSY_PATIENCE: Duration = Duration::from_secs(30);

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
    ///
    /// `tokens` are the API's, checked there: not empty, ids in the vocabulary, no more
    /// than the model's context.
    pub async fn embed(
        &self,
        tokens: Vec<u32>,
        pooling: Pooling,
        normalize: bool,
    ) -> Result<Vec<f32>, GenError> {
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
            let route = self.route_after(failure.as_ref().map(|f| f.0)).await?;
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
                    self.pause_after_failure().await;
                }
            }
        }
    }

    /// One try on `route`: a session that sends the tokens and waits for the embedding
    /// (closed on every stage whatever happens).
    async fn embed_attempt(&self, route: Route, tokens: &[u32], spec: EmbedSpec) -> Attempt {
        let mut session = Session::open(self, route, Purpose::Embed(spec), tokens);
        let dim = self.state.model.info.hidden_size;
        match session.next().await {
            Event::Embedding(v) if pooling_rows(spec.pooling, v.len(), dim) => Attempt::Done(v),
            Event::Embedding(v) => Attempt::Failed(format!(
                "the last stage sent {} values, not a multiple of the model's width {dim}",
                v.len()
            )),
            Event::Token { .. } => Attempt::Failed("a token for an embedding sequence".into()),
            Event::Stopped(Stop::Busy(why)) => Attempt::Busy(why),
            // Never asked for (an embedding reuses no prefix): a failure like any other.
            Event::Stopped(Stop::PrefixMiss) => {
                Attempt::Failed("a stage answered with a prefix miss".into())
            }
            Event::Stopped(Stop::Failed(why)) => Attempt::Failed(why),
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
