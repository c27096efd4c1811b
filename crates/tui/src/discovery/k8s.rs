//! `--k8s-namespace=NS`: the service's DNS name (A records), its `_grpc._tcp` SRV
//! records, and the annotated pods listed through the Kubernetes API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{Resolver, TokioResolver};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};

use super::{push_unique, BoxFuture, Discovery};

/// Pod annotation naming the agent's gRPC API port.
pub const API_PORT_ANNOTATION: &str = "distributed-llm.io/api-port";
/// Prometheus annotations the pods carry.
pub const SCRAPE_ANNOTATION: &str = "prometheus.io/scrape";
/// Port of the metrics endpoint (informational; the API port is what the TUI needs).
pub const PORT_ANNOTATION: &str = "prometheus.io/port";

/// What Kubernetes mode looks at.
#[derive(Debug, Clone)]
pub struct K8sConfig {
    /// Namespace of the agents.
    pub namespace: String,
    /// Headless service name (`agent`).
    pub service: String,
    /// Cluster domain (`cluster.local`).
    pub domain: String,
    /// gRPC API port when no SRV record or annotation says otherwise (8080).
    pub api_port: u16,
    /// DNS server to ask instead of the system's (`--dns-server`).
    pub dns_server: Option<SocketAddr>,
    /// Kubeconfig file; `None` means in-cluster config or `$KUBECONFIG`/`~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Whether to ask the Kubernetes API for pods at all.
    pub use_api: bool,
    /// Timeout of each DNS query and API call.
    pub timeout: Duration,
}

impl K8sConfig {
    /// Defaults for `namespace`.
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            service: "agent".into(),
            domain: "cluster.local".into(),
            api_port: 8080,
            dns_server: None,
            kubeconfig: None,
            use_api: true,
            timeout: Duration::from_secs(3),
        }
    }

    /// Fully qualified service name, e.g. `agent.default.svc.cluster.local.`.
    pub fn service_fqdn(&self) -> String {
        format!("{}.{}.svc.{}.", self.service, self.namespace, self.domain)
    }

    /// SRV name of the gRPC port, e.g. `_grpc._tcp.agent.default.svc.cluster.local.`.
    pub fn srv_name(&self) -> String {
        format!("_grpc._tcp.{}", self.service_fqdn())
    }
}

/// Kubernetes-mode discovery.
pub struct K8sDiscovery {
    cfg: K8sConfig,
    resolver: TokioResolver,
}

impl K8sDiscovery {
    /// Discovery with the given configuration (builds the DNS resolver).
    pub fn new(cfg: K8sConfig) -> anyhow::Result<Self> {
        let mut builder = match cfg.dns_server {
            Some(addr) => {
                let group = NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true);
                Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], group),
                    TokioConnectionProvider::default(),
                )
            }
            None => Resolver::builder_tokio()
                .map_err(|e| anyhow::anyhow!("system DNS configuration: {e}"))?,
        };
        let opts = builder.options_mut();
        opts.timeout = cfg.timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.ndots = 0;
        Ok(Self {
            resolver: builder.build(),
            cfg,
        })
    }

    /// `ip:api_port` for each A/AAAA record of the service name.
    pub async fn from_service_dns(&self) -> Vec<String> {
        let name = self.cfg.service_fqdn();
        match self.resolver.lookup_ip(name.as_str()).await {
            Ok(ips) => ips
                .iter()
                .map(|ip| SocketAddr::new(ip, self.cfg.api_port).to_string())
                .collect(),
            Err(e) => {
                tracing::debug!("DNS {name}: {e}");
                Vec::new()
            }
        }
    }

    /// `ip:port` for each SRV record of the gRPC port (targets resolved to addresses).
    pub async fn from_srv(&self) -> Vec<String> {
        let name = self.cfg.srv_name();
        let srv = match self.resolver.srv_lookup(name.as_str()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("DNS SRV {name}: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for rec in srv.iter() {
            let target = rec.target().to_ascii();
            match self.resolver.lookup_ip(target.as_str()).await {
                Ok(ips) => {
                    for ip in ips.iter() {
                        push_unique(&mut out, SocketAddr::new(ip, rec.port()).to_string());
                    }
                }
                Err(e) => {
                    tracing::debug!("DNS {target}: {e}");
                    let host = target.trim_end_matches('.');
                    push_unique(&mut out, format!("{host}:{}", rec.port()));
                }
            }
        }
        out
    }

    /// `podIP:apiPort` of running pods annotated `prometheus.io/scrape: "true"`.
    pub async fn from_pods(&self) -> anyhow::Result<Vec<String>> {
        let client = self.kube_client().await?;
        let api: Api<Pod> = Api::namespaced(client, &self.cfg.namespace);
        let pods = tokio::time::timeout(self.cfg.timeout, api.list(&ListParams::default()))
            .await
            .map_err(|_| anyhow::anyhow!("listing pods timed out"))??;
        let mut out = Vec::new();
        for pod in pods.items {
            if let Some(a) = pod_api_addr(&pod, self.cfg.api_port) {
                push_unique(&mut out, a);
            }
        }
        Ok(out)
    }

    async fn kube_client(&self) -> anyhow::Result<Client> {
        let config = match &self.cfg.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)?;
                Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?
            }
            None => Config::infer().await?,
        };
        Ok(Client::try_from(config)?)
    }
}

/// The API address of an annotated, running pod with an IP; `None` otherwise.
pub fn pod_api_addr(pod: &Pod, default_port: u16) -> Option<String> {
    let ann = pod.metadata.annotations.as_ref()?;
    if ann.get(SCRAPE_ANNOTATION).map(String::as_str) != Some("true") {
        return None;
    }
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") {
        return None;
    }
    let ip: std::net::IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let named_port = || {
        pod.spec.as_ref()?.containers.iter().find_map(|c| {
            c.ports
                .as_ref()?
                .iter()
                .find(|p| p.name.as_deref() == Some("grpc"))
                .and_then(|p| u16::try_from(p.container_port).ok())
        })
    };
    let port = ann
        .get(API_PORT_ANNOTATION)
        .and_then(|p| p.trim().parse::<u16>().ok())
        .or_else(named_port)
        .unwrap_or(default_port);
    Some(SocketAddr::new(ip, port).to_string())
}

impl Discovery for K8sDiscovery {
    fn mode(&self) -> &'static str {
        "k8s"
    }

    fn discover(&self) -> BoxFuture<'_, Vec<String>> {
        Box::pin(async move {
            let (srv, a, pods) = tokio::join!(self.from_srv(), self.from_service_dns(), async {
                if self.cfg.use_api {
                    self.from_pods().await
                } else {
                    Ok(Vec::new())
                }
            });
            let pods = pods.unwrap_or_else(|e| {
                tracing::debug!("kubernetes API: {e}");
                Vec::new()
            });
            let mut out = Vec::new();
            for addr in srv.into_iter().chain(a).chain(pods) {
                push_unique(&mut out, addr);
            }
            out
        })
    }
}
