//! Command line of the `tui` binary, logging to a file and building the discovery.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;

use crate::discovery::{
    parse_ports, Discovery, DockerConfig, DockerDiscovery, K8sConfig, K8sDiscovery, SeedDiscovery,
};

/// Terminal UI of distributed-llm: finds the agents, shows the cluster live and chats
/// with the model. Without a mode it connects to localhost:8080.
#[derive(Debug, Clone, Parser)]
#[command(name = "tui", version, about)]
pub struct Cli {
    /// Discover agents of the Docker Compose stack (service names, localhost:8080-8083,
    /// published ports of the project's containers).
    #[arg(long, conflicts_with_all = ["k8s_namespace", "seed_nodes"])]
    pub docker: bool,
    /// Discover agents in this Kubernetes namespace (service DNS, SRV, pod annotations).
    #[arg(long, value_name = "NS", conflicts_with = "seed_nodes")]
    pub k8s_namespace: Option<String>,
    /// Agent API addresses to connect to, `host:port,...` (port 8080 when absent).
    #[arg(long, value_delimiter = ',', value_name = "ADDRS")]
    pub seed_nodes: Vec<String>,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = parse_level)]
    pub log_level: String,
    /// Log file (logs never go to the screen) [default: <temp dir>/distributed-llm-tui.log].
    #[arg(long, env = "TUI_LOG_FILE", value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// DNS server for Kubernetes mode instead of the system's, `ip:port`.
    #[arg(long, env = "TUI_DNS_SERVER", value_name = "ADDR")]
    pub dns_server: Option<SocketAddr>,
    /// Kubeconfig for Kubernetes mode [default: in-cluster, $KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Headless service of the agents in Kubernetes mode.
    #[arg(long, default_value = "agent")]
    pub k8s_service: String,
    /// Cluster DNS domain in Kubernetes mode.
    #[arg(long, default_value = "cluster.local")]
    pub k8s_domain: String,
    /// Agent API port when discovery finds only a host.
    #[arg(long, default_value_t = 8080)]
    pub api_port: u16,
    /// Compose project whose containers Docker mode lists.
    #[arg(long, default_value = "distributed-llm")]
    pub docker_project: String,
    /// Ports Docker mode probes on the Docker host (tests use free ports).
    #[arg(
        long,
        hide = true,
        env = "TUI_DOCKER_PORTS",
        default_value = "8080-8083"
    )]
    pub docker_ports: String,
    /// Host whose ports Docker mode probes.
    #[arg(
        long,
        hide = true,
        env = "TUI_DOCKER_HOST",
        default_value = "localhost"
    )]
    pub docker_host: String,
    /// Service names Docker mode probes (comma separated; empty for none).
    #[arg(
        long,
        hide = true,
        env = "TUI_DOCKER_SERVICES",
        default_value = "distributed-llm-agent,agent,llm-agent"
    )]
    pub docker_services: String,
    /// Docker socket.
    #[arg(
        long,
        hide = true,
        env = "TUI_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub docker_socket: PathBuf,
    /// Refresh period in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub refresh_ms: u64,
    /// API key of the agents (sent as `authorization: Bearer KEY` metadata).
    #[arg(long, env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Connect with TLS (https) and also trust this PEM CA or self-signed certificate
    /// (besides the system roots); `https://` addresses use TLS even without it.
    #[arg(long, env = "TUI_TLS_CA", value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
}

fn parse_level(s: &str) -> Result<String, String> {
    let l = s.trim().to_ascii_lowercase();
    match l.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" => Ok(l),
        "warning" => Ok("warn".into()),
        _ => Err(format!(
            "unknown log level {s:?} (trace, debug, info, warn, error)"
        )),
    }
}

impl Cli {
    /// The log file path.
    pub fn log_path(&self) -> PathBuf {
        self.log_file
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("distributed-llm-tui.log"))
    }

    /// The discovery the flags ask for.
    pub fn discovery(&self) -> anyhow::Result<Arc<dyn Discovery>> {
        if self.docker {
            let ports = parse_ports(&self.docker_ports)
                .map_err(|e| anyhow::anyhow!("--docker-ports: {e}"))?;
            let services = self
                .docker_services
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            return Ok(Arc::new(DockerDiscovery::new(DockerConfig {
                services,
                host: self.docker_host.clone(),
                ports,
                api_port: self.api_port,
                project: self.docker_project.clone(),
                socket: self.docker_socket.clone(),
                probe_timeout: Duration::from_millis(1500),
            })));
        }
        if let Some(ns) = &self.k8s_namespace {
            let ns = ns.trim();
            if ns.is_empty() {
                anyhow::bail!("--k8s-namespace must not be empty");
            }
            let mut cfg = K8sConfig::new(ns);
            cfg.service = self.k8s_service.clone();
            cfg.domain = self.k8s_domain.clone();
            cfg.api_port = self.api_port;
            cfg.dns_server = self.dns_server;
            cfg.kubeconfig = self.kubeconfig.clone();
            return Ok(Arc::new(K8sDiscovery::new(cfg)?));
        }
        let seeds = SeedDiscovery::new(&self.seed_nodes);
        if self.seed_nodes.iter().all(|s| s.trim().is_empty()) {
            return Ok(Arc::new(SeedDiscovery::new(&[format!(
                "localhost:{}",
                self.api_port
            )])));
        }
        Ok(Arc::new(seeds))
    }
}

/// Send `tracing` output at `level` to `path` (created with its directory).
pub fn init_logging(path: &Path, level: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create log directory {}: {e}", dir.display()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot open log file {}: {e}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,tui={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(Mutex::new(file))
        .try_init()
        .map_err(|e| anyhow::anyhow!("logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("tui").chain(args.iter().copied()))
    }

    #[test]
    fn guide_flags_parse() {
        let c = parse(&["--docker", "--log-level=debug"]).unwrap();
        assert!(c.docker);
        assert_eq!(c.log_level, "debug");
        let c = parse(&["--k8s-namespace=default", "--log-level=debug"]).unwrap();
        assert_eq!(c.k8s_namespace.as_deref(), Some("default"));
        let c = parse(&["--seed-nodes=localhost:8080,localhost:8081"]).unwrap();
        assert_eq!(c.seed_nodes, vec!["localhost:8080", "localhost:8081"]);
    }

    #[test]
    fn bad_input_is_rejected_clearly() {
        let e = parse(&["--log-level=loud"]).unwrap_err().to_string();
        assert!(e.contains("unknown log level"), "{e}");
        assert!(parse(&["--docker", "--seed-nodes=a:1"]).is_err());
        assert!(parse(&["--docker", "--k8s-namespace=x"]).is_err());
        assert!(parse(&["--dns-server=nonsense"]).is_err());
        let c = parse(&["--docker", "--docker-ports=9-1"]).unwrap();
        let e = c.discovery().err().unwrap().to_string();
        assert!(e.contains("--docker-ports"), "{e}");
        let c = parse(&["--k8s-namespace= "]).unwrap();
        assert!(c.discovery().is_err());
    }

    #[tokio::test]
    async fn default_mode_is_localhost_seed() {
        let c = parse(&[]).unwrap();
        let d = c.discovery().unwrap();
        assert_eq!(d.mode(), "seeds");
        assert_eq!(d.discover().await, vec!["localhost:8080"]);
        assert!(c.log_path().ends_with("distributed-llm-tui.log"));
    }
}
