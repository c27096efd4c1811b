//! Discovery of agent API addresses: one interface, three modes (seed list, Docker,
//! Kubernetes). Each mode returns `host:port` candidates; the poller learns the rest
//! of the cluster from the member list of whichever agent answers.

mod docker;
mod k8s;
mod seeds;

use std::future::Future;
use std::pin::Pin;

pub use docker::{DockerConfig, DockerDiscovery};
pub use k8s::{
    pod_api_addr, K8sConfig, K8sDiscovery, API_PORT_ANNOTATION, PORT_ANNOTATION, SCRAPE_ANNOTATION,
};
pub use seeds::SeedDiscovery;

/// A boxed, sendable future (keeps [`Discovery`] object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A way to find agents. Implementations never fail as a whole: a source that is
/// unavailable is logged and skipped, and what the others found is returned.
pub trait Discovery: Send + Sync {
    /// Short name of the mode, shown in the UI ("seeds", "docker", "k8s").
    fn mode(&self) -> &'static str;
    /// Candidate agent API addresses (`host:port`), deduplicated, in a stable order.
    fn discover(&self) -> BoxFuture<'_, Vec<String>>;
}

/// Normalise an address: trim, strip an `http://` / `https://` scheme and a trailing
/// `/`, and add `default_port` when none is given. `None` for an empty input.
pub fn normalize_addr(raw: &str, default_port: u16) -> Option<String> {
    let s = raw.trim();
    let s = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .unwrap_or(s)
        .trim_end_matches('/');
    if s.is_empty() {
        return None;
    }
    let has_port = if let Some(rest) = s.strip_prefix('[') {
        // [v6]:port
        rest.contains("]:")
    } else {
        s.matches(':').count() == 1
    };
    if has_port {
        Some(s.to_string())
    } else if s.parse::<std::net::Ipv6Addr>().is_ok() {
        Some(format!("[{s}]:{default_port}"))
    } else {
        Some(format!("{s}:{default_port}"))
    }
}

/// Append `addr` to `out` unless it is already there.
pub(crate) fn push_unique(out: &mut Vec<String>, addr: String) {
    if !out.contains(&addr) {
        out.push(addr);
    }
}

/// Parse a port list such as `8080-8083` or `8080,8081,9000-9001`.
pub fn parse_ports(spec: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let parse = |s: &str| {
            s.trim()
                .parse::<u16>()
                .map_err(|_| format!("bad port {s:?} in {spec:?}"))
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                if a > b || b - a > 1024 {
                    return Err(format!(
                        "bad port range {part:?} (at most 1025 ports, low-high)"
                    ));
                }
                ports.extend(a..=b);
            }
            None => ports.push(parse(part)?),
        }
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_adds_port_and_strips_scheme() {
        assert_eq!(
            normalize_addr(" localhost ", 8080).unwrap(),
            "localhost:8080"
        );
        assert_eq!(normalize_addr("http://a:1/", 8080).unwrap(), "a:1");
        assert_eq!(normalize_addr("::1", 8080).unwrap(), "[::1]:8080");
        assert_eq!(normalize_addr("[::1]:9", 8080).unwrap(), "[::1]:9");
        assert!(normalize_addr("  ", 8080).is_none());
    }

    #[test]
    fn ports_parse_ranges_and_lists() {
        assert_eq!(
            parse_ports("8080-8083").unwrap(),
            vec![8080, 8081, 8082, 8083]
        );
        assert_eq!(parse_ports("1, 5-6").unwrap(), vec![1, 5, 6]);
        assert!(parse_ports("9-1").is_err());
        assert!(parse_ports("x").is_err());
        assert!(parse_ports("70000").is_err());
    }
}
