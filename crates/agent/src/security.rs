//! Optional security: a shared cluster secret (gossip + pipeline calls), an API key
//! (every route of the API port but the few public ones), TLS on the API port, and the
//! origins browsers may call from (CORS). Everything is off by default.
//!
//! The API key is **deny by default**: [`need`] names the public paths (`/health`, gRPC
//! health and reflection) and the pipeline's (which take the cluster token); every other
//! path, including one added later or one that does not exist, needs the key. The metrics
//! port has no key (Prometheus scrapes it). The checks run as one axum middleware
//! ([`guard`]) in front of the merged gRPC + HTTP router: gRPC metadata are HTTP/2
//! headers, so this is the same check a tonic interceptor would make, applied per path.

use std::path::PathBuf;
use std::sync::OnceLock;

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;

/// Metadata header carrying the cluster token on PipelineService calls.
pub const CLUSTER_TOKEN_HEADER: &str = "x-cluster-token";

/// Security flags of `agent` (all optional).
#[derive(Clone, Default, Args)]
pub struct SecurityArgs {
    /// Shared cluster secret: gossip datagrams are HMAC-signed and pipeline calls
    /// carry a token derived from it; agents without it are not admitted.
    #[arg(long, env = "CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// API key: every HTTP route of the API port but `/health` (OpenAI, Ollama,
    /// `/tokenize`, ...) needs `Authorization: Bearer KEY`, every gRPC service but health,
    /// reflection and the pipeline's needs `authorization: Bearer KEY` metadata.
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Origins browsers may call the API from (CORS), comma-separated, or `*` for any;
    /// none by default. Preflights are answered; the API key is still required.
    #[arg(long, env = "CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,
    /// PEM certificate (chain) to serve the API port over TLS (needs --tls-key).
    #[arg(long, env = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl std::fmt::Debug for SecurityArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecurityArgs")
            .field("cluster_secret", &self.secret().map(|_| "<set>"))
            .field("api_key", &self.key().map(|_| "<set>"))
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("cors_origins", &self.cors_origins)
            .finish()
    }
}

impl SecurityArgs {
    /// The cluster secret, if set and not blank.
    pub fn secret(&self) -> Option<&str> {
        self.cluster_secret
            .as_deref()
            .filter(|s| !s.trim().is_empty())
    }

    /// The API key, if set and not blank.
    pub fn key(&self) -> Option<&str> {
        self.api_key
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// The CORS layer of `--cors-origins` (`None`: no CORS headers, browsers refuse).
    pub fn cors(&self) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
        use tower_http::cors::{AllowOrigin, Any, CorsLayer};
        let origins: Vec<&str> = self
            .cors_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() {
            return Ok(None);
        }
        let allow = if origins.contains(&"*") {
            AllowOrigin::any()
        } else {
            let list = origins
                .iter()
                .map(|o| {
                    o.parse::<HeaderValue>()
                        .map_err(|_| anyhow::anyhow!("--cors-origins: '{o}' is not a valid origin"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            AllowOrigin::list(list)
        };
        Ok(Some(
            CorsLayer::new()
                .allow_origin(allow)
                .allow_methods(Any)
                .allow_headers(Any)
                .expose_headers(Any)
                .max_age(std::time::Duration::from_secs(600)),
        ))
    }

    /// The checks these flags ask for.
    pub fn policy(&self) -> Security {
        Security {
            cluster_token: self.secret().map(cluster_token),
            api_key: self.key().map(str::to_string),
        }
    }
}

/// The checks in force in this process.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// Expected (and sent) `x-cluster-token` value.
    pub cluster_token: Option<String>,
    /// Expected bearer key of the client APIs.
    pub api_key: Option<String>,
}

static POLICY: OnceLock<Security> = OnceLock::new();

/// Install the process-wide policy (once, at start; later calls are ignored).
pub fn install(policy: Security) {
    let _ = POLICY.set(policy);
}

/// The process-wide policy (open when never installed).
pub fn policy() -> &'static Security {
    POLICY.get_or_init(Security::default)
}

/// The pipeline token of a secret: hex HMAC-SHA256(secret, purpose).
pub fn cluster_token(secret: &str) -> String {
    cluster::auth::derive(secret.as_bytes(), b"distributed-llm pipeline v1")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Add this agent's cluster token (if any) to an outgoing pipeline request.
pub fn with_cluster_token<T>(mut req: tonic::Request<T>) -> tonic::Request<T> {
    if let Some(t) = &policy().cluster_token {
        if let Ok(v) = t.parse() {
            req.metadata_mut().insert(CLUSTER_TOKEN_HEADER, v);
        }
    }
    req
}

/// What a path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Open,
    ApiKeyHttp,
    ApiKeyGrpc,
    ClusterToken,
}

/// Paths open to anyone: liveness for load balancers and Docker, gRPC health checks and
/// reflection (service descriptions, no data).
const PUBLIC: &[&str] = &["/health"];
const PUBLIC_GRPC: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];
/// The stage-to-stage service: agents authenticate with the cluster token.
const PIPELINE: &str = "/distributed_llm.v1.PipelineService/";

/// The requirement of a request (its path, and whether it is gRPC): the exceptions above,
/// and the API key for everything else.
pub fn need(path: &str, grpc: bool) -> Need {
    if PUBLIC.contains(&path) || PUBLIC_GRPC.iter().any(|p| path.starts_with(p)) {
        Need::Open
    } else if path.starts_with(PIPELINE) {
        Need::ClusterToken
    } else if grpc || path.starts_with("/distributed_llm.") {
        Need::ApiKeyGrpc
    } else {
        Need::ApiKeyHttp
    }
}

/// Whether a request is gRPC (by its content type).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Constant-time equality of two byte strings.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer_ok(headers: &HeaderMap, key: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .is_some_and(|k| ct_eq(k.trim().as_bytes(), key.as_bytes()))
}

/// Why a request is refused under `policy`, or `None` when it may pass.
pub fn check(policy: &Security, path: &str, headers: &HeaderMap) -> Option<Response> {
    match need(path, is_grpc(headers)) {
        Need::Open => None,
        Need::ApiKeyHttp => {
            let key = policy.api_key.as_deref()?;
            (!bearer_ok(headers, key)).then(http_unauthorized)
        }
        Need::ApiKeyGrpc => {
            let key = policy.api_key.as_deref()?;
            (!bearer_ok(headers, key)).then(|| {
                grpc_unauthenticated(
                    "missing or wrong API key: send metadata 'authorization: Bearer <key>'",
                )
            })
        }
        Need::ClusterToken => {
            let token = policy.cluster_token.as_deref()?;
            let ok = headers
                .get(CLUSTER_TOKEN_HEADER)
                .is_some_and(|v| ct_eq(v.as_bytes(), token.as_bytes()));
            (!ok).then(|| {
                grpc_unauthenticated(
                    "pipeline call without a valid cluster token: the caller does not share this cluster's secret",
                )
            })
        }
    }
}

/// The middleware: refuse what [`check`] refuses under the installed policy.
pub async fn guard(req: Request, next: Next) -> Response {
    if let Some(refusal) = check(policy(), req.uri().path(), req.headers()) {
        tracing::debug!(path = %req.uri().path(), "request refused: authentication");
        return refusal;
    }
    next.run(req).await
}

fn http_unauthorized() -> Response {
    let body = serde_json::json!({
        "error": {
            "message": "missing or wrong API key: send 'Authorization: Bearer <key>'",
            "type": "authentication_error",
            "code": 401,
        }
    });
    let mut resp = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

fn grpc_unauthenticated(msg: &str) -> Response {
    tonic::Status::unauthenticated(msg).into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn strict() -> Security {
        Security {
            cluster_token: Some(cluster_token("s")),
            api_key: Some("k".into()),
        }
    }

    #[test]
    fn paths_map_to_requirements_deny_by_default() {
        let http = |p| need(p, false);
        assert_eq!(http("/health"), Need::Open);
        for p in [
            "/v1/chat/completions",
            "/api/chat",
            "/api/tags",
            "/tokenize",
            "/detokenize",
            "/",
            "/healthz",
            "/health/",
            "/some/route/added/later",
        ] {
            assert_eq!(http(p), Need::ApiKeyHttp, "{p}");
        }
        assert_eq!(
            http("/distributed_llm.v1.PipelineService/Forward"),
            Need::ClusterToken
        );
        assert_eq!(
            http("/distributed_llm.v1.InferenceService/Generate"),
            Need::ApiKeyGrpc
        );
        assert_eq!(
            http("/distributed_llm.v1.NodeService/GetNodeInfo"),
            Need::ApiKeyGrpc
        );
        assert_eq!(need("/some.Other/Method", true), Need::ApiKeyGrpc);
        assert_eq!(http("/grpc.health.v1.Health/Check"), Need::Open);
        assert_eq!(
            need(
                "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                true
            ),
            Need::Open
        );
    }

    #[test]
    fn open_policy_lets_everything_through() {
        let p = Security::default();
        for path in ["/v1/models", "/distributed_llm.v1.PipelineService/Forward"] {
            assert!(check(&p, path, &HeaderMap::new()).is_none());
        }
    }

    #[test]
    fn api_key_is_required_and_checked() {
        let p = strict();
        let r = check(&p, "/v1/models", &HeaderMap::new()).unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(check(&p, "/v1/models", &headers(&[("authorization", "Bearer x")])).is_some());
        assert!(check(&p, "/v1/models", &headers(&[("authorization", "Bearer k")])).is_none());
        assert!(check(&p, "/health", &HeaderMap::new()).is_none());
        assert!(check(&p, "/api/chat", &HeaderMap::new()).is_some());
        assert!(check(&p, "/api/chat", &headers(&[("authorization", "Bearer k")])).is_none());
        let g = check(
            &p,
            "/distributed_llm.v1.NodeService/GetNodeInfo",
            &HeaderMap::new(),
        );
        let g = g.unwrap();
        assert_eq!(g.headers().get("grpc-status").unwrap(), "16");
    }

    #[test]
    fn cluster_token_is_required_and_derived_from_the_secret() {
        let p = strict();
        let path = "/distributed_llm.v1.PipelineService/Forward";
        assert!(check(&p, path, &HeaderMap::new()).is_some());
        let wrong = cluster_token("other");
        assert!(check(&p, path, &headers(&[(CLUSTER_TOKEN_HEADER, &wrong)])).is_some());
        let right = cluster_token("s");
        assert!(check(&p, path, &headers(&[(CLUSTER_TOKEN_HEADER, &right)])).is_none());
        assert_eq!(right.len(), 64);
        assert_ne!(right, "s");
    }

    #[test]
    fn blank_flags_mean_off() {
        let a = SecurityArgs {
            cluster_secret: Some(" ".into()),
            api_key: Some("".into()),
            ..Default::default()
        };
        let p = a.policy();
        assert!(p.cluster_token.is_none() && p.api_key.is_none());
        assert!(!format!("{a:?}").contains("Some(\" \")"));
    }
}
