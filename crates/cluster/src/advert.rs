//! What a node gossips about itself, and how others see it.

use serde::{Deserialize, Serialize};

/// One GPU as advertised.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GpuAdvert {
    /// Product name.
    pub name: String,
    /// Device memory in total (bytes).
    pub memory_total: u64,
    /// Device memory in use (bytes).
    pub memory_used: u64,
}

/// A node's self-description, stored as JSON under the chitchat key [`ADVERT_KEY`].
///
/// Unknown JSON fields are ignored and missing ones take their defaults, so agents
/// of neighbouring versions can still read each other.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeAdvert {
    /// Unique node id (`--node-id`).
    pub node_id: String,
    /// gRPC API address peers and clients dial (host:port).
    pub api_addr: String,
    /// Gossip address (host:port, UDP).
    pub gossip_addr: String,
    /// Prometheus metrics address (host:port).
    pub metrics_addr: String,
    /// Logical CPU cores.
    pub cpu_cores: u32,
    /// Whole-machine CPU use, 0-100.
    pub cpu_usage_percent: f32,
    /// Physical memory (or cgroup limit), bytes.
    pub memory_total: u64,
    /// Memory available for model weights, bytes (placement input; quantise it).
    pub memory_available: u64,
    /// GPUs (empty when none).
    pub gpus: Vec<GpuAdvert>,
    /// Ids of the models served.
    pub models: Vec<String>,
    /// First layer held (inclusive).
    pub layer_start: u32,
    /// End of the range held (exclusive); equal to `layer_start` when none.
    pub layer_end: u32,
    /// True when the node's layers are loaded and the plan covers the model.
    pub healthy: bool,
    /// Generation id of the process (set by [`crate::Membership`] from its config).
    pub generation: u64,
    /// Agent software version.
    pub version: String,
    /// Version of the plan the node follows.
    pub plan_version: u64,
}

/// Chitchat key holding the JSON [`NodeAdvert`].
pub const ADVERT_KEY: &str = "advert";

/// Liveness of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum MemberState {
    /// Heard from recently.
    Alive,
    /// Still alive for the failure detector, but silent for over half of its
    /// (adaptive) failure-detection timeout.
    Suspect,
    /// Declared dead by the failure detector.
    Dead,
}

impl MemberState {
    /// Lower-case label: "alive", "suspect" or "dead".
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Dead => "dead",
        }
    }

    /// True for Alive and Suspect (the node still counts for placement).
    pub fn is_live(self) -> bool {
        !matches!(self, Self::Dead)
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node as this agent's gossip sees it (newest generation of its node id).
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its latest advert.
    pub advert: NodeAdvert,
    /// Its liveness.
    pub state: MemberState,
    /// True for this agent itself.
    pub is_self: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advert_json_round_trips_and_tolerates_unknown_fields() {
        let a = NodeAdvert {
            node_id: "agent-1".into(),
            api_addr: "172.20.0.2:8080".into(),
            cpu_cores: 8,
            cpu_usage_percent: 12.5,
            gpus: vec![GpuAdvert {
                name: "H100".into(),
                memory_total: 80,
                memory_used: 1,
            }],
            layer_end: 30,
            healthy: true,
            ..Default::default()
        };
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(serde_json::from_str::<NodeAdvert>(&json).unwrap(), a);
        let partial: NodeAdvert =
            serde_json::from_str(r#"{"node_id":"x","future_field":1}"#).unwrap();
        assert_eq!(partial.node_id, "x");
        assert_eq!(partial.cpu_cores, 0);
    }

    #[test]
    fn state_labels() {
        assert_eq!(MemberState::Suspect.to_string(), "suspect");
        assert!(MemberState::Suspect.is_live());
        assert!(!MemberState::Dead.is_live());
    }
}
