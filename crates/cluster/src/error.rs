//! Errors of the membership layer.

use std::net::SocketAddr;

/// Why membership could not start or act.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The gossip UDP port could not be bound (usually: already in use).
    #[error("cannot bind gossip socket on {addr}/UDP: {reason} (is another agent using this port? pick another --gossip-port)")]
    Bind {
        /// Address we tried to bind.
        addr: SocketAddr,
        /// OS error text.
        reason: String,
    },
    /// The configuration is unusable.
    #[error("invalid membership config: {0}")]
    Config(String),
    /// The advert could not be encoded.
    #[error("cannot encode node advert: {0}")]
    Encode(#[from] serde_json::Error),
}
