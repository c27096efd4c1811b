//! `agent`: runs the agent server (default), or `generate`, `healthcheck`, `bench`.

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
