//! Seed re-resolution: `host:port` seeds are looked up every few seconds, so
//! compose/k8s names that appear late (or change address) still join the cluster.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chitchat::ChitchatHandle;
use tokio::net::lookup_host;
use tracing::{debug, warn};

/// How often seeds are re-resolved and, when not already live peers, contacted.
pub const SEED_REFRESH: Duration = Duration::from_secs(3);

/// Resolves `seeds`; unresolvable ones are logged and skipped.
pub async fn resolve(seeds: &[String]) -> HashSet<SocketAddr> {
    let mut out = HashSet::new();
    for seed in seeds {
        match lookup_host(seed.as_str()).await {
            Ok(addrs) => out.extend(addrs),
            Err(e) => warn!(seed = %seed, error = %e, "cannot resolve seed node"),
        }
    }
    out
}

/// Forever: resolve the seeds and gossip to each address that is not ourselves,
/// matches our address family and is not the address of a live peer.
pub(crate) async fn refresh_loop(
    handle: Arc<ChitchatHandle>,
    seeds: Vec<String>,
    own: [SocketAddr; 2],
) {
    let mut tick = tokio::time::interval(SEED_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let addrs = resolve(&seeds).await;
        let live: HashSet<SocketAddr> = handle
            .with_chitchat(|c| c.live_nodes().map(|id| id.gossip_advertise_addr).collect())
            .await;
        for addr in addrs {
            let same_family = addr.is_ipv4() == own[0].is_ipv4();
            if own.contains(&addr) || live.contains(&addr) || !same_family {
                continue;
            }
            debug!(%addr, "gossiping to seed");
            if handle.gossip(addr).is_err() {
                return; // chitchat has shut down
            }
        }
    }
}
