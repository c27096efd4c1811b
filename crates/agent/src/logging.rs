//! Logging with `tracing`; the level comes from `--log-level` / `LOG_LEVEL`.

use tracing_subscriber::EnvFilter;

use crate::config::LogLevel;

/// Install the global subscriber (logs go to stderr). `RUST_LOG` refines the level
/// when set; noisy dependencies are held at `warn`. Colours only on a terminal: log files,
/// `docker logs` and test logs get plain text.
pub fn init(level: LogLevel) {
    let base = level.directive();
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| EnvFilter::try_new(s).ok())
        .unwrap_or_else(|| {
            EnvFilter::new(format!(
                "{base},h2=warn,hyper=warn,hyper_util=warn,tower=warn,chitchat=warn"
            ))
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true)
        .try_init();
}
