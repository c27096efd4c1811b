//! HTTP API on the API port: the router (`/health`, `/v1/models`, `/v1/cluster`, and the
//! handlers of [`super::chat`], [`super::completions`], [`super::embeddings`],
//! [`super::ollama`]), errors in OpenAI's format; and the metrics server (`/metrics`,
//! `/health`) on the metrics port.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::api::openai::*;
use crate::api::App;
use crate::serving::GenError;

type AppState = Arc<App>;

/// Seconds a client told 429 should wait before retrying.
pub const RETRY_AFTER_SECS: &str = "1";

/// An error answered in OpenAI's format.
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<GenError> for ApiError {
    fn from(e: GenError) -> Self {
        let status = match e {
            GenError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GenError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            GenError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GenError::Busy(_) => StatusCode::TOO_MANY_REQUESTS,
        };
        Self::new(status, e.to_string())
    }
}

fn error_kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        429 => "rate_limit_error",
        400..=499 => "invalid_request_error",
        503 => "service_unavailable",
        _ => "server_error",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                message: self.message,
                kind: error_kind(self.status).into(),
                code: self.status.as_u16(),
            },
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        resp
    }
}

/// Routes of the API port (merged with the gRPC routes).
pub fn api_router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/cluster", get(cluster))
        .route("/v1/chat/completions", post(super::chat::chat_completions))
        .route("/v1/completions", post(super::completions::completions))
        .route("/tokenize", post(super::completions::tokenize))
        .route("/detokenize", post(super::completions::detokenize))
        .merge(super::ollama::router())
        .merge(super::embeddings::router())
        .with_state(state)
}

/// Routes of the metrics port.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(state)
}

/// Unknown paths: gRPC `UNIMPLEMENTED` for gRPC clients, a JSON 404 otherwise.
pub async fn not_found(req: axum::extract::Request) -> Response {
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        return tonic::Status::unimplemented(format!("unknown method {}", req.uri().path()))
            .into_http::<axum::body::Body>()
            .into_response();
    }
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no such endpoint: {}", req.uri().path()),
    )
    .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

async fn health(State(s): State<AppState>) -> Response {
    let (ok, msg) = s.health();
    let body = json!({
        "status": if ok { "ok" } else { "unhealthy" },
        "message": msg,
        "node_id": s.node_id,
        // People read this: the same spellings as the logs and the TUI.
        "layers": s.local_range().map(|r| crate::node::view::fmt_layers(&r)),
        "plan": s.view().plan.map(|p| crate::node::view::fmt_plan(p.version)),
        "uptime_seconds": s.started.elapsed().as_secs(),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn models(State(s): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list",
        data: vec![ModelCard {
            id: s.model.id.clone(),
            object: "model",
            created: 0,
            owned_by: "distributed-llm",
        }],
    })
}

async fn cluster(State(s): State<AppState>) -> Json<serde_json::Value> {
    let view = s.view();
    let members: Vec<_> = view
        .members
        .iter()
        .map(|m| {
            json!({
                "node_id": m.node_id, "state": m.state.label(), "api_addr": m.api_addr,
                "gossip_addr": m.gossip_addr, "is_self": m.is_self,
                "layers": m.layers.as_ref().map(|r| [r.start, r.end]),
                "healthy": m.healthy, "generation": m.generation,
                "cpu_cores": m.cpu_cores, "memory_available_bytes": m.memory_available,
                "gpus": m.gpu_count, "plan_version": m.plan_version,
            })
        })
        .collect();
    let plan = view.plan.as_ref().map(|p| {
        json!({
            "version": p.version, "model": p.model, "n_layers": p.n_layers,
            "complete": p.is_complete(),
            "assignments": p.slices.iter().map(|sl| json!({
                "node_id": sl.node_id, "api_addr": sl.api_addr,
                "start": sl.range.start, "end": sl.range.end,
            })).collect::<Vec<_>>(),
        })
    });
    Json(json!({
        "node_id": s.node_id, "members": members, "plan": plan, "plan_error": view.plan_error,
    }))
}

/// An error as one server-sent event (a stream has already answered 200).
pub fn error_event(err: &ApiError) -> Event {
    let body = json!({"error": {"message": err.message, "type": error_kind(err.status), "code": err.status.as_u16()}});
    Event::default().data(body.to_string())
}

/// A server-sent-event response fed by `rx` (a task writes the events; it stops when the
/// client leaves and the channel closes).
pub fn sse_response(rx: tokio::sync::mpsc::Receiver<Event>) -> Response {
    use futures::StreamExt;
    let body =
        tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::convert::Infallible>);
    axum::response::sse::Sse::new(body)
        .keep_alive(axum::response::sse::KeepAlive::default())
        .into_response()
}
