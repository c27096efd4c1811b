//! gRPC `NodeService` and `InferenceService`.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use proto::v1 as pb;
use proto::{InferenceService, NodeService};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::api::convert::{member_to_proto, plan_to_proto, range_to_proto, resources_to_proto};
use crate::api::core::{self, Fold, Sampled, Step};
use crate::api::openai::{Message, MAX_TOKENS_LIMIT};
use crate::metrics::RequestStatus;
use crate::node::state::AgentState;
use crate::serving::{GenError, Serving};

/// Map a generation error to a gRPC status.
pub fn status_of(e: &GenError) -> Status {
    match e {
        GenError::BadRequest(m) => Status::invalid_argument(m.clone()),
        GenError::Unavailable(m) => Status::unavailable(m.clone()),
        GenError::Internal(m) => Status::internal(m.clone()),
        GenError::Busy(m) => {
            let mut s = Status::resource_exhausted(m.clone());
            s.metadata_mut().insert(
                "retry-after",
                tonic::metadata::MetadataValue::from_static(core::RETRY_AFTER_SECS),
            );
            s
        }
    }
}

/// A chat turn from the wire (`tool_calls_json`: OpenAI's `tool_calls` array).
fn message_from_proto(m: &pb::ChatMessage) -> Result<Message, String> {
    let tool_calls = match m.tool_calls_json.as_str() {
        "" => None,
        j => Some(serde_json::from_str(j).map_err(|e| format!("tool_calls_json: {e}"))?),
    };
    Ok(Message {
        role: m.role.clone(),
        content: m.content.clone(),
        tool_calls,
        tool_call_id: (!m.tool_call_id.is_empty()).then(|| m.tool_call_id.clone()),
        name: None,
    })
}

/// Render chat messages with the model's template and tokenize them.
pub fn chat_tokens(state: &AgentState, messages: &[Message]) -> Result<Vec<u32>, GenError> {
    crate::api::prompt::chat_tokens(state, messages, None)
}

/// NodeService of one agent.
pub struct NodeSvc {
    pub state: Arc<AgentState>,
}

/// This agent's NodeInfo.
pub fn node_info(state: &AgentState) -> pb::NodeInfo {
    let (healthy, msg) = state.health();
    let view = state.view();
    pb::NodeInfo {
        node_id: state.node_id.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
        api_addr: state.addrs.api.clone(),
        gossip_addr: state.addrs.gossip.clone(),
        metrics_addr: state.addrs.metrics.clone(),
        resources: Some(resources_to_proto(&state.resources())),
        layers: Some(range_to_proto(state.local_range().as_ref())),
        models: vec![state.model.id.clone()],
        healthy,
        health_message: if healthy { String::new() } else { msg },
        generation: state.generation,
        uptime_seconds: state.started.elapsed().as_secs(),
        plan_version: view.plan.as_ref().map(|p| p.version).unwrap_or(0),
    }
}

/// One metrics snapshot of this agent.
pub fn snapshot(state: &AgentState) -> pb::MetricsSnapshot {
    let r = state.resources();
    let m = &state.metrics;
    let peers = m
        .peers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(id, p)| pb::PeerNetworkStats {
            peer_id: id.clone(),
            bytes_sent: p.bytes_sent,
            bytes_received: p.bytes_received,
            messages_sent: p.messages_sent,
            messages_received: p.messages_received,
            hop_latency_ms_avg: if p.hops > 0 {
                p.hop_seconds_total / p.hops as f64 * 1000.0
            } else {
                0.0
            },
            hop_latency_ms_p50: p.hop_quantile(0.5) * 1000.0,
            hop_latency_ms_p99: p.hop_quantile(0.99) * 1000.0,
            round_trips: p.hops,
        })
        .collect();
    pb::MetricsSnapshot {
        node_id: state.node_id.clone(),
        timestamp_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        cpu_usage_percent: r.cpu_usage_percent as f32,
        memory_used_bytes: r.memory_used,
        memory_total_bytes: r.memory_total,
        gpus: r
            .gpus
            .iter()
            .map(crate::api::convert::gpu_to_proto)
            .collect(),
        requests_in_flight: m.active_requests.get().max(0) as u32,
        requests_ok_total: m.requests_with(RequestStatus::Ok),
        requests_error_total: m.requests_with(RequestStatus::Error),
        tokens_generated_total: m.tokens_generated.get(),
        tokens_per_second: m.tokens_per_second.get(),
        ttft_last_ms: *state.last_ttft_ms.lock().unwrap_or_else(|p| p.into_inner()),
        peers,
        cpu_cores: r.cpu_cores,
        layers: Some(range_to_proto(state.local_range().as_ref())),
        prompt_tokens_total: m.prompt_tokens.get(),
        stage_steps_total: m.stage_forward.count(),
        cpu_limit_cores: r.cpu_limit as f32,
    }
}

type SnapStream = Pin<Box<dyn Stream<Item = Result<pb::MetricsSnapshot, Status>> + Send>>;

#[tonic::async_trait]
impl NodeService for NodeSvc {
    async fn get_node_info(
        &self,
        _: Request<pb::GetNodeInfoRequest>,
    ) -> Result<Response<pb::NodeInfo>, Status> {
        Ok(Response::new(node_info(&self.state)))
    }

    async fn list_members(
        &self,
        _: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let view = self.state.view();
        Ok(Response::new(pb::ListMembersResponse {
            members: view.members.iter().map(member_to_proto).collect(),
            plan: view.plan.as_ref().map(plan_to_proto),
        }))
    }

    async fn list_models(
        &self,
        _: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let s = &self.state;
        let view = s.view();
        let info = &s.model.info;
        let shards = view
            .plan
            .iter()
            .flat_map(|p| p.slices.iter())
            .map(|sl| pb::ModelShard {
                node_id: sl.node_id.clone(),
                api_addr: sl.api_addr.clone(),
                layers: Some(range_to_proto(Some(&sl.range))),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse {
            models: vec![pb::ModelInfo {
                id: s.model.id.clone(),
                name: info.name.clone(),
                path: s.model.path.display().to_string(),
                architecture: info.architecture.clone(),
                n_layers: info.n_layers as u32,
                context_length: info.context_length as u32,
                hidden_size: info.hidden_size as u32,
                vocab_size: info.vocab_size as u32,
                file_bytes: info.file_bytes,
                shards,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        _: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::MetricsSnapshot>, Status> {
        Ok(Response::new(snapshot(&self.state)))
    }

    type WatchMetricsStream = SnapStream;

    async fn watch_metrics(
        &self,
        req: Request<pb::WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        let ms = match req.into_inner().interval_ms {
            0 => 1000,
            v => v.clamp(100, 60_000),
        };
        let (tx, rx) = mpsc::channel(2);
        let state = self.state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(u64::from(ms)));
            loop {
                tick.tick().await;
                if tx.send(Ok(snapshot(&state))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// InferenceService of one agent.
pub struct InferenceSvc {
    pub state: Arc<AgentState>,
    pub serving: Arc<Serving>,
}

type GenStream = Pin<Box<dyn Stream<Item = Result<pb::GenerateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl InferenceService for InferenceSvc {
    type GenerateStream = GenStream;

    async fn generate(
        &self,
        req: Request<pb::GenerateRequest>,
    ) -> Result<Response<Self::GenerateStream>, Status> {
        let state = self.state.clone();
        let req = req.into_inner();
        let reject = |e: GenError| {
            state.metrics.finish_request(RequestStatus::Rejected);
            status_of(&e)
        };
        if let Some(m) = crate::api::openai::unknown_model(req.model.as_deref(), &state.model.id) {
            state.metrics.finish_request(RequestStatus::Rejected);
            return Err(Status::not_found(format!(
                "model '{m}' not found; this cluster serves '{}'",
                state.model.id
            )));
        }
        let bad = |m: String| reject(GenError::BadRequest(m));
        let tools: Option<Vec<crate::api::openai::Tool>> = match req.tools_json.as_str() {
            "" => None,
            j => Some(serde_json::from_str(j).map_err(|e| bad(format!("tools_json: {e}")))?),
        };
        let choice = match req.tool_choice.as_str() {
            "" => None,
            c @ ("auto" | "none" | "required") => Some(serde_json::json!(c)),
            name => Some(serde_json::json!({"type": "function", "function": {"name": name}})),
        };
        let tools =
            crate::api::openai::tool_setup(tools.as_deref(), choice.as_ref(), None).map_err(bad)?;
        let format: Option<crate::api::openai::ResponseFormat> =
            match req.response_format_json.as_str() {
                "" => None,
                j => Some(
                    serde_json::from_str(j)
                        .map_err(|e| bad(format!("response_format_json: {e}")))?,
                ),
            };
        let constraint = crate::api::openai::response_constraint(format.as_ref()).map_err(bad)?;
        if constraint.is_some() && tools.is_some() {
            return Err(bad("response_format cannot be combined with tools".into()));
        }
        let prompt_tokens = match (req.messages.is_empty(), req.prompt.is_empty()) {
            (false, true) => {
                let msgs = req
                    .messages
                    .iter()
                    .map(message_from_proto)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                crate::api::prompt::chat_tokens(&state, &msgs, tools.as_ref()).map_err(reject)?
            }
            (true, false) if tools.is_none() => state
                .model
                .tokenizer
                .encode(&req.prompt)
                .map_err(|e| reject(GenError::Internal(e.to_string())))?,
            (true, false) => return Err(bad("tools need 'messages'".into())),
            _ => {
                return Err(reject(GenError::BadRequest(
                    "exactly one of 'messages' or 'prompt' must be set".into(),
                )))
            }
        };
        let constraint = match &tools {
            Some(t) => Some(core::tool_constraint(t)),
            None => constraint,
        };
        if let Some(c) = &constraint {
            core::check_constraint(&state, c).map_err(|e| {
                state.metrics.finish_request(RequestStatus::Rejected);
                Status::invalid_argument(e.message)
            })?;
        }
        let params = crate::api::convert::sampling_from_proto(req.sampling.as_ref(), 256);
        if params.max_tokens > MAX_TOKENS_LIMIT as usize {
            return Err(reject(GenError::BadRequest(format!(
                "max_tokens must be at most {MAX_TOKENS_LIMIT}, got {}",
                params.max_tokens
            ))));
        }
        let n = match req.n {
            0 | 1 => 1,
            n if n <= crate::api::openai::MAX_N => n,
            n => {
                return Err(bad(format!(
                    "n must be at most {}, got {n}",
                    crate::api::openai::MAX_N
                )))
            }
        };
        let request_id = req
            .request_id
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("req-{}", uuid::Uuid::new_v4().simple()));
        let mut events = core::start_choices(
            &self.serving,
            &request_id,
            prompt_tokens,
            &params,
            constraint.as_ref(),
            n,
        )
        .map_err(reject)?;
        let (tx, rx) = mpsc::channel(64);
        let mut fold = Fold::new(n, tools.as_ref().map(|t| t.mode));
        let asked = params.logprobs.is_some();
        tokio::spawn(async move {
            use futures::StreamExt;
            let tok = &state.model.tokenizer;
            let piece = |id: u32| String::from_utf8_lossy(tok.piece(id)).into_owned();
            let token = |choice: u32, text: String, t: Option<&Sampled>| {
                pb::generate_response::Event::Token(pb::TokenEvent {
                    token_id: t.map_or(0, |t| t.id),
                    text,
                    choice,
                    logprob: t.filter(|_| asked).map(|t| t.logprob),
                    top_logprobs: t
                        .iter()
                        .flat_map(|t| &t.top)
                        .map(|(id, lp)| pb::TopLogprob {
                            token_id: *id,
                            text: piece(*id),
                            logprob: *lp,
                        })
                        .collect(),
                })
            };
            while let Some((i, ev)) = events.next().await {
                let out = match fold.step(i, ev) {
                    Ok(None) => continue,
                    // One event per token, released at once; text held as a possible
                    // tool call is never sent as tokens: it comes back as the calls.
                    Ok(Some(Step::Delta {
                        choice,
                        text,
                        sampled,
                    })) => match sampled.as_slice() {
                        [] => vec![token(choice, text, None)],
                        [one] => vec![token(choice, text, Some(one))],
                        many => many
                            .iter()
                            .map(|t| token(choice, t.text.clone(), Some(t)))
                            .collect(),
                    },
                    Ok(Some(Step::End { choice, ending })) => {
                        let mut out = Vec::new();
                        if let Some(c) = ending.content.filter(|c| !c.is_empty()) {
                            out.push(token(choice, c, None));
                        }
                        let f = &ending.finished;
                        out.push(pb::generate_response::Event::Done(pb::FinalEvent {
                            finish_reason: ending.reason,
                            usage: Some(pb::Usage {
                                prompt_tokens: f.prompt_tokens,
                                completion_tokens: f.completion_tokens,
                            }),
                            timings: Some(pb::Timings {
                                ttft_ms: f.ttft.as_secs_f64() * 1000.0,
                                tokens_per_second: f.tokens_per_second,
                                total_ms: f.total.as_secs_f64() * 1000.0,
                            }),
                            request_id: request_id.clone(),
                            choice,
                            tool_calls: ending
                                .calls
                                .into_iter()
                                .map(|c| pb::ToolCall {
                                    id: c.id,
                                    name: c.function.name,
                                    arguments_json: c.function.arguments,
                                })
                                .collect(),
                        }));
                        out
                    }
                    Err(e) => {
                        let _ = tx.send(Err(status_of(&e))).await;
                        return;
                    }
                };
                for event in out {
                    let msg = pb::GenerateResponse { event: Some(event) };
                    if tx.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                if fold.all_done() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
