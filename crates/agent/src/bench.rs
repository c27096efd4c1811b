//! `agent bench`: starts 1 and then 3 local agents and measures generation speed,
//! time to first token and per-hop latency.

use clap::Args;

/// Options of `agent bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// GGUF model path (default: the default model).
    #[arg(long, env = "MODEL_PATH")]
    pub model: Option<std::path::PathBuf>,
}

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
