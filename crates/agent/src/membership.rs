//! Adapter between the agent and the gossip layer (`cluster` crate): publishes this
//! agent's advert, reads members, computes the plan.
//!
//! TEMPORARY: single-node view until the cluster crate lands.

use std::ops::Range;

use crate::view::{Liveness, MemberView, PlanView, Slice};

/// What this agent advertises.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalAdvert {
    pub node_id: String,
    pub api_addr: String,
    pub gossip_addr: String,
    pub metrics_addr: String,
    pub cpu_cores: u32,
    pub memory_total: u64,
    pub memory_available: u64,
    pub gpu_count: u32,
    pub gpu_memory_total: u64,
    pub models: Vec<String>,
    pub layers: Option<Range<usize>>,
    pub healthy: bool,
    pub generation: u64,
    pub version: String,
    pub plan_version: u64,
}

/// Gossip membership handle.
pub struct Membership {
    me: tokio::sync::Mutex<Option<LocalAdvert>>,
}

/// Gossip settings.
#[derive(Debug, Clone)]
pub struct GossipConfig {
    pub node_id: String,
    pub generation: u64,
    pub listen: std::net::SocketAddr,
    pub advertise: String,
    pub seeds: Vec<String>,
}

impl Membership {
    pub async fn start(_cfg: GossipConfig) -> anyhow::Result<Self> {
        Ok(Self {
            me: tokio::sync::Mutex::new(None),
        })
    }

    pub async fn publish(&self, advert: &LocalAdvert) {
        *self.me.lock().await = Some(advert.clone());
    }

    pub async fn members(&self) -> Vec<MemberView> {
        let me = self.me.lock().await;
        me.iter()
            .map(|a| to_view(a, Liveness::Alive, true))
            .collect()
    }
}

fn to_view(a: &LocalAdvert, state: Liveness, is_self: bool) -> MemberView {
    MemberView {
        node_id: a.node_id.clone(),
        api_addr: a.api_addr.clone(),
        gossip_addr: a.gossip_addr.clone(),
        metrics_addr: a.metrics_addr.clone(),
        state,
        is_self,
        cpu_cores: a.cpu_cores,
        memory_total: a.memory_total,
        memory_available: a.memory_available,
        gpu_count: a.gpu_count,
        gpu_memory_total: a.gpu_memory_total,
        models: a.models.clone(),
        layers: a.layers.clone(),
        healthy: a.healthy,
        generation: a.generation,
        version: a.version.clone(),
        plan_version: a.plan_version,
    }
}

/// The plan over the alive members that serve `model_id` (`Err`: why none).
pub fn plan(
    members: &[MemberView],
    model: &engine::ModelInfo,
    model_id: &str,
) -> Result<PlanView, String> {
    let alive: Vec<&MemberView> = members
        .iter()
        .filter(|m| m.state == Liveness::Alive && m.models.iter().any(|x| x == model_id))
        .collect();
    let footprint = cluster::ModelFootprint {
        n_layers: model.n_layers,
        layer_bytes: model.layer_bytes.clone(),
        embed_bytes: model.embed_bytes,
        head_bytes: model.head_bytes,
    };
    let caps: Vec<cluster::Capacity> = alive
        .iter()
        .map(|m| cluster::Capacity {
            node_id: m.node_id.clone(),
            memory_available: m.memory_available,
            memory_limit: None,
            cpu_cores: m.cpu_cores,
            gpu_memory: m.gpu_memory_total,
        })
        .collect();
    let p = cluster::plan(&footprint, &caps).map_err(|e| e.to_string())?;
    let slices = p
        .assignments
        .iter()
        .filter(|a| a.end > a.start)
        .map(|a| Slice {
            node_id: a.node_id.clone(),
            api_addr: alive
                .iter()
                .find(|m| m.node_id == a.node_id)
                .map(|m| m.api_addr.clone())
                .unwrap_or_default(),
            range: a.start..a.end,
        })
        .collect();
    Ok(PlanView {
        version: p.version,
        model: model_id.to_string(),
        n_layers: p.n_layers,
        slices,
    })
}
