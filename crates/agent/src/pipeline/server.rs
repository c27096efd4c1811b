//! `PipelineService`: runs this agent's stage for requests coordinated elsewhere.
//! One task per Forward stream keeps that request's KV cache; it is freed when the
//! stream closes.

use std::pin::Pin;
use std::sync::Arc;

use engine::HiddenState;
use futures::Stream;
use proto::v1::{forward_request, ForwardRequest, ForwardResponse};
use proto::PipelineService;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::session::{step_blocking, StageSession, StepIn, StepOut};
use crate::state::AgentState;

/// A served stream with no step for this long is closed (its KV cache freed): the
/// coordinator froze or lost its connection without a reset.
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// The PipelineService of one agent.
pub struct PipelineSvc {
    pub state: Arc<AgentState>,
}

type ForwardStream = Pin<Box<dyn Stream<Item = Result<ForwardResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PipelineService for PipelineSvc {
    type ForwardStream = ForwardStream;

    async fn forward(
        &self,
        request: Request<Streaming<ForwardRequest>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let mut inbound = request.into_inner();
        let header = match inbound.message().await? {
            Some(ForwardRequest {
                msg: Some(forward_request::Msg::Header(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a header",
                ))
            }
        };
        let stage = self.state.stage().ok_or_else(|| {
            Status::failed_precondition(format!("{} holds no layers now", self.state.node_id))
        })?;
        let want = header.layer_start as usize..header.layer_end as usize;
        if stage.range() != want {
            return Err(Status::failed_precondition(format!(
                "{} holds layers {}..{}, not {}..{}",
                self.state.node_id,
                stage.range().start,
                stage.range().end,
                want.start,
                want.end
            )));
        }
        if !header.model.is_empty() && header.model != self.state.model.id {
            return Err(Status::failed_precondition(format!(
                "{} serves model '{}', not '{}'",
                self.state.node_id, self.state.model.id, header.model
            )));
        }
        let params = crate::convert::sampling_from_proto(header.sampling.as_ref(), 1);
        let session =
            StageSession::new(stage, &params).tracked(self.state.metrics.pipeline_sessions.clone());
        let (tx, rx) = mpsc::channel(4);
        let state = self.state.clone();
        let peer = if header.origin_node.is_empty() {
            "unknown".to_string()
        } else {
            header.origin_node.clone()
        };
        tracing::debug!(request = %header.request_id, %peer, "pipeline stream opened");
        tokio::spawn(serve_stream(state, peer, session, inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

async fn serve_stream(
    state: Arc<AgentState>,
    peer: String,
    mut session: StageSession,
    mut inbound: Streaming<ForwardRequest>,
    tx: mpsc::Sender<Result<ForwardResponse, Status>>,
) {
    loop {
        let next = tokio::time::timeout(IDLE_TIMEOUT, inbound.message()).await;
        let msg = match next {
            Err(_) => {
                tracing::info!("pipeline stream from {peer} idle too long; freeing its KV cache");
                break;
            }
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => break,
            Ok(Err(s)) => {
                tracing::debug!("pipeline stream from {peer} ended: {s}");
                break;
            }
        };
        state
            .metrics
            .received(&peer, prost::Message::encoded_len(&msg));
        let step = match msg.msg {
            Some(forward_request::Msg::Step(s)) => s,
            _ => {
                let _ = tx
                    .send(Err(Status::invalid_argument(
                        "expected a step after the header",
                    )))
                    .await;
                break;
            }
        };
        let hidden = if step.hidden.is_empty() {
            None
        } else {
            match HiddenState::from_f16_bytes(
                &step.hidden,
                step.n_tokens as usize,
                step.dim as usize,
            ) {
                Ok(h) => Some(h),
                Err(e) => {
                    let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                    break;
                }
            }
        };
        let input = StepIn {
            position: step.position as usize,
            tokens: step.tokens,
            hidden,
        };
        let (s, out, compute) = match step_blocking(session, input).await {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.send(Err(Status::invalid_argument(e))).await;
                return;
            }
        };
        session = s;
        state.metrics.stage_forward.observe(compute.as_secs_f64());
        let compute_us = compute.as_micros() as u64;
        let resp = match out {
            StepOut::Hidden(h) => ForwardResponse {
                hidden: h.to_f16_bytes(),
                n_tokens: h.n_tokens as u32,
                dim: h.dim as u32,
                token: None,
                compute_us,
            },
            StepOut::Token(t) => ForwardResponse {
                token: Some(t),
                compute_us,
                ..Default::default()
            },
        };
        state
            .metrics
            .sent(&peer, prost::Message::encoded_len(&resp));
        if tx.send(Ok(resp)).await.is_err() {
            break;
        }
    }
    tracing::debug!("pipeline stream from {peer} closed; KV cache freed");
}
