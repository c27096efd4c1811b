//! One listener for gRPC and HTTP: tonic services become axum routes, merged with
//! the HTTP API; hyper detects HTTP/1.1 vs h2c per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use proto::{InferenceServiceServer, NodeServiceServer, PipelineServiceServer};
use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use crate::grpc::{InferenceSvc, NodeSvc};
use crate::http::api_router;
use crate::pipeline::server::PipelineSvc;
use crate::state::AgentState;

/// Largest gRPC message (a long prompt's hidden state).
const MAX_MESSAGE: usize = 256 << 20;

/// The combined gRPC + HTTP router, and the gRPC health reporter.
pub fn router(state: Arc<AgentState>) -> Result<(Router, HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("reflection v1")?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .context("reflection v1alpha")?;
    let grpc = Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(NodeServiceServer::new(NodeSvc {
            state: state.clone(),
        }))
        .add_service(InferenceServiceServer::new(InferenceSvc {
            state: state.clone(),
        }))
        .add_service(
            PipelineServiceServer::new(PipelineSvc {
                state: state.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        )
        .prepare()
        .into_axum_router();
    Ok((
        grpc.merge(api_router(state))
            .fallback(crate::http::not_found)
            .layer(axum::middleware::from_fn(crate::security::guard)),
        reporter,
    ))
}

/// Bind a TCP listener with a clear error.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind the {what} port {addr}"))
}

/// Serve a router until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, app: Router) -> Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
