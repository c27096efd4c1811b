//! `--docker`: named compose services, localhost ports and (when the Docker socket
//! exists) the published API ports of the compose project's running containers.
//! A candidate is kept only once an agent answers on it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures::future::join_all;

use super::{push_unique, BoxFuture, Discovery};
use crate::client;

/// What Docker mode looks at.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Service names tried on `api_port` (`distributed-llm-agent`, `agent`, `llm-agent`).
    pub services: Vec<String>,
    /// Host for the port list (`localhost`).
    pub host: String,
    /// Ports tried on `host` (8080–8083).
    pub ports: Vec<u16>,
    /// API port inside the containers (8080).
    pub api_port: u16,
    /// Compose project whose containers are listed (`distributed-llm`).
    pub project: String,
    /// Docker socket (`/var/run/docker.sock`); skipped when absent.
    pub socket: PathBuf,
    /// Health-check timeout per candidate.
    pub probe_timeout: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            services: ["distributed-llm-agent", "agent", "llm-agent"]
                .map(String::from)
                .to_vec(),
            host: "localhost".into(),
            ports: (8080..=8083).collect(),
            api_port: 8080,
            project: "distributed-llm".into(),
            socket: PathBuf::from("/var/run/docker.sock"),
            probe_timeout: Duration::from_millis(1500),
        }
    }
}

/// Docker-mode discovery.
#[derive(Debug, Clone)]
pub struct DockerDiscovery {
    cfg: DockerConfig,
}

impl DockerDiscovery {
    /// Discovery with the given configuration.
    pub fn new(cfg: DockerConfig) -> Self {
        Self { cfg }
    }

    /// Every candidate before health checks: containers, services, then host ports.
    pub async fn candidates(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in self.containers().await {
            push_unique(&mut out, a);
        }
        for s in &self.cfg.services {
            push_unique(&mut out, format!("{s}:{}", self.cfg.api_port));
        }
        for p in &self.cfg.ports {
            push_unique(&mut out, format!("{}:{p}", self.cfg.host));
        }
        out
    }

    /// Published API ports of the project's running containers (empty without a socket).
    async fn containers(&self) -> Vec<String> {
        if !self.cfg.socket.exists() {
            tracing::debug!(socket = %self.cfg.socket.display(), "no Docker socket; skipping containers");
            return Vec::new();
        }
        let path = self.cfg.socket.to_string_lossy().to_string();
        let docker = match Docker::connect_with_unix(&path, 5, bollard::API_DEFAULT_VERSION) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!("docker socket {path}: {e}");
                return Vec::new();
            }
        };
        let label = format!("com.docker.compose.project={}", self.cfg.project);
        let filters: HashMap<&str, Vec<&str>> =
            HashMap::from([("label", vec![label.as_str()]), ("status", vec!["running"])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(false)
            .filters(&filters)
            .build();
        let list =
            match tokio::time::timeout(Duration::from_secs(5), docker.list_containers(Some(opts)))
                .await
            {
                Ok(Ok(l)) => l,
                Ok(Err(e)) => {
                    tracing::warn!("docker list containers: {e}");
                    return Vec::new();
                }
                Err(_) => {
                    tracing::warn!("docker list containers: timed out");
                    return Vec::new();
                }
            };
        let mut out = Vec::new();
        for c in list {
            for p in c.ports.unwrap_or_default() {
                if p.private_port != self.cfg.api_port {
                    continue;
                }
                let Some(public) = p.public_port else {
                    continue;
                };
                let host = match p.ip.as_deref() {
                    None | Some("") | Some("0.0.0.0") | Some("::") => self.cfg.host.clone(),
                    Some(ip) if ip.contains(':') => format!("[{ip}]"),
                    Some(ip) => ip.to_string(),
                };
                push_unique(&mut out, format!("{host}:{public}"));
            }
        }
        tracing::debug!(?out, "docker containers of project {}", self.cfg.project);
        out
    }
}

impl Discovery for DockerDiscovery {
    fn mode(&self) -> &'static str {
        "docker"
    }

    fn discover(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let candidates = self.candidates().await;
            let t = self.cfg.probe_timeout;
            let checks = candidates.iter().map(|a| async move {
                match client::probe(a, t).await {
                    Ok(info) => {
                        tracing::debug!(addr = %a, node = %info.node_id, "health check passed");
                        true
                    }
                    Err(e) => {
                        tracing::trace!(addr = %a, "health check failed: {e}");
                        false
                    }
                }
            });
            let ok = join_all(checks).await;
            candidates
                .into_iter()
                .zip(ok)
                .filter_map(|(a, ok)| ok.then_some(a))
                .collect()
        })
    }
}
