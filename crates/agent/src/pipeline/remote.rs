//! A remote pipeline hop: one `PipelineService.Forward` bidi stream per request and
//! hop, opened lazily on the first step and closed when the request ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::HiddenState;
use proto::v1::{forward_request, ForwardHeader, ForwardRequest, ForwardResponse, ForwardStep};
use proto::PipelineServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use super::session::{StepIn, StepOut};
use super::GenError;
use crate::metrics::Metrics;

/// Longest wait for one stage's answer: a frozen peer fails the hop, and the
/// coordinator re-plans (see `recover`) instead of hanging the request.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Sending half and answers of an open Forward stream.
struct Open {
    tx: mpsc::Sender<ForwardRequest>,
    rx: tonic::Streaming<ForwardResponse>,
}

/// A hop to a stage on another agent.
pub struct RemoteHop {
    pub peer: String,
    pub addr: String,
    header: ForwardHeader,
    channel: Channel,
    metrics: Arc<Metrics>,
    open: Option<Open>,
    /// Sum of round trips and of the stage's reported compute time.
    pub rtt_total: Duration,
    pub compute_total: Duration,
    pub steps: u32,
}

impl RemoteHop {
    pub fn new(
        peer: String,
        addr: String,
        header: ForwardHeader,
        channel: Channel,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            peer,
            addr,
            header,
            channel,
            metrics,
            open: None,
            rtt_total: Duration::ZERO,
            compute_total: Duration::ZERO,
            steps: 0,
        }
    }

    fn unavailable(&self, what: impl std::fmt::Display) -> GenError {
        GenError::Unavailable(format!(
            "stage {} ({}..{}) at {}: {what}",
            self.peer, self.header.layer_start, self.header.layer_end, self.addr
        ))
    }

    /// Send one step and wait for the stage's answer.
    pub async fn step(&mut self, input: StepIn) -> Result<StepOut, GenError> {
        let (n_tokens, dim, hidden) = match &input.hidden {
            Some(h) => (h.n_tokens as u32, h.dim as u32, h.to_f16_bytes()),
            None => (input.tokens.len() as u32, 0, Vec::new()),
        };
        let step = ForwardRequest {
            msg: Some(forward_request::Msg::Step(ForwardStep {
                position: input.position as u32,
                tokens: input.tokens,
                n_tokens,
                dim,
                hidden,
            })),
        };
        let bytes = prost::Message::encoded_len(&step);
        let t0 = Instant::now();
        if self.open.is_none() {
            let (tx, rx) = mpsc::channel(4);
            let header = ForwardRequest {
                msg: Some(forward_request::Msg::Header(self.header.clone())),
            };
            let _ = tx.send(header).await;
            let _ = tx.send(step).await;
            let mut client = PipelineServiceClient::new(self.channel.clone())
                .max_decoding_message_size(256 << 20)
                .max_encoding_message_size(256 << 20);
            let resp = client
                .forward(crate::security::with_cluster_token(tonic::Request::new(
                    ReceiverStream::new(rx),
                )))
                .await
                .map_err(|s| self.status_error(s))?;
            self.open = Some(Open {
                tx,
                rx: resp.into_inner(),
            });
        } else if let Some(open) = &self.open {
            if open.tx.send(step).await.is_err() {
                return Err(self.unavailable("stream closed"));
            }
        }
        self.metrics.sent(&self.peer, bytes);
        let open = self.open.as_mut().expect("stream opened above");
        let answer = match tokio::time::timeout(STEP_TIMEOUT, open.rx.message()).await {
            Err(_) => return Err(self.unavailable("no answer within the step timeout")),
            Ok(Ok(Some(a))) => a,
            Ok(Ok(None)) => return Err(self.unavailable("stream ended early")),
            Ok(Err(s)) => return Err(self.status_error(s)),
        };
        let rtt = t0.elapsed();
        self.metrics
            .received(&self.peer, prost::Message::encoded_len(&answer));
        self.metrics.hop(&self.peer, rtt.as_secs_f64());
        self.rtt_total += rtt;
        self.compute_total += Duration::from_micros(answer.compute_us);
        self.steps += 1;
        if let Some(t) = answer.token {
            return Ok(StepOut::Token(t));
        }
        HiddenState::from_f16_bytes(
            &answer.hidden,
            answer.n_tokens as usize,
            answer.dim as usize,
        )
        .map(StepOut::Hidden)
        .map_err(|e| GenError::Internal(format!("bad hidden state from {}: {e}", self.peer)))
    }

    fn status_error(&self, s: tonic::Status) -> GenError {
        match s.code() {
            tonic::Code::InvalidArgument => GenError::Internal(format!(
                "stage {} rejected a step: {}",
                self.peer,
                s.message()
            )),
            _ => self.unavailable(format!("{:?}: {}", s.code(), s.message())),
        }
    }
}
