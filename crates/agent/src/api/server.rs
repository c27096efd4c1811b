//! One listener for gRPC and HTTP: tonic services become axum routes, merged with
//! the HTTP API; hyper detects HTTP/1.1 vs h2c per connection.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use proto::{InferenceServiceServer, NodeServiceServer, PipelineServiceServer};
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tower_http::cors::CorsLayer;

use crate::api::grpc::{InferenceSvc, NodeSvc};
use crate::api::http::api_router;
use crate::api::App;
use crate::pipeline::link::{PipelineSvc, MAX_MESSAGE};

/// The combined gRPC + HTTP router behind the API-key guard (and CORS, when origins are
/// allowed: outermost, so preflights are answered without a key), and the gRPC health
/// reporter.
pub fn router(app: Arc<App>, cors: Option<CorsLayer>) -> Result<(Router, HealthReporter)> {
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
            state: app.state.clone(),
        }))
        .add_service(InferenceServiceServer::new(InferenceSvc {
            state: app.state.clone(),
            serving: app.serving.clone(),
        }))
        .add_service(
            PipelineServiceServer::new(PipelineSvc {
                state: app.state.clone(),
                router: app.router.clone(),
            })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        )
        .prepare()
        .into_axum_router();
    let router = grpc
        .merge(api_router(app))
        .fallback(crate::api::http::not_found)
        .layer(axum::middleware::from_fn(crate::security::guard));
    let router = match cors {
        Some(cors) => router.layer(cors),
        None => router,
    };
    Ok((router, reporter))
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
