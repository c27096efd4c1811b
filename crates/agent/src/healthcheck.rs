//! `agent healthcheck`: probe `/health`, exit 0 when healthy, 1 otherwise.

use std::time::Duration;

use crate::config::HealthcheckArgs;
use crate::httpc;

/// Returns the process exit code.
pub async fn run(args: &HealthcheckArgs) -> i32 {
    let timeout = Duration::from_secs(args.timeout.max(1));
    match httpc::request("GET", &args.url, &[], b"", timeout).await {
        Ok(r) if r.status == 200 => {
            println!("healthy: {}", r.text().trim());
            0
        }
        Ok(r) => {
            eprintln!("unhealthy (HTTP {}): {}", r.status, r.text().trim());
            1
        }
        Err(e) => {
            eprintln!("unhealthy: {e:#}");
            1
        }
    }
}
