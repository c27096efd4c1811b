//! TLS on the API port (`--tls-cert`, `--tls-key`): rustls (ring) in front of the
//! same gRPC + HTTP router; ALPN offers h2 and http/1.1.
//!
//! Peers reach each other's PipelineService in plaintext h2c, so a connection whose
//! first byte is not a TLS handshake is still served, but only for the
//! cluster-internal paths (PipelineService, which `--cluster-secret` guards, and
//! health checks); the client APIs answer "TLS required" there.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// Longest TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A rustls server configuration from PEM files, with clear errors.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("cannot read --tls-cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tls-cert {} is not valid PEM", cert.display()))?;
    if certs.is_empty() {
        return Err(anyhow!(
            "--tls-cert {} holds no CERTIFICATE block",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {}: no readable PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("--tls-cert and --tls-key do not form a usable pair")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Serve `app` over TLS on `listener` until the process ends. A failed handshake
/// only closes that connection.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    cfg: Arc<ServerConfig>,
) -> Result<()> {
    let acceptor = TlsAcceptor::from(cfg);
    let plain_app = app.clone().layer(axum::middleware::from_fn(internal_only));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let plain_app = plain_app.clone();
        tokio::spawn(async move {
            let mut first = [0u8; 1];
            let is_tls = matches!(
                tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await,
                Ok(Ok(1))
            ) && first[0] == 0x16;
            if !is_tls {
                let svc = TowerToHyperService::new(plain_app);
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(tcp), svc)
                    .await;
                return;
            }
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            let svc = TowerToHyperService::new(app);
            if let Err(e) = auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, "TLS connection ended: {e}");
            }
        });
    }
}

/// Whether a plaintext connection may reach `path` on a TLS agent.
pub fn internal_path(path: &str) -> bool {
    path == "/health"
        || path.starts_with("/distributed_llm.v1.PipelineService/")
        || path.starts_with("/grpc.health.v1.Health/")
}

async fn internal_only(req: Request, next: Next) -> Response {
    if internal_path(req.uri().path()) {
        return next.run(req).await;
    }
    let grpc = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return tonic::Status::unauthenticated("this agent serves its API over TLS only")
            .into_http();
    }
    let body = serde_json::json!({"error": {
        "message": "this agent serves its API over TLS only: use https://",
        "type": "invalid_request_error",
        "code": 400,
    }});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_internal_paths_are_served_in_plaintext() {
        assert!(internal_path("/health"));
        assert!(internal_path("/distributed_llm.v1.PipelineService/Forward"));
        assert!(!internal_path("/v1/chat/completions"));
        assert!(!internal_path(
            "/distributed_llm.v1.InferenceService/Generate"
        ));
    }

    #[test]
    fn missing_and_bad_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = server_config(&missing, &missing).unwrap_err();
        assert!(format!("{e:#}").contains("--tls-cert"), "{e:#}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let e = server_config(&junk, &junk).unwrap_err();
        assert!(format!("{e:#}").contains("--tls-cert"), "{e:#}");
    }

    #[test]
    fn a_self_signed_pair_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, ck.cert.pem()).unwrap();
        std::fs::write(&k, ck.key_pair.serialize_pem()).unwrap();
        let cfg = server_config(&c, &k).unwrap();
        assert_eq!(cfg.alpn_protocols[0], b"h2");
        // A key that does not match the certificate is refused.
        let other = rcgen::generate_simple_self_signed(vec!["x".into()]).unwrap();
        std::fs::write(&k, other.key_pair.serialize_pem()).unwrap();
        assert!(server_config(&c, &k).is_err());
    }
}
