//! gRPC calls to agents (NodeService, InferenceService) and the background poller
//! that keeps the cluster view fresh and reconnects on its own.

mod poller;

use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use proto::v1 as pb;
use proto::{InferenceServiceClient, NodeServiceClient};
use tokio::sync::mpsc;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub use poller::{Poller, PollerConfig};

/// Something the background tasks tell the app.
#[derive(Debug, Clone)]
pub enum Update {
    /// Discovery ran and found these addresses.
    Discovered { mode: String, addrs: Vec<String> },
    /// One agent answered: its info and a metrics snapshot.
    Node {
        addr: String,
        info: Box<pb::NodeInfo>,
        metrics: Box<pb::MetricsSnapshot>,
    },
    /// An agent did not answer.
    NodeDown { addr: String, error: String },
    /// The member list and plan as one agent sees them.
    Members {
        from: String,
        members: Vec<pb::Member>,
        plan: Option<pb::Plan>,
    },
    /// Models served by the cluster.
    Models(Vec<pb::ModelInfo>),
    /// A chat stream event.
    Chat(ChatEvent),
}

/// Events of one chat generation.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    /// New text of a token.
    Token(String),
    /// End of the stream.
    Done(pb::FinalEvent),
    /// The request failed.
    Error(String),
}

static API_KEY: OnceLock<Option<AsciiMetadataValue>> = OnceLock::new();

/// Use `key` (blank: none) as the agents' API key on every call; set once at start.
pub fn set_api_key(key: Option<&str>) -> anyhow::Result<()> {
    let value = match key.map(str::trim).filter(|k| !k.is_empty()) {
        Some(k) => Some(
            format!("Bearer {k}")
                .parse()
                .map_err(|_| anyhow::anyhow!("--api-key must be printable ASCII"))?,
        ),
        None => None,
    };
    let _ = API_KEY.set(value);
    Ok(())
}

static TLS: OnceLock<Option<ClientTlsConfig>> = OnceLock::new();

/// Connect with TLS to every agent, trusting the system roots and the PEM at `ca`
/// (`None`: plaintext unless an address says `https://`); set once at start.
pub fn set_tls_ca(ca: Option<&std::path::Path>) -> anyhow::Result<()> {
    let cfg = match ca {
        Some(p) => {
            let pem =
                std::fs::read(p).map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", p.display()))?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                anyhow::bail!("--tls-ca {} holds no PEM certificate", p.display());
            }
            Some(tls_base().ca_certificate(Certificate::from_pem(pem)))
        }
        None => None,
    };
    let _ = TLS.set(cfg);
    Ok(())
}

fn tls_base() -> ClientTlsConfig {
    ClientTlsConfig::new().with_native_roots()
}

/// Adds `authorization: Bearer KEY` when an API key is set.
pub fn auth(mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(Some(v)) = API_KEY.get() {
        req.metadata_mut().insert("authorization", v.clone());
    }
    Ok(req)
}

type AuthFn = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;
/// A channel whose calls carry the API key.
pub type AuthChannel = InterceptedService<Channel, AuthFn>;

/// NodeService client with the API key.
pub fn node_client(ch: Channel) -> NodeServiceClient<AuthChannel> {
    NodeServiceClient::with_interceptor(ch, auth as AuthFn)
}

/// Channel endpoint for `host:port` (an `http://` scheme is added when missing).
/// With `--tls-ca` (or an `https://` address) the endpoint uses TLS.
pub fn endpoint(addr: &str) -> anyhow::Result<Endpoint> {
    let tls = TLS.get().cloned().flatten();
    let uri = if addr.contains("://") {
        addr.to_string()
    } else if tls.is_some() {
        format!("https://{addr}")
    } else {
        format!("http://{addr}")
    };
    let https = uri.starts_with("https://");
    let mut ep = Endpoint::from_shared(uri)
        .map_err(|e| anyhow::anyhow!("bad address {addr:?}: {e}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true);
    if https {
        ep = ep
            .tls_config(tls.unwrap_or_else(tls_base))
            .map_err(|e| anyhow::anyhow!("TLS for {addr}: {e}"))?;
    }
    Ok(ep)
}

/// Connect to an agent's API.
pub async fn connect(addr: &str) -> anyhow::Result<Channel> {
    Ok(endpoint(addr)?.connect().await?)
}

/// Health check: the agent's `GetNodeInfo`, within `timeout`.
pub async fn probe(addr: &str, timeout: Duration) -> anyhow::Result<pb::NodeInfo> {
    let call = async {
        let ch = connect(addr).await?;
        let info = node_client(ch)
            .get_node_info(pb::GetNodeInfoRequest {})
            .await?
            .into_inner();
        anyhow::Ok(info)
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| anyhow::anyhow!("{addr}: no answer within {timeout:?}"))?
}

/// Run one generation on the agent at `addr`, sending its events to `tx`.
/// Ends with exactly one `Done` or `Error`; dropping the task cancels the request.
pub async fn generate(addr: String, req: pb::GenerateRequest, tx: mpsc::Sender<Update>) {
    let send = |ev| {
        let tx = tx.clone();
        async move { tx.send(Update::Chat(ev)).await.is_ok() }
    };
    let stream = async {
        let ch = connect(&addr).await?;
        let s = InferenceServiceClient::with_interceptor(ch, auth as AuthFn)
            .generate(req)
            .await?;
        anyhow::Ok(s.into_inner())
    };
    let mut stream = match stream.await {
        Ok(s) => s,
        Err(e) => {
            send(ChatEvent::Error(format!("{addr}: {}", error_text(&e)))).await;
            return;
        }
    };
    loop {
        match stream.next().await {
            Some(Ok(pb::GenerateResponse { event: Some(ev) })) => {
                let ev = match ev {
                    pb::generate_response::Event::Token(t) => ChatEvent::Token(t.text),
                    pb::generate_response::Event::Done(d) => {
                        send(ChatEvent::Done(d)).await;
                        return;
                    }
                };
                if !send(ev).await {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(status)) => {
                send(ChatEvent::Error(format!(
                    "{addr}: {}",
                    status.message().trim()
                )))
                .await;
                return;
            }
            None => {
                send(ChatEvent::Error(format!(
                    "{addr}: stream ended without a final event"
                )))
                .await;
                return;
            }
        }
    }
}

/// A short message for an error, with a gRPC status reduced to its message.
pub fn error_text(e: &anyhow::Error) -> String {
    if let Some(s) = e.downcast_ref::<tonic::Status>() {
        return format!("{:?}: {}", s.code(), s.message());
    }
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    #[test]
    fn api_key_goes_into_the_authorization_metadata() {
        assert!(set_api_key(Some("bad\nkey")).is_err());
        set_api_key(Some(" k3y ")).unwrap();
        let req = auth(tonic::Request::new(())).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer k3y");
    }
}
