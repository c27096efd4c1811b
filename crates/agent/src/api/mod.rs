//! The client-facing doors: the OpenAI-compatible HTTP API, gRPC (`NodeService`,
//! `InferenceService`, with reflection and health), one router for both on the API port,
//! and TLS.

pub mod chat;
pub mod completions;
pub mod convert;
pub mod core;
pub mod embeddings;
pub mod grpc;
pub mod http;
pub mod ollama;
pub mod openai;
pub mod prompt;
pub mod responses;
pub mod server;
pub mod tls;

use std::sync::Arc;

use crate::node::state::AgentState;
use crate::pipeline::router::Router;
use crate::serving::Serving;

/// What the API handlers share: the node's state (`state.model`, `state.metrics`, the
/// cluster view), the serving layer, the pipeline router (for `PipelineService`) and the
/// Responses API's store. Handlers name the part they use (`s.state.model`).
pub struct App {
    pub state: Arc<AgentState>,
    pub serving: Arc<Serving>,
    pub router: Arc<Router>,
    /// Responses kept for the Responses API's `previous_response_id`.
    pub responses: responses::Store,
}
