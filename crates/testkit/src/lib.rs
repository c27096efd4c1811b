//! Helpers the workspace's tests share (a dev-dependency only).

use std::net::{TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// A port free for both TCP and UDP on 127.0.0.1, taken below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768-60999 by default): a port the OS hands out (`bind(:0)`)
/// can be taken by a running agent's outgoing connection before the new agent binds it
/// (seen in CI: "gossip socket ... Address already in use"). Calls in one process walk
/// the range from a pid-dependent start, so parallel tests never get the same port.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (first, span) = (10_000u32, low.saturating_sub(10_000));
    if span >= 1000 {
        let start = std::process::id() % span;
        for _ in 0..span {
            let port = (first + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok()
                && UdpSocket::bind(("127.0.0.1", port)).is_ok()
            {
                return port;
            }
        }
    }
    // No room below the ephemeral range: let the OS choose.
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// The directory of llama.cpp's fixtures (reference outputs, tiny models of every family),
/// made by `scripts/fixtures.sh` (llama.cpp built from source, cached; a fresh clone makes
/// them). Panics when the script fails: the tests that need them fail, never pass.
pub fn llama_fixtures() -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let out = std::process::Command::new("bash")
            .arg("scripts/fixtures.sh")
            .current_dir(&repo)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run scripts/fixtures.sh: {e}"));
        assert!(
            out.status.success(),
            "scripts/fixtures.sh failed ({}): the tests need llama.cpp's fixtures",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let dir = std::path::PathBuf::from(stdout.lines().last().unwrap_or("").trim());
        assert!(
            dir.join("manifest.json").is_file(),
            "scripts/fixtures.sh gave no fixture directory: {stdout}"
        );
        dir
    })
    .clone()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_are_free_and_distinct() {
        let ports: Vec<u16> = (0..20).map(|_| super::free_port()).collect();
        for p in &ports {
            assert!(std::net::UdpSocket::bind(("127.0.0.1", *p)).is_ok(), "{p}");
        }
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
    }
}
