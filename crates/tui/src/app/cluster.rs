//! Cluster state assembled from poller updates: one [`NodeView`] per node id, the
//! plan and the models, with short histories for sparklines and per-peer rates.

use std::collections::{BTreeMap, HashMap, VecDeque};

use proto::v1 as pb;

/// Samples kept for sparklines.
pub const HISTORY: usize = 120;

/// What the TUI shows as a node's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Answers and gossip has no complaint.
    Alive,
    /// Answers, but gossip suspects it.
    Suspect,
    /// Does not answer and gossip declared it dead.
    Dead,
    /// Does not answer (gossip has not declared it dead).
    Down,
}

impl Status {
    /// Lower-case label.
    pub fn label(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
            Status::Down => "down",
        }
    }
}

/// Traffic rate to one peer, from two consecutive snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeerRate {
    /// Bytes per second sent to the peer.
    pub sent_per_s: f64,
    /// Bytes per second received from the peer.
    pub recv_per_s: f64,
}

/// Everything known about one node.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// Node id.
    pub id: String,
    /// Address the TUI polls (or the advertised one when never reached).
    pub addr: String,
    /// True when the last poll of `addr` succeeded.
    pub reachable: bool,
    /// Liveness according to gossip (from the member list).
    pub gossip: Option<pb::MemberState>,
    /// Latest `GetNodeInfo` answer.
    pub info: Option<pb::NodeInfo>,
    /// Latest gossip advert.
    pub advert: Option<pb::NodeAdvert>,
    /// Latest metrics snapshot.
    pub metrics: Option<pb::MetricsSnapshot>,
    /// CPU use history (percent).
    pub cpu_hist: VecDeque<u64>,
    /// Tokens/s history (of the last finished request).
    pub tps_hist: VecDeque<u64>,
    /// Per-peer traffic rates.
    pub peer_rates: BTreeMap<String, PeerRate>,
    /// Last poll error.
    pub last_error: Option<String>,
}

impl NodeView {
    /// Status from reachability and gossip.
    pub fn status(&self) -> Status {
        match (self.reachable, self.gossip) {
            (true, Some(pb::MemberState::Suspect)) => Status::Suspect,
            (true, _) => Status::Alive,
            (false, Some(pb::MemberState::Dead)) => Status::Dead,
            (false, _) => Status::Down,
        }
    }

    /// Resources: live metrics first, then node info, then the gossip advert.
    pub fn resources(&self) -> pb::Resources {
        let mut r = self
            .info
            .as_ref()
            .and_then(|i| i.resources.clone())
            .or_else(|| self.advert.as_ref().and_then(|a| a.resources.clone()))
            .unwrap_or_default();
        if let Some(m) = &self.metrics {
            r.cpu_usage_percent = m.cpu_usage_percent;
            r.memory_used_bytes = m.memory_used_bytes;
            r.memory_total_bytes = m.memory_total_bytes;
            r.gpus = m.gpus.clone();
            if m.cpu_cores > 0 {
                r.cpu_cores = m.cpu_cores;
            }
        }
        r
    }

    /// Layers held, if known.
    pub fn layers(&self) -> Option<pb::LayerRange> {
        self.metrics
            .as_ref()
            .and_then(|m| m.layers)
            .or_else(|| self.info.as_ref().and_then(|i| i.layers))
            .or_else(|| self.advert.as_ref().and_then(|a| a.layers))
    }

    /// Record a new snapshot (histories and peer rates).
    fn push_metrics(&mut self, m: pb::MetricsSnapshot) {
        push_capped(
            &mut self.cpu_hist,
            m.cpu_usage_percent.max(0.0).round() as u64,
        );
        push_capped(
            &mut self.tps_hist,
            m.tokens_per_second.max(0.0).round() as u64,
        );
        if let Some(prev) = &self.metrics {
            let dt = m.timestamp_ms.saturating_sub(prev.timestamp_ms) as f64 / 1000.0;
            if dt > 0.0 {
                for p in &m.peers {
                    if let Some(q) = prev.peers.iter().find(|q| q.peer_id == p.peer_id) {
                        let rate = PeerRate {
                            sent_per_s: p.bytes_sent.saturating_sub(q.bytes_sent) as f64 / dt,
                            recv_per_s: p.bytes_received.saturating_sub(q.bytes_received) as f64
                                / dt,
                        };
                        self.peer_rates.insert(p.peer_id.clone(), rate);
                    }
                }
            }
        }
        self.metrics = Some(m);
    }
}

fn push_capped(v: &mut VecDeque<u64>, x: u64) {
    if v.len() == HISTORY {
        v.pop_front();
    }
    v.push_back(x);
}

/// The cluster as the TUI knows it.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// Nodes by id.
    pub nodes: BTreeMap<String, NodeView>,
    /// Polled address -> node id.
    pub addr_node: HashMap<String, String>,
    /// Plan in force (from the latest member list).
    pub plan: Option<pb::Plan>,
    /// Models served.
    pub models: Vec<pb::ModelInfo>,
    /// Addresses discovery found last time.
    pub discovered: Vec<String>,
    /// Discovery mode name.
    pub mode: String,
}

impl Cluster {
    /// An agent answered at `addr`.
    pub fn node_answered(&mut self, addr: &str, info: pb::NodeInfo, metrics: pb::MetricsSnapshot) {
        let id = info.node_id.clone();
        self.addr_node.insert(addr.to_string(), id.clone());
        let n = self.nodes.entry(id.clone()).or_default();
        n.id = id;
        n.addr = addr.to_string();
        n.reachable = true;
        n.last_error = None;
        n.info = Some(info);
        n.push_metrics(metrics);
    }

    /// An agent did not answer at `addr` (ignored when no node was ever seen there).
    pub fn node_down(&mut self, addr: &str, error: String) {
        let Some(id) = self.addr_node.get(addr) else {
            return;
        };
        if let Some(n) = self.nodes.get_mut(id) {
            if n.addr == addr {
                n.reachable = false;
                n.last_error = Some(error);
            }
        }
    }

    /// A member list: adds nodes known only through gossip and updates liveness.
    pub fn members(&mut self, members: Vec<pb::Member>, plan: Option<pb::Plan>) {
        for m in members {
            let Some(adv) = m.advert else { continue };
            let state = pb::MemberState::try_from(m.state).unwrap_or(pb::MemberState::Unspecified);
            let n = self
                .nodes
                .entry(adv.node_id.clone())
                .or_insert_with(|| NodeView {
                    id: adv.node_id.clone(),
                    addr: adv.api_addr.clone(),
                    ..NodeView::default()
                });
            n.gossip = Some(state);
            n.advert = Some(adv);
        }
        self.plan = plan;
    }

    /// Node ids in display order.
    pub fn ids(&self) -> Vec<String> {
        self.nodes.keys().cloned().collect()
    }

    /// Address of an agent that answers, preferring `prefer`.
    pub fn entry_addr(&self, prefer: Option<&str>) -> Option<String> {
        if let Some(n) = prefer.and_then(|id| self.nodes.get(id)) {
            if n.reachable {
                return Some(n.addr.clone());
            }
        }
        self.nodes
            .values()
            .find(|n| n.reachable)
            .map(|n| n.addr.clone())
    }
}
