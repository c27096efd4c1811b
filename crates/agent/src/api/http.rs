//! HTTP API on the API port: the route table ([`routes`]: `/health`, `/v1/models`,
//! `/v1/cluster`, and the handlers of [`super::chat`], [`super::completions`],
//! [`super::responses`], [`super::embeddings`], [`super::ollama`]); and the metrics server
//! (`/metrics`, `/health`) on the metrics port.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::api::core::{ApiError, ApiRoute};
use crate::api::openai::*;
use crate::api::App;

type AppState = Arc<App>;

/// Every HTTP route of the API port.
pub fn routes() -> Vec<ApiRoute> {
    let mut r = vec![
        ApiRoute::new("GET", "/health", get(health)),
        ApiRoute::new("GET", "/v1/models", get(models)),
        ApiRoute::new("GET", "/v1/cluster", get(cluster)),
        ApiRoute::new(
            "POST",
            "/v1/chat/completions",
            post(super::chat::chat_completions),
        ),
        ApiRoute::new(
            "POST",
            "/v1/completions",
            post(super::completions::completions),
        ),
        ApiRoute::new("POST", "/tokenize", post(super::completions::tokenize)),
        ApiRoute::new("POST", "/detokenize", post(super::completions::detokenize)),
    ];
    r.extend(super::responses::routes());
    r.extend(super::embeddings::routes());
    r.extend(super::ollama::routes());
    r
}

/// `(method, path)` of every HTTP route of the API port, as the router has them.
pub fn route_list() -> Vec<(&'static str, &'static str)> {
    routes().iter().map(|r| (r.method, r.path)).collect()
}

/// Routes of the API port (merged with the gRPC routes).
pub fn api_router(state: AppState) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, r| router.route(r.path, r.handler))
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
    if crate::security::is_grpc(req.headers()) {
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
        s.state.metrics.encode(),
    )
        .into_response()
}

async fn health(State(s): State<AppState>) -> Response {
    let (ok, msg) = s.state.health();
    let body = json!({
        "status": if ok { "ok" } else { "unhealthy" },
        "message": msg,
        "node_id": s.state.node_id,
        // People read this: the same spellings as the logs and the TUI.
        "layers": s.state.local_range().map(|r| crate::node::view::fmt_layers(&r)),
        "plan": s.state.view().plan.map(|p| crate::node::view::fmt_plan(p.version)),
        "uptime_seconds": s.state.started.elapsed().as_secs(),
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
            id: s.state.model.id.clone(),
            object: "model",
            created: 0,
            owned_by: "distributed-llm",
        }],
    })
}

async fn cluster(State(s): State<AppState>) -> Json<serde_json::Value> {
    let view = s.state.view();
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
        "node_id": s.state.node_id, "members": members, "plan": plan, "plan_error": view.plan_error,
    }))
}
