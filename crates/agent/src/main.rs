//! `agent`: runs the agent server (default), or `generate`, `healthcheck`, `bench`,
//! `fetch-model`.

use clap::Parser;

use agent::config::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let level = cli.serve.log_level;
    agent::logging::init(level);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = rt.block_on(async move {
        let result = match cli.command {
            None | Some(Command::Serve) => agent::run::run(cli.serve).await,
            Some(Command::Generate(g)) => agent::generate::run(g).await,
            Some(Command::Healthcheck(h)) => return agent::healthcheck::run(&h).await,
            Some(Command::Bench(b)) => agent::bench::run(b).await,
            Some(Command::FetchModel) => fetch_model().await,
        };
        match result {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        }
    });
    std::process::exit(code);
}

/// `agent fetch-model`: the default model's path on stdout (downloaded first, with a
/// progress bar on a terminal, when it is not in the cache yet).
async fn fetch_model() -> anyhow::Result<()> {
    let path = tokio::task::spawn_blocking(engine::fetch::ensure_default_model).await??;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "default model: {} ({:.1} MiB)",
        path.display(),
        size as f64 / f64::from(1u32 << 20)
    );
    println!("{}", path.display());
    Ok(())
}
